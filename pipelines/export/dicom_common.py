"""What the DICOM exports (SEG, SR, Secondary Capture) share: the source headers they derive
from, de-identified when asked, the equipment that made them, their UIDs and their encoding.

Research software, NOT for diagnostic use.

**De-identification** (PS3.15 Annex E, Basic Application Level Confidentiality Profile).  The
new objects are built by highdicom from the source CT's headers, whose patient, study and
frame-of-reference attributes it copies.  With ``deidentify`` those headers are first replaced
by *clean copies* (:func:`deidentify_header`): only the attributes the new objects need are kept
(geometry, pixel description, SOP class) - a whitelist, so that no identifying attribute of the
source (private tags, dates, physicians, institution, free text) can reach an export - and the
identity is replaced: patient name and ID = the pseudonym (``ctx.case_label``), birth date, sex,
age, accession number, study ID, referring physician, study date and time emptied, and every
source UID (study, series, frame of reference, SOP instance) remapped with
:func:`~.uids.remap_uid`.  pydicom and highdicom have no Annex E profile of their own; the
dedicated packages (deid, dicognito) anonymise whole files with their own UID and date rules,
not the consistent remapping the JSON, PDF and CSV of the same export share.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.coding import Code

from lungfuse.pipelines.export.source import ExportError
from lungfuse.pipelines.export.uids import export_uid, remap_uid

if TYPE_CHECKING:
    from lungfuse.pipelines.export.api import ExportContext

__all__ = [
    "MANUFACTURER", "DEVICE_NAME", "NOT_FOR_DIAGNOSTIC_USE", "SERIES_NUMBERS", "software_version", "new_uid",
    "source_headers", "source_instances", "slice_frame", "deidentify_header", "mark_deidentified", "dataset_bytes",
]

MANUFACTURER = "LungFuse"
DEVICE_NAME = "LungFuse"
#: the notice every DICOM export carries (Image Comments, series description, SR title text)
NOT_FOR_DIAGNOSTIC_USE = "NOT FOR DIAGNOSTIC USE - research software (LungFuse)"
#: series numbers of the new series (one per object kind), apart from the scanner's usual 1-999
SERIES_NUMBERS = {"seg": 9901, "sr": 9902, "sc": 9903}

# Attributes a clean copy keeps: what the SEG / SR / SC need to reference and place the source
# slices.  None of them identifies the patient (PS3.15 Table E.1-1 keeps them all).
_KEEP = (
    "SOPClassUID", "Modality", "ImageType", "Rows", "Columns", "PixelSpacing", "ImageOrientationPatient",
    "ImagePositionPatient", "SliceThickness", "SpacingBetweenSlices", "SamplesPerPixel",
    "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "RescaleIntercept", "RescaleSlope", "RescaleType", "InstanceNumber", "SeriesNumber", "BodyPartExamined",
    "PatientPosition", "NumberOfFrames", "SpecificCharacterSet",
)
# Of a multi-frame source's functional groups: only the geometry and the HU rescale
_KEEP_FRAME_MACROS = ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence",
                      "PixelValueTransformationSequence")
_REMAP = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
# Type 2 attributes of the patient and study modules: present, empty (PS3.15 action Z)
_EMPTY = ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "ReferringPhysicianName", "StudyDate",
          "StudyTime")
#: PS3.15 CID 7050 codes of what was done: the basic profile (no option retains dates or UIDs)
DEID_METHOD_CODES = (Code("113100", "DCM", "Basic Application Confidentiality Profile"),)


def software_version() -> str:
    """The installed lungfuse version (the DICOM Software Versions and the algorithm version)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lungfuse")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "0+unknown"


def new_uid(ctx: ExportContext, name: str) -> str:
    """The UID of export object ``name`` (``"seg"``, ``"series/sr"``, ``"sc/F1/axial"``...) of this
    result: the same result re-exported gets the same UID (:func:`~.uids.export_uid`)."""
    prov = ctx.result.provenance
    return export_uid(prov.analysis_uid, name, fallback=prov.input_fingerprint or ctx.result.case_id)


def deidentify_header(ds: Dataset, pseudonym: str) -> Dataset:
    """A clean copy of source header ``ds`` for a de-identified export (see the module docstring).

    Keeps only the geometry and pixel description attributes, remaps the UIDs with
    :func:`~.uids.remap_uid`, names the patient ``pseudonym`` and empties the identifying type 2
    attributes.
    """
    out = Dataset()
    for kw in _KEEP:
        if kw in ds:
            setattr(out, kw, ds.data_element(kw).value)  # type: ignore[union-attr]  # present: checked above
    for kw in _REMAP:
        if kw in ds and ds.data_element(kw).value:  # type: ignore[union-attr]
            setattr(out, kw, remap_uid(str(ds.data_element(kw).value)))  # type: ignore[union-attr]
    for kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):  # multi-frame geometry
        if kw in ds:
            setattr(out, kw, [_clean_frame_group(item) for item in ds.data_element(kw).value])  # type: ignore[union-attr]
    out.PatientName = pseudonym + "^"  # PN: the pseudonym as family name (a bare one is the retired form)
    out.PatientID = pseudonym
    for kw in _EMPTY:
        setattr(out, kw, "")
    mark_deidentified(out)
    return out


def _clean_frame_group(item: Dataset) -> Dataset:
    """A multi-frame functional group item reduced to the frame's geometry: the other macros
    (frame content with its acquisition date and time, derivation and conversion sources with
    the original instances' UIDs) are left out."""
    out = Dataset()
    for kw in _KEEP_FRAME_MACROS:
        if kw in item:
            setattr(out, kw, item.data_element(kw).value)  # type: ignore[union-attr]
    return out


def mark_deidentified(ds: Dataset) -> None:
    """Set the PS3.15 markers on a de-identified dataset (Patient Identity Removed, the method)."""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "LungFuse: PS3.15 basic profile, UIDs remapped"  # LO: <= 64 characters
    seq = []
    for c in DEID_METHOD_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = c.value, c.scheme_designator, c.meaning
        seq.append(item)
    ds.DeidentificationMethodCodeSequence = seq
    ds.LongitudinalTemporalInformationModified = "REMOVED"


def source_headers(ctx: ExportContext) -> list[Dataset]:
    """The source CT's header of each slice, in ``hu`` z order, de-identified with
    ``ctx.deidentify`` (made once per export and shared by SEG, SR and SC through ``ctx.shared``).

    A multi-frame source gives the same dataset for every slice (its frame:
    :func:`slice_frame`).

    Raises:
        ExportError: the source is not DICOM (a NIfTI CT): no DICOM object can reference it.
    """
    key = "dicom_sources"
    if key not in ctx.shared:
        src = ctx.source
        if not src.is_dicom:
            raise ExportError("the source CT is not DICOM (NIfTI?): DICOM SEG/SR/SC must reference DICOM slices",
                              src.volume.source or None)
        clean: dict[int, Dataset] = {}  # one clean copy per source instance (a multi-frame one repeats)
        for d in src.datasets:
            if id(d) not in clean:
                clean[id(d)] = deidentify_header(d, ctx.case_label) if ctx.deidentify else d
        ctx.shared[key] = [clean[id(d)] for d in src.datasets]
    headers: list[Dataset] = ctx.shared[key]
    return headers


def source_instances(ctx: ExportContext) -> list[Dataset]:
    """The source CT's SOP instances (headers, de-identified with ``ctx.deidentify``), each once:
    a slice each for a classic series, one for a multi-frame image."""
    seen: dict[int, Dataset] = {}
    for d in source_headers(ctx):
        seen.setdefault(id(d), d)
    return list(seen.values())


def slice_frame(ctx: ExportContext, k: int) -> int | None:
    """The 1-based frame number of slice ``k`` in its multi-frame source instance, None for a
    single-frame series."""
    frames = ctx.source.volume.frame_numbers
    return None if frames is None else int(frames[k])


def dataset_bytes(ds: Dataset) -> bytes:
    """``ds`` encoded as a DICOM Part 10 file (preamble, file meta), as highdicom built it."""
    if not hasattr(ds, "file_meta") or not isinstance(ds.file_meta, FileMetaDataset):
        raise ValueError("dataset_bytes: the dataset has no file meta (not a highdicom SOP instance?)")
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()

