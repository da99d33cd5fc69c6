"""Calibrations for case analysis, fitted on the VALIDATION split only (never test).

Research software, NOT for diagnostic use.

* :func:`calibrate_consistency` - the AFA pair-agreement calibration of
  :mod:`.consistency` (``consistency.json``): for every val report with text, the cosine of
  AFA's ``z_img``/``z_txt`` for the true (nodule, its report) pair and for one mismatched pair
  (the same crop with the report of another, random val nodule); logistic fit + Youden
  threshold (:func:`fit_consistency`).
* :func:`calibrate_detector_threshold` - the detector's operating threshold: val nodules inserted
  into the training backgrounds (LIDC-IDRI-0001/0002; one copy each), sliding-window detection,
  and the lowest score at which the val false-positive rate stays at or below
  ``fp_per_scan`` (default 1 per scan, a LUNA16-style operating point).  Stored in
  ``detector.json`` as ``operating_threshold``.

Both update the SHA-256 manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lungfuse.pipelines.inference.calibration import CALIBRATION_NAME, ConsistencyCalibration

__all__ = ["calibrate_consistency", "calibrate_detector_threshold", "calibrate_fusion", "pair_cosines"]


def pair_cosines(model, ex, rng: np.random.Generator, device: str = "cpu",  # noqa: ANN001
                 batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """AFA cosines of true and of mismatched (crop, report) pairs of an :class:`ExampleSet`."""
    import torch

    from lungfuse.pipelines.lab.fusion_train import _forward, make_batch

    rows = np.nonzero(ex.present)[0]
    other = rows.copy()
    # a mismatched report comes from a different nodule
    for k in range(len(other)):
        for _ in range(20):
            j = rows[int(rng.integers(len(rows)))]
            if ex.nodule[j] != ex.nodule[rows[k]]:
                other[k] = j
                break
    true_c, false_c = [], []
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(rows), batch):
            r, o = rows[s : s + batch], other[s : s + batch]
            b = make_batch(ex, r, None)
            true_c.append(_forward(model, b, device).afa.cos_sim.float().cpu().numpy())
            b2 = make_batch(ex, o, None)
            b["sentence"], b["claims"], b["env_raw"] = b2["sentence"], b2["claims"], b["env_raw"].clone()
            b["env_raw"][:, 4:] = b2["env_raw"][:, 4:]
            false_c.append(_forward(model, b, device).afa.cos_sim.float().cpu().numpy())
    return np.concatenate(true_c), np.concatenate(false_c)


def calibrate_fusion(models_dir: Path, cases: Path, seed: int = 0, device: str = "cpu",
                     progress: Callable[[str], None] = print) -> dict[str, dict]:
    """Re-fit the fusion model's per-variant temperature and decision threshold on val
    (:func:`.fusion_train.calibrate`, what ``lungfuse train`` does after training) and write them
    into ``models_dir/fusion.json`` (weights untouched; manifest updated)."""
    from lungfuse.pipelines.inference.fusion import load_fusion
    from lungfuse.pipelines.lab.fusion_train import calibrate, load_or_build, write_fusion_meta

    model, meta = load_fusion(models_dir)
    model = model.to(device)
    val = load_or_build("val", cases, seed, progress=progress)
    meta["calibration"] = calibrate(model, val, device)
    for k, c in meta["calibration"].items():
        progress(f"fusion {k}: temperature {c['temperature']:.3f}, decision threshold {c['decision_threshold']:.2f} (val)")
    write_fusion_meta(models_dir, meta)
    return meta["calibration"]


def calibrate_consistency(models_dir: Path, cases: Path, seed: int = 0, device: str = "cpu",
                          progress: Callable[[str], None] = print) -> ConsistencyCalibration:
    """Fit and write ``models_dir/consistency.json`` from the val split (see module docstring)."""
    from lungfuse.pipelines.core.resources import write_manifest_entry
    from lungfuse.pipelines.inference.fusion import load_fusion
    from lungfuse.pipelines.lab.fusion_train import load_or_build

    model, _ = load_fusion(models_dir)
    model = model.to(device)
    val = load_or_build("val", cases, seed, progress=progress)
    t, f = pair_cosines(model, val, np.random.default_rng([seed, 7]), device)
    cal = fit_consistency(t, f)
    progress(f"consistency on val: {len(t)} true / {len(f)} mismatched pairs, cos mean {t.mean():.3f} vs "
             f"{f.mean():.3f}, AUC {cal.val_auc:.3f}, threshold {cal.threshold:.3f} "
             f"({100 * (cal.false_alarm or 0):.0f} % of true pairs "
             f"below it; {100 * (cal.mismatch_caught or 0):.0f} % of mismatched pairs caught; Youden threshold "
             f"{cal.youden_threshold:.3f})")
    cal.save(models_dir / CALIBRATION_NAME)
    write_manifest_entry(models_dir, CALIBRATION_NAME, "AFA image/report consistency calibration (val split)")
    return cal


def calibrate_detector_threshold(models_dir: Path, cases: Path, fp_per_scan: float = 1.0, seed: int = 0,
                                 device: str = "cpu", progress: Callable[[str], None] = print,
                                 n_volumes: int = 2, backgrounds: tuple[str, ...] | None = None) -> dict:
    """Pick the detector's operating threshold on val and store it in ``detector.json``.

    Val = ``n_volumes`` copies of each val background with val nodules inserted.  Two copies
    each (4 scans) rather than one: with a budget of 1 FP/scan the threshold is set by the
    second or third false positive of the whole val set, so one copy each made it hinge on
    two or three candidates.  ``backgrounds``: only these val backgrounds (patient ids), e.g. the
    one a detector trained with ``DetectionTrainConfig.backgrounds`` never saw: a val that can
    show a new background's false positives, which val on the training backgrounds cannot.
    """
    from lungfuse.pipelines.core.resources import verify_manifest, write_manifest_entry
    from lungfuse.pipelines.inference.detector import CONFIG_NAME, detect, load_detector
    from lungfuse.pipelines.lab.detection_data import DetectionTrainConfig, make_detection_data
    from lungfuse.pipelines.lab.detection_eval import froc

    pt = models_dir / "detector.pt"
    verify_manifest(pt, models_dir / CONFIG_NAME)
    model = load_detector(pt, device=device)
    from lungfuse.pipelines.inference.fpr import load_shipped_fpr

    fpr = load_shipped_fpr(models_dir, device)
    cfg = DetectionTrainConfig(n_volumes=n_volumes, nodules_per_volume=25, seed=seed, split="val",
                               backgrounds=backgrounds)
    vols = make_detection_data("val", cases, cfg, np.random.default_rng([seed, 3]), log=progress)
    dets, truths = [], []
    for v in vols:
        img = v.image.astype(np.float32)
        raw = detect(model, img, v.lung, threshold=0.02, device=device, max_peaks=64, normalized=True)
        d: list[tuple[int, int, int, float, float]] = list(raw)
        if fpr is not None:
            from lungfuse.pipelines.inference.fpr import rescore

            d = rescore(fpr, img, raw, device=device)
        dets.append(d)
        truths.append([(*c, dm) for c, dm in zip(v.centres, v.diameters_mm, strict=True)])
    res = froc(dets, truths)
    scored = [(float(d[3]), lab == "tp") for ds, labs in zip(dets, res["labels"], strict=True)
              for d, lab in zip(ds, labs, strict=True) if lab != "duplicate"]
    scored.sort(key=lambda s: -s[0])
    budget = fp_per_scan * len(vols)
    fp = tp = 0
    thr = scored[0][0] if scored else 0.5
    for s, is_tp in scored:
        if not is_tp and fp + 1 > budget:
            break
        fp += int(not is_tp)
        tp += int(is_tp)
        thr = s
    meta = json.loads((models_dir / CONFIG_NAME).read_text())
    meta["operating_threshold"] = float(thr)
    meta["operating_threshold_score"] = "detector x fpr (geometric mean)" if fpr is not None else "detector"
    where = "/".join(dict.fromkeys(v.background.removeprefix("LIDC-IDRI-") for v in vols))  # the scans scored
    meta["operating_threshold_source"] = (f"val split (val nodules in LIDC-IDRI-{where}, {len(vols)} scans): "
                                          f"lowest score with <= {fp_per_scan:g} FP/scan")
    meta["val_detection"] = {"cpm": res["cpm"], "froc": res["froc"], "sensitivity_at_threshold": tp / max(res["n_truths"], 1),
                             "fp_per_scan_at_threshold": fp / max(len(vols), 1), "n_truths": res["n_truths"]}
    (models_dir / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
    write_manifest_entry(models_dir, CONFIG_NAME, "detector config, training settings and val operating threshold")
    progress(f"detector operating threshold {thr:.3f} (val: sensitivity {tp / max(res['n_truths'], 1):.3f} at "
             f"{fp / max(len(vols), 1):.2f} FP/scan, CPM {res['cpm']:.3f})")
    return meta


def fit_consistency(cos_true: np.ndarray, cos_false: np.ndarray, false_alarm: float = 0.05) -> ConsistencyCalibration:
    """Fit the calibration on val cosines of true and mismatched pairs (see module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score, roc_curve

    x = np.concatenate([cos_true, cos_false]).astype(float)[:, None]
    y = np.concatenate([np.ones(len(cos_true)), np.zeros(len(cos_false))])
    lr = LogisticRegression(C=1e4).fit(x, y)
    slope, intercept = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    p = 1.0 / (1.0 + np.exp(-(slope * x[:, 0] + intercept)))
    fpr, tpr, thr = roc_curve(y, p)
    youden = float(np.clip(thr[int(np.argmax(tpr - fpr))], 0.0, 1.0))
    p_true, p_false = p[y == 1], p[y == 0]
    threshold = float(np.quantile(p_true, false_alarm))
    caught = float(np.mean(p_false < threshold))
    return ConsistencyCalibration(slope, intercept, threshold, float(roc_auc_score(y, p)), int(len(y)), True,
                                  float(false_alarm), caught, youden)
