"""Detection pipeline: FROC/CPM on known answers, and a tiny train -> checkpoint -> resume -> detect smoke run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lungfuse.pipelines.core.errors import DataLeakageError
from lungfuse.pipelines.inference.detector import Detections, detect, load_detector
from lungfuse.pipelines.lab.detection_data import (
    DetectionTrainConfig,
    DetectionVolume,
    InsertionPool,
    draw_positive,
    make_detection_data,
)
from lungfuse.pipelines.lab.detection_eval import froc
from lungfuse.pipelines.lab.detection_train import _affine_patch, _sample_patch, train_detector

SP = 1.5  # mm per voxel in the FROC tests


def test_froc_known_answers() -> None:
    # scan 0: two truths; scan 1: one truth.  d = 6 mm -> hit radius max(3, 5) = 5 mm = 3.33 voxels.
    truths = [[(10, 10, 10, 6.0), (50, 50, 50, 20.0)], [(30, 30, 30, 6.0)]]
    dets = [
        [
            (10, 10, 12, 0.9),  # 3 mm from truth 0 -> TP
            (10, 10, 13, 0.8),  # also hits truth 0 (already matched) -> duplicate, ignored
            (50, 50, 56, 0.7),  # 9 mm from truth 1, radius 10 mm -> TP
            (90, 90, 90, 0.6),  # FP
        ],
        [
            (80, 80, 80, 0.95),  # FP (highest score)
            (30, 30, 34, 0.5),  # 6 mm > 5 mm: miss -> FP
            (30, 31, 31, 0.4),  # hit -> TP
        ],
    ]
    r = froc(dets, truths, spacing_mm=SP)
    assert r["n_truths"] == 3 and r["n_scans"] == 2
    assert (r["n_tp"], r["n_fp"], r["n_duplicates"]) == (3, 3, 1)
    # global order: .95 FP, .9 TP, .7 TP, .6 FP, .5 FP, .4 TP
    # FP budget = rate * 2 scans: 0.25 -> 0 FPs: 0 TPs; 0.5 -> 1 FP: 2/3; 1 -> 2 FPs: 2/3; 2 -> 4 FPs: 3/3
    f = r["froc"]
    assert f[0.125] == 0.0 and f[0.25] == 0.0
    assert f[0.5] == pytest.approx(2 / 3) and f[1.0] == pytest.approx(2 / 3)
    assert f[2.0] == 1.0 and f[4.0] == 1.0 and f[8.0] == 1.0
    assert r["sensitivity_at_1fp"] == pytest.approx(2 / 3)
    assert r["cpm"] == pytest.approx((0 + 0 + 2 / 3 + 2 / 3 + 1 + 1 + 1) / 7)
    assert r["assignments"] == [[0, 2], [2]]


def test_froc_each_truth_once_and_ties() -> None:
    # one detection between two close truths goes to the nearer; equal scores form one operating point
    truths = [[(0, 0, 0, 4.0), (0, 0, 4, 4.0)]]
    dets = [[(0, 0, 3, 0.5), (0, 0, 0, 0.5), (40, 0, 0, 0.5)]]
    r = froc(dets, truths, spacing_mm=SP)
    assert r["assignments"] == [[1, 0]]
    assert (r["n_tp"], r["n_fp"]) == (2, 1)
    # the tied FP comes with the TPs: with 0 FPs allowed nothing counts, with 1 FP everything
    assert r["froc"][0.5] == 0.0 and r["froc"][1.0] == 1.0
    empty = froc([[], []], [[(5, 5, 5, 8.0)], []])
    assert empty["cpm"] == 0.0 and empty["n_fp"] == 0


def _synthetic_volume(rng: np.random.Generator) -> DetectionVolume:
    img = np.full((48, 48, 48), 0.1, np.float16)
    lung = np.zeros(img.shape, bool)
    lung[8:40, 8:40, 8:40] = True
    zz, yy, xx = np.ogrid[:48, :48, :48]
    centres = np.array([[20.0, 20.0, 20.0], [30.0, 28.0, 26.0]])
    for c in centres:
        img[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 9] = 0.7
    return DetectionVolume(image=img, lung=lung, centres=centres, diameters_mm=np.array([9.0, 9.0]), real=[None, None],
                           to_source=np.eye(4), background="synthetic", lung_index=np.flatnonzero(lung))


def _tiny_cfg(**kw) -> DetectionTrainConfig:
    base = dict(epochs=1, steps_per_epoch=2, n_volumes=1, nodules_per_volume=2, patch_size=32, batch_size=1,
                channels=(4, 8), strides=(2,), num_res_units=0, log_every=1, max_backgrounds=1, threads=1)
    base.update(kw)
    return DetectionTrainConfig(**base)


def _smoke(tmp_path: Path, data: list[DetectionVolume], lidc_root: Path | None) -> None:
    logs: list[str] = []
    cfg = _tiny_cfg()
    w = train_detector(cfg, lidc_root or Path("/nonexistent"), tmp_path, log=logs.append, data=data)
    ck = torch.load(tmp_path / "detector_ckpt.pt", weights_only=False)
    assert ck["step"] == 2 and ck["epoch"] == 1
    assert w.exists() and json.loads((tmp_path / "detector.json").read_text())["completed"] is True
    # resume: one more epoch continues from step 2
    logs.clear()
    train_detector(_tiny_cfg(epochs=2), lidc_root or Path("/nonexistent"), tmp_path, log=logs.append, data=data)
    assert any("resumed" in m and "step 2" in m for m in logs), logs
    ck = torch.load(tmp_path / "detector_ckpt.pt", weights_only=False)
    assert ck["step"] == 4 and ck["epoch"] == 2
    model = load_detector(w)
    sd = torch.load(w, weights_only=True)
    assert all(v.dtype == torch.float32 for v in sd.values() if v.is_floating_point())
    v = data[0]
    dets = detect(model, v.image, v.lung, threshold=0.0, normalized=True, max_peaks=5)
    assert isinstance(dets, Detections) and dets.seconds > 0 and 0 < len(dets) <= 5
    for z, y, x, s, d in dets:
        assert all(0 <= c < n for c, n in zip((z, y, x), v.image.shape, strict=True))
        assert 0.0 <= s <= 1.0 and d > 0
    # HU input without a mask works too
    hu = v.image.astype(np.float32)[:32, :32, :40] * 1400.0 - 1000.0
    assert isinstance(detect(model, hu, None, threshold=0.0, max_peaks=3), list)


def test_affine_patch_maps_centres_and_sizes() -> None:
    # a 12 mm ball off the patch centre: after any rotation/tilt/scale, the ball's intensity centroid
    # in the resampled patch is the mapped centre, and its volume matches the mapped diameter
    shape = (80, 90, 100)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c = np.array([37.3, 41.6, 52.2])
    img = ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= (12.0 / SP / 2) ** 2).astype(np.float16)
    v = DetectionVolume(image=img, lung=np.ones(shape, bool), centres=c[None], diameters_mm=np.array([12.0]),
                        real=[None], to_source=np.eye(4), background="ball")
    rng = np.random.default_rng(3)
    scales = []
    for _ in range(6):
        patch, centres, diams = _affine_patch(v, np.array([10, 12, 20]), 64, rng)
        w = patch / patch.sum()
        centroid = np.indices(patch.shape).reshape(3, -1) @ w.ravel()
        np.testing.assert_allclose(centroid, centres[0], atol=0.1)
        vol_mm3 = (patch > 0.5).sum() * SP**3
        assert vol_mm3 == pytest.approx(np.pi / 6 * diams[0] ** 3, rel=0.06)
        scales.append(12.0 / diams[0])
    assert min(scales) >= 0.85 and max(scales) <= 1.2 and max(scales) - min(scales) > 0.05


def test_sample_patch_augmentations() -> None:
    v = _synthetic_volume(np.random.default_rng(0))
    pos = [(0, 0), (0, 1)]
    flips = _tiny_cfg(positive_fraction=1.0)
    affine = _tiny_cfg(positive_fraction=1.0, augmentation="affine", affine_p=1.0)
    for cfg in (flips, affine):
        rng = np.random.default_rng(5)
        for _ in range(8):
            img, heat, logd, mask = _sample_patch([v], pos, cfg, rng)
            assert img.shape == heat.shape == (32, 32, 32) and img.dtype == np.float32
            # every patch holds a nodule peak of exactly 1 with its log-diameter, whatever the resampling
            assert mask.any() and np.all(heat[mask] == 1.0)
            assert np.all(np.abs(np.exp(logd[mask]) - 9.0) <= 9.0 * 0.2)
    # "flips" draws do not depend on the affine option's existence; "affine" patches differ
    a = _sample_patch([v], pos, flips, np.random.default_rng(9))[0]
    b = _sample_patch([v], pos, affine, np.random.default_rng(9))[0]
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="augmentation"):
        _tiny_cfg(augmentation="elastic")


def test_nonsolid_weight_draws() -> None:
    # two positives in one volume: a solid-looking one (0 HU at its centre) and a ground-glass one (-650 HU)
    shape = (20, 20, 40)
    img = np.full(shape, (-850.0 + 1000.0) / 1400.0, np.float32)
    img[9:12, 9:12, 9:12] = (0.0 + 1000.0) / 1400.0
    img[9:12, 9:12, 29:32] = (-650.0 + 1000.0) / 1400.0
    v = DetectionVolume(image=img.astype(np.float16), lung=np.ones(shape, bool),
                        centres=np.array([[10.0, 10.0, 10.0], [10.2, 9.8, 30.4]]), diameters_mm=np.array([6.0, 6.0]),
                        real=[None, None], to_source=np.eye(4), background="two")
    np.testing.assert_allclose(v.centre_hu, [0.0, -650.0], atol=1.0)
    pos = [(0, 0), (0, 1)]

    def share_ggo(cfg: DetectionTrainConfig, n: int = 4000) -> float:
        rng = np.random.default_rng(1)
        return float(np.mean([draw_positive([v], pos, cfg, rng)[1] for _ in range(n)]))

    assert share_ggo(_tiny_cfg()) == pytest.approx(0.5, abs=0.03)
    assert share_ggo(_tiny_cfg(nonsolid_weight=3.0)) == pytest.approx(0.75, abs=0.03)
    # weight 1 keeps the uniform draw of the earlier detectors: the same random stream
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    assert [draw_positive([v], pos, _tiny_cfg(), a) for _ in range(20)] == [pos[int(b.integers(2))] for _ in range(20)]
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="nonsolid_weight"):
            _tiny_cfg(nonsolid_weight=bad)


@pytest.mark.slow
def test_smoke_synthetic(tmp_path: Path) -> None:
    _smoke(tmp_path, [_synthetic_volume(np.random.default_rng(0))], None)


@pytest.mark.slow
def test_smoke_real_data(tmp_path: Path, lidc_root: Path) -> None:
    """Real background + library nodules: 1 copy of LIDC-IDRI-0001 with 2 train nodules, then the smoke run."""
    torch.set_num_threads(1)
    cfg = _tiny_cfg()
    data = make_detection_data("train", lidc_root, cfg, np.random.default_rng(0))
    assert len(data) == 1
    v = data[0]
    assert v.background == "LIDC-IDRI-0001" and v.image.dtype == np.float16 and v.lung.shape == v.image.shape
    assert len(v.centres) == len(v.diameters_mm) == len(v.real) >= 3  # 2 inserted + the real one
    assert sum(r is not None for r in v.real) >= 1
    for c in v.centres:
        idx = tuple(int(round(a)) for a in c)
        assert all(0 <= i < n for i, n in zip(idx, v.image.shape, strict=True))
        # a nodule centre is dense tissue or at least not air (3^3 neighbourhood of the rounded
        # continuous centre: a small ground-glass nodule's centre voxel is partial-volumed)
        nb = v.image[tuple(slice(max(i - 1, 0), i + 2) for i in idx)]
        assert float(nb.max()) > 0.2
    _smoke(tmp_path, data, lidc_root)


def test_never_trains_on_test(tmp_path: Path) -> None:
    with pytest.raises(DataLeakageError):
        train_detector(_tiny_cfg(split="test"), Path("/nonexistent"), tmp_path)


@pytest.mark.slow
def test_insertion_pool_refresh_and_resume(tmp_path: Path, lidc_root: Path) -> None:
    """Refreshed insertion copies: the right slots change, a pool rebuilt for epoch N equals one
    advanced epoch by epoch, and an interrupted training run resumes to identical weights."""
    torch.set_num_threads(1)
    cfg = _tiny_cfg(n_volumes=2, nodules_per_volume=2, insertion_refresh=1)
    pool = InsertionPool("train", lidc_root, cfg, refresh=1)
    assert pool.n_slots == 2 and [v.background for v in pool.volumes] == ["LIDC-IDRI-0001"] * 2
    before = [v.centres.copy() for v in pool.volumes]
    pool.at_epoch(1)  # epoch 1 done: slot 0 rebuilt, slot 1 kept (the same object)
    assert pool.generation == [1, 0]
    assert not np.array_equal(pool.volumes[0].centres, before[0])
    assert np.array_equal(pool.volumes[1].centres, before[1])
    pool.at_epoch(3)
    assert pool.generation == [2, 1] and pool.nodules_seen(3) == (3 + 2) * 2
    fresh = InsertionPool("train", lidc_root, cfg, refresh=1, epochs_done=3)
    assert fresh.generation == pool.generation
    for a, b in zip(fresh.volumes, pool.volumes, strict=True):
        assert np.array_equal(a.centres, b.centres) and np.array_equal(a.image, b.image)
        assert a.lung is not None and np.array_equal(a.lung, b.lung)
    with pytest.raises(ValueError):
        InsertionPool("train", lidc_root, cfg, refresh=-1)

    # training, one step per epoch: 3 epochs straight vs stopped after epoch 1 (time budget 0) and
    # resumed (the same cosine schedule; refreshes at both epoch boundaries, one of them on resume)
    full = _tiny_cfg(n_volumes=2, epochs=3, steps_per_epoch=1, insertion_refresh=1)
    w1 = train_detector(full, lidc_root, tmp_path / "a", log=lambda m: None)
    train_detector(_tiny_cfg(n_volumes=2, epochs=3, steps_per_epoch=1, insertion_refresh=1, max_minutes=0.0),
                   lidc_root, tmp_path / "b", log=lambda m: None)
    assert torch.load(tmp_path / "b" / "detector_ckpt.pt", weights_only=False)["step"] == 1
    w2 = train_detector(full, lidc_root, tmp_path / "b", log=lambda m: None)
    sa, sb = torch.load(w1, weights_only=True), torch.load(w2, weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    meta = json.loads((tmp_path / "a" / "detector.json").read_text())
    assert meta["training_data"]["refresh_per_epoch"] == 1 and meta["training_data"]["nodule_draws"] == (3 + 2) * 2


def test_held_out_background_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    """``backgrounds`` restricts a split's insertion backgrounds (a detector trained on 0001 can be
    validated on 0002, a background it never saw); anything outside the split's list, e.g. the test
    background for training, is refused at construction."""
    from lungfuse.app.cli.lab import _backgrounds_arg
    from lungfuse.pipelines.lab import detection_data as detection
    from lungfuse.pipelines.lab.fpr_train import FPRConfig

    monkeypatch.setattr(detection, "prepare_background", lambda path, pid: pid)
    cfg = detection.DetectionTrainConfig(backgrounds=["LIDC-IDRI-0001"])
    assert cfg.backgrounds == ("LIDC-IDRI-0001",)
    assert detection._backgrounds("train", Path("/x"), None, cfg.backgrounds) == ["LIDC-IDRI-0001"]
    assert detection._backgrounds("val", Path("/x"), None, ("LIDC-IDRI-0002",)) == ["LIDC-IDRI-0002"]
    assert detection._backgrounds("train", Path("/x"), None) == ["LIDC-IDRI-0001", "LIDC-IDRI-0002"]
    assert detection.DetectionTrainConfig(split="val", backgrounds=("LIDC-IDRI-0002",)).backgrounds == ("LIDC-IDRI-0002",)
    for bad in (("LIDC-IDRI-0003",), (), ("LIDC-IDRI-0001", "LIDC-IDRI-0009")):
        with pytest.raises(ValueError, match="backgrounds"):
            detection.DetectionTrainConfig(backgrounds=bad)
    assert FPRConfig(backgrounds=("LIDC-IDRI-0001",)).backgrounds == ("LIDC-IDRI-0001",)
    ns = argparse.Namespace(backgrounds=["0001", "LIDC-IDRI-0002"])
    assert _backgrounds_arg(ns) == ("LIDC-IDRI-0001", "LIDC-IDRI-0002")
    assert _backgrounds_arg(argparse.Namespace(backgrounds=None)) is None
    with pytest.raises(ValueError, match="--lidc-root"):
        _backgrounds_arg(argparse.Namespace(backgrounds=["0001"], lidc_root="/data/LIDC"))
    assert _backgrounds_arg(argparse.Namespace(backgrounds=None, lidc_root="/data/LIDC")) is None
