"""Sentences of a report and the partition of each sentence between its finding heads.

Research software, NOT for diagnostic use.

Internal to :mod:`lungfuse.pipelines.nlp`.  :func:`masked_text` overwrites image
references, dates and Lung-RADS statements in a working copy (same length, so character
offsets are kept); :func:`report_sentences` splits the parsed sections into sentences
(no break on decimals, enumerators or abbreviations), strips enumerators and organ labels
and carries the organ context; :func:`find_heads` finds the nodule anchors and the other
finding heads of a sentence and :func:`scopes` cuts the sentence between them.  All
positions are character offsets into the working text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from lungfuse.pipelines.io.report import Report
from lungfuse.pipelines.nlp.lexicon import (
    ABBREVIATIONS,
    ANCHOR_NEEDS,
    ANCHOR_PATTERNS,
    CONJOINED_GAP_RE,
    DATE_MASK,
    DATE_NEEDS,
    DATE_RES,
    ENUM_PREFIX_RE,
    FUNCTION_WORD_RE,
    IMAGE_REF_NEEDS,
    IMAGE_REF_RES,
    LABEL_RE,
    LOBE_RES,
    LUNG_LABEL_RE,
    NODULE_TOKEN_RE,
    NUMBER_WORD_UNIT_NEEDS,
    NUMBER_WORD_UNIT_RE,
    NUMBER_WORD_VALUES,
    OTHER_HEAD_RE,
    OTHER_LABEL_RE,
    REF_MASK,
    SENT_CANDIDATE_RE,
    SIDE_WORD_RE,
    SKIP_SECTIONS,
    STRONG_SEP_RE,
    WEAK_SEP_RE,
    is_plural_word,
    nodule_word,
)


@dataclass
class Sentence:
    start: int
    end: int
    section: str
    context: str | None  # "lung", "other" or None (organ sub-header in force)
    index: int
    label_nodule: bool = False  # the sentence started with a "Nodules:" style label
    list_item: bool = False  # an item of a "Lung nodules: 1. RUL 4 mm. 2. LLL 6 mm." list
    # the label naming a lung, lobe or side in force ("Left lung:", "RIGHT UPPER LOBE:"),
    # from the label to the next label of the section: a nodule with no lobe of its own lies there
    label_span: tuple[int, int] | None = None


@dataclass
class Head:
    start: int
    end: int
    kind: str  # nodule kinds or "other"
    plural: bool
    micro: bool = False

    @property
    def is_nodule(self) -> bool:
        return self.kind != "other"


def _mask(work: list[str], start: int, end: int, char: str) -> None:
    """Overwrite ``work[start:end]`` with ``char``, newlines kept (one slice assignment, not a
    Python loop per character: a report has thousands of image references and dates)."""
    seg = work[start:end]
    work[start:end] = [char] * len(seg) if "\n" not in seg else [c if c == "\n" else char for c in seg]


def masked_text(text: str, lung_rads_spans: Iterable[tuple[int, int]]) -> str:
    """Working copy of ``text`` with image references, dates and Lung-RADS statements
    overwritten (same length, newlines kept) so their numbers never become sizes, and
    spelled-out sizes ("four millimeter") turned into digits.  ``text`` itself when there is
    nothing to overwrite (no character list of a 1 MB report is built then)."""
    refs = [m.span() for pattern, needs in zip(IMAGE_REF_RES, IMAGE_REF_NEEDS, strict=True)
            if needs is None or needs.search(text) is not None  # cannot match otherwise (lexicon.IMAGE_REF_NEEDS)
            for m in pattern.finditer(text)]
    work: list[str] | None = None
    masked = text
    if refs:
        work = list(text)
        for s, e in refs:
            _mask(work, s, e, REF_MASK)
        masked = "".join(work)
    # dates are searched in the text with its image references masked, then masked after them
    dates = [m.span() for pattern, needs in zip(DATE_RES, DATE_NEEDS, strict=True)
             if needs is None or needs.search(masked) is not None
             for m in pattern.finditer(masked)]
    lung_rads = list(lung_rads_spans)
    units = NUMBER_WORD_UNIT_NEEDS.search(text) is not None
    words = list(NUMBER_WORD_UNIT_RE.finditer(text)) if units else []
    if not (dates or lung_rads or words):
        return masked
    if work is None:
        work = list(text)
    for s, e in dates:
        _mask(work, s, e, DATE_MASK)
    for s, e in lung_rads:
        _mask(work, s, e, REF_MASK)
    for m in words:
        digits = str(NUMBER_WORD_VALUES[m.group("word").lower()])
        work[m.start() : m.end()] = list(digits.ljust(m.end() - m.start()))
    return "".join(work)


# ---------------------------------------------------------------------------
# Sentences
# ---------------------------------------------------------------------------
# The token before a sentence-end candidate: "approx", "e.g", "1".  The lookbehinds only
# skip start positions that cannot be the leftmost match, and the possessive quantifiers
# never give back what the rest could use, so this finds what ``([\w/]+(?:\.[\w/]+)*)$``
# finds, in linear time.
_TOKEN_TAIL_RE = re.compile(r"(?<![\w/])(?<![\w/]\.)[\w/]++(?:\.[\w/]++)*+$")
# The same tokens, each ending right before a ".!?" (a possible sentence end), found in one
# pass over a section: the possessive run is the maximal token, so the lookahead keeps exactly
# the tokens that _TOKEN_TAIL_RE would find at a candidate.
_TOKEN_BEFORE_END_RE = re.compile(r"(?<![\w/])(?<![\w/]\.)[\w/]++(?:\.[\w/]++)*+(?=[.!?])")
_TOKEN_WINDOW = 64
_ENUM_LEAD = " \t\n-*(\u2022"
_TOKEN_CHAR_RE = re.compile(r"[\w/]")


def _token_before(work: str, cur: int, pos: int, ends: dict[int, int] | None = None) -> str:
    """The lower-cased token that ends at ``pos`` in the sentence begun at ``cur``.

    ``ends`` maps the end of each token followed by ".!?" to its start
    (:data:`_TOKEN_BEFORE_END_RE` over the section): a token found there that starts within the
    sentence is the answer without a search (1 MB of "e.g. " has 200,000 candidates).  Otherwise
    the token is searched in the last ``_TOKEN_WINDOW`` characters only (a sentence of many
    "e.g." would otherwise be copied and searched once per period); a token that may reach
    past the window is searched again in the whole sentence."""
    if ends is not None:
        tok_start = ends.get(pos)
        if tok_start is not None and tok_start >= cur:
            return work[tok_start:pos].lower()
        if tok_start is None and (pos <= cur or not _TOKEN_CHAR_RE.match(work, pos - 1)):
            return ""  # no token character before the candidate: no token can end there
    lo = max(cur, pos - _TOKEN_WINDOW)
    tok_m = _TOKEN_TAIL_RE.search(work[lo:pos])
    if tok_m is not None and lo > cur and tok_m.start() <= 1:
        tok_m = _TOKEN_TAIL_RE.search(work[cur:pos])
    return tok_m.group().lower() if tok_m else ""


def _enumerator_prefix(work: str, cur: int, tok_start: int) -> bool:
    """Is ``work[cur:tok_start]`` (the sentence before a number token) only blanks and
    bullets, or does it end with ":" ("Nodules: 1.")?  As ``not prefix.strip(...)`` or
    ``prefix.rstrip().endswith(":")``, without copying the prefix."""
    j = tok_start
    while j > cur and work[j - 1].isspace():
        j -= 1
    if j > cur and work[j - 1] == ":":
        return True
    i = tok_start
    while i > cur and work[i - 1] in _ENUM_LEAD:
        i -= 1
    return i == cur


#: A "sentence" longer than this (characters) is not prose - a run of dots or of "e.g. ", a
#: report without punctuation - and is cut into pieces of at most this length, so that the work
#: per nodule mention (its scope, the sentence-level lobe) stays bounded and a 1 MB report stays
#: linear.  The longest sentence of the development and held-out reports has 168 characters.
MAX_SENTENCE_CHARS = 2000
_CUT_BACK = MAX_SENTENCE_CHARS // 2  # a cut may move back this far to fall on a newline or a blank


def _cut_long(work: str, s: int, e: int) -> list[tuple[int, int]]:
    """``work[s:e]`` in pieces of at most :data:`MAX_SENTENCE_CHARS`, each cut at the last
    newline before the limit, else at the last blank, else at the limit itself."""
    out: list[tuple[int, int]] = []
    while e - s > MAX_SENTENCE_CHARS:
        limit = s + MAX_SENTENCE_CHARS
        cut = work.rfind("\n", limit - _CUT_BACK, limit)
        if cut <= s:
            cut = max(work.rfind(" ", limit - _CUT_BACK, limit), work.rfind("\t", limit - _CUT_BACK, limit))
        if cut <= s:
            cut = limit
        out.append((s, cut))
        s = cut
    out.append((s, e))
    return out


def _strip_span(work: str, s: int, e: int) -> tuple[int, int]:
    """``(s, e)`` without leading and trailing whitespace (``str.isspace``), empty as ``(s, s)``."""
    piece = work[s:e]
    stripped = piece.lstrip()
    s += len(piece) - len(stripped)
    return s, s + len(stripped.rstrip())


def _split_sentences(work: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentence spans in ``work[start:end]``; no split on decimals, enumerators or
    abbreviations; none longer than :data:`MAX_SENTENCE_CHARS`."""
    spans: list[tuple[int, int]] = []
    cur = start
    ends = {m.end(): m.start() for m in _TOKEN_BEFORE_END_RE.finditer(work, start, end)}
    for m in SENT_CANDIDATE_RE.finditer(work, start, end):
        at = m.start()
        if work[at] in ".!?":
            # the common case inline (1 MB of "x. " has 333,000 candidates): the token found in
            # one pass, starting inside the sentence
            tok_start = ends.get(at)
            token = work[tok_start:at].lower() if tok_start is not None and tok_start >= cur else \
                _token_before(work, cur, at, ends)
            if token in ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                continue
            if token.isdigit() and len(token) <= 2 and _enumerator_prefix(work, cur, m.start() - len(token)):
                continue  # enumerator "1." at the start of the sentence or after "Nodules:"
            cut, nxt = m.end(), m.end()
        else:
            cut, nxt = m.start(), m.end()
        if not work[cur:cut].isspace() and cut > cur:
            spans.append((cur, cut))
        cur = nxt
    if end > cur and not work[cur:end].isspace():
        spans.append((cur, end))
    trimmed = []
    for s0, e0 in spans:
        s, e = _strip_span(work, s0, e0)
        if e > s:
            for ps, pe in _cut_long(work, s, e):
                ps, pe = _strip_span(work, ps, pe)
                if pe > ps:
                    trimmed.append((ps, pe))
    return trimmed


def _has_nodule_word(text: str) -> bool:
    return any(nodule_word(t.group()) for t in NODULE_TOKEN_RE.finditer(text))


def _classify_label(label: str) -> str | None:
    if LUNG_LABEL_RE.search(label):
        return "lung"
    if OTHER_LABEL_RE.search(label):
        return "other"
    return None


def _is_location_label(label: str) -> bool:
    """Does a label name a side or a lobe ("Left lung", "RIGHT UPPER LOBE", "Lingula")?"""
    return bool(SIDE_WORD_RE.search(label.lower())) or any(p.search(label) for _, p in LOBE_RES)


def report_sentences(report: Report, work: str) -> list[Sentence]:
    """Sentences of the parsed sections, with enumerators and organ labels stripped and
    the organ context carried from label to label."""
    out: list[Sentence] = []
    for sec in report.sections:
        if sec.name in SKIP_SECTIONS or sec.end <= sec.start:
            continue
        context: str | None = None
        list_mode = False  # after a "Lung nodules:" label, anchor-less items are nodules
        label_span: tuple[int, int] | None = None
        for s, e in _split_sentences(work, sec.start, sec.end):
            m = ENUM_PREFIX_RE.match(work, s, e)
            if m:
                s = m.end()
            label_nodule = False
            m = LABEL_RE.match(work, s, e)
            if m:
                label_span = m.span("label") if _is_location_label(m.group("label")) else None
                kind = _classify_label(m.group("label"))
                label_has_nodule = _has_nodule_word(m.group("label"))
                if kind is not None:
                    context = kind
                    list_mode = label_has_nodule
                    if not work[m.end() : e].strip():
                        continue  # a sub-header line on its own ("NODULES:")
                    if label_has_nodule and not _has_nodule_word(work[m.end() : e]):
                        label_nodule = True  # "Nodules: RUL 4 mm" - the label is the anchor
                    else:
                        s = m.end()  # "Lungs: 4 mm nodule", "Two nodules: a 4 mm nodule ..."
            list_item = list_mode and not label_nodule and not _has_nodule_word(work[s:e])
            if e > s:
                out.append(Sentence(s, e, sec.name, context, len(out), label_nodule, list_item, label_span))
    return out


# ---------------------------------------------------------------------------
# Heads and scopes
# ---------------------------------------------------------------------------
def find_heads(work: str, s: int, e: int) -> list[Head]:
    """Nodule anchors and other finding heads in ``work[s:e]``, non-overlapping, sorted."""
    cands: list[Head] = []
    for m in NODULE_TOKEN_RE.finditer(work, s, e):
        kind = nodule_word(m.group())
        if kind is not None:
            plural, micro = kind
            cands.append(Head(m.start(), m.end(), "micronodule" if micro else "nodule", plural, micro))
    anchors = ANCHOR_PATTERNS if ANCHOR_NEEDS.search(work, s, e) else ()
    for kind_name, pattern in anchors:
        for m in pattern.finditer(work, s, e):
            cands.append(Head(m.start(), m.end(), kind_name, is_plural_word(m.group())))
    for m in OTHER_HEAD_RE.finditer(work, s, e):
        cands.append(Head(m.start(), m.end(), "other", is_plural_word(m.group())))
    # longest first at equal start; nodule anchors win over "other" on overlap
    cands.sort(key=lambda h: (h.start, -(h.end - h.start), h.kind == "other"))
    kept: list[Head] = []
    for h in cands:
        # kept is sorted by start and heads are short: only its tail can overlap h
        clash = [k for k in kept[-8:] if h.start < k.end and k.start < h.end]
        if not clash:
            kept.append(h)
        elif h.kind != "other" and all(k.kind == "other" for k in clash):
            for k in clash:
                kept.remove(k)
            kept.append(h)
    kept.sort(key=lambda h: h.start)
    # merge conjoined nodule heads ("nodules or masses")
    merged: list[Head] = []
    for h in kept:
        if merged and merged[-1].is_nodule and h.is_nodule and CONJOINED_GAP_RE.match(work[merged[-1].end : h.start]):
            prev = merged[-1]
            head_kind = prev.kind if prev.kind in ("nodule", "micronodule") else h.kind
            merged[-1] = Head(prev.start, h.end, head_kind, prev.plural or h.plural, prev.micro or h.micro)
        else:
            merged.append(h)
    return merged


def _boundary(work: str, a: int, b: int) -> int:
    """Where to cut the gap ``work[a:b]`` between two heads: at the last strong
    separator (comma, "and", ";", ":"), else the last weak one ("with", "adjacent to"),
    else just after the last function word ("for", "of", "is"), else at the second head."""
    gap = work[a:b]
    last = None
    for m in STRONG_SEP_RE.finditer(gap):
        last = m
    if last is None:
        for m in WEAK_SEP_RE.finditer(gap):
            last = m
    if last is not None:
        return a + last.start()
    for m in FUNCTION_WORD_RE.finditer(gap):
        last = m
    return a + last.end() if last is not None else b


def scopes(work: str, sent: Sentence, heads: list[Head]) -> list[tuple[int, int]]:
    bounds = [sent.start]
    for h1, h2 in zip(heads, heads[1:], strict=False):
        bounds.append(_boundary(work, h1.end, h2.start))
    bounds.append(sent.end)
    return [(bounds[i], bounds[i + 1]) for i in range(len(heads))]
