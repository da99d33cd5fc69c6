"""``lungfuse`` command-line entry point.

Subcommands: ``info``, ``inspect``, ``claims``, ``demo`` (later issues add
``analyze``, ``evaluate``, ``train``, ``gui``, ``export`` and ``audit``).
Every subcommand has ``--help``.  Errors about the input (bad DICOM, missing
file) print one clear line and exit with status 2, never a traceback.

Research software — NOT FOR DIAGNOSTIC USE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

NOTICE = "LungFuse is research software — NOT FOR DIAGNOSTIC USE."


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _write_json(obj: Any, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")


# ---------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    import importlib.metadata as md
    import platform

    from rich.table import Table

    from lungfuse.pipelines.resources import list_weights, models_dir

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
    weights = [
        {"name": w.name, "bytes": w.bytes, "sha256": w.sha256, "manifest_sha256": w.expected_sha256,
         "verified": w.verified}
        for w in list_weights()
    ]
    info = {"versions": versions, "device": device, "device_name": device_name,
            "models_dir": str(models_dir()), "weights": weights, "notice": NOTICE}
    _write_json(info, args.json)
    con = _console()
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
        for w in weights:
            wt.add_row(w["name"], f"{w['bytes'] / 1e6:.2f}", w["sha256"][:16] + "…",
                       "[green]ok[/green]" if w["verified"] else "[red]MISMATCH/absent[/red]")
        con.print(wt)
    else:
        con.print("weights: none found (models are trained by `lungfuse train`)")
    con.print(f"[bold yellow]{NOTICE}[/bold yellow]")
    return 0


# ---------------------------------------------------------------------------
def find_report_beside(path: Path) -> Path | None:
    """The free-text report that travels with a case: ``report.txt``/``.md`` in or beside ``path``."""
    folder = path if path.is_dir() else path.parent
    for cand in (folder, folder.parent):
        for name in ("report.txt", "report.md", "REPORT.txt"):
            if (cand / name).is_file():
                return cand / name
    return None


def cmd_inspect(args: argparse.Namespace) -> int:
    from rich.table import Table

    from lungfuse.pipelines.ingest import list_series, load_ct

    path = Path(args.path)
    vol = load_ct(path, series_uid=args.series)
    summary = vol.summary()
    summary["series_found"] = [s.to_dict() for s in list_series(path)] if path.is_dir() else []
    rep = find_report_beside(path)
    if rep is not None:
        from lungfuse.pipelines.claims import extract_claims
        from lungfuse.pipelines.report import load_report

        claims = extract_claims(load_report(rep))
        summary["report"] = {"path": str(rep), "claims": claims.to_dict()}
    else:
        summary["report"] = None
    summary["notice"] = NOTICE
    _write_json(summary, args.json)

    con = _console()
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


# ---------------------------------------------------------------------------
def cmd_claims(args: argparse.Namespace) -> int:
    from rich.table import Table

    from lungfuse.pipelines.claims import extract_claims
    from lungfuse.pipelines.report import load_report

    report = load_report(Path(args.report))
    claims = extract_claims(report)
    d = claims.to_dict()
    _write_json(d, args.json)
    con = _console()
    t = Table(title=f"Nodule claims in {args.report}")
    for col in ("#", "size mm", "side", "lobe", "texture", "margin", "calc.", "neg.", "unc.", "text"):
        t.add_column(col)
    for i, n in enumerate(d["nodules"], 1):
        t.add_row(str(i), "—" if n["size_mm"] is None else f"{n['size_mm']:g}", str(n["side"] or "—"),
                  str(n["lobe"] or "—"), str(n["texture"] or "—"), str(n["margin"] or "—"),
                  "—" if n["calcification"] is None else str(n["calcification"]), "yes" if n["negated"] else "",
                  "yes" if n["uncertain"] else "", (n.get("text") or "")[:60])
    con.print(t)
    con.print(f"completeness {d['completeness']:.2f} · negative statement: {d['negative_statement']}")
    return 0


# ---------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from lungfuse.pipelines.demo import make_demo_case

    case = make_demo_case(Path(args.out), seed=args.seed)
    con = _console()
    con.print(f"demo case written to {case.out_dir}: CT series in {case.ct_dir}, report {case.report_path}")
    con.print(f"[bold yellow]Synthetic phantom — {NOTICE}[/bold yellow]")
    return 0


# ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lungfuse",
        description="LungFuse: chest-CT nodule analysis with report/image fusion. " + NOTICE,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    s = sub.add_parser("demo", help="write the synthetic demo case", description="Write a procedural chest phantom "
                       "with real LIDC nodule shapes as a CT DICOM series plus a matching report.txt.")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from lungfuse.pipelines.ingest import IngestError

    try:
        return int(args.func(args) or 0)
    except (IngestError, FileNotFoundError, ValueError) as exc:
        print(f"lungfuse {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
