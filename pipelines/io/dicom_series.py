"""DICOM series discovery: find the image files, read their headers, group them into series, choose one.

Pass 1 of :func:`lungfuse.pipelines.io.dicom.load_ct`.  Only headers are read
(``stop_before_pixels``); the fast reader of :mod:`.dicom_header` handles the
ordinary files, ACR-NEMA style files without preamble and file meta included,
and pydicom's tolerant reader the rest.  Where the native pixel values start is
recorded so that pass 2 can read them with ``numpy.fromfile``.

Every file that looks like DICOM (by content: ``DICM`` or a bare dataset start;
or by name: ``.dcm``, ``.dicom``, ``.ima``, no suffix) but gives no image is
skipped with a ``skipped_file`` warning that names it and says what is wrong:
an empty file, a header element whose length runs past the end of the file (a
corrupt header or a truncated file), pixel data cut short, an image header
without pixel data, or what pydicom could not read.  Other files (reports, XML,
images, README) and valid non-image DICOM objects (SR, KO, ...) are ignored
silently.
"""

from __future__ import annotations

import builtins
import functools
import logging
import os
import struct
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lungfuse.pipelines.core.errors import IngestError
from lungfuse.pipelines.core.geometry import direction_from_iop, orientation_code
from lungfuse.pipelines.core.volume import VolumeWarning
from lungfuse.pipelines.io.dicom_header import FastHeader, read_header_fast
from lungfuse.pipelines.io.dicom_values import FastHeaderUnsupported

if TYPE_CHECKING:  # pydicom is imported lazily: the fast path never needs it (~0.1 s of start-up)
    import pydicom
    from pydicom.tag import BaseTag

log = logging.getLogger(__name__)

__all__ = [
    "SeriesInfo",
    "SliceHeader",
    "choose_series",
    "group_series",
    "list_series",
    "read_header",
    "scan_headers",
    "scan_series",
    "series_info",
]

#: Image storage SOP classes we can turn into a CT volume.
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"

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
class SliceHeader:
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


def _transfer_syntax(ds: pydicom.Dataset) -> str:
    """The dataset's TransferSyntaxUID; for a file without file meta, the one pydicom assumed while reading."""
    meta = getattr(ds, "file_meta", None)
    tsyntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if tsyntax:
        return tsyntax
    implicit, little = getattr(ds, "original_encoding", (None, None))[:2]
    if implicit is None:
        return ""
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    return str(ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def _native_pixel_location(fp: Any, tsyntax: str) -> tuple[int | None, int | None]:
    """After a ``stop_before_pixels`` read, find where the native pixel values lie.

    pydicom leaves the file positioned at the start of the (7FE0,0010) element.
    For an uncompressed transfer syntax we decode the element header ourselves
    (explicit VR: tag, VR, 2 reserved, 4-byte length; implicit: tag, 4-byte
    length) so that pass 2 can read the values with ``numpy.fromfile``.
    Returns ``(offset, nbytes)`` or ``(None, None)`` when not applicable.
    """
    from pydicom.uid import UID

    if not tsyntax or UID(tsyntax).is_compressed or not UID(tsyntax).is_little_endian:
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

    # The methods below are named after the builtins they convert to; their annotations name
    # ``builtins.*`` because, inside this class body, ``str`` / ``int`` / ``float`` are the methods.
    def str(self, keyword: builtins.str) -> builtins.str:
        v = self._values(keyword)
        return "\\".join(str(x) for x in v) if v else ""

    def strs(self, keyword: builtins.str) -> list[builtins.str]:
        return [str(x) for x in self._values(keyword)]

    def floats(self, keyword: builtins.str, n: builtins.int) -> tuple[builtins.float, ...] | None:
        return _float_tuple(self._values(keyword), n)

    def float(self, keyword: builtins.str, default: builtins.float | None = None) -> builtins.float | None:
        v = self._values(keyword)
        try:
            return float(v[0]) if v else default
        except (TypeError, ValueError):
            return default

    def int(self, keyword: builtins.str) -> builtins.int | None:
        v = self._values(keyword)
        try:
            return int(float(v[0])) if v else None
        except (TypeError, ValueError):
            return None

    def ints(self, keyword: builtins.str) -> list[builtins.int]:
        out = []
        for x in self._values(keyword):
            try:
                out.append(int(x))
            except (TypeError, ValueError):
                pass
        return out


@functools.cache
def _tag_for(keyword: str) -> BaseTag:
    from pydicom.datadict import tag_for_keyword
    from pydicom.tag import BaseTag

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return BaseTag(tag)  # the key type of Dataset._dict (an int: same hash, same lookups)


def _header_from_fast(path: Path, fh: FastHeader) -> SliceHeader:
    """Pass-1 header from :func:`dicom_fast.read_header_fast` (the common, fast case)."""

    def t(v: Any) -> str:
        return "" if v is None else str(v)

    def f3(v: Any, n: int) -> tuple[float, ...] | None:
        return _float_tuple(v, n) if v is not None else None

    return SliceHeader(
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


def read_header(path: Path) -> SliceHeader | None | str:
    """Read one file's header.  Returns a header, None (not DICOM / not an image) or an error string.

    An error string means the file looks like DICOM (see the module docstring)
    but gives no usable image header: the caller warns with it.  The fast
    reader (no pydicom, ~30 us/file) handles ordinary image files and bare
    (ACR-NEMA style) datasets; its verdict decides the rest: an empty or
    structurally damaged file is reported as such, anything else it is not
    sure about falls back to pydicom's tolerant reader.
    """
    no_pixels = None  # the fast reader's finding that the file holds no pixel data
    malformed = None  # ... or that its structure is damaged (pydicom may read past that)
    try:
        fh = read_header_fast(path)
        if fh.rows is not None and fh.columns is not None:
            return _header_from_fast(path, fh)
    except FastHeaderUnsupported as exc:
        kind = exc.kind
        if kind == exc.MALFORMED:
            malformed = str(exc)
        if kind == exc.NO_PIXEL_DATA:
            no_pixels = str(exc)
        if kind in (exc.NOT_DICOM, exc.EMPTY, exc.IO_ERROR) and not _looks_like_dicom_name(path):
            return None  # a report, XML annotation, README...: not worth pydicom's forced parse
        if kind == exc.EMPTY:
            return "empty file (0 bytes)"
        if kind == exc.DAMAGED:
            # pydicom reads the same element lengths: it could only give a partial header.
            return str(exc)
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
            tsyntax = _transfer_syntax(ds)
            offset, nbytes = _native_pixel_location(fp, tsyntax)
    except Exception as exc:  # noqa: BLE001 - pydicom can raise almost anything on garbage
        return f"{type(exc).__name__}: {exc}"
    why = "; ".join(str(w.message) for w in caught)
    if "Rows" not in ds or "Columns" not in ds:
        if "SOPClassUID" in ds and not _is_image_sop_class(str(ds.SOPClassUID)) and malformed is None:
            return None  # SR, KO, presentation state, RT structure set, ...: valid, but not an image
        what = "an image SOP class but no Rows/Columns" if "SOPClassUID" in ds else "no SOP Class and no image attributes"
        if malformed is not None:
            what = f"no Rows/Columns read; the header is malformed: {malformed}"
        return f"corrupt header or not a DICOM image ({what}" + (f"; pydicom: {why})" if why else ")")
    if no_pixels is not None:
        return f"{no_pixels} (an image header cut short?)"
    try:
        hv = _HeaderView(ds)
        size = hv.ints("Rows"), hv.ints("Columns")
        if any(len(v) != 1 or v[0] <= 0 for v in size):
            return f"corrupt header: Rows {size[0] or '?'}, Columns {size[1] or '?'} (one positive number each expected)"
        pad = hv.ints("PixelPaddingValue")
        n_frames = hv.int("NumberOfFrames")
        return SliceHeader(
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
            transfer_syntax=tsyntax,
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


def scan_headers(root: Path) -> tuple[list[SliceHeader], list[VolumeWarning], int]:
    files = _iter_files(root)
    headers: list[SliceHeader] = []
    warns: list[VolumeWarning] = []
    # Header parsing is pure Python and holds the GIL: threads made it ~2x
    # slower (measured on LIDC-IDRI-0002), so pass 1 runs serially.
    for path in files:
        res = read_header(path)
        if isinstance(res, SliceHeader):
            headers.append(res)
        elif isinstance(res, str):
            # read_header gives a reason only for files that look like DICOM (by content or by name).
            warns.append(VolumeWarning("skipped_file", f"skipped unreadable file {path}: {res}", (str(path),)))
    return headers, warns, len(files)


def _looks_like_dicom_name(path: Path) -> bool:
    """Whether a file whose content does not say DICOM still deserves pydicom and a warning, by its name.

    DICOM files are often named ``*.dcm`` / ``*.dicom`` / ``*.ima`` or have no
    suffix at all; a README or XML lying beside the images has a suffix of its own.
    """
    return path.suffix.lower() in (".dcm", ".dicom", ".ima", "")


@functools.cache
def _is_image_sop_class(uid: str) -> bool:
    """Whether pydicom's UID dictionary names ``uid`` an image storage class (CT Image Storage, ...)."""
    from pydicom.uid import UID

    return "Image Storage" in UID(uid).name


# ---------------------------------------------------------------------------
# Grouping and choosing the series
# ---------------------------------------------------------------------------
def _orientation_key(iop: tuple[float, ...] | None) -> str:
    if iop is None:
        return "none"
    return ",".join(f"{round(v, 3):+.3f}" for v in iop)


def group_series(headers: list[SliceHeader]) -> dict[str, list[SliceHeader]]:
    """Group by SeriesInstanceUID, then split by orientation, image size and acquisition.

    AcquisitionNumber only splits a series when its acquisitions overlap in
    space (a repeated scan); some scanners give every slice of one volume its
    own acquisition number, and splitting those would shred the volume.
    """
    by_series: dict[str, list[SliceHeader]] = defaultdict(list)
    for h in headers:
        by_series[h.series_uid].append(h)
    groups: dict[str, list[SliceHeader]] = {}
    for suid, hs in by_series.items():
        sub: dict[tuple[str, int, int], list[SliceHeader]] = defaultdict(list)
        for h in hs:
            sub[(_orientation_key(h.iop), h.rows, h.cols)].append(h)
        for (okey, rows, cols), members in sub.items():
            by_acq: dict[str, list[SliceHeader]] = defaultdict(list)
            for h in members:
                by_acq[h.acq].append(h)
            split = len(by_acq) > 1 and _acquisitions_overlap(by_acq)
            parts = by_acq.items() if split else [("", members)]
            for acq, part in parts:
                key = f"{suid}|{okey}|{rows}x{cols}" + (f"|acq{acq}" if split else "")
                groups[key] = list(part)
    return groups


def _acquisitions_overlap(by_acq: dict[str, list[SliceHeader]]) -> bool:
    positions = [{tuple(np.round(h.ipp, 2)) for h in hs if h.ipp} for hs in by_acq.values()]
    for i in range(len(positions)):
        for j in range(i + 1, len(positions)):
            if positions[i] & positions[j]:
                return True
    return False


def series_info(key: str, hs: list[SliceHeader]) -> SeriesInfo:
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


def choose_series(
    groups: dict[str, list[SliceHeader]], series_uid: str | None, warns: list[VolumeWarning], root: Path
) -> tuple[str, list[SliceHeader]]:
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
        what = f"single image {hs[0].path} with a different geometry (treated as a scout)" if n == 1 else "another image stack"
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
# Public API
# ---------------------------------------------------------------------------
def scan_series(path: str | os.PathLike[str]) -> tuple[list[SeriesInfo], list[VolumeWarning]]:
    """Every image stack found under ``path`` (DICOM headers only, no pixels), largest
    first, plus a ``skipped_file`` warning naming each unreadable DICOM-looking file.

    Non-image DICOM (SR, KO, ...) and non-DICOM files (XML, README) are ignored
    silently; image objects of any modality (CT, CR/DX, SEG, ...) are listed with
    their ``modality`` so the caller chooses.
    """
    headers, warns, _ = scan_headers(Path(path))
    infos = [series_info(k, hs) for k, hs in group_series(headers).items()]
    return sorted(infos, key=lambda s: -s.n_images), warns


def list_series(path: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Every image stack found under ``path`` (DICOM only), largest first."""
    return scan_series(path)[0]
