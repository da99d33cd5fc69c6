"""Detection evaluation: FROC / CPM in the LUNA16 style on held-out insertions.

Research software, NOT for diagnostic use.

Evaluation (:func:`evaluate_detection`, :func:`froc`): FROC in the LUNA16 style.  A detection *hits* a
true nodule when its centre lies within ``max(diameter / 2, 5 mm)`` of the nodule centre (the 5 mm
floor keeps tiny nodules from demanding sub-voxel precision on a 1.5 mm grid).  Per scan, detections
are taken by decreasing score; each one is assigned to the nearest still-unmatched nodule it hits
(a true positive), a detection that hits only already-matched nodules is a duplicate and ignored
(neither TP nor FP, as in LUNA16), any other detection is a false positive.  Sensitivity is read at
1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan; CPM is their mean.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lungfuse.models.image import (
    NoduleDetector,
)
from lungfuse.pipelines.imaging.preprocess import DETECTION_SPACING_MM
from lungfuse.pipelines.inference.detector import CONFIG_NAME, detect, load_detector
from lungfuse.pipelines.lab.detection_data import DetectionTrainConfig, make_detection_data

if TYPE_CHECKING:  # fpr imports this module
    from lungfuse.pipelines.inference.fpr import FPRClassifier

__all__ = ["FROC_FP_RATES", "HIT_MIN_RADIUS_MM", "froc", "evaluate_detection", "evaluate_shipped_detector"]


FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
HIT_MIN_RADIUS_MM = 5.0


def froc(detections_per_scan: Sequence[Sequence[Sequence[float]]], truths_per_scan: Sequence[Sequence[Sequence[float]]],
         spacing_mm: float = DETECTION_SPACING_MM, fp_rates: Sequence[float] = FROC_FP_RATES,
         min_radius_mm: float = HIT_MIN_RADIUS_MM) -> dict:
    """FROC / CPM (pure function).

    Args:
        detections_per_scan: per scan, ``(z, y, x, score, ...)`` in voxels.
        truths_per_scan: per scan, ``(z, y, x, diameter_mm)`` in voxels / mm.
        spacing_mm: isotropic voxel size.
        fp_rates: false positives per scan at which sensitivity is read.
        min_radius_mm: hit radius floor: a hit is a centre within ``max(d / 2, min_radius_mm)``.

    Returns:
        ``{"froc": {rate: sensitivity}, "cpm", "sensitivity_at_1fp", "n_truths", "n_scans", "n_tp", "n_fp",
        "n_duplicates", "assignments", "labels"}``; ``labels[s][i]`` is ``"tp"``, ``"fp"`` or
        ``"duplicate"`` for detection ``i`` of scan ``s``; ``assignments[s][t]`` is the index (in scan ``s``'s list) of
        the detection matched to truth ``t`` (the highest-scoring one that hits it) or None.
    """
    if len(detections_per_scan) != len(truths_per_scan):
        raise ValueError("detections_per_scan and truths_per_scan must have one entry per scan")
    n_scans = len(truths_per_scan)
    n_truths = sum(len(t) for t in truths_per_scan)
    scored: list[tuple[float, bool]] = []  # (score, is_tp) of every non-duplicate detection
    assignments: list[list[int | None]] = []
    labels: list[list[str]] = []
    n_dup = 0
    for dets, truths in zip(detections_per_scan, truths_per_scan, strict=True):
        tc = np.asarray([t[:3] for t in truths], float).reshape(-1, 3)
        rad = np.asarray([max(float(t[3]) / 2.0, min_radius_mm) for t in truths], float)
        matched: list[int | None] = [None] * len(truths)
        lab = ["fp"] * len(dets)
        order = sorted(range(len(dets)), key=lambda i: -float(dets[i][3]))
        for i in order:
            d = dets[i]
            dist = np.linalg.norm((tc - np.asarray(d[:3], float)) * spacing_mm, axis=1) if len(tc) else np.zeros(0)
            hits = np.nonzero(dist <= rad)[0]
            free = [int(h) for h in hits if matched[int(h)] is None]
            if free:
                j = min(free, key=lambda h: dist[h])
                matched[j] = i
                lab[i] = "tp"
                scored.append((float(d[3]), True))
            elif len(hits):
                n_dup += 1
                lab[i] = "duplicate"
            else:
                scored.append((float(d[3]), False))
        assignments.append(matched)
        labels.append(lab)
    scored.sort(key=lambda s: -s[0])
    # operating points: after the last detection of every distinct score
    points: list[tuple[int, int]] = [(0, 0)]
    tp = fp = 0
    for k, (s, is_tp) in enumerate(scored):
        tp += int(is_tp)
        fp += int(not is_tp)
        if k + 1 == len(scored) or scored[k + 1][0] != s:
            points.append((tp, fp))
    curve = {}
    for r in fp_rates:
        best = max((t for t, f in points if f <= r * n_scans + 1e-9), default=0)
        curve[float(r)] = best / n_truths if n_truths else 0.0
    cpm = float(np.mean(list(curve.values()))) if curve else 0.0
    return {"froc": curve, "cpm": cpm, "sensitivity_at_1fp": curve.get(1.0, float("nan")), "n_truths": n_truths,
            "n_scans": n_scans, "n_tp": sum(int(t) for _, t in scored), "n_fp": sum(int(not t) for _, t in scored),
            "n_duplicates": n_dup, "assignments": assignments, "labels": labels}


def evaluate_detection(model: NoduleDetector, lidc_root: Path, n_volumes: int = 2, nodules_per_volume: int = 25,
                       seed: int = 0, *, threshold: float = 0.02, device: str = "cpu", max_peaks: int = 64,
                       log: Callable[[str], None] | None = print, fpr: FPRClassifier | None = None) -> dict:
    """FROC of ``model`` on the TEST split only: LIDC-IDRI-0003 with test nodules inserted.

    ``n_volumes`` copies of LIDC-IDRI-0003 (deterministic in ``seed``), each with
    ``nodules_per_volume`` test-library nodules plus 0003's own real nodules (n_readers >= 1,
    clusters < 10 mm apart merged), so every real nodule counts once per copy.  Hit criterion and
    matching: see :func:`froc` (centre within ``max(d/2, 5 mm)``, each truth matched once).
    ``localization_accuracy``: share of all true nodules whose matched detection (the
    highest-scoring one that hits it) has its centre INSIDE the nodule: for inserted nodules the
    distance to the centre is < d/2, for real ones :meth:`ScanNodule.contains` of the detection
    mapped to the source voxel; ``localization_accuracy_detected`` uses the matched nodules only.
    ``recall_any_score``: share of inserted / real nodules matched by any candidate (at most
    ``max_peaks`` per scan above ``threshold``).  ``fpr``: the second-stage classifier
    (:mod:`.fpr`); candidates are then ranked by the combined score.
    """
    cfg = DetectionTrainConfig(n_volumes=n_volumes, nodules_per_volume=nodules_per_volume, seed=seed)
    vols = make_detection_data("test", lidc_root, cfg, np.random.default_rng([seed, 2]), log=log)
    dets_all, truths_all, secs = [], [], []
    for k, v in enumerate(vols):
        raw = detect(model, v.image, v.lung, threshold=threshold, device=device, max_peaks=max_peaks, normalized=True)
        secs.append(raw.seconds)
        dets: list[tuple[int, int, int, float, float]] = list(raw)
        if fpr is not None:
            from lungfuse.pipelines.inference.fpr import rescore

            t1 = time.perf_counter()
            dets = rescore(fpr, v.image.astype(np.float32), raw, device=device)
            secs[-1] += time.perf_counter() - t1
        dets_all.append(dets)
        truths_all.append([(*c, d) for c, d in zip(v.centres, v.diameters_mm, strict=True)])
        if log:
            log(f"[eval] test copy {k + 1}/{len(vols)}: {len(dets)} candidates, {secs[-1]:.1f} s")
    res = froc(dets_all, truths_all)
    inside = matched = 0
    found = {"inserted": [0, 0], "real": [0, 0]}  # [matched at any score, total]
    for v, dets, assign in zip(vols, dets_all, res["assignments"], strict=True):
        for t, j in enumerate(assign):
            kind = "inserted" if v.real[t] is None else "real"
            found[kind][1] += 1
            if j is None:
                continue
            found[kind][0] += 1
            matched += 1
            d = dets[j]
            real = v.real[t]
            if real is None:
                ok = np.linalg.norm((np.asarray(d[:3], float) - v.centres[t]) * DETECTION_SPACING_MM) < v.diameters_mm[t] / 2
            else:
                ok = real.contains(v.source_voxel(d[:3]))
            inside += int(ok)
    n = res["n_truths"]
    return {
        "sensitivity_at_1fp": res["sensitivity_at_1fp"],
        "cpm": res["cpm"],
        "froc": res["froc"],
        "localization_accuracy": inside / n if n else 0.0,
        "localization_accuracy_detected": inside / matched if matched else 0.0,
        "n_test_nodules": n,
        "n_real_nodules": found["real"][1],
        "recall_any_score": {k: (a / b if b else None) for k, (a, b) in found.items()},
        "candidates_per_scan": float(np.mean([len(d) for d in dets_all])) if dets_all else 0.0,
        "n_scans": res["n_scans"],
        "n_tp": res["n_tp"],
        "n_fp": res["n_fp"],
        "seconds_per_scan": float(np.mean(secs)) if secs else 0.0,
        "hit_criterion": f"centre within max(d/2, {HIT_MIN_RADIUS_MM} mm); duplicates ignored (LUNA16)",
    }



def evaluate_shipped_detector(models_dir: Path, lidc_root: Path, seed: int = 0, n_volumes: int = 2) -> dict:
    """``lungfuse evaluate``'s ``detection`` section for ``models_dir/detector.pt`` (SHA-256 checked)."""
    from lungfuse.pipelines.core.resources import verify_manifest

    pt = models_dir / "detector.pt"
    verify_manifest(pt, models_dir / CONFIG_NAME)
    model = load_detector(pt)
    from lungfuse.pipelines.inference.fpr import load_shipped_fpr

    fpr = load_shipped_fpr(models_dir)
    res = evaluate_detection(model, lidc_root, n_volumes=n_volumes, seed=seed, fpr=fpr)
    res["second_stage"] = fpr is not None
    res.pop("assignments", None)
    return res
