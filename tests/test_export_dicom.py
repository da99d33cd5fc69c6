"""DICOM exports (issue 23): SEG, SR (TID 1500) and Secondary Capture of a real LIDC-IDRI-0001 analysis.

One analysis (module-scoped), exported a few times: every object passes dciodvfy (no errors)
and dcentvfy across the export; SEG and SR read back with highdicom and round-trip the
CaseResult's values, references and tracking UIDs; a re-export gives the same UIDs; a
de-identified export of a copy carrying injected identity holds none of it, byte for byte.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from lungfuse.pipelines.analysis.analyze import analyze_case
from lungfuse.pipelines.analysis.case import AnalysisSettings, Case
from lungfuse.pipelines.analysis.result import CaseResult
from lungfuse.pipelines.analysis.review import FindingReview, ReaderFinding, Review
from lungfuse.pipelines.core.volume import CTVolume
from lungfuse.pipelines.export.api import ExportResult, export_case
from lungfuse.pipelines.export.source import ExportError
from lungfuse.pipelines.export.uids import remap_uid
from lungfuse.pipelines.inference.registry import ModelRegistry
from lungfuse.pipelines.io.dicom import load_ct

DICOM = ("seg", "sr", "sc")
REVIEWER = "Roe^Jane^Dr"
INJECTED = {"PatientName": "Doe^John^Q", "PatientBirthDate": "19510203", "AccessionNumber": "ACC7741093",
            "InstitutionName": "Saint Elsewhere General Hospital", "ReferringPhysicianName": "Kildare^James",
            "StudyDate": "20010917"}


def _dicom_formats() -> tuple[str, ...]:
    """The DICOM formats built on this branch (SC needs the key-image renderer)."""
    from lungfuse.pipelines.export.api import _writers

    return tuple(f for f in DICOM if f in _writers())


def _dciodvfy(path: Path) -> list[str]:
    """dciodvfy's error lines for ``path`` (its warnings are allowed)."""
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]


def _dcentvfy(paths: list[Path]) -> list[str]:
    out = subprocess.run(["dcentvfy", *map(str, paths)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]


def test_resample_mask_keeps_axes_and_positions() -> None:
    """A rod along LPS x on a 1.5 mm grid lands on a 2.5 x 0.7 x 0.7 mm CT with a 5 mm gap where it
    lies in LPS: along x, not y or z (a z-y-x <-> x-y-z swap would turn it)."""
    from lungfuse.pipelines.core.volume import QualityRecord
    from lungfuse.pipelines.export.seg import resample_mask

    n, ny, nx = 30, 64, 64
    z = np.array([-300.0 + 2.5 * k + (5.0 if k >= 15 else 0.0) for k in range(n)])  # a gap after slice 14
    origin = (-20.0, -10.0, z[0])
    vol = CTVolume(hu=np.zeros((n, ny, nx), np.int16), spacing=(2.5, 0.7, 0.7), origin=origin,
                   direction=np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]]),  # columns: LPS of axes z, y, x
                   slice_positions=np.array([[origin[0], origin[1], zk] for zk in z]),
                   sop_instance_uids=tuple(f"1.2.3.{k}" for k in range(n)),
                   quality=QualityRecord(noise_sigma_hu=None, slice_thickness_mm=2.5, slice_spacing_mm=2.5))
    rod = np.zeros((5, 4, 16), bool)
    rod[1:4, 1:3, 2:12] = True  # 4.5 x 3 x 15 mm (z, y, x): long along x
    # z from -254 to -251 mm: beyond the gap, where only slice 17 (-252.5 mm) lies; a geometry that
    # ignored the gap would put slice 17 at -257.5 mm, outside the rod
    aff = np.array([[0, 0, 1.5, -12.0], [0, 1.5, 0, 0.0], [1.5, 0, 0, -255.5], [0, 0, 0, 1]])
    on = resample_mask(rod, aff, vol)
    lps_lo = aff[:3, :3] @ np.array([1, 1, 2]) + aff[:3, 3] - 0.75
    lps_hi = aff[:3, :3] @ np.array([3, 2, 11]) + aff[:3, 3] + 0.75
    kji = np.argwhere(on)
    assert len(kji) > 0
    pts = np.array([vol.slice_positions[k] + np.array([0.7 * i, 0.7 * j, 0.0]) for k, j, i in kji])
    assert np.all(pts >= lps_lo - 0.36) and np.all(pts <= lps_hi + 0.36)  # within half a CT voxel
    extent = pts.max(0) - pts.min(0)
    assert extent[0] > 13.0 and extent[1] < 4.0, extent  # long in x, short in y
    assert set(kji[:, 0]) == {17}
    assert len(kji) == pytest.approx(3.0 * 15.0 / 0.7**2, rel=0.25)  # the rod's cross-section on that slice


@pytest.fixture(scope="module")
def ct_dir(lidc_root: Path) -> Path:
    return lidc_root / "LIDC-IDRI-0001" / "ct"


@pytest.fixture(scope="module")
def result(ct_dir: Path) -> CaseResult:
    r = analyze_case(Case(ct_dir), AnalysisSettings(device="cpu", threads=1), models=ModelRegistry())
    assert len(r.findings) >= 2, "LIDC-IDRI-0001 should give at least two findings to export"
    return r


@pytest.fixture(scope="module")
def volume(ct_dir: Path) -> CTVolume:
    """The CT, read once for the exports (``export_case(volume=...)`` skips the pixel re-read)."""
    return load_ct(ct_dir, estimate_noise=False)


@pytest.fixture(scope="module")
def reviewed(result: CaseResult) -> CaseResult:
    """The result with a review: F1 accepted (category edited), F2 rejected, one reader-added finding."""
    f1, f2 = result.findings[0], result.findings[1]
    rv = Review(reviewer=REVIEWER, analysis_uid=result.provenance.analysis_uid,
                findings=[FindingReview(f1.id, f1.tracking_uid, "accepted", "4A", "agree, solid"),
                          FindingReview(f2.id, f2.tracking_uid, "rejected", None, "vessel")],
                added_findings=[ReaderFinding("R1", [-40.0, 10.0, -150.0], 6.0, "3", "missed nodule")])
    return dataclasses.replace(result, review=rv)


@pytest.fixture(scope="module")
def export(reviewed: CaseResult, volume: CTVolume, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    return export_case(reviewed, tmp_path_factory.mktemp("dicom"), _dicom_formats(), volume=volume)


def test_every_object_is_valid_dicom(export: ExportResult) -> None:
    files = export.all_files
    assert {p.name for p in files} >= {"seg.dcm", "sr.dcm"}
    for p in files:
        assert _dciodvfy(p) == [], p.name
    assert _dcentvfy(files) == []


def test_seg_segments_match_the_findings(export: ExportResult, reviewed: CaseResult, ct_dir: Path) -> None:
    seg = hd.seg.segread(export.out_dir / "seg.dcm")
    assert seg.SegmentationType == "BINARY"
    source = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in ct_dir.glob("*.dcm")}
    # every frame is derived from a source slice of this CT
    for fg in seg.PerFrameFunctionalGroupsSequence:
        ref = fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert ref in source
    vol = seg.get_volume(combine_segments=False)
    by_label = {seg.get_segment_description(n).segment_label: n for n in seg.segment_numbers}
    assert set(by_label) == {f.id for f in reviewed.findings}
    for f in reviewed.findings:
        n = by_label[f.id]
        desc = seg.get_segment_description(n)
        assert desc.tracking_uid == f.tracking_uid and desc.tracking_id == f.id
        assert desc.segmented_property_category == codes.SCT.MorphologicallyAbnormalStructure
        assert desc.segmented_property_type == codes.SCT.Nodule
        assert desc.algorithm_identification[0].AlgorithmName == "LungFuse"
        on = np.argwhere(vol.array[..., n - 1] > 0)
        centroid = vol.affine[:3, :3] @ on.mean(0) + vol.affine[:3, 3]
        # the same mask on its own 1.5 mm grid, through the result's affine
        m = reviewed.arrays[f.mask["array"]]  # type: ignore[index]
        aff = np.asarray(f.mask["affine_lps"])  # type: ignore[index]
        own = aff[:3, :3] @ np.argwhere(m).mean(0) + aff[:3, 3]
        assert np.linalg.norm(centroid - own) < 1.0, f.id
        # the finding's centre (the detector's peak) lies within its nodule's extent
        assert np.linalg.norm(centroid - np.asarray(f.center_lps_mm)) < max(5.0, f.diameter_mm / 2), f.id
        volume = len(on) * float(np.prod(vol.spacing))
        assert volume == pytest.approx(f.volume_mm3, rel=0.2), f.id


def _text_items(group: hd.sr.templates.Template) -> dict[str, list[str]]:
    items: dict[str, list[str]] = {}
    for it in group[0].ContentSequence:
        if it.ValueType == "TEXT":
            items.setdefault(it.ConceptNameCodeSequence[0].CodeMeaning, []).append(it.TextValue)
    return items


def test_sr_round_trips_the_result(export: ExportResult, reviewed: CaseResult, ct_dir: Path, volume: CTVolume
                                   ) -> None:
    sr = hd.sr.srread(export.out_dir / "sr.dcm")
    seg = hd.seg.segread(export.out_dir / "seg.dcm")
    seg_number = {seg.get_segment_description(n).tracking_uid: n for n in seg.segment_numbers}
    source = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in ct_dir.glob("*.dcm")}
    evidence = {s.ReferencedSOPInstanceUID for e in sr.CurrentRequestedProcedureEvidenceSequence
                for series in e.ReferencedSeriesSequence for s in series.ReferencedSOPSequence}
    assert evidence == source | {seg.SOPInstanceUID}
    assert sr.StudyInstanceUID == reviewed.identifiers.study_instance_uid  # type: ignore[union-attr]
    # observers: the algorithm as a device, the reviewer as a person
    obs = {it.ConceptNameCodeSequence[0].CodeMeaning: it for it in sr.ContentSequence
           if it.RelationshipType == "HAS OBS CONTEXT"}
    assert obs["Device Observer Name"].TextValue == "LungFuse"
    assert obs["Device Observer Manufacturer"].TextValue == "LungFuse"
    assert str(obs["Person Observer Name"].PersonName) == REVIEWER

    groups = {g.tracking_uid: g for g in sr.content.get_volumetric_roi_measurement_groups()}
    rv = reviewed.review
    assert rv is not None
    for f in reviewed.findings:
        g = groups[f.tracking_uid]
        assert g.finding_type == codes.SCT.Nodule
        assert g.referenced_segment.referenced_segment_numbers == [seg_number[f.tracking_uid]]
        assert g.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        sites = {s.value: s.laterality for s in g.finding_sites}
        side = codes.SCT.Right if f.side == "right" else codes.SCT.Left
        assert sites[codes.SCT.Lung] == side
        got = {m.name.meaning: (m.value, m.unit.value) for m in g.get_measurements()}
        assert got["Long axis"] == (pytest.approx(f.diameter_mm), "mm")
        assert got["Short axis"] == (pytest.approx(f.short_axis_mm), "mm")
        assert got["Diameter"] == (pytest.approx(f.mean_diameter_mm), "mm")
        assert got["Volume"] == (pytest.approx(f.volume_mm3), "mm3")
        assert got["Mean Attenuation Coefficient"] == (pytest.approx(f.measurement["mean_hu"]), "[hnsf'U]")
        assert got["Probability of cancer"] == (pytest.approx(f.malignancy_probability), "1")
        coded = {q.name.meaning: q.value for q in g.get_qualitative_evaluations()}
        assert coded["Calcified"] == (codes.SCT.Yes if f.calcified else codes.SCT.No)
        texts = _text_items(g)
        assert texts["Density"] == [f.texture]
        assert f"Lung-RADS v2022 {f.lung_rads}" in texts["Assessment Category"]
        decision = rv.for_finding(f)
        if decision is not None and decision.decision is not None:
            assert coded["Nodule"] == (codes.SCT.Present if decision.decision == "accepted" else codes.SCT.Absent)
    assert {g.tracking_uid for g in sr.content.get_volumetric_roi_measurement_groups()} == set(seg_number)

    # planar groups: one per finding on the source slice through its centre, one per reader finding
    planar = sr.content.get_planar_roi_measurement_groups()
    uids = reviewed.provenance.source_sop_instance_uids
    for f in reviewed.findings:
        (g,) = [p for p in planar if p.tracking_uid == f.tracking_uid]
        ref = g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        k = round(f.center_voxel[0])
        assert ref == uids[k]
        # the ellipse: centred on the SEG's pixels of that slice (DICOM image coordinates: the
        # top left pixel's centre is 0.5, 0.5), its axes as long as the finding's
        assert g.roi.GraphicType == "ELLIPSE"
        ends = np.asarray(g.roi.value).reshape(4, 2)
        frame = seg.get_pixels_by_source_instance(source_sop_instance_uids=[ref], segment_numbers=[
            seg_number[f.tracking_uid]], assert_missing_frames_are_empty=True)[0, ..., 0]
        rows, cols = np.nonzero(frame)
        assert np.allclose(ends[:2].mean(0), [cols.mean() + 0.5, rows.mean() + 0.5], atol=0.01)
        px = volume.spacing[1]
        assert np.linalg.norm(ends[1] - ends[0]) * px == pytest.approx(f.diameter_mm, rel=1e-4)  # FL: float32
        assert np.linalg.norm(ends[3] - ends[2]) * px == pytest.approx(f.short_axis_mm, rel=1e-4)
    reader = [p for p in planar if p.tracking_identifier.endswith("(reader-added)")]
    assert [p.tracking_identifier for p in reader] == ["R1 (reader-added)"]
    assert {m.name.meaning: m.value for m in reader[0].get_measurements()} == {"Long axis": pytest.approx(6.0)}


def test_sc_key_images(export: ExportResult, reviewed: CaseResult) -> None:
    if "sc" not in export.files:
        pytest.skip("the key-image renderer (keyimages.py) is not in this build")
    rv = reviewed.review
    assert rv is not None
    ids = [f.id for f in reviewed.findings] + [r.id for r in rv.added_findings]
    assert sorted(p.name for p in export.files["sc"]) == sorted(f"sc_{i}_{v}.dcm" for i in ids
                                                                for v in ("axial", "coronal"))
    uids = reviewed.provenance.source_sop_instance_uids
    ids_ = reviewed.identifiers
    assert ids_ is not None
    series = set()
    for p in export.files["sc"]:
        ds = pydicom.dcmread(p)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
        assert ds.StudyInstanceUID == ids_.study_instance_uid and ds.PatientID == reviewed.case_id
        assert "NOT FOR DIAGNOSTIC USE" in ds.ImageComments and "NOT FOR DIAGNOSTIC USE" in ds.SeriesDescription
        assert ds.BurnedInAnnotation == "YES" and ds.PhotometricInterpretation == "RGB"
        rgb = ds.pixel_array
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.std() > 10  # a picture, not a blank frame
        assert all(float(v) > 0 for v in ds.PixelSpacing)
        series.add(ds.SeriesInstanceUID)
        fid, view = p.stem.split("_")[1:]
        if view == "axial" and fid.startswith("F"):
            z = round(reviewed.finding(fid).center_voxel[0])
            assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == uids[z]
    assert len(series) == 1 and series.isdisjoint({ids_.series_instance_uid})


def test_reexport_gives_the_same_uids(export: ExportResult, reviewed: CaseResult, volume: CTVolume,
                                      tmp_path: Path) -> None:
    again = export_case(reviewed, tmp_path, _dicom_formats(), volume=volume)
    assert sorted(p.name for p in again.all_files) == sorted(p.name for p in export.all_files)
    for p in export.all_files:
        a, b = pydicom.dcmread(p), pydicom.dcmread(tmp_path / p.name)
        assert (a.SOPInstanceUID, a.SeriesInstanceUID) == (b.SOPInstanceUID, b.SeriesInstanceUID), p.name


def test_sr_alone_references_the_same_seg(export: ExportResult, reviewed: CaseResult, volume: CTVolume,
                                          tmp_path: Path) -> None:
    only = export_case(reviewed, tmp_path, "sr", volume=volume)
    assert [p.name for p in only.all_files] == ["sr.dcm"]
    sr = hd.sr.srread(tmp_path / "sr.dcm")
    seg_uid = pydicom.dcmread(export.out_dir / "seg.dcm", stop_before_pixels=True).SOPInstanceUID
    refs = {g.referenced_segment.referenced_sop_instance_uid for g in sr.content.get_volumetric_roi_measurement_groups()}
    assert refs == {seg_uid}


def test_finding_without_mask_gets_a_planar_group_only(reviewed: CaseResult, volume: CTVolume, tmp_path: Path
                                                       ) -> None:
    f2 = reviewed.findings[1]
    assert f2.mask is not None
    arrays = {k: v for k, v in reviewed.arrays.items() if k != f2.mask["array"]}
    out = export_case(dataclasses.replace(reviewed, arrays=arrays), tmp_path, "seg,sr", volume=volume)
    seg = hd.seg.segread(out.out_dir / "seg.dcm")
    labels = [seg.get_segment_description(n).segment_label for n in seg.segment_numbers]
    assert f2.id not in labels and len(labels) == len(reviewed.findings) - 1
    sr = hd.sr.srread(out.out_dir / "sr.dcm")
    assert f2.tracking_uid not in {g.tracking_uid for g in sr.content.get_volumetric_roi_measurement_groups()}
    (g,) = [p for p in sr.content.get_planar_roi_measurement_groups() if p.tracking_uid == f2.tracking_uid]
    got = {m.name.meaning: m.value for m in g.get_measurements()}
    assert got["Volume"] == pytest.approx(f2.volume_mm3) and g.roi.GraphicType == "POINT"
    assert _dciodvfy(out.out_dir / "sr.dcm") == []


def test_reader_finding_off_the_scan_is_an_error(reviewed: CaseResult, volume: CTVolume, tmp_path: Path) -> None:
    rv = reviewed.review
    assert rv is not None
    off = dataclasses.replace(rv, added_findings=[ReaderFinding("R1", [0.0, 0.0, 400.0], 5.0)])  # 400 mm: above the scan
    with pytest.raises(ExportError, match="R1.*outside the CT"):
        export_case(dataclasses.replace(reviewed, review=off), tmp_path, "sr", volume=volume)
    assert list(tmp_path.iterdir()) == []


def test_no_findings_gives_an_empty_sr_and_no_seg(result: CaseResult, volume: CTVolume, tmp_path: Path) -> None:
    empty = dataclasses.replace(result, findings=[], matches=[], reasons=[], flags=[], eaf={}, status="concordant",
                                arrays={})
    out = export_case(empty, tmp_path, "sr,seg", volume=volume)
    assert out.files["seg"] == [] and [p.name for p in out.files["sr"]] == ["sr.dcm"]
    assert _dciodvfy(tmp_path / "sr.dcm") == []
    sr = hd.sr.srread(tmp_path / "sr.dcm")
    assert sr.content.get_volumetric_roi_measurement_groups() == []
    assert sr.content.get_planar_roi_measurement_groups() == []
    (statement,) = sr.content.get_image_measurement_groups()
    assert {q.name: q.value for q in statement.get_qualitative_evaluations()}[codes.SCT.Nodule] == codes.SCT.Absent


def test_deidentified_export_holds_no_identity(reviewed: CaseResult, ct_dir: Path, tmp_path: Path) -> None:
    # a copy of the CT that carries the identity LIDC's headers lack
    copy = tmp_path / "ct"
    copy.mkdir()
    originals: set[str] = set()
    for p in sorted(ct_dir.glob("*.dcm")):
        ds = pydicom.dcmread(p)
        for kw, v in INJECTED.items():
            setattr(ds, kw, v)
        originals |= {ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID}
        ds.save_as(copy / p.name)
    rv = reviewed.review
    assert rv is not None
    comment = "discussed with John Doe on 17/09/2001"  # free text naming the patient and a date
    named = dataclasses.replace(rv, findings=[dataclasses.replace(rv.findings[0], comment=comment), *rv.findings[1:]],
                                added_findings=[dataclasses.replace(rv.added_findings[0], comment=comment)])
    out = export_case(dataclasses.replace(reviewed, review=named), tmp_path / "out", _dicom_formats(),
                      deidentify=True, ct_path=copy)
    forbidden = {*INJECTED.values(), "Elsewhere", reviewed.case_id, "Roe^Jane", "John Doe", "17/09/2001",
                 *originals}
    assert reviewed.case_id == "LIDC-IDRI-0001"
    for p in out.all_files:
        data = p.read_bytes()
        leaked = sorted(s for s in forbidden if s.encode() in data)
        assert leaked == [], f"{p.name} holds {leaked}"
        assert _dciodvfy(p) == [], p.name
        ds = pydicom.dcmread(p)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.PatientID == ds.PatientName.family_name == out_label(reviewed)
        assert ds.StudyInstanceUID == remap_uid(reviewed.identifiers.study_instance_uid)  # type: ignore[union-attr]
    assert _dcentvfy(out.all_files) == []
    assert b"reader: discussed with [name]" in (tmp_path / "out" / "sr.dcm").read_bytes()  # scrubbed, not dropped
    # the SR's references point at the remapped source instances
    sr = hd.sr.srread(tmp_path / "out" / "sr.dcm")
    evidence = {s.ReferencedSOPInstanceUID for e in sr.CurrentRequestedProcedureEvidenceSequence
                for series in e.ReferencedSeriesSequence for s in series.ReferencedSOPSequence}
    assert {remap_uid(u) for u in reviewed.provenance.source_sop_instance_uids} <= evidence


def test_multiframe_source(export: ExportResult, reviewed: CaseResult, ct_dir: Path, tmp_path: Path) -> None:
    """The same CT as one enhanced multi-frame image (frames in reverse z order): SEG, SR and SC
    reference its frames, the masks land where the single-frame export put them, and the
    de-identified objects hold none of its UIDs nor the slices' it was converted from."""
    from highdicom.legacy import LegacyConvertedEnhancedCTImage
    from pydicom.uid import generate_uid

    slices = [pydicom.dcmread(p) for p in sorted(ct_dir.glob("*.dcm"))]
    mf = LegacyConvertedEnhancedCTImage(slices, series_instance_uid=generate_uid(), series_number=99,
                                        sop_instance_uid=generate_uid(), instance_number=1)
    mf.save_as(tmp_path / "mf.dcm")
    vol = load_ct(tmp_path / "mf.dcm", estimate_noise=False)
    assert vol.frame_numbers is not None and vol.frame_numbers[0] != 1  # not the z order
    ids = reviewed.identifiers
    assert ids is not None
    as_mf = dataclasses.replace(
        reviewed, provenance=dataclasses.replace(reviewed.provenance, source_sop_instance_uids=list(vol.sop_instance_uids)),
        identifiers=dataclasses.replace(ids, series_instance_uid=vol.series_instance_uid))
    out = export_case(as_mf, tmp_path / "out", _dicom_formats(), deidentify=True, volume=vol)
    forbidden = {mf.SOPInstanceUID, mf.SeriesInstanceUID, *(d.SOPInstanceUID for d in slices), ids.study_instance_uid}
    for p in out.all_files:
        assert _dciodvfy(p) == [], p.name
        data = p.read_bytes()
        assert not [u for u in forbidden if u.encode() in data], p.name
    new_uid = remap_uid(mf.SOPInstanceUID)
    seg = hd.seg.segread(tmp_path / "out" / "seg.dcm")
    assert seg.NumberOfFrames > 0
    for fg in seg.PerFrameFunctionalGroupsSequence:
        ref = fg.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == new_uid and 1 <= ref.ReferencedFrameNumber <= len(slices)
    single = hd.seg.segread(export.out_dir / "seg.dcm")
    a, b = seg.get_volume(combine_segments=False), single.get_volume(combine_segments=False)
    for n in seg.segment_numbers:
        ca = a.affine[:3, :3] @ np.argwhere(a.array[..., n - 1]).mean(0) + a.affine[:3, 3]
        cb = b.affine[:3, :3] @ np.argwhere(b.array[..., n - 1]).mean(0) + b.affine[:3, 3]
        assert np.allclose(ca, cb, atol=0.01), n
    sr = hd.sr.srread(tmp_path / "out" / "sr.dcm")
    for f in as_mf.findings:
        (g,) = [p for p in sr.content.get_planar_roi_measurement_groups() if p.tracking_uid == f.tracking_uid]
        ref = g.roi.ContentSequence[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == new_uid
        assert ref.ReferencedFrameNumber == vol.frame_numbers[round(f.center_voxel[0])]


def out_label(result: CaseResult) -> str:
    from lungfuse.pipelines.export.api import ExportContext

    return ExportContext(result=result, deidentify=True).case_label


@pytest.fixture(autouse=True)
def _cleanup_copy(tmp_path: Path) -> object:
    yield None
    shutil.rmtree(tmp_path / "ct", ignore_errors=True)  # 133 slices, 70 MB: not kept for the session
