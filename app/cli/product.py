"""The product commands: ``info``, ``inspect``, ``claims``, ``demo``, ``analyze``.

Research software — NOT FOR DIAGNOSTIC USE.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lungfuse.app.cli.common import NOTICE, console, write_json

__all__ = ["add_product_commands", "print_result"]


def cmd_info(args: argparse.Namespace) -> int:
    import importlib.metadata as md
    import platform

    from rich.table import Table

    from lungfuse.pipelines.core.resources import list_weights, models_dir

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "monai", "pydicom", "transformers", "PySide6-Essentials", "highdicom", "numpy", "SimpleITK"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    device = "cpu"
    device_name = platform.processor() or platform.machine()
    try:
        import torch

        if torch.cuda.is_available():
            device, device_name = "cuda", torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a hard requirement, but info must still print
        device = "unavailable"
    files = list_weights()
    weights = [
        {"name": w.name, "bytes": w.bytes, "sha256": w.sha256, "manifest_sha256": w.expected_sha256,
         "verified": w.verified}
        for w in files
    ]
    info = {"versions": versions, "device": device, "device_name": device_name,
            "models_dir": str(models_dir()), "weights": weights, "notice": NOTICE}
    write_json(info, args.json)
    con = console()
    t = Table(title="LungFuse environment", show_header=False)
    for k, v in versions.items():
        t.add_row(k, str(v) if v else "[red]not installed[/red]")
    t.add_row("device", f"{device} ({device_name})")
    t.add_row("models dir", str(models_dir()))
    con.print(t)
    if weights:
        wt = Table(title="Weights")
        for col in ("file", "MB", "sha256", "manifest"):
            wt.add_column(col)
        for wf in files:
            wt.add_row(wf.name, f"{wf.bytes / 1e6:.2f}", wf.sha256[:16] + "…",
                       "[green]ok[/green]" if wf.verified else "[red]MISMATCH/absent[/red]")
        con.print(wt)
    else:
        con.print("weights: none found (models are trained by `lungfuse train`)")
    con.print(f"[bold yellow]{NOTICE}[/bold yellow]")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import os

    # Before numpy's first import: inspect does no linear algebra worth threads, and starting
    # OpenBLAS's thread pool is ~50 ms of numpy's import on the 2-core dev machine (a user's
    # own setting is kept).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from rich.table import Table

    from lungfuse.pipelines.io.case_files import find_report
    from lungfuse.pipelines.io.dicom import load_ct_and_series

    path = Path(args.path)
    vol, series = load_ct_and_series(path, series_uid=args.series)
    summary = vol.summary()
    summary["series_found"] = [s.to_dict() for s in series]
    rep = find_report(path)
    if rep is not None:
        from lungfuse.pipelines.io.report import load_report
        from lungfuse.pipelines.nlp.claims import extract_claims

        claims = extract_claims(load_report(rep))
        summary["report"] = {"path": str(rep), "claims": claims.to_dict()}
    else:
        summary["report"] = None
    summary["notice"] = NOTICE
    write_json(summary, args.json)

    con = console()
    t = Table(title=f"CT volume: {path}", show_header=False)
    q = vol.quality
    rows = [
        ("patient", vol.patient_id or "—"),
        ("series", vol.series_instance_uid or "—"),
        ("slices", str(vol.n_slices)),
        ("shape (z, y, x)", " × ".join(map(str, vol.shape))),
        ("spacing (z, y, x) mm", ", ".join(f"{s:.4g}" for s in vol.spacing)),
        ("orientation (z, y, x)", vol.orientation),
        ("origin LPS mm", ", ".join(f"{o:.2f}" for o in vol.origin)),
        ("HU range", f"{summary['hu_range'][0]:.0f} … {summary['hu_range'][1]:.0f} ({vol.hu.dtype})"),
        ("slice thickness mm", f"{q.slice_thickness_mm:.3g}"),
        ("noise σ HU", f"{q.noise_sigma_hu:.1f}" if q.noise_sigma_hu is not None else "—"),
        ("gantry tilt °", f"{q.tilt_deg:.2f}"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    con.print(t)
    if vol.warnings:
        for w in vol.warnings:
            con.print(f"[yellow]warning[/yellow] [{w.code}] {w.message}")
    else:
        con.print("[green]no ingestion warnings[/green]")
    if rep is not None:
        c = summary["report"]["claims"]
        con.print(f"report: {rep} — {len(c['nodules'])} nodule mention(s), completeness {c['completeness']:.2f}, "
                  f"negative statement: {c['negative_statement']}")
    con.print(f"[bold yellow]{NOTICE}[/bold yellow]")
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    from rich.table import Table

    from lungfuse.pipelines.io.report import load_report
    from lungfuse.pipelines.nlp.claims import extract_claims

    report = load_report(Path(args.report))
    claims = extract_claims(report)
    d = claims.to_dict()
    write_json(d, args.json)
    con = console()
    t = Table(title=f"Nodule claims in {args.report}")
    for col in ("#", "size mm", "side", "lobe", "texture", "margin", "calc.", "neg.", "unc."):
        t.add_column(col, no_wrap=True, min_width=len(col))
    # The mention text is the least important column: it is cut, never wrapped, on narrow terminals.
    t.add_column("text", no_wrap=True, overflow="ellipsis", max_width=28)
    for i, n in enumerate(d["nodules"], 1):
        t.add_row(str(i), "—" if n["size_mm"] is None else f"{n['size_mm']:g}", str(n["side"] or "—"),
                  str(n["lobe"] or "—"), str(n["texture"] or "—"), str(n["margin"] or "—"),
                  "—" if n["calcification"] is None else str(n["calcification"]), "yes" if n["negated"] else "",
                  "yes" if n["uncertain"] else "", (n.get("text") or "")[:60])
    con.print(t)
    con.print(f"completeness {d['completeness']:.2f} · negative statement: {d['negative_statement']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    con = console()
    if args.phantom:
        from lungfuse.pipelines.demo.case import make_demo_case

        case = make_demo_case(Path(args.out), seed=args.seed)
        con.print(f"demo case written to {case.out_dir}: CT series in {case.ct_dir}, report {case.report_path}")
        con.print(f"[bold yellow]Synthetic phantom — {NOTICE}[/bold yellow]")
        return 0
    from lungfuse.pipelines.demo.lidc_demo import make_lidc_demo_case

    case = make_lidc_demo_case(Path(args.out))
    src = case.truth["derived_from"]["patient_id"]
    con.print(f"demo case written to {case.out_dir}: CT series in {case.ct_dir}, report {case.report_path}")
    con.print(f"[bold yellow]Derived data from {src} (LIDC-IDRI, CC BY 3.0; see resources/demo/README.md) — "
              f"{NOTICE}[/bold yellow]")
    return 0


def print_result(result: Any, wall: float | None = None, profile: bool = False, con: Any = None) -> None:
    """The analysis summary of ``lungfuse analyze``: findings table, status, reasons, flags, timings
    (``lungfuse gui --no-display`` prints the same)."""
    from rich.table import Table

    con = con or console()
    t = Table(title=f"LungFuse findings: {result.case_id}")
    for col in ("#", "centre LPS mm (x, y, z)", "size mm", "volume mm³", "side/lobe", "texture", "det.", "malig.",
                "EAF", "Lung-RADS", "consist.", "report"):
        t.add_column(col)
    for f in result.findings:
        t.add_row(f.id, ", ".join(f"{v:.1f}" for v in f.center_lps_mm), f"{f.diameter_mm:.1f}",
                  f"{f.volume_mm3:.0f}", f"{f.side or '?'}/{f.lobe or '?'}", f.texture + (" calc." if f.calcified else ""),
                  f"{f.detection_score:.2f}",
                  f"{f.malignancy_probability:.2f}" if f.malignancy_probability is not None else "—",
                  f.eaf.get("strategy", "—"), f.lung_rads or "—",
                  f"{f.consistency:.2f}" if f.consistency is not None else "—",
                  f"claim {f.claim_id}" if f.claim_id is not None else ("—" if not result.report_present else "not mentioned"))
    con.print(t)
    if not result.findings:
        con.print("no nodule above the detection threshold "
                  f"({result.volume['detection_threshold']:.2f})")
    colour = {"concordant": "green", "realigned": "cyan", "discordant": "red"}.get(result.status, "yellow")
    con.print(f"status: [bold {colour}]{result.status}[/bold {colour}]"
              + ("" if result.report_present else " (no report: image only, consistency not assessed)"))
    for r in result.reasons:
        con.print(f"  • {r}")
    if len(result.consistency_trajectory) > 1:
        con.print(f"realignment: {len(result.consistency_trajectory) - 1} iteration(s)")
        for e in result.consistency_trajectory[1:]:
            con.print(f"  {e['iteration']}. {e['region']}: {e.get('changed', '')} -> "
                      f"{'accepted' if e.get('accepted') else 'rejected'}")
    for fl in result.flags:
        con.print(f"[yellow]flag[/yellow] {fl}")
    stages = ", ".join(f"{k} {v:.2f}" for k, v in result.timings_s.items() if k != "total")
    t_models = result.timings_s.get("models", 0.0)
    wall_txt = f" ({wall:.1f} s wall)" if wall is not None else ""
    con.print(f"time: {result.timings_s['total']:.1f} s in analysis{wall_txt} on {result.device}"
              + (f", of which {t_models:.1f} s loading the models (once per process)" if t_models >= 0.5 else ""))
    if profile:
        con.print(f"stages (s): {stages}")


def cmd_analyze(args: argparse.Namespace) -> int:
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from lungfuse.pipelines.analysis.analyze import analyze_case
    from lungfuse.pipelines.analysis.case import AnalysisSettings, Case
    from lungfuse.pipelines.inference.registry import ModelRegistry

    con = console()
    settings = AnalysisSettings(device=args.device, threads=args.threads, explain=not args.no_explain,
                                detection_threshold=args.threshold)
    case = Case(args.path, report=args.report, find_report=not args.no_report)
    if args.report and not Path(args.report).is_file():
        raise FileNotFoundError(f"{args.report}: report file not found")
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=con, transient=True, disable=args.quiet) as prog:
        task = prog.add_task("loading models", total=9)

        def progress(stage: str, i: int, n: int) -> None:
            prog.update(task, completed=i, total=n, description=f"{stage}")

        result = analyze_case(case, settings, progress=progress, models=ModelRegistry())
    wall = time.perf_counter() - t0
    if args.json:
        result.save(args.json)
    print_result(result, wall, profile=args.profile, con=con)
    if args.json:
        con.print(f"wrote {args.json}" + (" (+ heatmaps .npz)" if result.arrays else ""))
    if args.png:
        from lungfuse.pipelines.analysis.figures import finding_figure
        from lungfuse.pipelines.io.dicom import load_ct

        finding_figure(result, load_ct(args.path).hu, args.png)
        con.print(f"wrote {args.png}")
    con.print(f"[bold yellow]{NOTICE}[/bold yellow]")
    return 0


def add_product_commands(sub: Any) -> None:
    """Add the info... subcommands to ``sub`` (argparse sub-parsers)."""
    s = sub.add_parser("info", help="versions, device and shipped weights", description="Print versions of python, "
                       "torch, monai, pydicom, transformers and PySide6, the device, and the weights with their SHA-256.")
    s.add_argument("--json", metavar="FILE", help="also write the information as JSON")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("inspect", help="summary of the CT case at PATH", description="Load the CT at PATH (DICOM folder "
                       "tree, multi-frame DICOM file or NIfTI) and print its geometry, HU range, quality and warnings.")
    s.add_argument("path", metavar="PATH")
    s.add_argument("--series", metavar="UID", help="load this SeriesInstanceUID instead of the automatic choice")
    s.add_argument("--json", metavar="FILE", help="write the summary as JSON (keys n_slices, spacing_mm, shape, "
                   "hu_range, warnings, ...)")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("claims", help="nodule claims parsed from a report", description="Parse a free-text chest CT "
                       "report (.txt, .md or DICOM SR) and print the nodules it mentions.")
    s.add_argument("report", metavar="REPORT")
    s.add_argument("--json", metavar="FILE", help="write completeness, negative_statement and nodules as JSON")
    s.set_defaults(func=cmd_claims)

    s = sub.add_parser("demo", help="write the demo case (a real chest CT, derived from LIDC-IDRI-0001)",
                       description="Write the bundled demo: a chest CT derived from LIDC-IDRI-0001 (CC BY 3.0, cropped "
                       "and downsampled) as a CT DICOM series plus a report.txt describing its nodule and truth.json. "
                       "--phantom writes the older procedural phantom instead.")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--phantom", action="store_true", help="the synthetic phantom (seeded by --seed) instead")
    s.add_argument("--seed", type=int, default=0, help="phantom seed (with --phantom only)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("analyze", help="analyse one case: nodules, malignancy, heatmaps, report consistency",
                       description="Load a CT (DICOM folder, multi-frame DICOM or NIfTI) and its report, find the "
                       "nodules, estimate malignancy with AFA + EAF fusion, explain, check image/report consistency "
                       "(with the realignment loop) and print the findings. NOT FOR DIAGNOSTIC USE.")
    s.add_argument("path", metavar="PATH")
    s.add_argument("--report", metavar="FILE", help="the report (.txt/.md/DICOM SR); default: report.txt beside PATH")
    s.add_argument("--no-report", action="store_true", help="ignore any report beside PATH (image only)")
    s.add_argument("--json", metavar="FILE", help="write the CaseResult JSON (heatmaps go to FILE's .npz)")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    s.add_argument("--threshold", type=float, help="detection threshold (default: the val-calibrated one)")
    s.add_argument("--no-explain", action="store_true", help="skip heatmaps and word attributions")
    s.add_argument("--png", metavar="FILE", help="also draw the findings with their heatmaps to a PNG")
    s.add_argument("--profile", action="store_true", help="print per-stage timings")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_analyze)
