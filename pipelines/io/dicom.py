"""CT ingestion: any folder of DICOM files, one enhanced multi-frame CT, or NIfTI -> :class:`CTVolume`.

Design notes
------------
* Tolerant reading (as pydicom): a file that cannot be read is skipped with a
  warning that names it; loading goes on with the rest.  Problems that make a
  volume impossible raise :class:`IngestError` with a message that says what was
  expected and what was found.
* Two passes.  Pass 1 reads only the headers (``stop_before_pixels``) of every
  file, in threads, and records where the pixel data starts.  Pass 2 reads the
  pixels of the chosen series only: uncompressed data goes straight from disk
  into the preallocated int16 volume with ``numpy.fromfile`` (no pydicom
  parsing, no intermediate copies, the GIL released); compressed transfer
  syntaxes are decoded by pydicom with the pylibjpeg / pyjpegls plugins.
* Slices are ordered by their position along the stacking direction, never by
  file name or InstanceNumber, and the z spacing comes from the positions, not
  from SliceThickness.
"""

from __future__ import annotations

import functools
import logging
import os
import struct
import warnings
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lungfuse.pipelines.core.errors import IngestError
from lungfuse.pipelines.core.geometry import (
    affine_from,
    direction_from_iop,
    orientation_code,
    ras_affine_to_lps_zyx,
)
from lungfuse.pipelines.io.dicom_header import FastHeader, FastHeaderUnsupported, read_header_fast

if TYPE_CHECKING:  # pydicom is imported lazily: the fast path never needs it (~0.1 s of start-up)
    import pydicom

log = logging.getLogger(__name__)

__all__ = [
    "CTVolume",
    "IngestError",
    "QualityRecord",
    "SeriesInfo",
    "VolumeWarning",
    "list_series",
    "load_ct",
    "scan_series",
]

#: Image storage SOP classes we can turn into a CT volume.
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"

#: Tolerances (mm / degrees) for geometry checks; chosen well above DICOM's
#: float rounding (positions are written with ~6 decimals) and well below any
#: real slice spacing.
POS_TOL_MM = 0.01
SPACING_REL_TOL = 0.05
ANGLE_TOL_DEG = 0.5

_HEADER_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "PatientID",
    "PatientName", "StudyDate", "Modality", "ImageType", "ImageOrientationPatient",
    "ImagePositionPatient", "PixelSpacing", "Rows", "Columns", "RescaleSlope",
    "RescaleIntercept", "AcquisitionNumber", "InstanceNumber", "SliceThickness",
    "GantryDetectorTilt", "FrameOfReferenceUID", "SeriesDescription", "SeriesNumber",
    "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
    "NumberOfFrames", "PixelPaddingValue", "Manufacturer", "KVP", "ConvolutionKernel",
]




@dataclass(frozen=True)
class VolumeWarning:
    """A problem found while loading, attached to the volume.

    ``code`` is a stable machine-readable key (``gap``, ``uneven_spacing``,
    ``gantry_tilt``, ``oblique``, ``duplicate_position``, ``mixed_size``,
    ``skipped_file``, ``scout_excluded``, ``other_series``, ``padding``...).
    """

    code: str
    message: str
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "files": list(self.files)}


@dataclass(frozen=True)
class QualityRecord:
    """Acquisition-quality facts measured on the volume (EAF consumes these).

    Attributes:
        noise_sigma_hu: image noise, HU; the median local standard deviation in
            homogeneous soft-tissue patches (see :func:`estimate_noise_sigma`).
        slice_thickness_mm: nominal reconstructed thickness (DICOM SliceThickness),
            or the slice spacing when the tag is absent.
        slice_spacing_mm: median distance between adjacent slice positions.
        gaps: ``(after_slice_index, missing_mm)`` for each gap in the stack.
        tilt_deg: gantry tilt, the angle between the slice normal and the
            stacking direction (0 for a normal axial series).
        oblique: True when the image plane is not aligned with the patient axes.
        uniform: True when slices are evenly spaced (the affine is then exact for
            every slice; otherwise use :meth:`CTVolume.resample_uniform`).
        warnings: every :class:`VolumeWarning` raised while loading.
    """

    noise_sigma_hu: float | None
    slice_thickness_mm: float
    slice_spacing_mm: float
    gaps: tuple[tuple[int, float], ...] = ()
    tilt_deg: float = 0.0
    oblique: bool = False
    uniform: bool = True
    warnings: tuple[VolumeWarning, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "noise_sigma_hu": self.noise_sigma_hu,
            "slice_thickness_mm": self.slice_thickness_mm,
            "slice_spacing_mm": self.slice_spacing_mm,
            "gaps": [list(g) for g in self.gaps],
            "tilt_deg": self.tilt_deg,
            "oblique": self.oblique,
            "uniform": self.uniform,
            "warnings": [w.to_dict() for w in self.warnings],
        }


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT volume in Hounsfield units with its patient geometry.

    Attributes:
        hu: HU values, axis order **z-y-x** (slice, row, column), slices ordered
            along the stacking direction (increasing index = +direction[:, 0]).
            dtype ``int16`` when every slice has RescaleSlope 1 and an integer
            intercept (the usual case; no float copy is ever made), else ``float32``.
        spacing: voxel size (z, y, x) in mm; z from the slice positions.
        origin: LPS position (x, y, z), mm, of the centre of voxel (0, 0, 0).
        direction: 3x3, columns = LPS unit vectors of the z, y, x array axes.
        slice_positions: LPS position (x, y, z) of each slice's first voxel,
            shape (n_slices, 3); the exact geometry even when spacing is uneven.
        sop_instance_uids: SOP Instance UID of each slice, in array order.
        frame_numbers: for multi-frame sources, the 1-based frame number of each
            slice within its SOP instance; ``None`` for single-frame series.
        study_instance_uid, series_instance_uid, patient_id,
        frame_of_reference_uid: identifiers (empty string when unknown).
        source: where the volume came from (folder or file path).
        source_files: the file of each slice, in array order.
        quality: the :class:`QualityRecord`.
        meta: other header facts (series description, manufacturer, kVp...).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    slice_positions: np.ndarray
    sop_instance_uids: tuple[str, ...]
    quality: QualityRecord
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    patient_id: str = ""
    frame_of_reference_uid: str = ""
    source: str = ""
    source_files: tuple[str, ...] = ()
    frame_numbers: tuple[int, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.hu, np.ndarray) or self.hu.ndim != 3:
            raise TypeError(f"CTVolume.hu must be a 3-D numpy array (z, y, x); got {type(self.hu)}")
        if self.hu.dtype not in (np.int16, np.float32):
            raise TypeError(f"CTVolume.hu dtype must be int16 or float32, got {self.hu.dtype}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"CTVolume.spacing must be three positive mm values (z, y, x), got {self.spacing}")
        if np.asarray(self.direction).shape != (3, 3):
            raise ValueError("CTVolume.direction must be 3x3 (columns z, y, x)")
        n = self.hu.shape[0]
        if len(self.sop_instance_uids) != n:
            raise ValueError(f"CTVolume needs one SOP Instance UID per slice: {len(self.sop_instance_uids)} for {n} slices")
        if np.asarray(self.slice_positions).shape != (n, 3):
            raise ValueError("CTVolume.slice_positions must have shape (n_slices, 3)")

    # -- geometry -----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape, z-y-x."""
        return tuple(int(s) for s in self.hu.shape)  # type: ignore[return-value]

    @property
    def n_slices(self) -> int:
        return int(self.hu.shape[0])

    @property
    def affine(self) -> np.ndarray:
        """4x4 map from voxel (k, j, i) to LPS (x, y, z) mm; exact when ``quality.uniform``."""
        return affine_from(self.origin, self.spacing, self.direction)

    @property
    def orientation(self) -> str:
        """Patient-direction letters of the array axes z, y, x (e.g. ``"SPL"``)."""
        return orientation_code(self.direction)

    @property
    def warnings(self) -> tuple[VolumeWarning, ...]:
        return self.quality.warnings

    def hu_range(self) -> tuple[float, float]:
        return float(self.hu.min()), float(self.hu.max())

    def resample_uniform(self, spacing_z: float | None = None) -> CTVolume:
        """Return a copy on an evenly spaced slice grid (linear interpolation along z).

        Use it when ``quality.uniform`` is False (gaps or uneven spacing).  Each
        new slice is interpolated between the two acquired slices around it,
        using their real positions along the stacking direction.  The output is
        float32 (interpolated values are not integers); SOP UIDs of new slices
        are those of the nearest acquired slice.
        """
        dz = float(spacing_z or self.quality.slice_spacing_mm)
        stack = self.direction[:, 0]
        s = (self.slice_positions - self.slice_positions[0]) @ stack
        n_new = int(np.floor(s[-1] / dz + 1e-6)) + 1
        targets = np.arange(n_new) * dz
        idx = np.clip(np.searchsorted(s, targets, side="right") - 1, 0, len(s) - 2)
        w = ((targets - s[idx]) / np.maximum(s[idx + 1] - s[idx], 1e-9)).astype(np.float32)
        out = np.empty((n_new,) + self.hu.shape[1:], dtype=np.float32)
        for n, (k, wk) in enumerate(zip(idx, w, strict=True)):
            np.multiply(self.hu[k], 1.0 - wk, out=out[n], casting="unsafe")
            out[n] += wk * self.hu[k + 1]
        nearest = np.clip(np.rint(idx + w).astype(int), 0, len(s) - 1)
        positions = self.slice_positions[0] + np.outer(targets, stack)
        q = self.quality
        quality = QualityRecord(
            q.noise_sigma_hu, q.slice_thickness_mm, dz, (), q.tilt_deg, q.oblique, True,
            q.warnings + (VolumeWarning("resampled", f"resampled to a uniform {dz:.3f} mm slice grid"),),
        )
        return CTVolume(
            out, (dz, self.spacing[1], self.spacing[2]), self.origin, self.direction, positions,
            tuple(self.sop_instance_uids[i] for i in nearest), quality, self.study_instance_uid,
            self.series_instance_uid, self.patient_id, self.frame_of_reference_uid, self.source,
            tuple(self.source_files[i] for i in nearest) if self.source_files else (), None, dict(self.meta),
        )

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (what ``lungfuse inspect`` prints)."""
        lo, hi = self.hu_range()
        return {
            "source": self.source,
            "patient_id": self.patient_id,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "n_slices": self.n_slices,
            "shape": list(self.shape),
            "axis_order": "z-y-x",
            "spacing_mm": [round(float(s), 6) for s in self.spacing],
            "origin_lps_mm": [round(float(o), 4) for o in self.origin],
            "direction": np.round(self.direction, 6).tolist(),
            "orientation": self.orientation,
            "extent_mm": [round(float(s * n), 2) for s, n in zip(self.spacing, self.shape, strict=True)],
            "dtype": str(self.hu.dtype),
            "hu_range": [lo, hi],
            "quality": self.quality.to_dict(),
            "warnings": [w.to_dict() for w in self.warnings],
            "meta": self.meta,
        }


@dataclass(frozen=True)
class _SliceHeader:
    """Pass-1 facts of one image file (one frame for single-frame CT)."""

    path: str
    series_uid: str
    sop_uid: str
    sop_class: str
    modality: str
    image_type: tuple[str, ...]
    iop: tuple[float, ...] | None
    ipp: tuple[float, float, float] | None
    rows: int
    cols: int
    pixel_spacing: tuple[float, float] | None
    slope: float
    intercept: float
    acq: str
    instance: int | None
    thickness: float | None
    tilt: float
    n_frames: int
    transfer_syntax: str
    pixel_offset: int | None  # byte offset of native pixel values in the file, or None
    pixel_nbytes: int | None
    bits_allocated: int
    pixel_representation: int
    padding: int | None
    study_uid: str
    patient_id: str
    frame_of_ref: str
    extra: dict[str, Any]

    @property
    def is_localizer(self) -> bool:
        return any(t.upper() == "LOCALIZER" for t in self.image_type)


@dataclass(frozen=True)
class SeriesInfo:
    """One candidate image stack found in the input (for ``list_series`` / choosing)."""

    series_uid: str
    key: str
    modality: str
    n_images: int
    rows: int
    cols: int
    description: str
    orientation: str
    is_localizer: bool
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "series_instance_uid": self.series_uid, "key": self.key, "modality": self.modality,
            "n_images": self.n_images, "rows": self.rows, "cols": self.cols,
            "description": self.description, "orientation": self.orientation,
            "is_localizer": self.is_localizer,
        }


# ---------------------------------------------------------------------------
# Pass 1: headers
# ---------------------------------------------------------------------------
def _iter_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (any depth, any name), sorted for determinism."""
    if root.is_file():
        return [root]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith(".") or f.upper() == "DICOMDIR":
                # DICOMDIR is an index, not an image: the walk finds the files anyway.
                continue
            out.append(Path(dirpath) / f)
    return out


def _float_tuple(v: Any, n: int) -> tuple[float, ...] | None:
    try:
        t = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return t if len(t) == n else None


def _native_pixel_location(fp: Any, ds: pydicom.Dataset) -> tuple[int | None, int | None]:
    """After a ``stop_before_pixels`` read, find where the native pixel values lie.

    pydicom leaves the file positioned at the start of the (7FE0,0010) element.
    For an uncompressed transfer syntax we decode the element header ourselves
    (explicit VR: tag, VR, 2 reserved, 4-byte length; implicit: tag, 4-byte
    length) so that pass 2 can read the values with ``numpy.fromfile``.
    Returns ``(offset, nbytes)`` or ``(None, None)`` when not applicable.
    """
    from pydicom.uid import UID

    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is None or UID(tsyntax).is_compressed or not UID(tsyntax).is_little_endian:
        return None, None
    start = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return None, None
    group, elem = struct.unpack("<HH", head[:4])
    if (group, elem) != (0x7FE0, 0x0010):
        return None, None
    if UID(tsyntax).is_implicit_VR:
        (length,) = struct.unpack("<I", head[4:8])
        offset = start + 8
    else:
        (length,) = struct.unpack("<I", head[8:12])
        offset = start + 12
    if length == 0xFFFFFFFF:
        return None, None
    return offset, length


_EXTRA_TAGS = ("SeriesDescription", "Manufacturer", "KVP", "ConvolutionKernel", "StudyDate", "SeriesNumber",
               "PatientName")
_BIN_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}


class _HeaderView:
    """Fast read-only access to the few header values pass 1 needs.

    pydicom converts a raw element through its full value machinery on first
    access (~30 us each); for a 1000-file folder that dominated the load.  For
    little-endian data we decode the raw bytes ourselves (text VRs: strip and
    split on backslash; binary VRs: struct), falling back to pydicom for
    anything unusual (sequences, big endian, already converted elements).
    """

    __slots__ = ("ds", "fast")

    def __init__(self, ds: pydicom.Dataset) -> None:
        self.ds = ds
        enc = getattr(ds, "original_encoding", (None, True))
        self.fast = enc[1] is not False

    def _values(self, keyword: str) -> list[Any]:
        tag = _tag_for(keyword)
        elem = self.ds._dict.get(tag)
        if elem is None:
            return []
        from pydicom.datadict import dictionary_VR
        from pydicom.dataelem import RawDataElement
        from pydicom.multival import MultiValue

        if self.fast and isinstance(elem, RawDataElement):
            raw = elem.value
            if not raw:
                return []
            vr = elem.VR or dictionary_VR(tag)
            fmt = _BIN_FORMATS.get(vr)
            if fmt is not None:
                n = len(raw) // struct.calcsize(fmt)
                return list(struct.unpack("<" + fmt * n, raw[: n * struct.calcsize(fmt)]))
            text = raw.decode("latin-1").strip(" \x00")
            return [t.strip(" \x00") for t in text.split("\\")] if text else []
        value = self.ds[tag].value
        if value is None or value == "":
            return []
        if isinstance(value, (list, tuple, MultiValue)):
            return [v for v in value]
        return [value]

    def str(self, keyword: str) -> str:
        v = self._values(keyword)
        return "\\".join(str(x) for x in v) if v else ""

    def strs(self, keyword: str) -> list[str]:
        return [str(x) for x in self._values(keyword)]

    def floats(self, keyword: str, n: int) -> tuple[float, ...] | None:
        return _float_tuple(self._values(keyword), n)

    def float(self, keyword: str, default: float | None = None) -> float | None:
        v = self._values(keyword)
        try:
            return float(v[0]) if v else default
        except (TypeError, ValueError):
            return default

    def int(self, keyword: str) -> int | None:
        v = self._values(keyword)
        try:
            return int(float(v[0])) if v else None
        except (TypeError, ValueError):
            return None

    def ints(self, keyword: str) -> list[int]:
        out = []
        for x in self._values(keyword):
            try:
                out.append(int(x))
            except (TypeError, ValueError):
                pass
        return out


@functools.cache
def _tag_for(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return tag


def _header_from_fast(path: Path, fh: FastHeader) -> _SliceHeader:
    """Pass-1 header from :func:`dicom_fast.read_header_fast` (the common, fast case)."""

    def t(v: Any) -> str:
        return "" if v is None else str(v)

    def f3(v: Any, n: int) -> tuple[float, ...] | None:
        return _float_tuple(v, n) if v is not None else None

    return _SliceHeader(
        path=str(path), series_uid=t(fh.series_instance_uid), sop_uid=t(fh.sop_instance_uid),
        sop_class=t(fh.sop_class_uid), modality=t(fh.modality).upper(),
        image_type=tuple(fh.image_type or ()), iop=f3(fh.image_orientation_patient, 6),
        ipp=f3(fh.image_position_patient, 3), rows=int(fh.rows or 0), cols=int(fh.columns or 0),  # type: ignore[arg-type]
        pixel_spacing=f3(fh.pixel_spacing, 2),  # type: ignore[arg-type]
        slope=float(fh.rescale_slope) if fh.rescale_slope else 1.0,
        intercept=float(fh.rescale_intercept or 0.0), acq=t(fh.acquisition_number),
        instance=fh.instance_number, thickness=fh.slice_thickness, tilt=float(fh.gantry_detector_tilt or 0.0),
        n_frames=int(fh.number_of_frames or 1), transfer_syntax=fh.transfer_syntax,
        pixel_offset=fh.pixel_offset, pixel_nbytes=fh.pixel_nbytes, bits_allocated=int(fh.bits_allocated or 16),
        pixel_representation=int(fh.pixel_representation or 0), padding=fh.pixel_padding_value,
        study_uid=t(fh.study_instance_uid), patient_id=t(fh.patient_id), frame_of_ref=t(fh.frame_of_reference_uid),
        extra={"SeriesDescription": t(fh.series_description), "Manufacturer": t(fh.manufacturer),
               "KVP": t(fh.kvp if fh.kvp is None or fh.kvp != int(fh.kvp) else int(fh.kvp)),
               "ConvolutionKernel": t(fh.convolution_kernel), "StudyDate": t(fh.study_date),
               "SeriesNumber": t(fh.series_number), "PatientName": t(fh.patient_name)},
    )


def _read_header(path: Path) -> _SliceHeader | None | str:
    """Read one file's header.  Returns a header, None (not DICOM / not an image) or an error string.

    The fast reader (no pydicom, ~30 us/file) handles ordinary image files;
    anything it is not sure about falls back to pydicom's tolerant reader.
    """
    try:
        fh = read_header_fast(path)
        if fh.rows is not None and fh.columns is not None:
            return _header_from_fast(path, fh)
    except FastHeaderUnsupported:
        if not _looks_like_dicom_name(path):
            return None  # a report, XML annotation, README...: not worth pydicom's forced parse
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with open(path, "rb") as fp, warnings.catch_warnings(record=True) as caught:
            # pydicom's own warnings (truncation, bad VRs) are folded into ours.
            warnings.simplefilter("always")
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            except InvalidDicomError:
                # Files without the 128-byte preamble are still legal DICOM streams
                # for many archives; try once more with force, and accept only if
                # it looks like an image header.
                fp.seek(0)
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True, specific_tags=_HEADER_TAGS)
                if "SOPClassUID" not in ds and "Rows" not in ds:
                    return None
            offset, nbytes = _native_pixel_location(fp, ds)
    except Exception as exc:  # noqa: BLE001 - pydicom can raise almost anything on garbage
        return f"{type(exc).__name__}: {exc}"
    if "Rows" not in ds or "Columns" not in ds:
        if "SOPClassUID" in ds:
            return None  # SR, KO, presentation state, RT structure set, ...: valid, but not an image
        why = "; ".join(str(w.message) for w in caught) or "no SOP Class and no image attributes"
        return f"corrupt or not a DICOM image ({why})"
    try:
        hv = _HeaderView(ds)
        pad = hv.ints("PixelPaddingValue")
        n_frames = hv.int("NumberOfFrames")
        return _SliceHeader(
            path=str(path),
            series_uid=hv.str("SeriesInstanceUID"),
            sop_uid=hv.str("SOPInstanceUID"),
            sop_class=hv.str("SOPClassUID"),
            modality=hv.str("Modality").upper(),
            image_type=tuple(hv.strs("ImageType")),
            iop=hv.floats("ImageOrientationPatient", 6),
            ipp=hv.floats("ImagePositionPatient", 3),  # type: ignore[arg-type]
            rows=hv.int("Rows") or 0,
            cols=hv.int("Columns") or 0,
            pixel_spacing=hv.floats("PixelSpacing", 2),  # type: ignore[arg-type]
            slope=hv.float("RescaleSlope", 1.0) or 1.0,
            intercept=hv.float("RescaleIntercept", 0.0) or 0.0,
            acq=hv.str("AcquisitionNumber"),
            instance=hv.int("InstanceNumber"),
            thickness=hv.float("SliceThickness"),
            tilt=hv.float("GantryDetectorTilt", 0.0) or 0.0,
            n_frames=n_frames if n_frames else 1,
            transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else "",
            pixel_offset=offset,
            pixel_nbytes=nbytes,
            bits_allocated=hv.int("BitsAllocated") or 16,
            pixel_representation=hv.int("PixelRepresentation") or 0,
            padding=pad[0] if pad else None,
            study_uid=hv.str("StudyInstanceUID"),
            patient_id=hv.str("PatientID"),
            frame_of_ref=hv.str("FrameOfReferenceUID"),
            extra={k: hv.str(k) for k in _EXTRA_TAGS},
        )
    except (ValueError, TypeError, AttributeError) as exc:
        return f"bad header value: {exc}"


def _n_threads() -> int:
    # Pixel reads release the GIL (numpy.fromfile, the C decoders); one thread per
    # core measured fastest here, more only adds contention.
    return max(2, min(8, os.cpu_count() or 2))


def _scan_headers(root: Path) -> tuple[list[_SliceHeader], list[VolumeWarning], int]:
    files = _iter_files(root)
    headers: list[_SliceHeader] = []
    warns: list[VolumeWarning] = []
    # Header parsing is pure Python and holds the GIL: threads made it ~2x
    # slower (measured on LIDC-IDRI-0002), so pass 1 runs serially.
    for path in files:
        res = _read_header(path)
        if isinstance(res, _SliceHeader):
            headers.append(res)
        elif isinstance(res, str):
            if _looks_like_dicom_name(path):
                warns.append(VolumeWarning("skipped_file", f"skipped unreadable file {path}: {res}", (str(path),)))
            else:
                log.debug("ignoring non-DICOM file %s (%s)", path, res)
    return headers, warns, len(files)


def _looks_like_dicom_name(path: Path) -> bool:
    """Whether an unreadable file deserves a warning (vs. a README or XML lying beside the images)."""
    suffix = path.suffix.lower()
    if suffix in (".dcm", ".dicom", ".ima", ""):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Grouping and choosing the series
# ---------------------------------------------------------------------------
def _orientation_key(iop: tuple[float, ...] | None) -> str:
    if iop is None:
        return "none"
    return ",".join(f"{round(v, 3):+.3f}" for v in iop)


def _group(headers: list[_SliceHeader]) -> dict[str, list[_SliceHeader]]:
    """Group by SeriesInstanceUID, then split by orientation, image size and acquisition.

    AcquisitionNumber only splits a series when its acquisitions overlap in
    space (a repeated scan); some scanners give every slice of one volume its
    own acquisition number, and splitting those would shred the volume.
    """
    by_series: dict[str, list[_SliceHeader]] = defaultdict(list)
    for h in headers:
        by_series[h.series_uid].append(h)
    groups: dict[str, list[_SliceHeader]] = {}
    for suid, hs in by_series.items():
        sub: dict[tuple[str, int, int], list[_SliceHeader]] = defaultdict(list)
        for h in hs:
            sub[(_orientation_key(h.iop), h.rows, h.cols)].append(h)
        for (okey, rows, cols), members in sub.items():
            by_acq: dict[str, list[_SliceHeader]] = defaultdict(list)
            for h in members:
                by_acq[h.acq].append(h)
            split = len(by_acq) > 1 and _acquisitions_overlap(by_acq)
            parts = by_acq.items() if split else [("", members)]
            for acq, part in parts:
                key = f"{suid}|{okey}|{rows}x{cols}" + (f"|acq{acq}" if split else "")
                groups[key] = list(part)
    return groups


def _acquisitions_overlap(by_acq: dict[str, list[_SliceHeader]]) -> bool:
    positions = [{tuple(np.round(h.ipp, 2)) for h in hs if h.ipp} for hs in by_acq.values()]
    for i in range(len(positions)):
        for j in range(i + 1, len(positions)):
            if positions[i] & positions[j]:
                return True
    return False


def _series_info(key: str, hs: list[_SliceHeader]) -> SeriesInfo:
    h0 = hs[0]
    n_images = sum(h.n_frames for h in hs)
    if h0.iop is not None:
        orient = orientation_code(direction_from_iop(h0.iop))
    else:
        orient = "?"
    return SeriesInfo(
        series_uid=h0.series_uid, key=key, modality=h0.modality, n_images=n_images, rows=h0.rows,
        cols=h0.cols, description=h0.extra.get("SeriesDescription", ""), orientation=orient,
        is_localizer=any(h.is_localizer for h in hs), files=tuple(h.path for h in hs),
    )


def _axialness(iop: tuple[float, ...] | None) -> float:
    if iop is None:
        return 0.0
    return float(abs(np.cross(iop[:3], iop[3:6])[2]))


def _choose(
    groups: dict[str, list[_SliceHeader]], series_uid: str | None, warns: list[VolumeWarning], root: Path
) -> tuple[str, list[_SliceHeader]]:
    if series_uid:
        keys = [k for k, hs in groups.items() if hs[0].series_uid == series_uid or k == series_uid]
        if not keys:
            avail = ", ".join(sorted({hs[0].series_uid for hs in groups.values()}))
            raise IngestError(f"series {series_uid} not found under {root}; available: {avail}")
        key = max(keys, key=lambda k: sum(h.n_frames for h in groups[k]))
        return key, groups[key]

    ct = {k: hs for k, hs in groups.items() if hs[0].modality == "CT"}
    if not ct:
        mods = sorted({hs[0].modality or "?" for hs in groups.values()})
        raise IngestError(
            f"no CT images under {root}: found modality {', '.join(mods)} "
            f"({sum(len(h) for h in groups.values())} image file(s)); LungFuse needs a CT series"
        )
    candidates = {}
    for k, hs in ct.items():
        n = sum(h.n_frames for h in hs)
        if any(h.is_localizer for h in hs):
            warns.append(VolumeWarning("scout_excluded", f"excluded localizer/scout series {hs[0].series_uid} ({n} image(s))",
                                       tuple(h.path for h in hs)))
            continue
        candidates[k] = hs
    if not candidates:
        raise IngestError(f"only localizer/scout CT images under {root}; no axial CT volume")

    # Stacks of >= 3 images beat single images, then the most axial, then the
    # largest; a lone image of another geometry is reported below as a scout even
    # when ImageType does not say so (some scanners label scouts ORIGINAL\PRIMARY\AXIAL).
    def rank(k: str) -> tuple[int, float, int]:
        hs = candidates[k]
        n = sum(h.n_frames for h in hs)
        return (int(n >= 3), _axialness(hs[0].iop), n)

    key = max(candidates, key=rank)
    for k, hs in candidates.items():
        if k == key:
            continue
        n = sum(h.n_frames for h in hs)
        code = "scout_excluded" if n == 1 else "other_series"
        what = "single image with a different geometry (treated as a scout)" if n == 1 else "another image stack"
        warns.append(VolumeWarning(code, f"ignored {what}: series {hs[0].series_uid}, {n} image(s), "
                                         f"{hs[0].rows}x{hs[0].cols}; choose it with series_uid=", (hs[0].path,)))
    # Same series split by image size = slices of mixed size inside one series.
    same = [k for k in groups if k != key and groups[k][0].series_uid == groups[key][0].series_uid]
    for k in same:
        hs = groups[k]
        warns.append(VolumeWarning(
            "mixed_size",
            f"series {hs[0].series_uid} mixes image sizes or orientations: kept {groups[key][0].rows}x{groups[key][0].cols} "
            f"({len(groups[key])} slices), dropped {hs[0].rows}x{hs[0].cols} ({len(hs)} slice(s))",
            tuple(h.path for h in hs),
        ))
    return key, candidates[key]


# ---------------------------------------------------------------------------
# Pass 2: pixels
# ---------------------------------------------------------------------------
def _pixel_dtype(h: _SliceHeader) -> np.dtype:
    if h.bits_allocated == 16:
        return np.dtype("<i2") if h.pixel_representation == 1 else np.dtype("<u2")
    if h.bits_allocated == 8:
        return np.dtype("i1") if h.pixel_representation == 1 else np.dtype("u1")
    if h.bits_allocated == 32:
        return np.dtype("<i4") if h.pixel_representation == 1 else np.dtype("<u4")
    raise IngestError(f"{h.path}: unsupported BitsAllocated {h.bits_allocated}")


def _read_pixels(h: _SliceHeader) -> np.ndarray:
    """Stored values (rows, cols) of a single-frame image, before rescale."""
    dtype = _pixel_dtype(h)
    count = h.rows * h.cols
    if h.pixel_offset is not None and h.pixel_nbytes is not None:
        if h.pixel_nbytes < count * dtype.itemsize:
            raise IngestError(f"{h.path}: pixel data has {h.pixel_nbytes} bytes, expected {count * dtype.itemsize}")
        arr = np.fromfile(h.path, dtype=dtype, count=count, offset=h.pixel_offset)
        if arr.size != count:
            raise IngestError(f"{h.path}: truncated file, {arr.size * dtype.itemsize} of {count * dtype.itemsize} pixel bytes present")
        return arr.reshape(h.rows, h.cols)
    import pydicom

    ds = pydicom.dcmread(h.path)
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise IngestError(f"{h.path}: no pixel data")
    arr = ds.pixel_array
    if arr.shape != (h.rows, h.cols):
        raise IngestError(f"{h.path}: decoded shape {arr.shape}, expected {(h.rows, h.cols)}")
    return arr


def _rescale_into(out: np.ndarray, stored: np.ndarray, slope: float, intercept: float) -> None:
    """Write ``stored * slope + intercept`` into ``out`` (one slice) without float64 temporaries."""
    if out.dtype == np.int16:
        if stored.dtype == np.int16:
            out[...] = stored
        else:
            np.copyto(out, np.clip(stored, -32768, 32767), casting="unsafe")
        if intercept:
            out += np.int16(intercept)
    else:
        np.multiply(stored, np.float32(slope), out=out, casting="unsafe")
        out += np.float32(intercept)


def _integral(x: float) -> bool:
    return abs(x - round(x)) < 1e-6


# ---------------------------------------------------------------------------
# Geometry checks on a stack
# ---------------------------------------------------------------------------
def _stack_geometry(
    ipps: np.ndarray, iop: tuple[float, ...], thickness: float | None, files: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, float, list[VolumeWarning], QualityRecord]:
    """Order slices and measure spacing, gaps, tilt, duplicates.

    Returns (order, keep_mask_in_sorted_order, dz, warnings, partial quality).
    """
    warns: list[VolumeWarning] = []
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:6])
    normal = np.cross(row, col)
    s = ipps @ normal
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    ipp_sorted = ipps[order]

    # Duplicated positions: keep the first file at each position, warn with the others.
    keep = np.ones(len(order), dtype=bool)
    diffs = np.diff(s_sorted)
    dup_idx = np.nonzero(np.abs(diffs) < POS_TOL_MM)[0]
    for i in dup_idx:
        keep[i + 1] = False
    if len(dup_idx):
        dropped = [files[order[i + 1]] for i in dup_idx]
        warns.append(VolumeWarning(
            "duplicate_position",
            f"{len(dup_idx)} slice(s) duplicate another slice's position (e.g. z={s_sorted[dup_idx[0]]:.2f} mm); "
            f"kept the first of each, dropped {', '.join(Path(p).name for p in dropped[:5])}"
            + (" ..." if len(dropped) > 5 else ""),
            tuple(dropped),
        ))
    s_k = s_sorted[keep]
    ipp_k = ipp_sorted[keep]
    if len(s_k) < 2:
        dz = float(thickness or 1.0)
        return order, keep, dz, warns, QualityRecord(None, float(thickness or dz), dz)

    d = np.diff(s_k)
    dz = float(np.median(d))

    # Gantry tilt: the stacking vector (first -> last slice) vs the slice normal.
    stack_vec = ipp_k[-1] - ipp_k[0]
    stack_unit = stack_vec / np.linalg.norm(stack_vec)
    tilt = float(np.degrees(np.arccos(np.clip(abs(stack_unit @ normal), -1, 1))))
    if tilt > ANGLE_TOL_DEG:
        warns.append(VolumeWarning(
            "gantry_tilt",
            f"gantry tilt of {tilt:.1f} deg: slices are sheared along the stacking direction; "
            "the affine follows the real stacking vector (as acquired, not de-tilted)",
        ))
    # Spacing along the stacking direction (differs from the normal spacing when tilted).
    dz_stack = float(np.median(np.linalg.norm(np.diff(ipp_k, axis=0), axis=1)))

    gaps: list[tuple[int, float]] = []
    for i, di in enumerate(d):
        if di > dz * (1 + 0.5):
            n_missing = int(round(di / dz)) - 1
            gaps.append((i, float(di - dz)))
            warns.append(VolumeWarning(
                "gap",
                f"gap of {di:.2f} mm between slices {i} and {i + 1} (z={s_k[i]:.2f} -> {s_k[i + 1]:.2f} mm; "
                f"about {max(n_missing, 1)} missing slice(s) at {dz:.2f} mm spacing)",
            ))
    uneven = np.abs(d - dz) > max(SPACING_REL_TOL * dz, POS_TOL_MM)
    uniform = not uneven.any()
    if not gaps and not uniform:
        warns.append(VolumeWarning(
            "uneven_spacing",
            f"uneven slice spacing: {d.min():.3f} to {d.max():.3f} mm (median {dz:.3f}); "
            "use CTVolume.resample_uniform() for an exact regular grid",
        ))
    elif gaps:
        warns.append(VolumeWarning(
            "uneven_spacing",
            "spacing is uneven because of the gap(s); use CTVolume.resample_uniform() to interpolate a regular grid",
        ))

    # Oblique: the image plane is not aligned with the patient axes.
    if max(1 - np.max(np.abs(row)), 1 - np.max(np.abs(col))) > 1 - np.cos(np.radians(ANGLE_TOL_DEG)):
        warns.append(VolumeWarning("oblique", f"oblique image orientation {tuple(round(v, 4) for v in iop)}"))
    oblique = any(w.code == "oblique" for w in warns)

    thick = float(thickness) if thickness else dz
    if thickness and abs(thickness - dz) > SPACING_REL_TOL * dz and thickness < dz:
        warns.append(VolumeWarning(
            "thickness_spacing",
            f"SliceThickness {thickness:.2f} mm differs from the measured spacing {dz:.2f} mm (gaps between slices)",
        ))
    quality = QualityRecord(None, thick, dz_stack if tilt > ANGLE_TOL_DEG else dz, tuple(gaps), tilt, oblique, uniform and not gaps)
    return order, keep, (dz_stack if tilt > ANGLE_TOL_DEG else dz), warns, quality


# ---------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------
def _box_mean(a: np.ndarray, k: int) -> np.ndarray:
    """k x k moving average of a 2-D float32 array (edge-replicated), via summed-area tables.

    numpy only: importing scipy.ndimage for this would cost ~0.1 s per process.
    """
    p = k // 2
    a = np.pad(a, ((p + 1, p), (p + 1, p)), mode="edge")
    c = a.cumsum(axis=0, dtype=np.float64).cumsum(axis=1)
    s = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return (s / (k * k)).astype(np.float32)


def estimate_noise_sigma(hu: np.ndarray, max_slices: int = 6, patch: int = 7) -> float | None:
    """Image noise (HU) measured in homogeneous regions.

    Method: on up to ``max_slices`` slices from the middle of the volume, the
    local standard deviation is computed in ``patch`` x ``patch`` windows
    (box filter, float32).  Windows whose mean lies in soft tissue
    (-150..150 HU) or in air outside the body (<-950 HU, not padding) are
    candidates; the lowest-variance third of them are taken as homogeneous and
    their median local SD is returned.  Anatomical edges inflate local SD, so
    the low-variance tail is the noise floor (the approach of e.g. automatic
    noise measurement in CT QA).  Returns None for tiny or constant images.
    """
    nz = hu.shape[0]
    if nz == 0 or min(hu.shape[1:]) < 3 * patch:
        return None
    idx = np.linspace(nz * 0.3, nz * 0.7, num=min(max_slices, nz)).astype(int)
    idx = np.unique(np.clip(idx, 0, nz - 1))
    sds: list[np.ndarray] = []
    for prefer_tissue in (True, False):
        for k in idx:
            sl = hu[k].astype(np.float32)
            m = _box_mean(sl, patch)
            m2 = _box_mean(sl * sl, patch)
            sd = np.sqrt(np.maximum(m2 - m * m, 0))
            sel = ((m > -150) & (m < 150)) if prefer_tissue else ((m < -950) & (m > -1100))
            sel &= sd > 0
            sel[: patch, :] = sel[-patch:, :] = False
            sel[:, : patch] = sel[:, -patch:] = False
            if sel.any():
                sds.append(sd[sel][:: max(1, int(sel.sum() // 2000))])
        if sds and sum(len(s) for s in sds) > 200:
            break
    if not sds:
        return None
    allsd = np.concatenate(sds)
    low = allsd[allsd <= np.quantile(allsd, 1 / 3)]
    return float(np.median(low)) if low.size else None


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------
def scan_series(path: str | os.PathLike[str]) -> tuple[list[SeriesInfo], list[VolumeWarning]]:
    """Every image stack found under ``path`` (DICOM headers only, no pixels), largest
    first, plus a ``skipped_file`` warning naming each unreadable DICOM-looking file.

    Non-image DICOM (SR, KO, ...) and non-DICOM files (XML, README) are ignored
    silently; image objects of any modality (CT, CR/DX, SEG, ...) are listed with
    their ``modality`` so the caller chooses.
    """
    headers, warns, _ = _scan_headers(Path(path))
    infos = [_series_info(k, hs) for k, hs in _group(headers).items()]
    return sorted(infos, key=lambda s: -s.n_images), warns


def list_series(path: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Every image stack found under ``path`` (DICOM only), largest first."""
    return scan_series(path)[0]


def load_ct(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    min_slices: int = 3,
    estimate_noise: bool = True,
) -> CTVolume:
    """Load a CT volume from a DICOM folder tree, one multi-frame DICOM file, or NIfTI.

    Args:
        path: a folder (DICOM files at any depth, any names; DICOMDIR optional),
            a single DICOM file (enhanced multi-frame CT, or one slice of a series
            whose folder is then used), or a ``.nii``/``.nii.gz`` file.
        series_uid: choose this SeriesInstanceUID instead of the automatic choice
            (the axial CT stack with the most slices, scouts excluded).
        min_slices: fewer slices than this is an error (not a volume).
        estimate_noise: measure ``quality.noise_sigma_hu`` (a few tens of ms).

    Raises:
        IngestError: empty folder, no image data, non-CT modality, too few
            slices, or nothing readable; the message names the path.
        FileNotFoundError: ``path`` does not exist.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no such file or folder: {root}")
    name = root.name.lower()
    if root.is_file() and (name.endswith(".nii") or name.endswith(".nii.gz")):
        return _load_nifti(root, estimate_noise)
    if root.is_file():
        res = _read_header(root)
        if isinstance(res, _SliceHeader) and res.n_frames > 1:
            return _load_multiframe(root, estimate_noise)
        if isinstance(res, str):
            raise IngestError(f"{root}: not a readable DICOM file ({res})")
        if res is None:
            raise IngestError(f"{root}: not a DICOM image (no pixel matrix)")
        root = root.parent  # one slice of a series: load its folder

    headers, warns, n_files = _scan_headers(root)
    if n_files == 0:
        raise IngestError(f"empty folder: {root} contains no files")
    if not headers:
        msg = f"no DICOM image data under {root} ({n_files} file(s) examined"
        if warns:
            msg += f"; {len(warns)} unreadable, e.g. {warns[0].message}"
        raise IngestError(msg + ")")

    multi = [h for h in headers if h.n_frames > 1]
    if multi and series_uid is None and all(h.n_frames > 1 for h in headers):
        return _load_multiframe(Path(max(multi, key=lambda h: h.n_frames).path), estimate_noise)

    groups = _group(headers)
    key, hs = _choose(groups, series_uid, warns, root)
    if hs[0].n_frames > 1:
        return _load_multiframe(Path(hs[0].path), estimate_noise)
    return _assemble(hs, warns, root, min_slices, estimate_noise)


def _assemble(
    hs: list[_SliceHeader], warns: list[VolumeWarning], root: Path, min_slices: int, estimate_noise: bool
) -> CTVolume:
    hs = [h for h in hs if h.ipp is not None and h.iop is not None] or hs
    missing_geom = [h for h in hs if h.ipp is None or h.iop is None]
    if missing_geom:
        raise IngestError(f"{missing_geom[0].path}: missing ImagePositionPatient/ImageOrientationPatient; cannot place slices")
    if len(hs) < min_slices:
        raise IngestError(
            f"too few slices for a volume under {root}: {len(hs)} image(s) in series {hs[0].series_uid} "
            f"(need at least {min_slices})"
        )
    iop = tuple(float(np.median([h.iop[i] for h in hs])) for i in range(6))  # type: ignore[index]
    ipps = np.array([h.ipp for h in hs], dtype=np.float64)
    thickness = float(np.median([h.thickness for h in hs if h.thickness])) if any(h.thickness for h in hs) else None
    files = [h.path for h in hs]
    order, keep, dz, gwarns, quality = _stack_geometry(ipps, iop, thickness, files)
    warns.extend(gwarns)
    chosen = [hs[i] for i in order[keep]]

    # Pixel type: int16 unless some slice needs a non-integral rescale.
    int_ok = all(h.slope == 1.0 and _integral(h.intercept) for h in chosen)
    dtype = np.int16 if int_ok else np.float32
    h0 = chosen[0]
    out = np.empty((len(chosen), h0.rows, h0.cols), dtype=dtype)
    failed: dict[int, str] = {}

    def work(k: int) -> None:
        h = chosen[k]
        try:
            stored = _read_pixels(h)
            _rescale_into(out[k], stored, h.slope, h.intercept)
            if h.padding is not None:
                # Pixel padding (outside the reconstruction circle) is not tissue:
                # map it to air so statistics and models do not see -2000/-3024 HU.
                pad = np.array(h.padding).astype(_pixel_dtype(h), casting="unsafe")
                mask = stored == pad
                if mask.any():
                    out[k][mask] = -1024 if dtype == np.int16 else -1024.0
        except Exception as exc:  # noqa: BLE001 - one bad slice must not sink the volume
            failed[k] = f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(_n_threads()) as pool:
        list(pool.map(work, range(len(chosen))))

    if failed:
        for k, why in sorted(failed.items()):
            msg = why if chosen[k].path in why else f"{chosen[k].path}: {why}"
            warns.append(VolumeWarning("skipped_file", f"skipped slice with unreadable pixels: {msg}", (chosen[k].path,)))
        good = np.array([k not in failed for k in range(len(chosen))])
        out = out[good]
        chosen = [h for k, h in enumerate(chosen) if k not in failed]
        if len(chosen) < min_slices:
            raise IngestError(f"too few readable slices under {root}: {len(chosen)} (need {min_slices})")
        # Re-measure geometry: a skipped slice is a gap now.
        ipps2 = np.array([h.ipp for h in chosen])
        _, _, dz, gwarns2, quality = _stack_geometry(ipps2, iop, thickness, [h.path for h in chosen])
        warns[:] = [w for w in warns if w.code not in {w2.code for w2 in gwarns2} | {"gap", "uneven_spacing"}] + gwarns2

    positions = np.array([h.ipp for h in chosen], dtype=np.float64)
    if len(positions) > 1:
        stack = positions[-1] - positions[0]
        stack = stack / np.linalg.norm(stack)
    else:
        stack = None
    direction = direction_from_iop(iop, stack)
    ps = h0.pixel_spacing or (1.0, 1.0)
    if h0.pixel_spacing is None:
        warns.append(VolumeWarning("no_pixel_spacing", "PixelSpacing missing; assuming 1 mm"))
    spacing = (float(dz), float(ps[0]), float(ps[1]))

    noise = estimate_noise_sigma(out) if estimate_noise else None
    quality = QualityRecord(noise, quality.slice_thickness_mm, quality.slice_spacing_mm, quality.gaps,
                            quality.tilt_deg, quality.oblique, quality.uniform, tuple(warns))
    meta = dict(h0.extra)
    meta["transfer_syntax"] = h0.transfer_syntax
    meta["n_files_used"] = len(chosen)
    return CTVolume(
        hu=out, spacing=spacing, origin=tuple(float(v) for v in positions[0]), direction=direction,  # type: ignore[arg-type]
        slice_positions=positions, sop_instance_uids=tuple(h.sop_uid for h in chosen), quality=quality,
        study_instance_uid=h0.study_uid, series_instance_uid=h0.series_uid, patient_id=h0.patient_id,
        frame_of_reference_uid=h0.frame_of_ref, source=str(root), source_files=tuple(h.path for h in chosen),
        meta=meta,
    )


def _seq_item(ds: pydicom.Dataset, frame_item: pydicom.Dataset | None, seq: str) -> pydicom.Dataset | None:
    """Functional-group lookup: per-frame first, then shared."""
    for container in (frame_item, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        if container is not None and seq in container and len(container[seq].value):
            return container[seq].value[0]
    return None


def _load_multiframe(path: Path, estimate_noise: bool) -> CTVolume:
    """Enhanced / legacy-converted multi-frame CT (one file, many frames)."""
    import pydicom

    ds = pydicom.dcmread(path)
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
    order, keep, dz, warns, quality = _stack_geometry(ipps_a, iop, thickness, files)
    frames = ds.pixel_array  # (n, rows, cols), stored values
    sel = order[keep]
    int_ok = all(slopes[i] == 1.0 and _integral(intercepts[i]) for i in sel)
    out = np.empty((len(sel),) + frames.shape[1:], dtype=np.int16 if int_ok else np.float32)
    for k, i in enumerate(sel):
        _rescale_into(out[k], frames[i], slopes[i], intercepts[i])
    positions = ipps_a[sel]
    stack = (positions[-1] - positions[0]) / np.linalg.norm(positions[-1] - positions[0]) if len(sel) > 1 else None
    ps = ps or (1.0, 1.0)
    noise = estimate_noise_sigma(out) if estimate_noise else None
    quality = QualityRecord(noise, quality.slice_thickness_mm, quality.slice_spacing_mm, quality.gaps,
                            quality.tilt_deg, quality.oblique, quality.uniform, tuple(warns))
    sop = str(ds.SOPInstanceUID)
    return CTVolume(
        hu=out, spacing=(float(dz), float(ps[0]), float(ps[1])), origin=tuple(positions[0]),  # type: ignore[arg-type]
        direction=direction_from_iop(iop, stack), slice_positions=positions,
        sop_instance_uids=tuple(sop for _ in sel), quality=quality,
        study_instance_uid=str(ds.get("StudyInstanceUID", "")), series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "")), frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        source=str(path), source_files=tuple(str(path) for _ in sel), frame_numbers=tuple(int(i) + 1 for i in sel),
        meta={"SeriesDescription": str(ds.get("SeriesDescription", "")), "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
              "multiframe": True},
    )


def _load_nifti(path: Path, estimate_noise: bool) -> CTVolume:
    """NIfTI through nibabel; values are taken as HU (scl_slope/inter applied by nibabel)."""
    import nibabel as nib

    img = nib.load(str(path))
    if len(img.shape) < 3:
        raise IngestError(f"{path}: NIfTI image has {len(img.shape)} dimensions, expected 3")
    dataobj = img.dataobj
    slope = getattr(dataobj, "slope", 1.0)
    inter = getattr(dataobj, "inter", 0.0)
    raw = np.asanyarray(dataobj.get_unscaled() if hasattr(dataobj, "get_unscaled") else dataobj)
    if raw.ndim > 3:
        raw = raw[..., 0]
    arr_ijk = raw
    if np.issubdtype(raw.dtype, np.integer) and slope == 1.0 and _integral(inter or 0):
        hu_ijk = arr_ijk.astype(np.int16, copy=False)
        if inter:
            hu_ijk = hu_ijk + np.int16(inter)
        dtype = np.int16
    else:
        hu_ijk = arr_ijk.astype(np.float32) * np.float32(slope) + np.float32(inter or 0)
        dtype = np.float32
    hu = np.ascontiguousarray(np.transpose(hu_ijk, (2, 1, 0))).astype(dtype, copy=False)
    aff = ras_affine_to_lps_zyx(img.affine)
    spacing = tuple(float(np.linalg.norm(aff[:3, c])) for c in range(3))
    direction = aff[:3, :3] / np.array(spacing)[None, :]
    origin = tuple(float(v) for v in aff[:3, 3])
    positions = origin + np.outer(np.arange(hu.shape[0]) * spacing[0], direction[:, 0])
    zooms = img.header.get_zooms()
    noise = estimate_noise_sigma(hu) if estimate_noise else None
    quality = QualityRecord(noise, float(zooms[2]), spacing[0])
    return CTVolume(
        hu=hu, spacing=spacing, origin=origin, direction=direction, slice_positions=positions,  # type: ignore[arg-type]
        sop_instance_uids=tuple("" for _ in range(hu.shape[0])), quality=quality, source=str(path),
        meta={"format": "nifti", "descrip": str(img.header.get("descrip", b""))},
    )
