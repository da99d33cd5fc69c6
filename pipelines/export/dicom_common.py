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
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.coding import Code

from lungfuse.pipelines.export.source import ExportError
from lungfuse.pipelines.export.uids import export_uid, remap_uid

if TYPE_CHECKING:
    from lungfuse.pipelines.export.api import ExportContext

__all__ = [
    "MANUFACTURER", "DEVICE_NAME", "NOT_FOR_DIAGNOSTIC_USE", "SERIES_NUMBERS", "software_version", "new_uid",
    "source_headers", "deidentify_header", "mark_deidentified", "dataset_bytes", "slice_lps",
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
    out.PatientName = pseudonym + "^"  # PN: the pseudonym as family name (a bare one is the retired form)
    out.PatientID = pseudonym
    for kw in _EMPTY:
        setattr(out, kw, "")
    mark_deidentified(out)
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
    """The source CT's slice headers in ``hu`` z order, de-identified with ``ctx.deidentify``
    (made once per export and shared by SEG, SR and SC through ``ctx.shared``).

    Raises:
        ExportError: the source is not DICOM (a NIfTI CT): no DICOM object can reference it.
    """
    key = "dicom_sources"
    if key not in ctx.shared:
        src = ctx.source
        if not src.is_dicom:
            raise ExportError("the source CT is not DICOM (NIfTI?): DICOM SEG/SR/SC must reference DICOM slices",
                              src.volume.source or None)
        if len({id(d) for d in src.datasets}) != len(src.datasets):
            raise ExportError("the source CT is a multi-frame image: the DICOM exports support single-frame "
                              "series only", src.volume.source or None)
        ctx.shared[key] = ([deidentify_header(d, ctx.case_label) for d in src.datasets] if ctx.deidentify
                           else list(src.datasets))
    headers: list[Dataset] = ctx.shared[key]
    return headers


def slice_lps(ctx: ExportContext, zyx: Sequence[float]) -> np.ndarray:
    """LPS (x, y, z) mm of source voxel ``zyx`` (continuous z-y-x), exact for unevenly spaced
    slices: the slice's own ImagePositionPatient, then the in-plane steps (row, column)."""
    vol = ctx.source.volume
    k = int(round(zyx[0]))
    if not 0 <= k < vol.n_slices:
        raise ExportError(f"voxel z={zyx[0]:g} lies outside the CT's {vol.n_slices} slices", vol.source or None)
    d = np.asarray(vol.direction, dtype=np.float64)
    pos = np.asarray(vol.slice_positions[k], dtype=np.float64)
    return np.asarray(pos + d[:, 1] * vol.spacing[1] * zyx[1] + d[:, 2] * vol.spacing[2] * zyx[2])


def dataset_bytes(ds: Dataset) -> bytes:
    """``ds`` encoded as a DICOM Part 10 file (preamble, file meta), as highdicom built it."""
    if not hasattr(ds, "file_meta") or not isinstance(ds.file_meta, FileMetaDataset):
        raise ValueError("dataset_bytes: the dataset has no file meta (not a highdicom SOP instance?)")
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()

