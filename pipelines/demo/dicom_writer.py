"""The demo CT written as a DICOM series: one CT Image Storage file per slice.  NOT FOR DIAGNOSTIC USE.

Deterministic: the UIDs are hashed from the seed and the grid, so the same seed and grid
give byte-identical files.  File ``IM{nz-1-k:04d}.dcm`` holds array slice k (top slice first).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

SERIES_NUMBER = 2
_STUDY_DATE = "20250101"
_DISCLAIMER_ASCII = "NOT FOR DIAGNOSTIC USE - synthetic phantom"


@dataclass(frozen=True)
class SeriesLabels:
    """What the series says it is (ASCII).  The default labels the synthetic phantom; a derived series
    sets ``derivation`` (DerivationDescription) and gets ImageType DERIVED\\SECONDARY."""

    series_description: str = "SYNTHETIC PHANTOM - NOT FOR DIAGNOSTIC USE"
    image_comments: str = _DISCLAIMER_ASCII
    study_description: str = "CT CHEST - SYNTHETIC DEMO"
    model_name: str = "Procedural chest phantom"
    institution: str = "LungFuse synthetic data"
    patient_name: str = "Demo^Phantom"
    derivation: str | None = None


def _uid(seed: int, params: str, *parts: str) -> str:
    # Deterministic: the same seed and grid give the same UIDs (generate_uid hashes the
    # entropy sources under pydicom's UID root).
    return str(generate_uid(entropy_srcs=["lungfuse-demo", str(seed), params, *parts]))


def write_series(
    ct_dir: Path,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    seed: int,
    params: str,
    labels: SeriesLabels | None = None,
) -> tuple[str, list[str]]:
    """Write one CT Image Storage file per slice; returns (series UID, SOP UIDs by k).

    ``hu``: HU, z-y-x, k along +LPS z (axial HFS, direction SPL); ``spacing`` (z, y, x) mm; ``origin``:
    LPS (x, y, z) mm of voxel (0, 0, 0).  ``labels``: descriptions (default: the synthetic phantom's)."""
    lab = labels or SeriesLabels()
    nz, ny, nx = hu.shape
    sz, sy, sx = spacing
    study_uid = _uid(seed, params, "study")
    series_uid = _uid(seed, params, "series")
    for_uid = _uid(seed, params, "frame-of-reference")
    stored = (np.clip(np.rint(hu), -1024, 3071) + 1024).astype(np.int16)  # HU + 1024
    ct_dir.mkdir(parents=True, exist_ok=True)
    for old in ct_dir.glob("IM*.dcm"):  # a re-run must not leave stale slices behind
        old.unlink()
    sop_uids = [_uid(seed, params, "sop", str(k)) for k in range(nz)]
    for k in range(nz):
        idx = nz - 1 - k  # file / instance order: top (superior) slice first
        zpos = origin[2] + k * sz
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = UID(sop_uids[k])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "LUNGFUSE_010"
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uids[k]
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"] if lab.derivation else ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _STUDY_DATE
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "090000"
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = "LungFuse"
        ds.ManufacturerModelName = lab.model_name
        ds.InstitutionName = lab.institution
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = lab.study_description
        ds.SeriesDescription = lab.series_description
        ds.PatientName = lab.patient_name
        ds.PatientID = "LUNGFUSE-DEMO"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = f"{sz:g}"
        ds.SpacingBetweenSlices = f"{sz:g}"
        ds.KVP = "120"
        ds.ConvolutionKernel = "STANDARD"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = SERIES_NUMBER
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = idx + 1
        ds.ImagePositionPatient = [f"{origin[0]:.4f}", f"{origin[1]:.4f}", f"{zpos:.4f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{zpos:.4f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ny
        ds.Columns = nx
        ds.PixelSpacing = [f"{sy:g}", f"{sx:g}"]  # row spacing (y), column spacing (x)
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = "-600"
        ds.WindowWidth = "1500"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.ImageComments = lab.image_comments
        if lab.derivation:
            ds.DerivationDescription = lab.derivation
        ds.PixelData = stored[k].tobytes()
        ds["PixelData"].VR = "OW"
        ds.save_as(ct_dir / f"IM{idx:04d}.dcm", enforce_file_format=True)
    return series_uid, sop_uids
