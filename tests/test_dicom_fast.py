"""The pydicom-free header reader (pipelines/dicom_fast.py) against pydicom.

Rule under test: :func:`read_header_fast` either returns exactly the values
pydicom reads (and the right pixel location), or raises
:class:`FastHeaderUnsupported`; never a wrong value, never another exception.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from pydicom.valuerep import ISfloat

from lungfuse.pipelines.io import dicom_header as dicom_fast
from lungfuse.pipelines.io.dicom_header import (
    KEYWORDS,
    TAGS,
    FastHeader,
    read_header_fast,
    try_read_header_fast,
)
from lungfuse.pipelines.io.dicom_values import FastHeaderUnsupported

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
UNDEF = 0xFFFFFFFF
_BAD = object()  # "pydicom's value is not one the fast reader may return": equals nothing
_MULTI = {"ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "ImageType"}


# ---------------------------------------------------------------------------
# pydicom reference
# ---------------------------------------------------------------------------
def _num(x: Any) -> Any:
    return float(x) if isinstance(x, float) else _BAD  # a str here = pydicom could not parse the DS


def _expected_value(ds: Dataset, kw: str) -> Any:
    """The pydicom value of ``kw`` as the fast reader must report it."""
    if kw not in ds:
        return None
    v = ds[kw].value
    if v is None or (not isinstance(v, MultiValue | list) and str(v) == ""):
        return None
    vals = list(v) if isinstance(v, MultiValue | list) else [v]
    if not vals:
        return None
    vr = ds[kw].VR
    if kw in _MULTI:
        return tuple(_num(x) for x in vals) if vr == "DS" else tuple(str(x) for x in vals)
    if vr in ("DS", "IS", "US", "SS", "UI") and len(vals) != 1:
        return _BAD
    x = vals[0]
    if vr == "DS":
        return _num(x)
    if vr == "IS":
        return int(x) if isinstance(x, int) and not isinstance(x, ISfloat) else _BAD
    if vr in ("US", "SS"):
        return int(x) if isinstance(x, int) else _BAD
    if vr in ("UI", "CS", "DA", "LO", "SH", "PN"):
        return "\\".join(str(y) for y in vals)
    return _BAD  # an unexpected VR (e.g. UN, OB)


def reference(path: Path) -> tuple[dict[str, Any], tuple[int | None, int | None], str]:
    """pydicom's header values, the native pixel location (as ingest computes it) and the syntax."""
    with open(path, "rb") as fp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
        start = fp.tell()
        head = fp.read(12)
        values = {KEYWORDS[kw]: _expected_value(ds, kw) for kw in KEYWORDS}
    ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
    loc: tuple[int | None, int | None] = (None, None)
    if ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) and len(head) >= 8:
        if struct.unpack("<HH", head[:4]) == (0x7FE0, 0x0010):
            if ts == ImplicitVRLittleEndian:
                loc = (start + 8, struct.unpack("<I", head[4:8])[0])
            else:
                loc = (start + 12, struct.unpack("<I", head[8:12])[0])
    return values, loc, ts


def assert_matches_pydicom(path: Path, hdr: FastHeader) -> None:
    values, loc, ts = reference(path)
    got = {attr: getattr(hdr, attr) for attr in KEYWORDS.values()}
    diff = {a: (got[a], values[a]) for a in got if got[a] != values[a] or type(got[a]) is not type(values[a])}
    assert not diff, f"{path}: fast vs pydicom differ: {diff}"
    assert hdr.transfer_syntax == ts
    if ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        assert (hdr.pixel_offset, hdr.pixel_nbytes) == loc
    else:
        assert hdr.pixel_offset is None and hdr.pixel_nbytes is None


def outcome(path: Path, **kw: Any) -> FastHeader | None:
    """The fast header, or None when it falls back (any other exception fails the test)."""
    try:
        return read_header_fast(path, **kw)
    except FastHeaderUnsupported as exc:
        assert str(exc)  # the reason is stated
        return None


def ok_or_fallback(path: Path, **kw: Any) -> FastHeader | None:
    hdr = outcome(path, **kw)
    if hdr is not None:
        assert_matches_pydicom(path, hdr)
    return hdr


# ---------------------------------------------------------------------------
# The module's tables
# ---------------------------------------------------------------------------
def test_tables_match_pydicom_dictionary() -> None:
    assert set(KEYWORDS) == set(TAGS)
    for kw, (tag, attr, _, vr) in dicom_fast._SPEC.items():
        assert tag_for_keyword(kw) == tag, kw
        assert dictionary_VR(tag) == vr, kw
        assert attr in dicom_fast.FIELDS
    # Every attribute ingest asks pydicom for (its _HEADER_TAGS) is covered.
    ingest_tags = {"SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "PatientID",
                   "PatientName", "StudyDate", "Modality", "ImageType", "ImageOrientationPatient",
                   "ImagePositionPatient", "PixelSpacing", "Rows", "Columns", "RescaleSlope",
                   "RescaleIntercept", "AcquisitionNumber", "InstanceNumber", "SliceThickness",
                   "GantryDetectorTilt", "FrameOfReferenceUID", "SeriesDescription", "SeriesNumber",
                   "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
                   "NumberOfFrames", "PixelPaddingValue", "Manufacturer", "KVP", "ConvolutionKernel"}
    assert ingest_tags <= set(KEYWORDS)
    from pydicom.charset import python_encoding

    from lungfuse.pipelines.io.dicom_values import KNOWN_CHARSETS

    assert KNOWN_CHARSETS == set(python_encoding)


def test_module_does_not_import_pydicom() -> None:
    import subprocess
    import sys

    code = ("import sys; import lungfuse.pipelines.io.dicom_header; "
            "bad = [m for m in ('pydicom', 'numpy') if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


# ---------------------------------------------------------------------------
# Every real LIDC file
# ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def lidc_files(lidc_root: Path) -> list[Path]:
    files = sorted(lidc_root.glob("LIDC-IDRI-000[123]/**/*.dcm"))
    assert len(files) > 500
    return files


@pytest.mark.lidc
def test_every_lidc_file_matches_pydicom(lidc_files: list[Path]) -> None:
    n_ct = 0
    for path in lidc_files:
        hdr = read_header_fast(path)  # all real files must be read (no fallback)
        ds = pydicom.dcmread(path)
        for kw, attr in KEYWORDS.items():
            want = _expected_value(ds, kw)
            got = getattr(hdr, attr)
            assert got == want and type(got) is type(want), f"{path}: {kw}: fast {got!r}, pydicom {want!r}"
        assert hdr.transfer_syntax == ds.file_meta.TransferSyntaxUID
        # The pixel location: the bytes there are the pixel data pydicom decodes.
        data = np.fromfile(path, dtype=np.uint8, count=hdr.pixel_nbytes, offset=hdr.pixel_offset).tobytes()
        assert len(data) == hdr.pixel_nbytes
        assert data == ds.PixelData
        if ds.BitsAllocated == 16:
            arr = ds.pixel_array
            assert data[: arr.nbytes] == arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            n_ct += 1
    assert n_ct >= 530


@pytest.mark.lidc
def test_lidc_fields_sanity(lidc_files: list[Path]) -> None:
    hdr = read_header_fast(next(p for p in lidc_files if "LIDC-IDRI-0002" in str(p) and "/ct/" in str(p)))
    assert hdr.modality == "CT" and hdr.rows == hdr.columns == 512
    assert hdr.sop_class_uid == CT_STORAGE
    assert len(hdr.image_orientation_patient) == 6 and len(hdr.image_position_patient) == 3
    assert hdr.pixel_padding_value == -2000 and hdr.pixel_representation == 1
    assert hdr.pixel_nbytes == 512 * 512 * 2
    assert hdr.get("Rows") == 512 and hdr.get("AcquisitionNumber", "x") in ("x", hdr.acquisition_number)
    assert hdr.as_dict()["rows"] == 512 and not hdr.is_encapsulated


# ---------------------------------------------------------------------------
# Real files re-encoded by pydicom
# ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sample(lidc_root: Path) -> Path:
    return sorted((lidc_root / "LIDC-IDRI-0001" / "ct").glob("*.dcm"))[10]


def _add_undefined_sequences(ds: Dataset) -> None:
    """A ReferencedImageSequence (undefined length, undefined-length items, a nested
    undefined-length sequence, decoy Rows/IPP values inside) and an undefined-length
    private sequence just before the pixel data."""
    inner = Dataset()
    inner.CodeValue = "121311"
    inner.CodingSchemeDesignator = "DCM"
    inner.is_undefined_length_sequence_item = True
    item = Dataset()
    item.ReferencedSOPClassUID = CT_STORAGE
    item.ReferencedSOPInstanceUID = "1.2.3.4.5"
    item.Rows = 999
    item.ImagePositionPatient = [1, 2, 3]
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    item["PurposeOfReferenceCodeSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    item2 = Dataset()
    item2.ReferencedSOPInstanceUID = "1.2.3.4.6"  # a defined-length item in the same sequence
    ds.ReferencedImageSequence = Sequence([item, item2])
    ds["ReferencedImageSequence"].is_undefined_length = True
    block = ds.private_block(0x7FDF, "LUNGFUSE TEST", create=True)
    private_item = Dataset()
    private_item.Columns = 7
    private_item.is_undefined_length_sequence_item = True
    block.add_new(0x01, "SQ", Sequence([private_item, Dataset()]))
    ds[block.get_tag(0x01)].is_undefined_length = True


def _reencode(src: Path, dst: Path, syntax: str, undefined_seq: bool = False) -> Path:
    ds = pydicom.dcmread(src)
    if undefined_seq:
        _add_undefined_sequences(ds)
    if syntax in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        ds.compress(syntax, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(dst, enforce_file_format=True)
    return dst


@pytest.mark.lidc
@pytest.mark.parametrize(
    "syntax,undefined_seq",
    [
        (ImplicitVRLittleEndian, False),
        (ImplicitVRLittleEndian, True),
        (ExplicitVRLittleEndian, True),
        (RLELossless, False),
        (RLELossless, True),
        (JPEGLSLossless, False),
        (JPEG2000Lossless, False),
    ],
    ids=["implicit", "implicit-undef-seq", "explicit-undef-seq", "rle", "rle-undef-seq", "jpegls", "j2k"],
)
def test_reencoded_real_file(sample: Path, tmp_path: Path, syntax: str, undefined_seq: bool) -> None:
    path = _reencode(sample, tmp_path / "x.dcm", syntax, undefined_seq)
    if undefined_seq:
        assert struct.pack("<I", UNDEF) in path.read_bytes()[:4096]
    hdr = read_header_fast(path)  # supported: must not fall back
    assert_matches_pydicom(path, hdr)
    assert hdr.rows == 512 and hdr.image_position_patient is not None
    assert hdr.is_encapsulated == (syntax not in (ImplicitVRLittleEndian, ExplicitVRLittleEndian))
    if not hdr.is_encapsulated:
        ds = pydicom.dcmread(path)
        data = np.fromfile(path, dtype=np.uint8, count=hdr.pixel_nbytes, offset=hdr.pixel_offset).tobytes()
        assert data == ds.PixelData
    # Reading in small chunks (the header spans several reads) gives the same header.
    assert read_header_fast(path, initial_read=200) == hdr


@pytest.mark.lidc
def test_unsupported_syntaxes_fall_back(sample: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(sample)
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    pydicom.dcmwrite(tmp_path / "be.dcm", ds, implicit_vr=False, little_endian=False, force_encoding=True)
    assert pydicom.dcmread(tmp_path / "be.dcm").file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert outcome(tmp_path / "be.dcm") is None
    ds = pydicom.dcmread(sample)
    ds.file_meta.TransferSyntaxUID = DEFLATED
    ds.save_as(tmp_path / "deflate.dcm", enforce_file_format=True)
    assert outcome(tmp_path / "deflate.dcm") is None


# ---------------------------------------------------------------------------
# Damaged real files
# ---------------------------------------------------------------------------
def _pixel_element_start(raw: bytes) -> int:
    fp = io.BytesIO(raw)
    pydicom.dcmread(fp, stop_before_pixels=True)
    return fp.tell()


@pytest.mark.lidc
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_truncated_files_fall_back(sample: Path, tmp_path: Path, syntax: str) -> None:
    src = _reencode(sample, tmp_path / "src.dcm", syntax, undefined_seq=True)
    raw = src.read_bytes()
    pix = _pixel_element_start(raw)
    meta_end = 132 + 12 + struct.unpack("<I", raw[140:144])[0]
    cuts = {0, 1, 64, 128, 131, 132, 134, 136, 140, 143, 150, meta_end - 1, meta_end, meta_end + 3,
            pix - 1, pix, pix + 4, pix + 8, pix + 11, pix + 12, pix + 13, pix + 5000, len(raw) - 1}
    cuts |= set(range(meta_end, pix, 37))
    for cut in sorted(cuts):
        p = tmp_path / f"cut{cut}.dcm"
        p.write_bytes(raw[:cut])
        for initial in (dicom_fast.INITIAL_READ, 100):
            assert outcome(p, initial_read=initial) is None, f"cut at {cut} of {len(raw)} (pixel element at {pix})"
    # The intact file reads, whatever the first read size.
    for initial in (1, 131, 132, 133, 500, pix, pix + 12, 1 << 20):
        assert_matches_pydicom(src, read_header_fast(src, initial_read=initial))


@pytest.mark.lidc
def test_no_preamble_falls_back(sample: Path, tmp_path: Path) -> None:
    raw = sample.read_bytes()
    for name, data in (("dicm-first.dcm", raw[128:]), ("meta-first.dcm", raw[132:])):
        (tmp_path / name).write_bytes(data)
        assert outcome(tmp_path / name) is None


def test_garbage_empty_text_and_missing_fall_back(tmp_path: Path) -> None:
    rng = random.Random(1234)
    paths = []
    for n in (0, 1, 100, 131, 132, 133, 1000, 70_000):
        p = tmp_path / f"random{n}.dcm"
        p.write_bytes(rng.randbytes(n))
        paths.append(p)
        q = tmp_path / f"dicm{n}.dcm"
        q.write_bytes(b"\0" * 128 + b"DICM" + rng.randbytes(n))
        paths.append(q)
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "readme.txt").write_text("LungFuse test data.\n" * 50)
    (tmp_path / "dicm.txt").write_text(" " * 128 + "DICM" + "not a header at all " * 20)
    (tmp_path / "adir.dcm").mkdir()
    paths += [tmp_path / "empty.dcm", tmp_path / "readme.txt", tmp_path / "dicm.txt", tmp_path / "adir.dcm",
              tmp_path / "missing.dcm"]
    for p in paths:
        assert outcome(p) is None, p
        assert try_read_header_fast(p) is None


@pytest.mark.lidc
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_fuzzed_headers_never_give_wrong_values(sample: Path, tmp_path: Path, syntax: str) -> None:
    """Random byte damage in the header: fall back, or agree with pydicom on the damaged file."""
    src = _reencode(sample, tmp_path / "src.dcm", syntax, undefined_seq=True)
    raw = src.read_bytes()
    pix = _pixel_element_start(raw)
    rng = random.Random(20240607 if syntax == ExplicitVRLittleEndian else 7)
    n_read = 0
    for i in range(250):
        data = bytearray(raw[: pix + 12 + 2048])  # the pixel values beyond are irrelevant here
        data += bytes(len(raw) - len(data))
        for _ in range(rng.choice((1, 1, 2, 4))):
            pos = rng.randrange(128, pix + 12)
            data[pos] = rng.choice((rng.randrange(256), 0, 0xFF, 0xFE, 0xE0, 0xDD, ord(" "), ord("\\"), ord("1")))
        if rng.random() < 0.3:  # a shift: bytes lost or inserted
            pos, k = rng.randrange(128, pix + 12), rng.randrange(1, 5)
            data[pos:pos] = rng.randbytes(k) if rng.random() < 0.5 else b""
            if not data[pos:pos] and rng.random() < 0.5:
                del data[pos : pos + k]
        p = tmp_path / f"fuzz{i}.dcm"
        p.write_bytes(bytes(data))
        hdr = outcome(p)
        if hdr is None:
            continue
        try:
            values, loc, ts = reference(p)
        except Exception:  # noqa: BLE001 - pydicom refusing the damaged file is fine; we must not accept it then
            pytest.fail(f"fuzz {i}: fast reader accepted a file pydicom cannot read")
        assert_matches_pydicom(p, hdr)
        n_read += 1
    assert n_read > 40  # much of the damage lands in values we do not read


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"])
def test_fuzzed_values_never_wrong(tmp_path: Path, syntax: str) -> None:
    """Odd characters inside the values read: fall back, or agree with pydicom."""
    rng = random.Random(99 if syntax == ExplicitVRLittleEndian else 98)
    chars = b" \\\x00.e+-0123456789aZ\x85\xa0\xe9\xc3\xff_nN"
    charsets = [None, "ISO_IR 100", "ISO_IR 192", "ISO_IR 144", "ISO 2022 IR 87", "ISO_IR 999"]
    n_read = 0
    for i in range(300):
        ds = _base()
        cs = rng.choice(charsets)
        if cs:
            ds[0x00080005] = ("CS", _t(cs))
        for _ in range(rng.choice((1, 1, 2))):
            tag = rng.choice([TAGS[kw] for kw in KEYWORDS if TAGS[kw] in ds and ds[TAGS[kw]][1]])
            vr, value = ds[tag]
            b = bytearray(value)
            b[rng.randrange(len(b))] = rng.choice(chars)
            ds[tag] = (vr, bytes(b))
        path = _file(tmp_path, ds, syntax, name=f"v{i}.dcm")
        hdr = ok_or_fallback(path)
        n_read += hdr is not None
    assert 50 < n_read < 300


# ---------------------------------------------------------------------------
# Synthetic files: exact control over every byte
# ---------------------------------------------------------------------------
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def _head(tag: int, vr: str, length: int, explicit: bool) -> bytes:
    g, e = tag >> 16, tag & 0xFFFF
    if not explicit:
        return struct.pack("<HHI", g, e, length)
    if vr in _LONG:
        return struct.pack("<HH2sHI", g, e, vr.encode(), 0, length)
    return struct.pack("<HH2sH", g, e, vr.encode(), length)


def _item(body: bytes | None, undefined: bool) -> bytes:
    body = body or b""
    if undefined:
        return struct.pack("<HHI", 0xFFFE, 0xE000, UNDEF) + body + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


def _encode(elems: list[tuple[int, str, Any]], explicit: bool) -> bytes:
    """Elements in the given order.  vr 'RAW': value is written as is; vr 'SQ': value is
    (items, sequence_undefined, items_undefined) with items lists of elements."""
    out = []
    for tag, vr, val in elems:
        if vr == "RAW":
            out.append(val)
        elif vr == "SQ":
            items, seq_undef, item_undef = val
            body = b"".join(_item(_encode(it, explicit), item_undef) for it in items)
            if seq_undef:
                out.append(_head(tag, "SQ", UNDEF, explicit) + body + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
            else:
                out.append(_head(tag, "SQ", len(body), explicit) + body)
        else:
            out.append(_head(tag, vr, len(val), explicit) + val)
    return b"".join(out)


def _t(s: str, pad: bytes = b" ", enc: str = "latin-1") -> bytes:
    b = s.encode(enc)
    return b + pad if len(b) % 2 else b


def _u(s: str) -> bytes:
    return _t(s, b"\0")


def _us(*v: int) -> bytes:
    return struct.pack(f"<{len(v)}H", *v)


def _ss(*v: int) -> bytes:
    return struct.pack(f"<{len(v)}h", *v)


def _base(**over: tuple[str, bytes] | None) -> dict[int, tuple[str, Any]]:
    """A small CT slice (4x4 pixels); ``over``: keyword -> (VR, bytes) to replace, or None to drop."""
    ds: dict[int, tuple[str, Any]] = {
        0x00080008: ("CS", _t("ORIGINAL\\PRIMARY\\AXIAL")),
        0x00080016: ("UI", _u(CT_STORAGE)),
        0x00080018: ("UI", _u("1.2.826.0.1.3680043.8.498.1")),
        0x00080020: ("DA", _t("20000101")),
        0x00080060: ("CS", _t("CT")),
        0x00080070: ("LO", _t("ACME")),
        0x0008103E: ("LO", _t("CHEST 1.25 ")),
        0x00100010: ("PN", _t("Doe^John")),
        0x00100020: ("LO", _t("P-1")),
        0x00180050: ("DS", _t("1.25")),
        0x00180060: ("DS", _t("120")),
        0x00181120: ("DS", _t("0")),
        0x00181210: ("SH", _t("B30f")),
        0x0020000D: ("UI", _u("1.2.826.0.1.3680043.8.498.2")),
        0x0020000E: ("UI", _u("1.2.826.0.1.3680043.8.498.3")),
        0x00200011: ("IS", _t("3")),
        0x00200012: ("IS", _t("1")),
        0x00200013: ("IS", _t("7")),
        0x00200032: ("DS", _t("-175.5\\-174.5\\-9.5")),
        0x00200037: ("DS", _t("1\\0\\0\\0\\1\\0")),
        0x00200052: ("UI", _u("1.2.826.0.1.3680043.8.498.4")),
        0x00280002: ("US", _us(1)),
        0x00280004: ("CS", _t("MONOCHROME2")),
        0x00280010: ("US", _us(4)),
        0x00280011: ("US", _us(4)),
        0x00280030: ("DS", _t("0.703125\\0.703125")),
        0x00280100: ("US", _us(16)),
        0x00280101: ("US", _us(12)),
        0x00280102: ("US", _us(11)),
        0x00280103: ("US", _us(1)),
        0x00280120: ("SS", _ss(-2000)),
        0x00281052: ("DS", _t("-1024")),
        0x00281053: ("DS", _t("1")),
        0x7FE00010: ("OW", bytes(range(32))),
    }
    for kw, v in over.items():
        tag = tag_for_keyword(kw) if kw in KEYWORDS or tag_for_keyword(kw) else int(kw, 16)
        if v is None:
            ds.pop(tag, None)
        else:
            ds[tag] = v
    return ds


def _file(tmp_path: Path, ds: dict[int, tuple[str, Any]] | list[tuple[int, str, Any]],
          syntax: str = ExplicitVRLittleEndian, name: str = "s.dcm", tail: bytes = b"") -> Path:
    elems = sorted((t, vr, v) for t, (vr, v) in ds.items()) if isinstance(ds, dict) else ds
    meta_body = _encode([(0x00020001, "OB", b"\0\1"), (0x00020002, "UI", _u(CT_STORAGE)),
                         (0x00020003, "UI", _u("1.2.826.0.1.3680043.8.498.1")), (0x00020010, "UI", _u(syntax))], True)
    meta = _encode([(0x00020000, "UL", struct.pack("<I", len(meta_body)))], True) + meta_body
    data = _encode(elems, syntax != ImplicitVRLittleEndian)
    p = tmp_path / name
    p.write_bytes(b"\0" * 128 + b"DICM" + meta + data + tail)
    return p


def _seq(tag: int, items: list, seq_undef: bool = True, item_undef: bool = True) -> tuple[int, str, Any]:
    return (tag, "SQ", (items, seq_undef, item_undef))


_DECOYS = [(0x00200032, "DS", _t("9\\9\\9")), (0x00280010, "US", _us(999))]


def _with(ds: dict, *extra: tuple[int, str, Any]) -> list[tuple[int, str, Any]]:
    elems = [(t, vr, v) for t, (vr, v) in ds.items()] + list(extra)
    return sorted(elems, key=lambda e: e[0])


# Cases the reader must read (and agree with pydicom on).
_OK: dict[str, Callable[[], Any]] = {
    "base": lambda: _base(),
    "spaces-and-signs": lambda: _base(
        SliceThickness=("DS", _t(" 1.5 ")), KVP=("DS", _t("+1.2e2")), GantryDetectorTilt=("DS", _t("-0.0")),
        ImagePositionPatient=("DS", _t(" -1.5\\ 2.25 \\3E-1")), InstanceNumber=("IS", _t(" +7")),
        SeriesNumber=("IS", _t("-3 ")), PixelSpacing=("DS", b".5\\5.")),
    "nul-padding": lambda: _base(SeriesDescription=("LO", b"DESC\0\0"), PatientID=("LO", b"ID\0 "),
                                  Modality=("CS", b"CT\0\0"), StudyDate=("DA", b"20000101\0 ")),
    "uid-whitespace": lambda: _base(SeriesInstanceUID=("UI", _u(" 1.2.3")), FrameOfReferenceUID=("UI", b"\x851.2\0")),
    "ds-nel": lambda: _base(SliceThickness=("DS", b"\x85 "), KVP=("DS", b"\xa0120 ")),
    "multi-text": lambda: _base(ConvolutionKernel=("SH", _t("B30f \\SMOOTH")), ImageType=("CS", _t("A \\B\\\\C")),
                                SeriesDescription=("LO", _t(" lead\\trail "))),
    "empty-values": lambda: _base(PatientName=("PN", b""), SliceThickness=("DS", b"  "), AcquisitionNumber=("IS", b""),
                                  Manufacturer=("LO", b"  "), PixelPaddingValue=("SS", b""), ImageType=("CS", b"")),
    "absent-values": lambda: _base(PatientName=None, PixelPaddingValue=None, ImagePositionPatient=None,
                                   RescaleSlope=None, Rows=None),
    "padding-us": lambda: _base(PixelPaddingValue=("US", _us(63536)), PixelRepresentation=("US", _us(1))),
    "latin1-default": lambda: _base(PatientName=("PN", _t("Müller^Jürgen")), Manufacturer=("LO", _t("Siemens ÄG"))),
    "latin1": lambda: _base(**{"00080005": ("CS", _t("ISO_IR 100"))}, PatientName=("PN", _t("Müller"))),
    "utf8": lambda: _base(**{"00080005": ("CS", _t("ISO_IR 192"))}, PatientName=("PN", _t("Müller^Zoë", enc="utf-8")),
                          SeriesDescription=("LO", _t("Thorax ± KM", enc="utf-8"))),
    "ascii-any-charset": lambda: _base(**{"00080005": ("CS", _t("ISO_IR 144"))}),
    "multiframe": lambda: _base(NumberOfFrames=("IS", _t("3")), PixelData=("OW", bytes(96))),
    "private-and-long": lambda: _with(_base(), (0x00091010, "LO", _t("x")), (0x00091011, "UT", _t("y" * 300)),
                                      (0x00291010, "OB", bytes(70_000))),
    "undefined-seqs": lambda: _with(
        _base(),
        _seq(0x00081140, [[(0x00081150, "UI", _u(CT_STORAGE)), *_DECOYS,
                           _seq(0x0040A170, [[(0x00080100, "SH", _t("1"))], []])], []]),
        _seq(0x00089215, [], seq_undef=True),  # empty undefined-length sequence
        _seq(0x00189346, [[*_DECOYS]], seq_undef=False, item_undef=True),  # defined length, undefined items
        _seq(0x00400555, [[*_DECOYS, _seq(0x0040A043, [[*_DECOYS]], True, False)]], True, False),
        _seq(0x7FDF1010, [[(0x7FE00010, "OB", b"icon")]]),  # pixel data inside an item is not the pixel data
    ),
}


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"])
@pytest.mark.parametrize("case", sorted(_OK))
def test_synthetic_files_read(tmp_path: Path, case: str, syntax: str) -> None:
    path = _file(tmp_path, _OK[case](), syntax)
    hdr = read_header_fast(path)
    assert_matches_pydicom(path, hdr)
    assert read_header_fast(path, initial_read=150) == hdr
    if case == "undefined-seqs":
        assert hdr.rows == 4 and hdr.image_position_patient == (-175.5, -174.5, -9.5)
    if case == "utf8":
        assert hdr.patient_name == "Müller^Zoë"


def test_synthetic_values() -> None:
    """A few values spelled out (the comparison with pydicom is done above)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        hdr = read_header_fast(_file(Path(d), _OK["spaces-and-signs"]()))
        assert hdr.slice_thickness == 1.5 and hdr.kvp == 120.0 and hdr.instance_number == 7
        assert hdr.image_position_patient == (-1.5, 2.25, 0.3) and hdr.pixel_spacing == (0.5, 5.0)
        hdr = read_header_fast(_file(Path(d), _OK["padding-us"]()))
        assert hdr.pixel_padding_value == 63536  # by the explicit VR (as pydicom), not PixelRepresentation
        hdr = read_header_fast(_file(Path(d), _OK["base"](), ImplicitVRLittleEndian))
        assert hdr.pixel_padding_value == -2000 and hdr.pixel_offset is not None and hdr.pixel_nbytes == 32
        hdr = read_header_fast(_file(Path(d), _OK["multi-text"]()))
        assert hdr.image_type == ("A ", "B", "", "C") and hdr.convolution_kernel == "B30f\\SMOOTH"


def _encapsulated(tmp_path: Path, syntax: str) -> Path:
    frag = b"\x01\x02\x03\x04"
    pixel = (_head(0x7FE00010, "OB", UNDEF, True) + _item(b"", False) + _item(frag, False)
             + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    ds = _base(PixelData=None)
    return _file(tmp_path, ds, syntax, tail=pixel)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, "1.2.840.10008.1.2.4.50"])
def test_synthetic_encapsulated(tmp_path: Path, syntax: str) -> None:
    path = _encapsulated(tmp_path, syntax)
    hdr = read_header_fast(path)
    assert hdr.is_encapsulated and hdr.pixel_offset is None and hdr.pixel_nbytes is None
    assert_matches_pydicom(path, hdr)


# Cases the reader must refuse (FastHeaderUnsupported); explicit VR unless named.
def _pixel_raw(length: int, vr: str = "OW", explicit: bool = True) -> tuple[int, str, Any]:
    return (0x7FE00010, "RAW", _head(0x7FE00010, vr, length, explicit))


_FALLBACK: dict[str, Callable[[], tuple[Any, str]]] = {
    "ds-nan": lambda: (_base(SliceThickness=("DS", _t("nan"))), ExplicitVRLittleEndian),
    "ds-inf": lambda: (_base(KVP=("DS", _t("inf"))), ExplicitVRLittleEndian),
    "ds-underscore": lambda: (_base(RescaleIntercept=("DS", _t("-1_024"))), ExplicitVRLittleEndian),
    "ds-empty-part": lambda: (_base(ImagePositionPatient=("DS", _t("1\\\\3"))), ExplicitVRLittleEndian),
    "ds-garbage": lambda: (_base(PixelSpacing=("DS", _t("0.7 mm\\0.7"))), ExplicitVRLittleEndian),
    "ds-two-values": lambda: (_base(SliceThickness=("DS", _t("1\\2"))), ExplicitVRLittleEndian),
    "ds-leading-nul": lambda: (_base(RescaleSlope=("DS", b"\x001")), ExplicitVRLittleEndian),
    "is-nel": lambda: (_base(InstanceNumber=("IS", b"\x85 ")), ExplicitVRLittleEndian),  # pydicom: IS '\x85'
    "is-float": lambda: (_base(InstanceNumber=("IS", _t("1.0"))), ExplicitVRLittleEndian),
    "is-two-values": lambda: (_base(InstanceNumber=("IS", _t("1\\2"))), ExplicitVRLittleEndian),
    "us-two-values": lambda: (_base(Rows=("US", _us(4, 4))), ExplicitVRLittleEndian),
    "us-odd-length": lambda: (_base(Columns=("US", b"\x04")), ExplicitVRLittleEndian),
    "uid-two-values": lambda: (_base(SeriesInstanceUID=("UI", _u("1.2\\1.3"))), ExplicitVRLittleEndian),
    "wrong-vr-rows": lambda: (_base(Rows=("SS", _ss(4))), ExplicitVRLittleEndian),
    "wrong-vr-un": lambda: (_base(SliceThickness=("UN", _t("1.25"))), ExplicitVRLittleEndian),
    "padding-ob": lambda: (_base(PixelPaddingValue=("OB", _ss(-2000))), ExplicitVRLittleEndian),
    "padding-implicit-no-pr": lambda: (_base(PixelRepresentation=None), ImplicitVRLittleEndian),
    "charset-cyrillic": lambda: (_base(**{"00080005": ("CS", _t("ISO_IR 144"))},
                                       PatientName=("PN", _t("Иванов", enc="iso8859_5"))), ExplicitVRLittleEndian),
    "charset-iso2022": lambda: (_base(**{"00080005": ("CS", _t("\\ISO 2022 IR 87"))},
                                      PatientName=("PN", _t("Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"))),
                                ExplicitVRLittleEndian),
    "utf8-invalid": lambda: (_base(**{"00080005": ("CS", _t("ISO_IR 192"))}, PatientName=("PN", b"\xff\xfe")),
                             ExplicitVRLittleEndian),
    "invalid-vr": lambda: (_with(_base(), (0x00091010, "RAW", struct.pack("<HH2sH", 9, 0x1010, b"zz", 0))),
                           ExplicitVRLittleEndian),
    "out-of-order-implicit": lambda: ([(0x00200013, "IS", _t("7")), (0x00080060, "CS", _t("CT")),
                                       (0x7FE00010, "OW", bytes(8))], ImplicitVRLittleEndian),
    "un-undefined": lambda: (_with(_base(), (0x00091010, "RAW", _head(0x00091010, "UN", UNDEF, True)
                                             + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))), ExplicitVRLittleEndian),
    "ob-undefined": lambda: (_with(_base(), (0x00091010, "RAW", _head(0x00091010, "OB", UNDEF, True)
                                             + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))), ExplicitVRLittleEndian),
    "delimiter-with-length": lambda: (_with(_base(), (0x00081140, "RAW", _head(0x00081140, "SQ", UNDEF, True)
                                                      + struct.pack("<HHI", 0xFFFE, 0xE0DD, 4) + bytes(4))),
                                      ExplicitVRLittleEndian),
    "element-directly-in-sequence": lambda: (_with(_base(), (0x00081140, "RAW", _head(0x00081140, "SQ", UNDEF, True)
                                                             + _head(0x00080100, "SH", 2, True) + b"ab"
                                                             + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))),
                                             ExplicitVRLittleEndian),
    "unterminated-sequence": lambda: (_with(_base(PixelData=None), (0x00081140, "RAW",
                                                                    _head(0x00081140, "SQ", UNDEF, True)
                                                                    + _item(b"", False))), ExplicitVRLittleEndian),
    "item-at-top-level": lambda: ([(0x00080060, "CS", _t("CT")), (0xFFFEE000, "RAW", _item(b"", False)),
                                   (0x7FE00010, "OW", bytes(8))], ImplicitVRLittleEndian),
    "no-pixel-data": lambda: (_base(PixelData=None), ExplicitVRLittleEndian),
    "no-pixel-data-implicit": lambda: (_base(PixelData=None), ImplicitVRLittleEndian),
    "trailing-padding-no-pixels": lambda: (_with(_base(PixelData=None), (0xFFFCFFFC, "OB", bytes(8))),
                                           ExplicitVRLittleEndian),
    "float-pixel-data": lambda: (_with(_base(PixelData=None), (0x7FE00008, "OF", bytes(64))),
                                 ExplicitVRLittleEndian),
    "pixel-undefined-native": lambda: (_with(_base(PixelData=None), _pixel_raw(UNDEF)), ExplicitVRLittleEndian),
    "pixel-past-eof": lambda: (_with(_base(PixelData=None), _pixel_raw(64)), ExplicitVRLittleEndian),
    "pixel-past-eof-implicit": lambda: (_with(_base(PixelData=None), _pixel_raw(64, explicit=False)),
                                        ImplicitVRLittleEndian),
    "pixel-vr-un": lambda: (_base(PixelData=("UN", bytes(32))), ExplicitVRLittleEndian),
    "value-past-eof": lambda: (_with(_base(PixelData=None), (0x00291010, "RAW", _head(0x00291010, "OB", 1 << 20, True))),
                               ExplicitVRLittleEndian),
    "huge-length": lambda: (_with(_base(), (0x00291010, "RAW", _head(0x00291010, "OB", 0xFFFFFFF0, True))),
                            ExplicitVRLittleEndian),
    "big-endian": lambda: (_base(), ExplicitVRBigEndian),
    "deflated": lambda: (_base(), DEFLATED),
    "private-syntax": lambda: (_base(), "1.2.3.4.5.6"),
    "explicit-data-implicit-syntax": lambda: ("explicit-data", ImplicitVRLittleEndian),
    "implicit-data-explicit-syntax": lambda: ("implicit-data", ExplicitVRLittleEndian),
}


@pytest.mark.parametrize("case", sorted(_FALLBACK))
def test_synthetic_files_fall_back(tmp_path: Path, case: str) -> None:
    ds, syntax = _FALLBACK[case]()
    if ds in ("explicit-data", "implicit-data"):
        good = _file(tmp_path, _base(), ExplicitVRLittleEndian if ds == "explicit-data" else ImplicitVRLittleEndian,
                     name="good.dcm")
        raw = good.read_bytes()
        other = _file(tmp_path, _base(), syntax, name="other.dcm").read_bytes()  # its meta names `syntax`

        def meta_end(b: bytes) -> int:
            return 132 + 12 + struct.unpack("<I", b[140:144])[0]

        path = tmp_path / "s.dcm"
        path.write_bytes(other[: meta_end(other)] + raw[meta_end(raw) :])
    else:
        path = _file(tmp_path, ds, syntax)
    for initial in (dicom_fast.INITIAL_READ, 140):
        assert outcome(path, initial_read=initial) is None, case


def test_meta_without_transfer_syntax_falls_back(tmp_path: Path) -> None:
    meta_body = _encode([(0x00020001, "OB", b"\0\1"), (0x00020002, "UI", _u(CT_STORAGE))], True)
    data = _encode(sorted((t, vr, v) for t, (vr, v) in _base().items()), True)
    p = tmp_path / "nots.dcm"
    p.write_bytes(b"\0" * 128 + b"DICM" + meta_body + data)
    assert outcome(p) is None


# ---------------------------------------------------------------------------
# Bare datasets (ACR-NEMA style: no preamble, no 'DICM', no file meta) and kinds of refusal
# ---------------------------------------------------------------------------
def _bare(tmp_path: Path, syntax: str, name: str = "bare") -> Path:
    elems = sorted((t, vr, v) for t, (vr, v) in _base().items())
    p = tmp_path / name
    p.write_bytes(_encode(elems, syntax != ImplicitVRLittleEndian))
    return p


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"])
def test_bare_dataset_reads_as_pydicom_forces_it(tmp_path: Path, syntax: str) -> None:
    p = _bare(tmp_path, syntax)
    raw = p.read_bytes()
    assert dicom_fast.bare_dataset_syntax(raw, len(raw)) == syntax
    hdr = read_header_fast(p)
    with open(p, "rb") as fp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
        start = fp.tell()
        head = fp.read(12)
    assert ds.original_encoding[:2] == (syntax == ImplicitVRLittleEndian, True)
    got = {attr: getattr(hdr, attr) for attr in KEYWORDS.values()}
    want = {KEYWORDS[kw]: _expected_value(ds, kw) for kw in KEYWORDS}
    assert got == want
    assert hdr.transfer_syntax == syntax
    assert struct.unpack("<HH", head[:4]) == (0x7FE0, 0x0010)
    assert hdr.pixel_offset == start + (8 if syntax == ImplicitVRLittleEndian else 12)
    assert hdr.pixel_nbytes == struct.unpack("<I", head[4:8] if syntax == ImplicitVRLittleEndian else head[8:12])[0]


def test_bare_dataset_rule_refuses_what_is_not_dicom(tmp_path: Path) -> None:
    rng = random.Random(21)
    not_dicom = [b"", b"\x08\x00", b"FINDINGS: 4 mm nodule.\n", "x".encode("utf-16"), b"\x89PNG\r\n\x1a\n" + bytes(64),
                 b"%PDF-1.7\n", b"\xff\xd8\xff\xe0" + bytes(64), b"PK\x03\x04" + bytes(64), b"<?xml version='1.0'?>",
                 b"\x08\x00\x08\x00\x00\x10\x00\x00" + bytes(16),  # group 0008 but a 4096-byte first value
                 b"\x08\x00\x08\x00\xff\xff\xff\xff" + bytes(16)]  # undefined length
    not_dicom += [rng.randbytes(200) for _ in range(200)]
    for data in not_dicom:
        if data[:2] == b"\x08\x00" and data not in not_dicom[:11]:
            continue  # a random start that does look like group 0008: not what this asserts
        assert dicom_fast.bare_dataset_syntax(data, len(data)) is None, data[:16]
    # Text, images and empty files are refused with the kind that tells the caller to skip them quietly.
    kinds = {}
    for name, data in (("r.txt", not_dicom[2]), ("i.png", not_dicom[4]), ("e.dcm", b""), ("x.bin", not_dicom[20])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FastHeaderUnsupported) as exc:
            read_header_fast(tmp_path / name)
        kinds[name] = exc.value.kind
    assert kinds == {"r.txt": "not_dicom", "i.png": "not_dicom", "e.dcm": "empty", "x.bin": "not_dicom"}


def test_refusal_kinds_of_damaged_files(tmp_path: Path) -> None:
    good = _file(tmp_path, _base(), ExplicitVRLittleEndian, name="good.dcm")
    raw = good.read_bytes()
    pix = raw.index(struct.pack("<HH", 0x7FE0, 0x0010))

    def kind(data: bytes) -> tuple[str, str]:
        p = tmp_path / "k.dcm"
        p.write_bytes(data)
        with pytest.raises(FastHeaderUnsupported) as exc:
            read_header_fast(p)
        return exc.value.kind, str(exc.value)

    assert kind(raw[: pix + 20])[0] == "damaged"  # pixel data cut short
    assert kind(raw[: pix - 3])[0] == "damaged"  # an element's value cut
    assert kind(raw[:pix])[0] == "no_pixel_data"  # cut exactly at an element boundary: like an SR
    rows = raw.index(struct.pack("<HH", 0x0028, 0x0010))
    swallow = raw[: rows + 4] + b"UN" + raw[rows + 6 :]
    k, msg = kind(swallow)
    assert k == "damaged" and "(0028,0010) UN" in msg and "past the end of the file" in msg
    assert kind(raw[: rows + 4] + b"ZZ" + raw[rows + 6 :])[0] == "malformed"  # an invalid VR
    # A bare dataset cut inside its pixel data: damaged too.
    bare = _bare(tmp_path, ImplicitVRLittleEndian).read_bytes()
    assert kind(bare[:-10])[0] == "damaged"
