"""Attributes of one nodule mention read from its scope: size, location, descriptors, count, negation.

Research software, NOT for diagnostic use.

Internal to :mod:`lungfuse.pipelines.nlp`.  Positions are character offsets into the
masked working text (:func:`.sentences.masked_text`); sizes are in millimetres.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from lungfuse.pipelines.nlp.lexicon import (
    ATTR_NEG_BEFORE_RE,
    ATTRIBUTE_NEG_RE,
    BENIGN_CALC_PATTERNS,
    BENIGN_OPEN_RE,
    BENIGN_RE,
    BETWEEN_RE,
    BILATERAL_RE,
    CALC_PATTERN_RES,
    CHANGE_VERB_RE,
    COMPONENT_AFTER_RE,
    COMPONENT_BEFORE_RE,
    COUNT_TOKEN_RE,
    DIM_SEPS,
    EXCLUDED_AFTER_RE,
    EXCLUDED_BEFORE_RE,
    FLAGS,
    GROUND_GLASS_RE,
    HEDGE_EXCLUDED_POST_RE,
    HEDGE_POST_RE,
    HEDGE_PRE_RE,
    HEDGE_VERSUS_PRE_RE,
    LOBE_RES,
    LOBE_RES_NEED_LOBE_WORD,
    LOBE_RES_NEED_ZONE_WORD,
    LOBE_WORD_NEEDS,
    MULTI_WORDS,
    NATURE_WORDS_RE,
    NEG_TERMINATOR_RE,
    NUMBER_WORDS,
    PART_SOLID_RE,
    POSITION_NEEDS,
    POSITION_RES,
    POST_NEG_RE,
    POST_TERMINATOR_RE,
    PRE_NEG_RE,
    PRIOR_AFTER_RE,
    PRIOR_BEFORE_RE,
    PSEUDO_AFTER_NEG_RE,
    PSEUDO_NEG_RE,
    QUALIFIER_RES,
    RANGE_SEPS,
    SEGMENT_NEEDS,
    SEGMENT_RE,
    SIDE_LEVEL_RE,
    SIDE_WORD_RE,
    SIZE_CHUNK_RE,
    SIZE_TOKEN_RE,
    SOLID_COMPONENT_RE,
    SOLID_RE,
    STABLE_FALSE_RE,
    STABLE_TRUE_RE,
    ZONE_NEEDS,
)


@dataclass
class Size:
    start: int
    end: int
    value: float  # mm; largest dimension / upper bound
    qualifier: str | None
    prior: bool = False
    component: bool = False
    excluded: bool = False
    listed: bool = False  # member of a list "3, 4 and 5 mm"
    change_from: float | None = None  # "increased from 5 to 7 mm": 5


@dataclass
class Location:
    lobes: list[tuple[int, str]] = field(default_factory=list)
    lobe_ends: dict[int, int] = field(default_factory=dict)
    sides: list[tuple[int, str]] = field(default_factory=list)
    bilateral: bool = False
    segment: str | None = None
    position: str | None = None
    # "upper lobe" levels with no side in the scope: (position, "upper"/"lower")
    sideless: list[tuple[int, str]] = field(default_factory=list)


def nearest(positions: Iterable[int], anchor: int) -> int | None:
    best = None
    for p in positions:
        d = abs(p - anchor)
        if best is None or d < best:
            best = d
    return best


def _attr_negated(text: str, pos: int) -> bool:
    """Is the attribute word at ``pos`` negated ("without calcification", "non-calcified")?"""
    m = ATTR_NEG_BEFORE_RE.search(text[max(0, pos - 45) : pos])
    if not m:
        return False
    return not PSEUDO_AFTER_NEG_RE.match(m.group("rest"))


# ---------------------------------------------------------------------------
# Attribute extraction (positions are absolute offsets into the working text)
# ---------------------------------------------------------------------------
def _unit_factor(unit: str | None) -> float:
    return 10.0 if unit and unit.lower().startswith("c") else 1.0


def _parse_chunk(chunk: str) -> list[tuple[int, int, str, list[float]]]:
    """Parse one size chunk into groups: ``(rel_start, rel_end, kind, values_mm)`` with
    kind "single", "dims" or "range"; list separators start a new group."""
    tokens = list(SIZE_TOKEN_RE.finditer(chunk))
    # unit of each number: its own or the next one to the right
    units: list[str | None] = []
    pending: list[int] = []
    nums = [t for t in tokens if t.group("num")]
    for i, t in enumerate(nums):
        units.append(t.group("unit"))
        if t.group("unit"):
            for j in pending:
                units[j] = t.group("unit")
            pending = []
        else:
            pending.append(i)
    groups: list[tuple[int, int, str, list[float]]] = []
    cur_vals: list[float] = []
    cur_kind = "single"
    cur_start = cur_end = 0
    num_i = 0
    for t in tokens:
        if t.group("num"):
            value = float(t.group("num")) * _unit_factor(units[num_i])
            num_i += 1
            if not cur_vals:
                cur_start = t.start()
            cur_vals.append(value)
            cur_end = t.end()
        else:
            sep = t.group("sep").lower()
            if sep in DIM_SEPS:
                cur_kind = "dims"
            elif sep in RANGE_SEPS:
                cur_kind = "range" if cur_kind == "single" else cur_kind
            elif cur_vals:  # list separator
                groups.append((cur_start, cur_end, cur_kind, cur_vals))
                cur_vals, cur_kind = [], "single"
    if cur_vals:
        groups.append((cur_start, cur_end, cur_kind, cur_vals))
    return groups


def _qualifier_before(work: str, pos: int) -> str | None:
    before = work[max(0, pos - 40) : pos]
    for name, pattern in QUALIFIER_RES:
        if pattern.search(before):
            return name
    return None


def find_sizes(work: str, a: int, b: int) -> list[Size]:
    """Sizes (mm) in ``work[a:b]`` with prior/component/excluded flags."""
    out: list[Size] = []
    for m in SIZE_CHUNK_RE.finditer(work, a, b):
        groups = _parse_chunk(m.group())
        before = work[max(a, m.start() - 60) : m.start()]
        listed = len(groups) > 1
        # "between 3 and 5 mm" is a range, not a list
        if len(groups) == 2 and all(g[2] == "single" for g in groups) and BETWEEN_RE.search(before):
            groups = [(groups[0][0], groups[1][1], "range", groups[0][3] + groups[1][3])]
            listed = False
        for gs, ge, kind, values in groups:
            s, e = m.start() + gs, m.start() + ge
            if kind == "range" and len(values) == 2 and CHANGE_VERB_RE.search(work[max(a, s - 80) : s]):
                # "increased from 5 to 7 mm": current 7, prior 5
                size = Size(s, e, values[1], None, change_from=values[0])
            else:
                qual = "range" if kind == "range" else None
                q = _qualifier_before(work, s) if gs == 0 or listed else None
                if gs == 0 and q is not None:
                    qual = q
                size = Size(s, e, max(values), qual, listed=listed)
            ctx_before = work[max(a, s - 60) : s]
            ctx_after = work[m.end() : min(b, m.end() + 60)]
            if PRIOR_BEFORE_RE.search(ctx_before) or PRIOR_AFTER_RE.match(ctx_after):
                # a "from" that is part of "ranging from" is not a prior size
                if not re.search(r"\brang\w*\s+(?:in\s+size\s+)?from\s*$", ctx_before, FLAGS):
                    size.prior = True
            if COMPONENT_AFTER_RE.match(ctx_after) or COMPONENT_BEFORE_RE.search(ctx_before):
                size.component = True
            if EXCLUDED_AFTER_RE.match(ctx_after) or EXCLUDED_BEFORE_RE.search(ctx_before):
                size.excluded = True
            if not 0 < size.value <= 300:
                size.excluded = True
            out.append(size)
    return out


def _levels(levels: str) -> list[str]:
    out = []
    for lv in re.findall(r"[a-z]+", levels.lower()):
        if lv.startswith("u"):
            out.append("upper")
        elif lv.startswith("mid"):
            out.append("middle")
        elif lv.startswith("l"):
            out.append("lower")
    return out


def lobe_name(side: str, level: str) -> str | None:
    if level == "middle":
        return "RML" if side == "right" else None
    return {"right": {"upper": "RUL", "lower": "RLL"}, "left": {"upper": "LUL", "lower": "LLL"}}[side].get(level)


def _side(token: str) -> str:
    """``right`` or ``left`` for a side word the lexicon's patterns matched (right, rt, r, left, lt, l)."""
    return "right" if token.lower().startswith("r") else "left"


class _Spans:
    """Disjoint, non-empty ``[start, end)`` spans kept sorted, so that testing a span
    against all of them is a bisection, not a scan (a scope naming a lobe thousands of
    times stays linear)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def free(self, s: int, e: int) -> bool:
        """No kept span overlaps ``[s, e)``: as ``all(e <= ts or s >= te ...)``."""
        i = bisect.bisect_left(self.starts, e)
        return i == 0 or self.ends[i - 1] <= s

    def append(self, span: tuple[int, int]) -> None:
        """Keep ``span`` (callers add only spans that are :meth:`free`)."""
        i = bisect.bisect_left(self.starts, span[0])
        self.starts.insert(i, span[0])
        self.ends.insert(i, span[1])


def find_location(work: str, a: int, b: int) -> Location:
    loc = Location()
    taken = _Spans()
    sideless: list[tuple[int, str]] = []
    free = taken.free

    lobe_word = LOBE_WORD_NEEDS.search(work, a, b) is not None
    zone_word = ZONE_NEEDS.search(work, a, b) is not None
    for (kind, pattern), needs_lobe, needs_zone in zip(LOBE_RES, LOBE_RES_NEED_LOBE_WORD, LOBE_RES_NEED_ZONE_WORD,
                                                       strict=True):
        if (needs_lobe and not lobe_word) or (needs_zone and not zone_word):
            continue  # the word this pattern needs is not in the scope: it cannot match
        for m in pattern.finditer(work, a, b):
            if not free(m.start(), m.end()):
                continue
            found: list[str | None] = []  # None: no such lobe ("left middle lobe"), dropped below
            if kind == "pairs":
                # each lobe at its own pair's position, so that text order survives the sort
                taken.append((m.start(), m.end()))
                for p in SIDE_LEVEL_RE.finditer(work, m.start(), m.end()):
                    lobe = lobe_name(_side(p.group("side")), _levels(p.group("level"))[0])
                    if lobe:
                        loc.lobes.append((p.start(), lobe))
                        loc.lobe_ends[p.start()] = m.end()
                continue
            if kind == "sided":
                side = _side(m.group("side"))  # the group is not optional in these patterns
                found = [lb for lv in _levels(m.group("levels")) if (lb := lobe_name(side, lv))]
            elif kind == "abbr":
                found = [m.group("abbr").upper()]
            elif kind == "both":
                lv = _levels(m.group("levels"))[0]
                if m.group().lower().startswith("the"):
                    sideless.append((m.start(), lv))
                    taken.append((m.start(), m.end()))
                    continue
                found = [lobe_name("right", lv), lobe_name("left", lv)]
                loc.bilateral = True
            elif kind == "lingula":
                found = ["lingula"]
            elif kind == "zone":
                side = _side(m.group("side"))  # the group is not optional in these patterns
                zone = m.group("zone").lower()
                level = "upper" if zone.startswith(("ap", "upper")) else "lower"
                found = [lobe_name(side, level)]
            elif kind == "sideless":
                levels = _levels(m.group("levels"))
                if levels == ["middle"]:
                    found = ["RML"]
                elif levels:
                    sideless.append((m.start(), levels[0]))
                    taken.append((m.start(), m.end()))
                    loc.lobe_ends[m.start()] = m.end()
                    continue
            if found:
                taken.append((m.start(), m.end()))
                loc.lobes.extend((m.start(), lb) for lb in found if lb)
                loc.lobe_ends[m.start()] = m.end()
    for m in SIDE_WORD_RE.finditer(work, a, b):
        if free(m.start(), m.end()):
            loc.sides.append((m.start(), _side(m.group("side") or m.group("letter"))))  # one of the two groups matched
    if BILATERAL_RE.search(work, a, b):
        loc.bilateral = True
    # "upper lobe" without a side takes the side stated elsewhere in the scope
    side_set = {s for _, s in loc.sides}
    if sideless and len(side_set) == 1:
        side = next(iter(side_set))
        for pos, lv in sideless:
            lobe = lobe_name(side, lv)
            if lobe:
                loc.lobes.append((pos, lobe))
    else:
        loc.sideless = sideless
    loc.lobes.sort()
    seg_m = SEGMENT_RE.search(work, a, b) if SEGMENT_NEEDS.search(work, a, b) else None
    if seg_m:
        seg = re.sub(r"\s+", " ", seg_m.group("seg").lower().replace("-", " "))
        seg = seg.replace("apicoposterior", "apical posterior").replace("apico posterior", "apical posterior")
        seg = seg.replace("basilar", "basal")
        if seg in ("superior lingular", "inferior lingular"):
            seg = seg.split()[0]
            if not loc.lobes:
                loc.lobes.append((seg_m.start(), "lingula"))
        elif seg == "apical posterior" and not loc.lobes:
            loc.lobes.append((seg_m.start(), "LUL"))
        loc.segment = seg
    for name, pattern in POSITION_RES if POSITION_NEEDS.search(work, a, b) else ():
        if pattern.search(work, a, b):
            loc.position = name
            break
    return loc


def first_match(patterns: Iterable[tuple[str, re.Pattern[str]]], text: str,
                needs: re.Pattern[str] | None = None) -> str | None:
    """The name of the first of ``patterns`` with a non-negated match in ``text``; ``needs``: what
    every pattern needs (None when ``text`` lacks it, without trying them)."""
    if needs is not None and needs.search(text) is None:
        return None
    for name, pattern in patterns:
        for m in pattern.finditer(text):
            if not _attr_negated(text, m.start()):
                return name
    return None


def find_texture(text: str) -> str | None:
    if PART_SOLID_RE.search(text):
        return "part-solid"
    gg = any(not _attr_negated(text, m.start()) for m in GROUND_GLASS_RE.finditer(text))
    solid = [m for m in SOLID_RE.finditer(text) if not _attr_negated(text, m.start())]
    if gg and (solid or SOLID_COMPONENT_RE.search(text)):
        comp = SOLID_COMPONENT_RE.search(text)
        if comp and _attr_negated(text, comp.start()):
            return "ground-glass"  # "without a solid component"
        return "part-solid"
    if gg:
        return "ground-glass"
    if solid:
        return "solid"
    return None


def nearest_flag(text: str, rel_anchor: int, pos_re: re.Pattern[str], neg_re: re.Pattern[str]) -> bool | None:
    """Boolean attribute (calcification, cavitation) from the mention nearest the anchor."""
    hits: list[tuple[int, bool]] = []
    neg_spans = []
    for m in neg_re.finditer(text):
        hits.append((m.start(), False))
        neg_spans.append((m.start(), m.end()))
    for m in pos_re.finditer(text):
        if any(s <= m.start() < e for s, e in neg_spans):
            continue
        hits.append((m.start(), not _attr_negated(text, m.start())))
    if not hits:
        return None
    return min(hits, key=lambda h: abs(h[0] - rel_anchor))[1]


def calc_pattern(text: str) -> str | None:
    for name, pattern in CALC_PATTERN_RES:
        for m in pattern.finditer(text):
            if _attr_negated(text, m.start()):
                continue
            if name in ("popcorn", "laminated", "eccentric") and not re.search(r"calcif|popcorn", text, FLAGS):
                continue
            return name
    return None


def find_benign(text: str, kind: str, calcification_pattern: str | None) -> bool | None:
    """Does the mention call the nodule benign?  True for a granuloma, a benign calcification
    pattern (popcorn, laminated, central, diffuse: Lung-RADS' benign calcification) or a benign word
    in ``text`` ("benign", "likely benign", "benign-appearing", "hamartoma", "granulomatous") that
    is not negated ("not clearly benign", "non-benign"); False when the only benign words are
    negated; None when nothing is said.  "Benign versus malignant" weighs both: None."""
    if BENIGN_OPEN_RE.search(text):
        return None
    said = [not _attr_negated(text, m.start()) for m in BENIGN_RE.finditer(text)]
    if any(said) or kind == "granuloma" or calcification_pattern in BENIGN_CALC_PATTERNS:
        return True
    return False if said else None


def find_stability(text: str, rel_anchor: int) -> bool | None:
    true_spans = [(m.start(), m.end()) for m in STABLE_TRUE_RE.finditer(text)]
    hits = [(s, True) for s, _ in true_spans]
    for m in STABLE_FALSE_RE.finditer(text):
        if any(s <= m.start() < e for s, e in true_spans):
            continue
        hits.append((m.start(), False))
    if not hits:
        return None
    values = {v for _, v in hits}
    if len(values) == 1:
        return values.pop()
    return min(hits, key=lambda h: abs(h[0] - rel_anchor))[1]


def find_count(pre: str, plural: bool) -> tuple[int | None, bool]:
    """(count, multiple) from the words before the anchor."""
    # only the noun phrase: stop at the last clause punctuation / verb-ish boundary
    cut = max(pre.rfind(","), pre.rfind(";"), pre.rfind(":"), pre.rfind("("), pre.rfind(")"))
    phrase = pre[cut + 1 :][-60:]
    tokens = [t.group().lower() for t in COUNT_TOKEN_RE.finditer(phrase)]
    for tok in reversed(tokens):
        if tok.isdigit():
            n = int(tok)
            if 0 < n <= 50:
                return n, n > 1
        if tok in NUMBER_WORDS and tok != "both":
            n = NUMBER_WORDS[tok]
            return n, n > 1
        if tok in MULTI_WORDS and (plural or tok not in ("additional", "other", "bilateral", "diffuse")):
            if plural or tok in ("multiple", "several", "numerous", "few"):
                return None, True
    if plural:
        return None, True
    return 1, False


# ---------------------------------------------------------------------------
# Negation and uncertainty of one anchor
# ---------------------------------------------------------------------------
_NEG_WINDOW = 250  # chars before the anchor searched for a negation trigger (keeps long lines linear)


def pre_negated(work: str, sent_start: int, anchor: int) -> bool:
    region = work[max(sent_start, anchor - _NEG_WINDOW) : anchor]
    for m in reversed(list(PRE_NEG_RE.finditer(region))):
        tail = region[m.start() :]
        if PSEUDO_NEG_RE.match(tail):
            continue
        if ATTRIBUTE_NEG_RE.match(tail):
            return False
        if NEG_TERMINATOR_RE.search(region, m.end()):
            return False
        return True
    return False


def post_negated(work: str, anchor_end: int, scope_end: int) -> bool:
    region = work[anchor_end:scope_end]
    stop = POST_TERMINATOR_RE.search(region)
    if stop:
        region = region[: stop.start()]
    return bool(POST_NEG_RE.search(region))


def is_uncertain(work: str, pre_start: int, anchor: int, anchor_end: int, post_end: int) -> bool:
    """Existence hedges.  The regions reach past the anchor's own scope (to the previous
    and next *nodule* anchors) because the alternatives ("atelectasis", "vessel") are
    other heads that the partition gives a scope of their own."""
    pre = work[max(pre_start, anchor - 120) : anchor]
    m = HEDGE_PRE_RE.search(pre)
    if m and not NATURE_WORDS_RE.search(m.group("between")) and len(m.group("between").split()) <= 7:
        return True
    if HEDGE_VERSUS_PRE_RE.search(pre):
        return True
    post = work[anchor_end:post_end]
    return bool(HEDGE_POST_RE.search(post) or HEDGE_EXCLUDED_POST_RE.search(post))
