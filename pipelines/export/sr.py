"""DICOM Comprehensive 3D SR export (``sr.dcm``): a TID 1500 Measurement Report of the findings.

Research software, NOT for diagnostic use.

Content (highdicom ``MeasurementReport``):

* **Observation context**: the algorithm as a device observer (name and manufacturer
  "LungFuse", model version = the package version); when the result carries a review, the
  reviewer as a person observer (name removed with ``deidentify``).
* **Per machine finding, a volumetric group** (TID 1411): tracking identifier = the finding id
  and tracking UID = ``Finding.tracking_uid``, the same as the SEG segment's (:mod:`.seg`), which
  it references by segment number; finding type SCT 27925004 "Nodule"; finding sites SCT
  39607008 "Lung" and the lobe (SCT 45653009 upper / 72481006 middle / 90572001 lower lobe),
  each with laterality SCT 24028007 right / 7771000 left; algorithm identification (TID 4019).
  Measurements, UCUM units: long axis SCT 103339001 and short axis SCT 103340004 (mm), diameter
  SCT 81827009 = the mean of long and short axes (mm, the Lung-RADS size), volume SCT 118565006
  (mm3), mean attenuation DCM 112181 ([hnsf'U], the measurement's ``mean_hu``), probability of
  cancer DCM 111047 (unit 1).  Qualitative evaluations: calcified (SCT 237897009: SCT Yes / No);
  texture as DCM 112118 "Density" and Lung-RADS as DCM 111005 "Assessment Category", both TEXT
  items (neither SNOMED CT nor DICOM has codes for solid / part-solid or the Lung-RADS
  categories, and private coding schemes are avoided); the reader's decision as SCT 27925004
  "Nodule" = SCT 52101004 Present (accepted) / 272519000 Absent (rejected), with the reader's
  edited category and comment as TEXT.
* **Per machine finding, a planar group** (TID 1410) on its key axial slice (the source slice
  through ``center_voxel``), which OHIF shows as a measurement: an ELLIPSE whose axes follow the
  mask's principal axes on that slice with the finding's long and short axis lengths, or a POINT
  at the centre when the mask does not reach the slice; it carries the axial long/short axes.
  A finding without a SEG segment (its mask missing from the result) has only this group, with
  all of its measurements and evaluations.
* **No finding** (machine or reader): one measurement group (TID 1501) stating SCT 27925004
  "Nodule" = SCT 272519000 Absent, by the algorithm.
* **Per reader-added finding** (``review.added_findings``), a planar group with a POINT at its
  centre on the nearest source slice, tracking identifier ``R1 (reader-added)``, no algorithm
  identification, the reader's diameter and category.

The SEG the volumetric groups reference is built (not written) when only ``sr`` is exported, so
the references hold whatever the formats asked for; its UIDs are deterministic.
"""

from __future__ import annotations

from typing import Any

import highdicom as hd
import numpy as np
from highdicom.sr.templates import Template
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from lungfuse.pipelines.analysis.result import Finding
from lungfuse.pipelines.analysis.review import FindingReview, ReaderFinding
from lungfuse.pipelines.core.geometry import lps_to_voxel
from lungfuse.pipelines.export.api import WRITERS, ExportContext
from lungfuse.pipelines.export.dicom_common import (
    DEVICE_NAME,
    MANUFACTURER,
    SERIES_NUMBERS,
    dataset_bytes,
    mark_deidentified,
    new_uid,
    slice_frame,
    software_version,
    source_headers,
    source_instances,
)
from lungfuse.pipelines.export.seg import SegBuild, build_seg, mask_on_source
from lungfuse.pipelines.export.source import ExportError
from lungfuse.pipelines.export.uids import export_uid

__all__ = ["build_sr", "write_sr", "LOBE_CODES", "TEXTURE_NAME", "LUNG_RADS_NAME", "READER_DECISION_NAME"]

MM = Code("mm", "UCUM", "millimeter")
MM3 = Code("mm3", "UCUM", "cubic millimeter")
HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
NO_UNITS = Code("1", "UCUM", "no units")
CT_CHEST = Code("24627-2", "LN", "CT Chest")
TEXTURE_NAME = codes.DCM.Density
LUNG_RADS_NAME = codes.DCM.AssessmentCategory
READER_DECISION_NAME = codes.SCT.Nodule
COMMENT = codes.DCM.Comment
#: result lobe -> (SNOMED CT lobe, laterality); the lingula is part of the left upper lobe
LOBE_CODES: dict[str, tuple[Code, Code]] = {
    "RUL": (codes.SCT.UpperLobeOfLung, codes.SCT.Right), "RML": (codes.SCT.MiddleLobeOfRightLung, codes.SCT.Right),
    "RLL": (codes.SCT.LowerLobeOfLung, codes.SCT.Right), "LUL": (codes.SCT.UpperLobeOfLung, codes.SCT.Left),
    "lingula": (codes.SCT.UpperLobeOfLung, codes.SCT.Left), "LLL": (codes.SCT.LowerLobeOfLung, codes.SCT.Left),
}
SIDE_CODES = {"right": codes.SCT.Right, "left": codes.SCT.Left}


class TextEvaluation(hd.sr.QualitativeEvaluation):
    """A qualitative evaluation with a coded name and a TEXT value (TID 1501 allows TEXT
    evaluations; highdicom's class only builds CODE ones)."""

    def __init__(self, name: Code, value: str) -> None:  # noqa: D107 - the class docstring says it
        item = hd.sr.TextContentItem(name=name, value=value[:1024],
                                     relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        Template.__init__(self, [item])


def _algorithm() -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=DEVICE_NAME, version=software_version(),
                                         family=codes.DCM.ArtificialIntelligence, manufacturer=MANUFACTURER)


def _sites(side: str | None, lobe: str | None) -> list[hd.sr.FindingSite]:
    lat = SIDE_CODES.get(side or "")
    sites = [hd.sr.FindingSite(codes.SCT.Lung, laterality=lat)]
    if lobe in LOBE_CODES:
        code, lobe_lat = LOBE_CODES[lobe]
        sites.append(hd.sr.FindingSite(code, laterality=lobe_lat))
    return sites


def _mm(name: Code, value: float | None) -> list[hd.sr.Measurement]:
    return [] if value is None else [hd.sr.Measurement(name=name, value=float(value), unit=MM)]


def _axes(f: Finding) -> list[hd.sr.Measurement]:
    """The axial long and short axes (mm); results written before ``short_axis_mm`` have it in
    ``measurement``."""
    short = f.short_axis_mm if f.short_axis_mm is not None else f.measurement.get("short_axis_mm")
    return [*_mm(codes.SCT.LongAxis, f.long_axis_mm if f.long_axis_mm is not None else f.diameter_mm),
            *_mm(codes.SCT.ShortAxis, short)]


def _measurements(f: Finding) -> list[hd.sr.Measurement]:
    out = [*_axes(f), *_mm(codes.SCT.Diameter, f.mean_diameter_mm),
           hd.sr.Measurement(name=codes.SCT.Volume, value=float(f.volume_mm3), unit=MM3)]
    mean_hu = f.measurement.get("mean_hu")
    if mean_hu is not None and np.isfinite(mean_hu):
        out.append(hd.sr.Measurement(name=codes.DCM.MeanAttenuationCoefficient, value=float(mean_hu), unit=HU))
    if f.malignancy_probability is not None:
        out.append(hd.sr.Measurement(name=codes.DCM.ProbabilityOfCancer, value=float(f.malignancy_probability),
                                     unit=NO_UNITS))
    return out


def _evaluations(ctx: ExportContext, f: Finding, review: FindingReview | None) -> list[hd.sr.QualitativeEvaluation]:
    out: list[hd.sr.QualitativeEvaluation] = [
        hd.sr.QualitativeEvaluation(codes.SCT.Calcified, codes.SCT.Yes if f.calcified else codes.SCT.No),
        TextEvaluation(TEXTURE_NAME, f.texture),
    ]
    if f.lung_rads:
        out.append(TextEvaluation(LUNG_RADS_NAME, f"Lung-RADS v2022 {f.lung_rads}"))
    if review is not None:
        out.extend(_review_items(ctx, review))
    return out


def _free_text(ctx: ExportContext, text: str) -> str | None:
    """A reader's free text as the export may print it: unchanged, or with ``deidentify``
    scrubbed of the source's identity and dates (``ExportContext.scrub``, :mod:`.deid_text`)."""
    return ctx.scrub(text) or None


def _review_items(ctx: ExportContext, review: FindingReview) -> list[hd.sr.QualitativeEvaluation]:
    """The reader's decision on a finding (the person observer of the report made it)."""
    out: list[hd.sr.QualitativeEvaluation] = []
    if review.decision is not None:
        value = codes.SCT.Present if review.decision == "accepted" else codes.SCT.Absent
        out.append(hd.sr.QualitativeEvaluation(READER_DECISION_NAME, value))
    if review.category:
        out.append(TextEvaluation(LUNG_RADS_NAME, f"reader: Lung-RADS v2022 {review.category}"))
    comment = _free_text(ctx, review.comment) if review.comment else None
    if comment:
        out.append(TextEvaluation(COMMENT, f"reader: {comment}"))
    return out


def _ref_segment(seg: SegBuild, f: Finding) -> hd.sr.ReferencedSegment | None:
    n = seg.segment_numbers.get(f.id)
    if seg.dataset is None or n is None:
        return None
    return hd.sr.ReferencedSegment.from_segmentation(seg.dataset, n)


def _source_image(ctx: ExportContext, k: int) -> hd.sr.SourceImageForRegion:
    """Source slice ``k`` (its frame, for a multi-frame source)."""
    header = source_headers(ctx)[k]
    frame = slice_frame(ctx, k)
    return hd.sr.SourceImageForRegion(referenced_sop_class_uid=str(header.SOPClassUID),
                                      referenced_sop_instance_uid=str(header.SOPInstanceUID),
                                      referenced_frame_numbers=None if frame is None else [frame])


def _key_region(ctx: ExportContext, f: Finding) -> hd.sr.ImageRegion:
    """The finding on its key axial slice: an ellipse (long and short axes along the mask's
    principal axes there), or the centre point when the mask does not reach that slice.
    Graphic data are DICOM (column, row) image coordinates: the top left pixel's centre is
    (0.5, 0.5), half a pixel off the array indices."""
    vol = ctx.source.volume
    k = int(np.clip(round(f.center_voxel[0]), 0, vol.n_slices - 1))
    cy, cx = float(f.center_voxel[1]), float(f.center_voxel[2])
    mask = mask_on_source(ctx, f)
    pts = np.argwhere(mask[k]) if mask is not None else np.zeros((0, 2))
    if len(pts) >= 3:
        sy, sx = vol.spacing[1], vol.spacing[2]
        mm = (pts - pts.mean(0)) * np.array([sy, sx])
        evals, evecs = np.linalg.eigh(np.cov(mm.T))
        major, minor = evecs[:, 1], evecs[:, 0]  # unit vectors in (row, column) mm space
        long_mm = f.long_axis_mm if f.long_axis_mm is not None else f.diameter_mm
        short_mm = f.short_axis_mm if f.short_axis_mm is not None else long_mm
        cy, cx = (float(v) for v in pts.mean(0))
        ends = []
        for vec, length in ((major, long_mm), (minor, short_mm)):
            for sgn in (-1.0, 1.0):
                r, c = cy + sgn * vec[0] * length / 2 / sy, cx + sgn * vec[1] * length / 2 / sx
                ends.append([c + 0.5, r + 0.5])
        return hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.ELLIPSE, graphic_data=np.array(ends),
                                 source_image=_source_image(ctx, k))
    return hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POINT,
                             graphic_data=np.array([[cx + 0.5, cy + 0.5]]), source_image=_source_image(ctx, k))


def _reader_group(ctx: ExportContext, r: ReaderFinding) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    vol = ctx.source.volume
    z, y, x = lps_to_voxel(vol.affine, r.center_lps_mm)
    k = int(round(z))
    if not (0 <= k < vol.n_slices and -0.5 <= y < vol.shape[1] - 0.5 and -0.5 <= x < vol.shape[2] - 0.5):
        raise ExportError(f"reader-added finding {r.id}: its centre {[round(float(v), 1) for v in r.center_lps_mm]} "
                          "(LPS mm) lies outside the CT", vol.source or None)
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POINT, graphic_data=np.array([[x + 0.5, y + 0.5]]),
                               source_image=_source_image(ctx, k))
    uid = r.tracking_uid or new_uid(ctx, f"reader/{r.id}")
    evals: list[hd.sr.QualitativeEvaluation] = [TextEvaluation(COMMENT, "reader-added finding")]
    if r.category:
        evals.append(TextEvaluation(LUNG_RADS_NAME, f"reader: Lung-RADS v2022 {r.category}"))
    comment = _free_text(ctx, r.comment) if r.comment else None
    if comment:
        evals.append(TextEvaluation(COMMENT, f"reader: {comment}"))
    side = "right" if r.center_lps_mm[0] < 0 else "left"  # LPS x: negative = patient's right
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=f"{r.id} (reader-added)"),
        referenced_region=region, finding_type=codes.SCT.Nodule, finding_sites=_sites(side, None),
        measurements=_mm(codes.SCT.LongAxis, r.diameter_mm), qualitative_evaluations=evals)


def _observers(ctx: ExportContext) -> hd.sr.ObservationContext:
    version = software_version()
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=export_uid(None, f"device/{version}", fallback="LungFuse"), name=DEVICE_NAME,
            manufacturer_name=MANUFACTURER, model_name=version))
    person = None
    rv = ctx.result.review
    if rv is not None:
        name = "removed^" if ctx.deidentify else rv.reviewer  # PS3.15 removes observers' names
        person = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=name))
    return hd.sr.ObservationContext(observer_person_context=person, observer_device_context=device)


def build_sr(ctx: ExportContext) -> hd.sr.Comprehensive3DSR:
    """The export's SR (see the module docstring)."""
    seg = build_seg(ctx) if ctx.result.findings else SegBuild(None)
    rv = ctx.result.review
    groups: list[Any] = []
    for f in ctx.result.findings:
        fr = rv.for_finding(f) if rv is not None else None
        ref = _ref_segment(seg, f)
        if ref is not None:
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=f.tracking_uid, identifier=f.id),
                referenced_segment=ref, finding_type=codes.SCT.Nodule, algorithm_id=_algorithm(),
                finding_sites=_sites(f.side, f.lobe), measurements=_measurements(f),
                qualitative_evaluations=_evaluations(ctx, f, fr)))
        # the axial long and short axes, drawn on the key slice; a finding without a segment (no
        # mask in the result) has only this group, which then carries everything
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=f.tracking_uid, identifier=f.id),
            referenced_region=_key_region(ctx, f), finding_type=codes.SCT.Nodule,
            algorithm_id=_algorithm(), finding_sites=_sites(f.side, f.lobe),
            measurements=_axes(f) if ref is not None else _measurements(f),
            qualitative_evaluations=None if ref is not None else _evaluations(ctx, f, fr)))
    for r in rv.added_findings if rv is not None else []:
        groups.append(_reader_group(ctx, r))
    if not groups:
        # TID 1500 needs a measurement group (highdicom too): the algorithm's negative statement
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(ctx, "tracking/no-findings"),
                                                         identifier="no findings"),
            algorithm_id=_algorithm(),
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(codes.SCT.Nodule, codes.SCT.Absent)]))
    report = hd.sr.MeasurementReport(observation_context=_observers(ctx), procedure_reported=CT_CHEST,
                                     imaging_measurements=groups)
    evidence = [*source_instances(ctx), *([seg.dataset] if seg.dataset is not None else [])]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report[0], series_instance_uid=new_uid(ctx, "series/sr"),
        series_number=SERIES_NUMBERS["sr"], sop_instance_uid=new_uid(ctx, "sr"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description="LungFuse measurements (NOT FOR DIAGNOSTIC USE)",
    )
    if ctx.deidentify:
        mark_deidentified(sr)
    return sr


def write_sr(ctx: ExportContext) -> list[tuple[str, bytes]]:
    """``sr.dcm``."""
    return [("sr.dcm", dataset_bytes(build_sr(ctx)))]


WRITERS["sr"] = write_sr
