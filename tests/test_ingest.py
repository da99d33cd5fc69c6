"""CT ingestion on the real LIDC cases, against SimpleITK, and on corrupted copies."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from lungfuse.pipelines.core.errors import IngestError
from lungfuse.pipelines.core.geometry import lps_to_voxel, sitk_direction_to_zyx, voxel_to_lps
from lungfuse.pipelines.io.dicom import load_ct, load_ct_and_series
from lungfuse.pipelines.io.dicom_series import list_series
from lungfuse.pipelines.io.noise import _box_mean

EXPECTED = {
    # patient: (slices, z spacing mm, in-plane spacing mm)
    "LIDC-IDRI-0001": (133, 2.5, 0.703125),
    "LIDC-IDRI-0002": (261, 1.25, 0.681641),
    "LIDC-IDRI-0003": (140, 2.5, 0.820312),
}


def codes(vol) -> set[str]:
    return {w.code for w in vol.warnings}


# ---------------------------------------------------------------------------
# Real cases
# ---------------------------------------------------------------------------
@pytest.mark.lidc
@pytest.mark.parametrize("patient", sorted(EXPECTED))
def test_real_case_geometry(lidc_root: Path, patient: str) -> None:
    n, dz, dxy = EXPECTED[patient]
    vol = load_ct(lidc_root / patient)
    assert vol.n_slices == n
    assert vol.shape == (n, 512, 512)
    assert vol.spacing[0] == pytest.approx(dz, abs=1e-3)
    assert vol.spacing[1] == pytest.approx(dxy, abs=1e-5)
    assert vol.spacing[2] == pytest.approx(dxy, abs=1e-5)
    assert vol.orientation == "SPL"  # feet->head stacking, rows A->P, columns R->L
    assert vol.hu.dtype == np.int16
    assert vol.patient_id == patient
    assert len(set(vol.sop_instance_uids)) == n
    assert not {"gap", "duplicate_position", "gantry_tilt", "oblique"} & codes(vol)
    # Slices are sorted along +z (superior) by position, not by file name.
    z = vol.slice_positions[:, 2]
    assert np.all(np.diff(z) > 0)
    # Air outside the body, inside the reconstruction circle: the top-centre strip
    # in front of the chest wall.
    mid = vol.hu[n // 2]
    air = mid[60:90, 236:276]
    assert -1050 < float(np.median(air)) < -950
    assert vol.quality.noise_sigma_hu is not None and 3 < vol.quality.noise_sigma_hu < 60


@pytest.mark.lidc
@pytest.mark.parametrize("patient", sorted(EXPECTED))
def test_matches_simpleitk(lidc_root: Path, patient: str) -> None:
    """Geometry and voxel values against SimpleITK's reader (an independent implementation)."""
    sitk = pytest.importorskip("SimpleITK")
    vol = load_ct(lidc_root / patient)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(lidc_root / patient / "ct")))
    img = reader.Execute()
    ref = sitk.GetArrayFromImage(img)  # z-y-x, HU
    assert ref.shape == vol.shape
    np.testing.assert_allclose(img.GetOrigin(), vol.origin, atol=1e-3)
    np.testing.assert_allclose(img.GetSpacing()[::-1], vol.spacing, atol=1e-3)
    np.testing.assert_allclose(sitk_direction_to_zyx(img.GetDirection()), vol.direction, atol=1e-6)
    # LungFuse maps PixelPaddingValue (outside the reconstruction circle) to air,
    # -1024 HU; ITK keeps it.  Everywhere else the values must be identical.
    first = pydicom.dcmread(next((lidc_root / patient / "ct").glob("*.dcm")), stop_before_pixels=True)
    ref = ref.astype(np.int32)
    if "PixelPaddingValue" in first:
        pad = np.array(first.PixelPaddingValue).astype(np.int16 if first.PixelRepresentation else np.uint16)
        pad_hu = int(pad) * int(first.RescaleSlope) + int(first.RescaleIntercept)
        padded = ref == pad_hu
        assert np.all(vol.hu[padded] == -1024)
        ref[padded] = -1024
    np.testing.assert_array_equal(ref, vol.hu.astype(np.int32))
    # Voxel -> LPS agrees with ITK's TransformIndexToPhysicalPoint at a few voxels.
    for k, j, i in [(0, 0, 0), (vol.n_slices - 1, 100, 400), (10, 511, 3)]:
        ours = voxel_to_lps(vol.affine, [k, j, i])
        theirs = img.TransformIndexToPhysicalPoint((i, j, k))
        np.testing.assert_allclose(ours, theirs, atol=1e-3)
        np.testing.assert_allclose(lps_to_voxel(vol.affine, theirs), [k, j, i], atol=1e-6)


# ---------------------------------------------------------------------------
# Corrupted copies of a real series
# ---------------------------------------------------------------------------
N_SUB = 24


@pytest.fixture(scope="module")
def subset(lidc_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 consecutive real slices of LIDC-IDRI-0001 (in geometric order), copied once."""
    src = lidc_root / "LIDC-IDRI-0001" / "ct"
    files = sorted(src.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    out = tmp_path_factory.mktemp("subset")
    for f in files[50 : 50 + N_SUB]:
        shutil.copy(f, out / f.name)
    return out


@pytest.fixture
def case(subset: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "case"
    shutil.copytree(subset, dst)
    return dst


def by_z(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm"), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))


@pytest.fixture(scope="module")
def reference(subset: Path):
    return load_ct(subset)


def test_subset_clean(reference) -> None:
    assert reference.n_slices == N_SUB
    assert not reference.warnings


def test_shuffled_names_and_nested_folders(case: Path, reference) -> None:
    files = list(case.glob("*.dcm"))
    random.Random(3).shuffle(files)
    names = [f"x{i}" for i in range(len(files))]  # no extension, random order
    for i, (f, name) in enumerate(zip(files, names, strict=True)):
        sub = case / f"d{i % 3}" / "deeper"
        sub.mkdir(parents=True, exist_ok=True)
        f.rename(sub / name)
    vol = load_ct(case)
    np.testing.assert_array_equal(vol.hu, reference.hu)
    assert vol.sop_instance_uids == reference.sop_instance_uids
    assert not vol.warnings


def test_removed_slice_reports_gap(case: Path, reference) -> None:
    victim = by_z(case)[10]
    victim.unlink()
    vol = load_ct(case)
    assert vol.n_slices == N_SUB - 1
    assert "gap" in codes(vol)
    assert vol.quality.gaps and vol.quality.gaps[0][0] == 9
    assert vol.quality.gaps[0][1] == pytest.approx(2.5, abs=0.01)
    assert not vol.quality.uniform
    # Resampling fills the hole on a regular grid with the right number of slices.
    res = vol.resample_uniform()
    assert res.n_slices == N_SUB
    assert res.quality.uniform
    np.testing.assert_allclose(res.hu[0], reference.hu[0])
    np.testing.assert_allclose(res.hu[-1], reference.hu[-1])


def test_duplicated_slice(case: Path, reference) -> None:
    f = by_z(case)[5]
    shutil.copy(f, case / "copy_of_slice.dcm")
    vol = load_ct(case)
    assert vol.n_slices == N_SUB
    assert "duplicate_position" in codes(vol)
    np.testing.assert_array_equal(vol.hu, reference.hu)


def _write_variant(src: Path, dst: Path, **changes) -> pydicom.Dataset:
    ds = pydicom.dcmread(src)
    for k, v in changes.items():
        setattr(ds, k, v)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(dst)
    return ds


def test_scout_images_excluded(case: Path, reference) -> None:
    src = by_z(case)[0]
    # A labelled localizer in the same series, coronal, and an unlabelled single
    # slice of another geometry in its own series.
    _write_variant(src, case / "scout1.dcm", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
                   ImageOrientationPatient=[1, 0, 0, 0, 0, -1], SeriesInstanceUID=generate_uid())
    _write_variant(src, case / "scout2.dcm", ImageOrientationPatient=[1, 0, 0, 0, 0, -1],
                   SeriesInstanceUID=generate_uid())
    _write_variant(src, case / "scout3.dcm", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
                   ImageOrientationPatient=[0, 1, 0, 0, 0, -1])  # same series UID, sagittal
    vol = load_ct(case)
    np.testing.assert_array_equal(vol.hu, reference.hu)
    assert "scout_excluded" in codes(vol)


def test_second_series_in_folder(case: Path, reference) -> None:
    other = case / "other"
    other.mkdir()
    uid = generate_uid()
    for f in by_z(case)[:8]:
        _write_variant(f, other / f.name, SeriesInstanceUID=uid, SeriesDescription="thin recon")
    vol = load_ct(case)
    np.testing.assert_array_equal(vol.hu, reference.hu)
    assert "other_series" in codes(vol)
    series = list_series(case)
    assert {s.series_uid for s in series} == {uid, reference.series_instance_uid}
    picked = load_ct(case, series_uid=uid)
    assert picked.n_slices == 8 and picked.series_instance_uid == uid
    with pytest.raises(IngestError, match="not found"):
        load_ct(case, series_uid="1.2.3.4")
    # one header pass for both (what `lungfuse inspect` shows): the same volume, the same list
    for choice in (None, uid):
        vol2, found = load_ct_and_series(case, series_uid=choice)
        np.testing.assert_array_equal(vol2.hu, load_ct(case, series_uid=choice).hu)
        assert [s.to_dict() for s in found] == [s.to_dict() for s in series]
        assert [s.files for s in found] == [s.files for s in series]
    assert load_ct_and_series(by_z(case)[0])[1] == []  # a file: no folder listing


def test_box_mean_matches_a_direct_window_sum() -> None:
    """The noise estimate's summed-area box mean equals the plain 7 x 7 window mean (edge-replicated)."""
    rng = np.random.default_rng(5)
    for a in (rng.integers(-1024, 3000, (40, 37)).astype(np.float32), rng.normal(0, 30, (23, 31)).astype(np.float32)):
        q = np.pad(a.astype(np.float64), 3, mode="edge")
        direct = np.zeros(a.shape, np.float64)
        for dy in range(7):
            for dx in range(7):
                direct += q[dy : dy + a.shape[0], dx : dx + a.shape[1]]
        got = _box_mean(a, 7)
        assert got.dtype == np.float32 and got.shape == a.shape
        np.testing.assert_allclose(got, (direct / 49).astype(np.float32), rtol=1e-6, atol=1e-4)
        if a[0, 0] == round(float(a[0, 0])):  # integer HU: every sum is exact, so equal to the bit
            np.testing.assert_array_equal(got, (direct / 49).astype(np.float32))


def test_truncated_file_skipped_with_warning(case: Path) -> None:
    victim = by_z(case)[7]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    vol = load_ct(case)
    assert vol.n_slices == N_SUB - 1
    skipped = [w for w in vol.warnings if w.code == "skipped_file"]
    assert skipped and str(victim) in skipped[0].message
    assert "gap" in codes(vol)


def test_garbage_file_skipped(case: Path, reference) -> None:
    (case / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 50)
    (case / "notes.txt").write_text("not an image")
    vol = load_ct(case)
    np.testing.assert_array_equal(vol.hu, reference.hu)
    assert any("broken.dcm" in w.message for w in vol.warnings if w.code == "skipped_file")


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=["rle", "jpegls", "j2k"])
def test_compressed_transfer_syntaxes(case: Path, reference, syntax) -> None:
    for f in case.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.compress(syntax)
        ds.save_as(f)
    assert pydicom.dcmread(next(case.glob("*.dcm"))).file_meta.TransferSyntaxUID == syntax
    vol = load_ct(case)
    np.testing.assert_array_equal(vol.hu, reference.hu)
    assert vol.meta["transfer_syntax"] == str(syntax)


def test_mixed_size_slice(case: Path, reference) -> None:
    f = by_z(case)[3]
    ds = pydicom.dcmread(f)
    small = ds.pixel_array[::2, ::2].copy()
    ds.Rows, ds.Columns = small.shape
    ds.PixelData = small.tobytes()
    ds.save_as(f)
    vol = load_ct(case)
    assert vol.n_slices == N_SUB - 1
    assert "mixed_size" in codes(vol)
    assert vol.shape[1:] == (512, 512)


def test_uneven_spacing(case: Path) -> None:
    f = by_z(case)[12]
    ds = pydicom.dcmread(f)
    ipp = [float(v) for v in ds.ImagePositionPatient]
    ipp[2] += 0.6
    ds.ImagePositionPatient = ipp
    ds.save_as(f)
    vol = load_ct(case)
    assert "uneven_spacing" in codes(vol)
    assert not vol.quality.uniform


def test_gantry_tilt(case: Path) -> None:
    angle = np.radians(15)
    files = by_z(case)
    z0 = float(pydicom.dcmread(files[0]).ImagePositionPatient[2])
    for f in files:
        ds = pydicom.dcmread(f)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + (z - z0) * np.tan(angle), z]
        ds.GantryDetectorTilt = 15
        ds.save_as(f)
    vol = load_ct(case)
    assert "gantry_tilt" in codes(vol)
    assert vol.quality.tilt_deg == pytest.approx(15, abs=0.1)
    # The affine follows the real slice positions (sheared stack).
    last = voxel_to_lps(vol.affine, [vol.n_slices - 1, 0, 0])
    np.testing.assert_allclose(last, vol.slice_positions[-1], atol=1e-3)


def test_oblique_orientation(case: Path) -> None:
    a = np.radians(10)
    row = [np.cos(a), np.sin(a), 0.0]
    col = [-np.sin(a), np.cos(a), 0.0]
    for f in case.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = row + col
        ds.save_as(f)
    vol = load_ct(case)
    assert "oblique" in codes(vol)
    assert vol.quality.oblique


def test_non_ct_modality(case: Path, tmp_path: Path) -> None:
    mr = tmp_path / "mr"
    mr.mkdir()
    for f in by_z(case)[:5]:
        _write_variant(f, mr / f.name, Modality="MR")
    with pytest.raises(IngestError, match="MR"):
        load_ct(mr)
    # An MR file lying among CT files is ignored, not fatal.
    shutil.copy(next(mr.glob("*.dcm")), case / "stray_mr.dcm")
    assert load_ct(case).n_slices == N_SUB


def test_empty_folder_and_no_images(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IngestError, match="empty folder"):
        load_ct(empty)
    txt = tmp_path / "txt"
    txt.mkdir()
    (txt / "report.txt").write_text("FINDINGS: none")
    with pytest.raises(IngestError, match="no DICOM image data"):
        load_ct(txt)
    with pytest.raises(FileNotFoundError):
        load_ct(tmp_path / "missing")


def test_too_few_slices(case: Path, tmp_path: Path) -> None:
    two = tmp_path / "two"
    two.mkdir()
    for f in by_z(case)[:2]:
        shutil.copy(f, two / f.name)
    with pytest.raises(IngestError, match="too few slices"):
        load_ct(two)


def test_no_pixel_data(case: Path, tmp_path: Path) -> None:
    d = tmp_path / "nopix"
    d.mkdir()
    for f in by_z(case)[:4]:
        ds = pydicom.dcmread(f)
        del ds.PixelData
        ds.save_as(d / f.name)
    with pytest.raises(IngestError, match="pixel"):
        load_ct(d)


def test_single_file_path_loads_its_series(case: Path, reference) -> None:
    vol = load_ct(by_z(case)[0])
    assert vol.n_slices == N_SUB


def test_multiframe_enhanced_ct(case: Path, reference, tmp_path: Path) -> None:
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    dss = [pydicom.dcmread(f) for f in case.glob("*.dcm")]
    mf = LegacyConvertedEnhancedCTImage(dss, series_instance_uid=generate_uid(), series_number=99,
                                        sop_instance_uid=generate_uid(), instance_number=1)
    path = tmp_path / "multiframe.dcm"
    mf.save_as(path)
    vol = load_ct(path)
    assert vol.n_slices == N_SUB
    np.testing.assert_array_equal(vol.hu, reference.hu)
    np.testing.assert_allclose(vol.spacing, reference.spacing, atol=1e-4)
    np.testing.assert_allclose(vol.origin, reference.origin, atol=1e-3)
    assert vol.frame_numbers is not None and len(vol.frame_numbers) == N_SUB


def test_nifti_roundtrip(reference, tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    from lungfuse.pipelines.core.geometry import ras_affine_to_lps_zyx

    # Write our volume as NIfTI (x-y-z array, RAS affine) and read it back.
    aff_zyx = reference.affine
    perm = np.zeros((4, 4))
    perm[0, 2] = perm[1, 1] = perm[2, 0] = perm[3, 3] = 1
    aff_ijk_lps = aff_zyx @ perm
    aff_ras = np.diag([-1, -1, 1, 1]) @ aff_ijk_lps
    np.testing.assert_allclose(ras_affine_to_lps_zyx(aff_ras), aff_zyx)
    img = nib.Nifti1Image(np.transpose(reference.hu, (2, 1, 0)), aff_ras)
    path = tmp_path / "ct.nii.gz"
    nib.save(img, path)
    vol = load_ct(path)
    np.testing.assert_array_equal(vol.hu, reference.hu)
    np.testing.assert_allclose(vol.affine, reference.affine, atol=1e-4)
    assert vol.orientation == reference.orientation


def test_memory_stays_int16(reference) -> None:
    """No float64 volume is made: the HU array is int16 for integer rescale."""
    assert reference.hu.dtype == np.int16
    assert reference.hu.nbytes == reference.n_slices * 512 * 512 * 2


@pytest.mark.lidc
def test_fast_path_needs_no_pydicom(lidc_root: Path) -> None:
    """Uncompressed series load through the fast header reader without importing pydicom."""
    import subprocess
    import sys

    code = ("import sys; from lungfuse.pipelines.io.dicom import load_ct; "
            f"v = load_ct({str(lidc_root / 'LIDC-IDRI-0001')!r}); "
            "print(v.n_slices, 'pydicom' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["133", "False"]


def test_pydicom_fallback_reads_the_same_headers(case: Path, reference, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files the fast header reader declines go through pydicom (_HeaderView): the same volume and facts."""
    from lungfuse.pipelines.io import dicom_series
    from lungfuse.pipelines.io.dicom_values import FastHeaderUnsupported

    def decline(path: object, *args: object, **kwargs: object) -> None:
        raise FastHeaderUnsupported("declined for the test")

    views: list[object] = []

    class CountedView(dicom_series._HeaderView):
        def __init__(self, ds: pydicom.Dataset) -> None:
            views.append(ds)
            super().__init__(ds)

    monkeypatch.setattr(dicom_series, "read_header_fast", decline)
    monkeypatch.setattr(dicom_series, "_HeaderView", CountedView)
    vol = load_ct(case)
    assert len(views) == N_SUB  # every header went through pydicom
    np.testing.assert_array_equal(vol.hu, reference.hu)
    assert vol.sop_instance_uids == reference.sop_instance_uids
    got, want = vol.summary(), reference.summary()
    got.pop("source"), want.pop("source")
    assert got == want


# ---------------------------------------------------------------------------
# Issue 21, section 6: ACR-NEMA style files, and every skipped file named
# ---------------------------------------------------------------------------
def _to_acr_nema(src: Path, dst: Path, explicit: bool = False) -> None:
    """Rewrite a Part 10 file as a bare dataset: no 128-byte preamble, no 'DICM', no file meta."""
    ds = pydicom.dcmread(src)
    del ds.file_meta
    ds.preamble = None
    ds.save_as(dst, enforce_file_format=False, implicit_vr=not explicit, little_endian=True)


def _same_volume(vol, ref) -> None:
    np.testing.assert_array_equal(vol.hu, ref.hu)
    assert vol.spacing == pytest.approx(ref.spacing, abs=1e-9)
    np.testing.assert_allclose(vol.origin, ref.origin, atol=1e-9)
    np.testing.assert_allclose(vol.direction, ref.direction, atol=1e-12)
    assert vol.sop_instance_uids == ref.sop_instance_uids
    assert vol.series_instance_uid == ref.series_instance_uid


@pytest.fixture(scope="module")
def demo_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo CT series (32 slices of 64 x 64, no nodules): no LIDC data needed."""
    from lungfuse.pipelines.demo.case import make_demo_case

    return make_demo_case(tmp_path_factory.mktemp("demo"), seed=3, shape=(32, 64, 64), spacing=(10.0, 5.0, 5.0),
                          n_nodules=0).ct_dir


@pytest.fixture(scope="module")
def demo_ref(demo_ct: Path):
    vol = load_ct(demo_ct)
    assert not vol.warnings
    return vol


@pytest.fixture
def demo_copy(demo_ct: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ct"
    shutil.copytree(demo_ct, dst)
    return dst


def skipped(vol) -> dict[str, str]:
    """file name -> message of each skipped_file warning (which names exactly one file)."""
    out = {}
    for w in vol.warnings:
        if w.code == "skipped_file":
            assert len(w.files) == 1 and w.files[0] in w.message, w
            out[Path(w.files[0]).name] = w.message
    return out


@pytest.mark.parametrize("explicit", [False, True], ids=["implicit", "explicit"])
def test_acr_nema_files_load_as_the_series(demo_ct: Path, demo_ref, tmp_path: Path, explicit: bool) -> None:
    """No preamble, no 'DICM', no file meta: read (by the fast reader) as the series they are, whatever their
    names; the text, image and DICOMDIR files beside them are still not taken for DICOM."""
    from lungfuse.pipelines.io.dicom_header import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, read_header_fast

    d = tmp_path / "acr"
    d.mkdir()
    for i, f in enumerate(sorted(demo_ct.glob("*.dcm"))):
        # archive-style names: a UID-like name (numeric suffix), no suffix, .dcm
        name = [f"1.3.6.1.4.1.9590.{i}", f"IMG{i:05d}", f"{f.stem}.dcm"][i % 3]
        _to_acr_nema(f, d / name, explicit)
    first = next(d.glob("IMG*")).read_bytes()
    assert first[:2] == b"\x08\x00" and b"DICM" not in first[:256]
    syntax = EXPLICIT_VR_LITTLE_ENDIAN if explicit else IMPLICIT_VR_LITTLE_ENDIAN
    assert {read_header_fast(p).transfer_syntax for p in d.iterdir()} == {syntax}
    (d / "notes.txt").write_text("(0008,0060) CT series, exported from the archive\n")
    (d / "key.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (d / "README").write_text("not an image\n")
    shutil.copy(next(demo_ct.glob("*.dcm")), d / "DICOMDIR")  # an index: never read as an image
    vol = load_ct(d)
    _same_volume(vol, demo_ref)
    assert not vol.warnings, [w.message for w in vol.warnings]
    assert vol.meta["transfer_syntax"] == syntax


@pytest.mark.lidc
def test_acr_nema_real_case(lidc_root: Path, tmp_path: Path) -> None:
    src = lidc_root / "LIDC-IDRI-0001" / "ct"
    d = tmp_path / "acr"
    d.mkdir()
    for f in src.glob("*.dcm"):
        _to_acr_nema(f, d / f.stem)  # and without the .dcm suffix
    ref = load_ct(lidc_root / "LIDC-IDRI-0001")
    vol = load_ct(d)
    assert vol.n_slices == EXPECTED["LIDC-IDRI-0001"][0]
    _same_volume(vol, ref)
    assert [w.code for w in vol.warnings] == [w.code for w in ref.warnings]


def test_zero_length_files_are_named(demo_copy: Path, demo_ref) -> None:
    files = sorted(demo_copy.glob("*.dcm"))
    files[10].write_bytes(b"")  # a slice emptied
    (demo_copy / "IM9999.dcm").write_bytes(b"")  # an empty file lying beside the series
    (demo_copy / "IM9998").write_bytes(b"")
    (demo_copy / "empty.txt").write_bytes(b"")  # not DICOM by its name: ignored
    vol = load_ct(demo_copy)
    assert vol.n_slices == demo_ref.n_slices - 1
    got = skipped(vol)
    assert sorted(got) == sorted([files[10].name, "IM9999.dcm", "IM9998"])
    assert all("empty file (0 bytes)" in m for m in got.values())
    assert "gap" in codes(vol)


def _elements(raw: bytes) -> list[tuple[int, int, str]]:
    """(offset, tag, VR) of the top-level explicit VR LE elements of a Part 10 file, up to Pixel Data."""
    import struct

    pos = 132 + 12 + struct.unpack("<I", raw[140:144])[0]
    out = []
    while True:
        g, e = struct.unpack("<HH", raw[pos : pos + 4])
        vr = raw[pos + 4 : pos + 6].decode()
        out.append((pos, g << 16 | e, vr))
        if (g, e) == (0x7FE0, 0x0010):
            return out
        if vr in ("OB", "OW", "SQ", "UN", "UT", "UC", "UR", "OD", "OF", "OL", "OV", "SV", "UV"):
            pos += 12 + struct.unpack("<I", raw[pos + 8 : pos + 12])[0]
        else:
            pos += 8 + struct.unpack("<H", raw[pos + 6 : pos + 8])[0]


@pytest.mark.parametrize("tag", [0x00080060, 0x00200032, 0x00281052], ids=["Modality", "ImagePosition", "Intercept"])
def test_corrupt_header_is_named(demo_copy: Path, demo_ref, tag: int) -> None:
    """A VR damaged so that the element's length swallows the rest of the header (and the pixels)."""
    victim = sorted(demo_copy.glob("*.dcm"))[7]
    raw = bytearray(victim.read_bytes())
    pos = next(p for p, t, _ in _elements(bytes(raw)) if t == tag)
    raw[pos + 4 : pos + 6] = b"UN"  # a long VR: the next 4 bytes are read as a 32-bit length
    victim.write_bytes(bytes(raw))
    vol = load_ct(demo_copy)
    assert vol.n_slices == demo_ref.n_slices - 1
    msg = skipped(vol)[victim.name]
    assert f"({tag >> 16:04X},{tag & 0xFFFF:04X}) UN" in msg and "past the end of the file" in msg, msg


def test_malformed_header_is_named(demo_copy: Path, demo_ref) -> None:
    """A length off by 2: the walk loses step (the fast reader refuses, pydicom misreads): still named."""
    import struct

    victim = sorted(demo_copy.glob("*.dcm"))[3]
    raw = bytearray(victim.read_bytes())
    pos = next(p for p, t, _ in _elements(bytes(raw)) if t == 0x00080016)  # SOPClassUID
    raw[pos + 6 : pos + 8] = struct.pack("<H", struct.unpack("<H", raw[pos + 6 : pos + 8])[0] + 2)
    victim.write_bytes(bytes(raw))
    vol = load_ct(demo_copy)
    assert vol.n_slices == demo_ref.n_slices - 1
    assert "corrupt header" in skipped(vol)[victim.name]


@pytest.mark.parametrize("where", ["pixels", "header", "element-header"])
def test_truncated_files_are_named(demo_copy: Path, demo_ref, where: str) -> None:
    victim = sorted(demo_copy.glob("*.dcm"))[20]
    raw = victim.read_bytes()
    pixel_element = _elements(raw)[-1][0]
    cut = {"pixels": (pixel_element + len(raw)) // 2, "header": pixel_element - 5, "element-header": pixel_element + 6}
    victim.write_bytes(raw[: cut[where]])
    vol = load_ct(demo_copy)
    assert vol.n_slices == demo_ref.n_slices - 1
    msg = skipped(vol)[victim.name]
    assert "truncated" in msg, msg
    assert "gap" in codes(vol)


def test_slice_without_position_is_named(demo_copy: Path, demo_ref) -> None:
    victim = sorted(demo_copy.glob("*.dcm"))[5]
    ds = pydicom.dcmread(victim)
    del ds.ImagePositionPatient
    ds.save_as(victim)
    vol = load_ct(demo_copy)
    assert vol.n_slices == demo_ref.n_slices - 1
    assert "ImagePositionPatient" in skipped(vol)[victim.name]
