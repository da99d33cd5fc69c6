"""Decoding the values the fast DICOM header reader collects, and the reader's refusal.

Research software, NOT for diagnostic use.

Each ``d_*`` decoder turns the raw bytes of one data element into the value pydicom would give
(UIDs, code strings, decimal and integer strings, US, text, person names), raising
:class:`FastHeaderUnsupported` where pydicom's answer cannot be reproduced safely, so that the
caller reads the file with pydicom instead.  :func:`decode_text` handles non-ASCII text in the
character sets the fast path supports.  Used by :mod:`lungfuse.pipelines.io.dicom_header`.
"""

from __future__ import annotations

__all__ = [
    "DS1_CHARS",
    "DSN_CHARS",
    "FastHeaderUnsupported",
    "IS1_CHARS",
    "KNOWN_CHARSETS",
    "NonAscii",
    "d_cs",
    "d_ds",
    "d_dsn",
    "d_is",
    "d_list",
    "d_pn",
    "d_text",
    "d_uid",
    "d_us",
    "decode_text",
]


#: SpecificCharacterSet defined terms (PS3.3 C.12.1.1.2) as pydicom 3 knows them.
KNOWN_CHARSETS = frozenset(
    ["", "GB18030", "GBK"]
    + [f"ISO_IR {n}" for n in (6, 13, 100, 101, 109, 110, 126, 127, 138, 144, 148, 166, 192)]
    + [f"ISO 2022 IR {n}" for n in (6, 13, 58, 87, 100, 101, 109, 110, 126, 127, 138, 144, 148, 149, 159, 166)]
    + ["ISO 2022 58", "ISO 2022 GBK"]
)

DS1_CHARS = "0123456789.+-eE "
DSN_CHARS = DS1_CHARS + "\\"
IS1_CHARS = "0123456789+- "


class FastHeaderUnsupported(ValueError):
    """The fast reader cannot read this file safely; read it with pydicom instead.

    The message says why (``not a DICOM file ...``, ``truncated ...``,
    ``unsupported transfer syntax ...``, ...); :attr:`kind` classifies it
    (:data:`UNSUPPORTED`, :data:`NOT_DICOM`, :data:`EMPTY`, :data:`DAMAGED`,
    :data:`MALFORMED`, :data:`NO_PIXEL_DATA`, :data:`IO_ERROR`; see the module docstring).
    """

    UNSUPPORTED = "unsupported"
    NOT_DICOM = "not_dicom"
    EMPTY = "empty"
    DAMAGED = "damaged"
    MALFORMED = "malformed"
    NO_PIXEL_DATA = "no_pixel_data"
    IO_ERROR = "io"

    def __init__(self, message: str, kind: str = "unsupported") -> None:
        super().__init__(message)
        self.kind = kind



class NonAscii(Exception):
    """Internal: text with non-ASCII bytes; decode it with the character set."""


def d_uid(raw: bytes) -> str | None:
    # As pydicom: right-strip spaces/NULs, then UID() strips surrounding whitespace.
    v = raw.decode("latin-1").rstrip("\x00 ")
    if "\\" in v:
        raise FastHeaderUnsupported(f"several values {v!r}")
    return v.strip() or None


def d_cs(raw: bytes) -> str | None:
    # CS/DA as pydicom: the whole value right-stripped; several values stay backslash-joined.
    return raw.decode("latin-1").rstrip(" \x00") or None


def d_list(raw: bytes) -> tuple[str, ...] | None:
    v = raw.decode("latin-1").rstrip(" \x00")
    return tuple(v.split("\\")) if v else None


def d_ds(raw: bytes) -> float | None:
    v = raw.decode("latin-1").strip().rstrip(" \x00")
    if not v:
        return None
    if v.strip(DS1_CHARS):
        raise FastHeaderUnsupported(f"not one decimal string: {v!r}")
    return float(v)  # ValueError ("+", "1e", "1 2") -> unsupported


def d_dsn(raw: bytes) -> tuple[float, ...] | None:
    v = raw.decode("latin-1").strip().rstrip(" \x00")
    if not v:
        return None
    if v.strip(DSN_CHARS):
        raise FastHeaderUnsupported(f"not a decimal string: {v!r}")
    return tuple(map(float, v.split("\\")))  # ValueError (also an empty value) -> unsupported


def d_is(raw: bytes) -> int | None:
    # Unlike DS, pydicom does not strip() IS text first: "\x85 " stays "\x85" (-> unsupported here).
    v = raw.decode("latin-1").rstrip(" \x00")
    if not v:
        return None
    if v.strip(IS1_CHARS):
        raise FastHeaderUnsupported(f"not one integer string: {v!r}")
    return int(v)


def d_us(raw: bytes) -> int:
    if len(raw) != 2:
        raise FastHeaderUnsupported(f"expected one 2-byte value, got {len(raw)} bytes")
    return raw[0] | raw[1] << 8


def d_text(raw: bytes) -> str | None:
    # LO/SH as pydicom: split on backslash, each value right-stripped of spaces/NULs.
    if not raw.isascii() or b"\x1b" in raw:
        raise NonAscii
    v = raw.decode("ascii")
    if "\\" in v:
        return "\\".join(x.rstrip("\x00 ") for x in v.split("\\")) or None
    return v.rstrip("\x00 ") or None


def d_pn(raw: bytes) -> str | None:
    # PN as pydicom: the whole value right-stripped (str(PersonName) is the decoded text).
    if not raw.isascii() or b"\x1b" in raw:
        raise NonAscii
    return raw.decode("ascii").rstrip("\x00 ") or None


def decode_text(raw: bytes, pn: bool, terms: list[str]) -> str | None:
    """Non-ASCII LO/SH/PN text: only the default (latin-1), ISO_IR 100 and ISO_IR 192 are decoded here."""
    if terms in ([""], ["ISO_IR 100"]):
        codec = "latin-1"  # pydicom's default_encoding (iso8859) when the character set is absent
    elif terms == ["ISO_IR 192"]:
        codec = "utf-8"
    else:
        raise FastHeaderUnsupported(f"non-ASCII text in character set {terms!r}")
    if b"\x1b" in raw:
        raise FastHeaderUnsupported("ISO 2022 escape sequence in text")
    if pn:
        return raw.rstrip(b"\x00 ").decode(codec) or None  # UnicodeDecodeError -> unsupported
    return "\\".join(x.rstrip("\x00 ") for x in raw.decode(codec).split("\\")) or None
