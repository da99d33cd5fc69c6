"""Enhanced and legacy-converted multi-frame CT: one DICOM file, many frames -> :class:`CTVolume`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lungfuse.pipelines.core.errors import IngestError
from lungfuse.pipelines.core.geometry import direction_from_iop
from lungfuse.pipelines.core.volume import CTVolume, QualityRecord
from lungfuse.pipelines.io.noise import estimate_noise_sigma
from lungfuse.pipelines.io.stack import is_integral, rescale_into, stack_geometry

if TYPE_CHECKING:  # pydicom is imported lazily (~0.1 s of start-up)
    import pydicom

__all__ = ["load_multiframe"]


def _seq_item(ds: pydicom.Dataset, frame_item: pydicom.Dataset | None, seq: str) -> pydicom.Dataset | None:
    """Functional-group lookup: per-frame first, then shared."""
    for container in (frame_item, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        if container is not None and seq in container and len(container[seq].value):
            return container[seq].value[0]
    return None


def load_multiframe(path: Path, estimate_noise: bool) -> CTVolume:
    """Enhanced / legacy-converted multi-frame CT (one file, many frames)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True)  # force: also a file without file meta, as pass 1 reads it
    except Exception as exc:  # noqa: BLE001 - pydicom can raise almost anything on a damaged file
        raise IngestError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})", path) from exc
    if str(ds.get("Modality", "")).upper() != "CT":
        raise IngestError(f"{path}: modality {ds.get('Modality', '?')}, expected CT")
    if "PixelData" not in ds:
        raise IngestError(f"{path}: no pixel data")
    n = int(ds.NumberOfFrames)
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    if len(per_frame) != n:
        raise IngestError(f"{path}: {n} frames but {len(per_frame)} per-frame functional group items")
    ipps, slopes, intercepts, iops, thick = [], [], [], [], []
    ps = None
    for item in per_frame:
        pos = _seq_item(ds, item, "PlanePositionSequence")
        ori = _seq_item(ds, item, "PlaneOrientationSequence")
        meas = _seq_item(ds, item, "PixelMeasuresSequence")
        pvt = _seq_item(ds, item, "PixelValueTransformationSequence")
        if pos is None or ori is None:
            raise IngestError(f"{path}: frame without PlanePosition/PlaneOrientation; cannot place it")
        ipps.append([float(v) for v in pos.ImagePositionPatient])
        iops.append([float(v) for v in ori.ImageOrientationPatient])
        if meas is not None:
            ps = ps or tuple(float(v) for v in meas.PixelSpacing)
            if meas.get("SliceThickness"):
                thick.append(float(meas.SliceThickness))
        slopes.append(float(pvt.RescaleSlope) if pvt is not None else float(ds.get("RescaleSlope", 1)))
        intercepts.append(float(pvt.RescaleIntercept) if pvt is not None else float(ds.get("RescaleIntercept", 0)))
    iop = tuple(np.median(np.array(iops), axis=0))
    ipps_a = np.array(ipps)
    thickness = float(np.median(thick)) if thick else None
    files = [f"{path}#frame{i + 1}" for i in range(n)]
    order, keep, dz, warns, quality = stack_geometry(ipps_a, iop, thickness, files)
    try:
        frames = ds.pixel_array  # (n, rows, cols), stored values
    except Exception as exc:  # noqa: BLE001 - pydicom's decoders raise many kinds on damaged data
        raise IngestError(f"{path}: pixel data cannot be decoded ({type(exc).__name__}: {exc})", path) from exc
    sel = order[keep]
    int_ok = all(slopes[i] == 1.0 and is_integral(intercepts[i]) for i in sel)
    out = np.empty((len(sel),) + frames.shape[1:], dtype=np.int16 if int_ok else np.float32)
    for k, i in enumerate(sel):
        rescale_into(out[k], frames[i], slopes[i], intercepts[i])
    positions = ipps_a[sel]
    stack = (positions[-1] - positions[0]) / np.linalg.norm(positions[-1] - positions[0]) if len(sel) > 1 else None
    ps = ps or (1.0, 1.0)
    noise = estimate_noise_sigma(out) if estimate_noise else None
    quality = QualityRecord(noise, quality.slice_thickness_mm, quality.slice_spacing_mm, quality.gaps,
                            quality.tilt_deg, quality.oblique, quality.uniform, tuple(warns))
    sop = str(ds.SOPInstanceUID)
    return CTVolume(
        hu=out, spacing=(float(dz), float(ps[0]), float(ps[1])), origin=tuple(positions[0]),
        direction=direction_from_iop(iop, stack), slice_positions=positions,
        sop_instance_uids=tuple(sop for _ in sel), quality=quality,
        study_instance_uid=str(ds.get("StudyInstanceUID", "")), series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "")), frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        source=str(path), source_files=tuple(str(path) for _ in sel), frame_numbers=tuple(int(i) + 1 for i in sel),
        meta={"SeriesDescription": str(ds.get("SeriesDescription", "")), "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
              "multiframe": True},
    )
