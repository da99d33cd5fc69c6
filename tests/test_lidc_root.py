"""``lungfuse train --lidc-root``: the three local LIDC cases as a tiny NBIA-layout download.

The root is built in a temporary folder from symlinks: LIDC-IDRI-0001 and 0002 directly
under ROOT, 0003 under the ``manifest-*/LIDC-IDRI/`` wrapper NBIA's downloader writes,
each CT in ``<study UID>/<series UID-ish>/`` folders; 0001's annotations (XML + SEG)
sit in a folder of their own, and a junk ``.dcm`` and a truncated ``.dcm`` lie beside the
CT slices. Research software, NOT for diagnostic use.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lungfuse.pipelines import ingest, training_data
from lungfuse.pipelines.lidc import patient_scans, scan_nodules
from lungfuse.pipelines.lidc_root import discover

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


def test_train_examples_are_the_real_nodules_of_train_patients(
        tiny_root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lungfuse.pipelines.fusion_train import load_or_build

    read: list[str] = []
    scan, load = ingest.scan_series, training_data.load_ct
    monkeypatch.setattr(ingest, "scan_series", lambda path: (read.append(str(path)), scan(path))[1])
    monkeypatch.setattr(training_data, "load_ct", lambda path, **kw: (read.append(str(path)), load(path, **kw))[1])
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
    from lungfuse.pipelines.resources import models_dir

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
