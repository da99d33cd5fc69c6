"""Loading radiology reports and splitting them into sections.

Research software, NOT for diagnostic use.

``load_report`` accepts a path to a plain-text / Markdown report, a DICOM Structured
Report (the text of its TEXT content items is read recursively with pydicom), raw
report text, or raw bytes.  It detects the encoding (UTF-8, UTF-8 with BOM, UTF-16
with BOM, cp1252 "smart quote" files, Latin-1 as the last resort), refuses bytes that
are not text (:func:`not_text_reason`: a PDF, an image, an archive or binary data is a
:class:`~lungfuse.pipelines.core.errors.ReportError` naming the file), normalises line
endings to ``"\\n"`` and splits the text into sections (FINDINGS, IMPRESSION,
TECHNIQUE, ...).  Every offset stored on a :class:`Section` refers to
:attr:`Report.text` (the decoded, newline-normalised text), so ``report.text[s.start:s.end]``
is always the section body.
"""

from __future__ import annotations

import bisect
import codecs
import errno
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lungfuse.pipelines.core.errors import ReportError

__all__ = [
    "BODY",
    "Report",
    "Section",
    "canonical_section_name",
    "decode_bytes",
    "load_report",
    "normalise_newlines",
    "not_text_reason",
    "split_sections",
]

#: Name of the pseudo-section holding text that precedes the first header
#: (or the whole report when it has no recognisable header).
BODY = "BODY"

# ---------------------------------------------------------------------------
# Header vocabulary
# ---------------------------------------------------------------------------
# canonical section name -> header spellings (regex fragments, matched case-insensitively).
# Longer spellings are tried first (see _ALIAS_ALTERNATION) so that "clinical history"
# wins over "history" and "impression and recommendation" over "impression".
_SECTION_ALIASES: dict[str, tuple[str, ...]] = {
    "CLINICAL HISTORY": (
        r"clinical\s+history",
        r"clinical\s+(?:information|data|details|notes?|question|indications?)",
        r"history(?:\s+and\s+indications?)?",
        r"indications?(?:\s+for\s+(?:exam(?:ination)?|study))?",
        r"reason\s+for\s+(?:exam(?:ination)?|study|referral|request)",
    ),
    "EXAM": (r"exam(?:ination)?(?:\s+type)?", r"study", r"procedure", r"type\s+of\s+(?:exam|study)"),
    "TECHNIQUE": (r"technique", r"ct\s+technique", r"imaging\s+technique", r"protocol"),
    "DOSE": (r"(?:radiation\s+)?dose(?:\s+(?:report|information))?",),
    "COMPARISON": (
        r"comparisons?(?:\s+(?:studies|study|exams?|examinations?))?",
        r"priors?(?:\s+(?:studies|exams?|examinations?))?",
    ),
    "FINDINGS": (r"findings?", r"observations?"),
    "IMPRESSION": (
        r"impressions?(?:\s*(?:and|&|/)\s*recommendations?)?",
        r"conclusions?",
        r"summary",
        r"opinion",
        r"assessment",
        r"interpretation",
    ),
    "RECOMMENDATION": (r"recommendations?", r"follow[\s-]?up(?:\s+recommendations?)?"),
    "ADDENDUM": (r"addendum",),
}

# Headers that may be written in ALL CAPS without a colon ("FINDINGS The lungs ...").
# Restricted to the main headers: "STUDY LIMITED BY MOTION" must not start a section.
_BARE_CAPS_HEADERS = (
    r"CLINICAL\s+HISTORY|HISTORY|INDICATIONS?|TECHNIQUE|COMPARISONS?|FINDINGS|IMPRESSIONS?|"
    r"CONCLUSIONS?|RECOMMENDATIONS?"
)

_ALL_ALIASES: list[tuple[str, str]] = sorted(
    ((alias, name) for name, aliases in _SECTION_ALIASES.items() for alias in aliases),
    key=lambda item: -len(item[0]),
)
_ALIAS_ALTERNATION = "|".join(alias for alias, _ in _ALL_ALIASES)
_ALIAS_MATCHERS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"(?:{alias})", re.IGNORECASE), name) for alias, name in _ALL_ALIASES
]

# Markdown decoration around a header: "## Findings", "**Impression:**", "__Findings__".
_MD_PREFIX = r"(?:\#{1,6}[ \t]*+)?(?:\*\*|__)?[ \t]*+"
_MD_SUFFIX = r"(?:\*\*|__)?"

# A header at the start of a line.  The delimiter is optional; whether a delimiter-less
# match is really a header is decided in _accept_line_header (alone on its line, ALL
# CAPS, or markdown '#').  The dash delimiter must be followed by a space or the end of
# the line so that "Follow-up" or "History-taking" are not cut in two.
_LINE_HEADER_RE = re.compile(
    rf"^(?P<lead>[ \t]*+{_MD_PREFIX})(?P<name>{_ALIAS_ALTERNATION})\b[ \t]*{_MD_SUFFIX}[ \t]*"
    rf"(?P<delim>:|[-\u2013\u2014](?=[ \t]|$))?[ \t]*{_MD_SUFFIX}",
    re.IGNORECASE | re.MULTILINE,
)

# A header inside a line (reports flattened into one paragraph): it must follow a
# sentence end (". ", "; ", ") ") or a run of 2+ spaces, and carry a colon or a spaced
# dash.  "no findings: ..." or "on prior study: ..." do not qualify (no boundary).
_INLINE_HEADER_RE = re.compile(
    rf"(?:(?<=[.;!?)\]])|(?<=[.;!?)\]][\"'])|(?<=[ \t]{{2}})(?<![ \t]{{3}})|(?<=[ \t]{{2}})(?![ \t]))[ \t]*+{_MD_SUFFIX}"
    rf"(?P<name>{_ALIAS_ALTERNATION})\b[ \t]*+{_MD_SUFFIX}[ \t]*+(?P<delim>:|[-\u2013\u2014](?=[ \t]))[ \t]*{_MD_SUFFIX}",
    re.IGNORECASE,
)

# ALL CAPS header inside a line without a delimiter: "... contrast. FINDINGS The lungs".
# Case-sensitive on purpose: mixed-case "Findings show" is prose, not a header.
_INLINE_CAPS_HEADER_RE = re.compile(
    rf"(?<=[.;!?])[ \t]++(?P<name>{_BARE_CAPS_HEADERS})(?=[ \t]++[A-Z0-9])"
)

_WS_RE = re.compile(r"\s+")
_EXT_RE = re.compile(r"\.(?:txt|text|md|markdown|dcm|dicom|sr|rtf)$", re.IGNORECASE)
_DICOM_EXTS = {".dcm", ".dicom", ".sr"}


def canonical_section_name(header: str) -> str | None:
    """Map a header spelling ("Conclusion", "CLINICAL INDICATION", "## Findings") to its
    canonical section name ("IMPRESSION", "CLINICAL HISTORY", "FINDINGS"), or ``None``."""
    cleaned = _WS_RE.sub(" ", header.strip().strip("#*_:-\u2013\u2014 \t")).strip()
    if not cleaned:
        return None
    if cleaned.upper() in _SECTION_ALIASES or cleaned.upper() == BODY:
        return cleaned.upper()
    for pattern, name in _ALIAS_MATCHERS:
        if pattern.fullmatch(cleaned):
            return name
    return None


# ---------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Section:
    """One section of a report.

    ``start``/``end`` are character offsets of the section *body* (header excluded,
    surrounding whitespace trimmed) into :attr:`Report.text`; ``header_start`` is the
    offset of the header itself (equal to ``start`` for the BODY pseudo-section).
    ``name`` is canonical (upper case, e.g. ``"IMPRESSION"`` also for a "Conclusion"
    header); ``header`` is the header as written.
    """

    name: str
    start: int
    end: int
    header: str = ""
    header_start: int = -1
    source_text: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("Section.name must be a non-empty string")
        if not (isinstance(self.start, int) and isinstance(self.end, int)) or not 0 <= self.start <= self.end:
            raise ValueError(f"Section {self.name!r}: invalid offsets start={self.start!r} end={self.end!r}")
        if self.header_start < 0:
            object.__setattr__(self, "header_start", self.start)

    @property
    def text(self) -> str:
        """The section body (empty string when the section has no content)."""
        return self.source_text[self.start : self.end]

    def __len__(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Report:
    """A radiology report: its text, sections, origin and detected encoding.

    Validated at construction: ``text`` must be a ``str`` that is not empty or
    whitespace-only (``ValueError`` otherwise).  When ``sections`` is empty it is
    computed with :func:`split_sections`; given sections must lie inside the text.
    """

    text: str
    sections: tuple[Section, ...] = ()
    source: str | None = None
    encoding: str = "str"

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"Report.text must be str, got {type(self.text).__name__}")
        if not self.text.strip():
            where = f" ({self.source})" if self.source else ""
            raise ValueError(f"report text is empty or whitespace-only{where}")
        if self.source is not None and not isinstance(self.source, str):
            object.__setattr__(self, "source", os.fspath(self.source))
        if not isinstance(self.encoding, str) or not self.encoding:
            raise ValueError("Report.encoding must be a non-empty string")
        sections = tuple(self.sections) if self.sections else split_sections(self.text)
        n = len(self.text)
        bound: list[Section] = []
        for sec in sections:
            if not isinstance(sec, Section):
                raise TypeError(f"Report.sections must hold Section objects, got {type(sec).__name__}")
            if sec.end > n or sec.header_start > sec.start:
                raise ValueError(f"section {sec.name!r} [{sec.start}, {sec.end}) lies outside the report text")
            bound.append(sec if sec.source_text is self.text else replace(sec, source_text=self.text))
        object.__setattr__(self, "sections", tuple(bound))

    # -- access ---------------------------------------------------------------
    def _resolve(self, name: str) -> str:
        canon = canonical_section_name(name)
        return canon if canon is not None else name.strip().upper()

    def sections_named(self, name: str) -> tuple[Section, ...]:
        """All sections whose canonical name matches ``name`` (aliases accepted:
        ``"conclusion"`` finds IMPRESSION, ``"indication"`` finds CLINICAL HISTORY)."""
        canon = self._resolve(name)
        return tuple(s for s in self.sections if s.name == canon)

    def section(self, name: str) -> str | None:
        """Text of the section ``name`` (aliases accepted), or ``None`` when absent or
        empty.  Several sections of the same name are joined with a blank line."""
        texts = [s.text for s in self.sections_named(name) if s.text.strip()]
        return "\n\n".join(texts) if texts else None

    def section_at(self, offset: int) -> Section | None:
        """The section whose header or body contains character ``offset``."""
        for sec in self.sections:
            if sec.header_start <= offset < max(sec.end, sec.start + 1):
                return sec
        return None

    @property
    def findings(self) -> str | None:
        return self.section("FINDINGS")

    @property
    def impression(self) -> str | None:
        return self.section("IMPRESSION")

    def __str__(self) -> str:  # pragma: no cover - convenience
        return self.text


# ---------------------------------------------------------------------------
# Section splitting
# ---------------------------------------------------------------------------
def _is_caps(s: str) -> bool:
    letters = [c for c in s if c.isalpha()]
    return bool(letters) and all(c.isupper() for c in letters)


def _accept_line_header(m: re.Match[str], text: str) -> bool:
    """Decide whether a header-looking line start really is a header."""
    if m.group("delim"):
        return True
    eol = text.find("\n", m.end())  # not ``"\n" in text[m.end():]``: that copies the rest of the text per header
    rest_of_line = text[m.end() : eol if eol >= 0 else len(text)]
    if not rest_of_line.strip():  # header alone on its line ("Impression" / "FINDINGS")
        return True
    if "#" in m.group("lead"):  # "## Findings ..." markdown header
        return True
    # ALL CAPS header followed by text on the same line: "IMPRESSION 1. ..."
    return bool(re.fullmatch(_BARE_CAPS_HEADERS, m.group("name"))) and _is_caps(m.group("name"))


def _find_headers(text: str) -> list[tuple[int, int, str, str]]:
    """Return (header_start, body_start, canonical_name, header_as_written) sorted."""
    found: dict[int, tuple[int, int, str, str]] = {}
    # the union of the kept [header_start, body_start) spans, as sorted disjoint spans:
    # "is hstart inside a kept span" is then a bisection, not a scan of every header
    cover_starts: list[int] = []
    cover_ends: list[int] = []

    def add(hstart: int, bstart: int, raw: str) -> None:
        name = canonical_section_name(raw)
        if name is None:
            return
        # keep the earliest claim on an overlapping area
        i = bisect.bisect_right(cover_starts, hstart)
        if i and hstart < cover_ends[i - 1]:
            return
        found[hstart] = (hstart, bstart, name, _WS_RE.sub(" ", raw.strip()))
        if bstart > hstart:  # merge [hstart, bstart) into the union
            lo, hi = hstart, bstart
            j = i
            if j and cover_ends[j - 1] >= lo:
                j -= 1
                lo = cover_starts[j]
            k = j
            while k < len(cover_starts) and cover_starts[k] <= hi:
                hi = max(hi, cover_ends[k])
                k += 1
            cover_starts[j:k] = [lo]
            cover_ends[j:k] = [hi]

    for m in _LINE_HEADER_RE.finditer(text):
        if _accept_line_header(m, text):
            lead = m.group("lead")
            add(m.start() + len(lead) - len(lead.lstrip(" \t")), m.end(), m.group("name"))
    for m in _INLINE_HEADER_RE.finditer(text):
        add(m.start("name"), m.end(), m.group("name"))
    for m in _INLINE_CAPS_HEADER_RE.finditer(text):
        add(m.start("name"), m.end(), m.group("name"))
    return sorted(found.values())


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def split_sections(text: str) -> tuple[Section, ...]:
    """Split report text into sections.

    Recognised headers: line-start headers with ``:`` / `` - `` or alone on their line
    (any case, optional Markdown ``#``/``**`` decoration), ALL CAPS headers followed by
    text, and inline headers after a sentence end ("... contrast. Findings: ...").
    Text before the first header becomes the :data:`BODY` section (omitted when blank);
    a report without any header is one BODY section.  Offsets refer to ``text``.
    """
    headers = _find_headers(text)
    sections: list[Section] = []
    first = headers[0][0] if headers else len(text)
    s, e = _trim(text, 0, first)
    if e > s or not headers:
        sections.append(Section(BODY, s, e, header="", header_start=s, source_text=text))
    for i, (hstart, bstart, name, raw) in enumerate(headers):
        stop = headers[i + 1][0] if i + 1 < len(headers) else len(text)
        s, e = _trim(text, bstart, stop)
        if s > e:  # pragma: no cover - defensive
            s = e
        sections.append(Section(name, s, e, header=raw, header_start=hstart, source_text=text))
    return tuple(sections)


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------
def normalise_newlines(text: str) -> str:
    """CRLF, lone CR and Unicode line/paragraph separators -> ``"\\n"``."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")


def _looks_utf16(data: bytes) -> str | None:
    """Guess BOM-less UTF-16 from the NUL-byte pattern of mostly-ASCII text."""
    if len(data) < 4 or len(data) % 2:
        return None
    even_nuls = data[0::2].count(0)
    odd_nuls = data[1::2].count(0)
    half = len(data) // 2
    if odd_nuls > 0.4 * half and even_nuls < 0.05 * half:
        return "utf-16-le"
    if even_nuls > 0.4 * half and odd_nuls < 0.05 * half:
        return "utf-16-be"
    return None


#: Leading bytes of binary formats that get handed in as "the report" (checked first, named in the error).
_BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"PK\x03\x04", "a ZIP archive (a .docx/.odt document?)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE2 compound file (a .doc document?)"),
    (b"\x1f\x8b", "a gzip archive"),
)
#: Characters that do not occur in text: C0 controls other than tab, LF, VT, FF, CR; DEL; the C1
#: controls (what Latin-1 makes of undecodable bytes 0x80-0x9F); U+FFFD (bytes a codec replaced).
_NON_TEXT_RE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ufffd]")
#: The most non-text characters a report may hold: 1 % of its characters (and at least 2).
NOT_TEXT_MAX_SHARE = 0.01


def not_text_reason(data: bytes, text: str) -> str | None:
    """Why report bytes are not text, or ``None`` when they are; ``text`` is :func:`decode_bytes`'s decoding.

    The rule, in order:

    1. the bytes start with the signature of a binary format reports get confused with
       (PDF, PNG, JPEG, GIF, TIFF, ZIP/.docx, OLE2/.doc, gzip): not text, the format named;
    2. otherwise, in the decoded text (so NUL bytes of UTF-16 do not count: that encoding is
       decoded first), count the characters text never holds: C0 control characters other
       than tab, LF, VT, FF and CR, DEL, the C1 controls (what undecodable bytes 0x80-0x9F
       become under the Latin-1 fallback) and U+FFFD (bytes a codec replaced).  NUL and
       0x1A (DOS end-of-file) padding at the very end is ignored.  More than
       :data:`NOT_TEXT_MAX_SHARE` (1 %) of the characters, and more than 2, is not text.

    Random bytes hold about 24 % such characters; real reports (UTF-8, UTF-16, cp1252,
    Latin-1, Markdown) none, or a stray one.
    """
    for magic, what in _BINARY_SIGNATURES:
        if data.startswith(magic):
            return f"it is {what} (it starts with {magic[:5]!r})"
    body = text.rstrip("\x00\x1a")
    if not body:
        return None if not text else "it holds only NUL bytes"
    bad = len(body) - len(_NON_TEXT_RE.sub("", body))
    if bad > max(2, NOT_TEXT_MAX_SHARE * len(body)):
        return (f"{bad} of its {len(body)} characters ({100 * bad / len(body):.0f} %) are control characters or "
                "undecodable bytes: binary data")
    return None


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode report bytes; return ``(text, encoding)``.

    Order: UTF-8 BOM (``"utf-8-sig"``), UTF-16 BOM (``"utf-16"``), strict UTF-8
    (``"utf-8"``; pure ASCII reports are reported as UTF-8), BOM-less UTF-16 guessed from
    NUL bytes, cp1252 when bytes 0x80-0x9F occur (Windows "smart quotes", en dashes) and
    decode cleanly, and Latin-1 as the fallback that never fails.  Line endings are
    *not* normalised here.
    """
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace"), "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace"), "utf-16"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    guess = _looks_utf16(data)
    if guess:
        try:
            return data.decode(guess), guess
        except UnicodeDecodeError:
            pass
    if any(0x80 <= b <= 0x9F for b in data):
        try:
            return data.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1"), "latin-1"


# ---------------------------------------------------------------------------
# DICOM SR
# ---------------------------------------------------------------------------
def _is_dicom(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in _DICOM_EXTS or head[128:132] == b"DICM"


def _concept_meaning(item: Any) -> str:
    try:
        seq = item.ConceptNameCodeSequence
        return str(seq[0].CodeMeaning).strip() if seq else ""
    except (AttributeError, IndexError, KeyError):
        return ""


def _sr_text_items(items: Iterable[Any], current: str | None, out: list[str], depth: int = 0) -> None:
    """Collect TEXT content items depth-first.  Containers and TEXT items whose concept
    name is a section header ("Findings", "Impression") emit that header so that the
    joined text splits into the same sections."""
    if depth > 64:  # malformed, self-nesting SR
        return
    for item in items:
        vtype = str(getattr(item, "ValueType", "")).upper()
        meaning = _concept_meaning(item)
        canon = canonical_section_name(meaning) if meaning else None
        here = current
        if vtype == "CONTAINER" and canon and canon != current:
            out.append(f"{meaning.upper()}:")
            here = canon
        elif vtype == "TEXT":
            value = str(getattr(item, "TextValue", "") or "").strip()
            if value:
                if canon and canon != current and canonical_section_name(value.split(":", 1)[0]) is None:
                    out.append(f"{meaning}: {value}")
                else:
                    out.append(value)
        if "ContentSequence" in item:
            _sr_text_items(item.ContentSequence, here, out, depth + 1)


def _read_dicom_sr(path: Path) -> str:
    """Text of a DICOM SR: TEXT content items read recursively, joined by blank lines."""
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError as exc:  # pragma: no cover - pydicom is a hard dependency
        raise ReportError(f"reading DICOM SR {path} needs pydicom", path) from exc
    try:
        ds = pydicom.dcmread(str(path), force=True)
    except (InvalidDicomError, OSError, ValueError, AttributeError, TypeError, EOFError) as exc:
        raise ReportError(f"{path}: not a readable DICOM file ({exc})", path) from exc
    parts: list[str] = []
    if "ContentSequence" in ds:
        _sr_text_items(ds.ContentSequence, None, parts)
    elif "TextValue" in ds:
        parts.append(str(ds.TextValue))
    text = normalise_newlines("\n\n".join(parts))
    if not text.strip():
        raise ReportError(f"{path}: DICOM file has no TEXT content items (not a text structured report?)", path)
    return text


# ---------------------------------------------------------------------------
# Public loader
# ---------------------------------------------------------------------------
def _load_path(path: Path) -> Report:
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "report file not found", str(path))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "expected a report file, got a directory", str(path))
    data = path.read_bytes()
    if _is_dicom(path, data[:132]):
        text, encoding = _read_dicom_sr(path), "dicom-sr"
    else:
        text, encoding = decode_bytes(data)
        why = not_text_reason(data, text)
        if why is not None:
            raise ReportError(f"report file {str(path)!r} is not text: {why}; give the report as plain text "
                              "(.txt, .md) or as a DICOM SR", path)
        text = normalise_newlines(text)
    if not text.strip():
        raise ReportError(f"report file {str(path)!r} is empty or whitespace-only", path)
    return Report(text=text, source=str(path), encoding=encoding)


def load_report(path_or_text: str | os.PathLike[str] | bytes | bytearray | Report) -> Report:
    """Load a report from a path, raw text, raw bytes or an existing :class:`Report`.

    * ``pathlib.Path`` / ``os.PathLike``: read the file (``FileNotFoundError`` naming the
      path when it does not exist).  ``.dcm``/``.sr`` files, or files with the DICM magic,
      are read as DICOM SR (``encoding="dicom-sr"``).
    * ``str``: treated as a path when it is a single line naming an existing file; a
      single line that merely *looks* like a report file name (``*.txt``, ``*.md``,
      ``*.dcm`` ...) but does not exist raises ``FileNotFoundError``; anything else (text
      with newlines, prose) is the report text itself (``encoding="str"``).
    * ``bytes``: decoded with :func:`decode_bytes`.

    Returns a validated :class:`Report` (``ValueError`` for empty / whitespace-only text;
    :class:`~lungfuse.pipelines.core.errors.ReportError`, a ``ValueError``, naming the file for a
    file that is empty, not text (:func:`not_text_reason`: a PDF, an image, binary data) or an
    unreadable DICOM SR; for ``bytes`` that are not text, without a file to name).
    """
    if isinstance(path_or_text, Report):
        return path_or_text
    if isinstance(path_or_text, bytes | bytearray):
        data = bytes(path_or_text)
        text, encoding = decode_bytes(data)
        why = not_text_reason(data, text)
        if why is not None:
            raise ReportError(f"the report bytes are not text: {why}")
        return Report(text=normalise_newlines(text), encoding=encoding)
    if isinstance(path_or_text, os.PathLike):
        return _load_path(Path(path_or_text))
    if not isinstance(path_or_text, str):
        raise TypeError(f"load_report expects a path, text or bytes, got {type(path_or_text).__name__}")
    candidate = path_or_text.strip()
    if candidate and "\n" not in candidate and "\r" not in candidate and len(candidate) < 4096:
        try:
            path = Path(candidate).expanduser()
            is_file = path.is_file()
        except (OSError, ValueError, RuntimeError):  # embedded NUL, name too long, "~" without HOME
            is_file = False
        if is_file:
            return _load_path(path)
        if _EXT_RE.search(candidate) and not re.search(r"[.:;,]\s", candidate):
            raise FileNotFoundError(errno.ENOENT, "report file not found", candidate)
    return Report(text=normalise_newlines(path_or_text), encoding="str")
