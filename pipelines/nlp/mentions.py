"""From the heads of a sentence to draft nodule claims.

Research software, NOT for diagnostic use.

Internal to :mod:`lungfuse.pipelines.nlp`.  :func:`drafts_for_sentence` keeps the heads
that are pulmonary nodule findings (not thyroid/adrenal/... nodules, diffuse ground glass
or indications such as "history of RUL nodule"), reads each one's attributes
(:mod:`.attributes`) from its scope, splits plural mentions that list one size per nodule
and shares a sentence-level location; :func:`attach_lung_rads` gives a Lung-RADS
statement in a sentence of its own to the nodule before it.  The drafts are merged and
finalised by :func:`.claims.extract_claims`.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, fields

from lungfuse.pipelines.nlp.attributes import (
    Location,
    Size,
    calc_pattern,
    find_benign,
    find_count,
    find_location,
    find_sizes,
    find_stability,
    find_texture,
    first_match,
    is_uncertain,
    lobe_name,
    nearest,
    nearest_flag,
    post_negated,
    pre_negated,
)
from lungfuse.pipelines.nlp.lexicon import (
    BONE_LESION_RE,
    CALC_NEG_RE,
    CALC_POS_RE,
    CAVITY_NEG_RE,
    CAVITY_POS_RE,
    DEFINITE_RE,
    FLAGS,
    GUIDELINE_RE,
    INDEFINITE_RE,
    LARGEST_RE,
    LEADING_JUNK_RE,
    LOBE_SIDE,
    LUNG_TOKEN_RE,
    MARGIN_NEEDS,
    MARGIN_RES,
    NEW_ITEM_RE,
    NON_FINDING_AFTER_RE,
    NON_FINDING_CONTEXT_RE,
    ORGAN_RE,
    PRONOUN_START_RE,
    RECOMMEND_INNER_RE,
    RECOMMEND_START_RE,
    SAME_LOBE_RE,
    SHAPE_NEEDS,
    SHAPE_RES,
    SIDE_WORD_RE,
    SUBCM_RE,
    TRAILING_JUNK_RE,
)
from lungfuse.pipelines.nlp.sentences import Head, Sentence, find_heads, scopes


@dataclass
class Draft:
    """Mutable claim under construction."""

    start: int
    end: int
    anchor: int
    section: str
    sentence: int
    kind: str = "nodule"
    size_mm: float | None = None
    size_qualifier: str | None = None
    prior_size_mm: float | None = None
    side: str | None = None
    lobe: str | None = None
    segment: str | None = None
    texture: str | None = None
    margin: str | None = None
    calcification: bool | None = None
    calcification_pattern: str | None = None
    cavitation: bool | None = None
    shape: str | None = None
    lung_rads: str | None = None
    benign: bool | None = None
    negated: bool = False
    uncertain: bool = False
    stable: bool | None = None
    count: int | None = 1
    multiple: bool = False
    position: str | None = None
    definite: bool = False
    indefinite: bool = False
    largest: bool = False  # "the largest ..." member of a group mention
    pronoun: bool = False  # "It measures 6 mm.": refers to the nodule of the sentence before
    same_lobe: bool = False  # "... in the same lobe": the lobe of the nodule described before
    last_head: bool = False  # no other finding head follows this nodule in its sentence

    _FILLABLE = (
        "prior_size_mm", "side", "lobe", "segment", "texture", "margin", "calcification",
        "calcification_pattern", "cavitation", "shape", "lung_rads", "benign", "stable", "position",
    )

    @property
    def plural(self) -> bool:
        return self.multiple or (self.count is not None and self.count > 1)

    @property
    def has_location(self) -> bool:
        return self.lobe is not None or self.side is not None or self.segment is not None

    def fill_from(self, other: Draft) -> None:
        """Copy the attributes this draft lacks from ``other`` (a repeat of the same nodule)."""
        if self.size_mm is None and self.size_qualifier is None:
            self.size_mm, self.size_qualifier = other.size_mm, other.size_qualifier
        for name in self._FILLABLE:
            if getattr(self, name) is None and getattr(other, name) is not None:
                setattr(self, name, getattr(other, name))
        if self.lobe is not None and self.side is None:
            self.side = LOBE_SIDE[self.lobe]


# ---------------------------------------------------------------------------
# Building drafts
# ---------------------------------------------------------------------------
def _lung_context_ok(work: str, head: Head, a: int, b: int, sent: Sentence) -> bool:
    """Is this anchor a pulmonary nodule mention (not thyroid/adrenal/liver/...)?"""
    anchor = head.start
    organ = nearest((m.start() for m in ORGAN_RE.finditer(work, a, b)), anchor)
    lung = nearest((m.start() for m in LUNG_TOKEN_RE.finditer(work, a, b)), anchor)
    if head.kind in ("mass", "lesion"):
        if BONE_LESION_RE.search(work, a, b):
            return False
        if lung is None and sent.context != "lung":
            return False
    if organ is not None and (lung is None or organ < lung):
        return False
    return not (sent.context == "other" and lung is None)


def _ggo_is_focal(work: str, head: Head, a: int, b: int, sizes: list[Size]) -> bool:
    word = work[head.start : head.end]
    if re.search(r"GGN", word, FLAGS) or re.match(r"(?:focal|nodular|round)", word, FLAGS):
        return True
    scope = work[a:b]
    if re.search(r"\b(?:patchy|diffuse|extensive|multifocal|widespread|mosaic|interstitial|confluent|geographic|"
                 r"dependent|peribronchial|infectious|inflammatory|edema|pneumonia|airspace)\b", scope, FLAGS):
        return False
    if any(not s.prior and not s.excluded and s.value <= 30 for s in sizes):
        return True
    return bool(re.search(r"\b(?:focal|nodular|round(?:ed)?|small|tiny|subcentimeter|solitary|single)\b",
                          work[max(a, head.start - 40) : head.start], FLAGS))


def _pick_size(sizes: list[Size], plural: bool) -> tuple[float | None, str | None]:
    """Current size of a mention (mm) and its qualifier: the first current size of a
    singular mention, the largest of a plural one (qualifier "<=" when several)."""
    current = [s for s in sizes if not (s.prior or s.component or s.excluded)]
    if not current:
        return None, None
    if plural:
        best = max(current, key=lambda s: s.value)
        if len(current) > 1 or best.listed:
            return best.value, "<="
        return best.value, best.qualifier
    first = current[0]
    if first.listed:
        group = [s for s in current if s.listed and abs(s.start - first.start) < 40]
        best = max(group, key=lambda s: s.value)
        return best.value, best.qualifier
    return first.value, first.qualifier


def _resolve_location(d: Draft, loc: Location) -> None:
    lobes: list[str] = []
    for _, lb in loc.lobes:
        if lb not in lobes:
            lobes.append(lb)
    if "lingula" in lobes and "LUL" in lobes:
        lobes.remove("LUL")  # "left upper lobe lingula" -> lingula
    if lobes:
        if d.plural and len(lobes) > 1:
            d.lobe = None
        else:
            d.lobe = lobes[0]
        sides = {LOBE_SIDE[lb] for lb in (lobes if d.plural else lobes[:1])}
        d.side = sides.pop() if len(sides) == 1 else "bilateral"
    else:
        sides = {s for _, s in loc.sides}
        if len(sides) == 1:
            d.side = sides.pop()
        elif len(sides) > 1:
            d.side = "bilateral"
    if loc.bilateral and (d.plural or d.lobe is None):
        d.side = "bilateral"
    d.segment = loc.segment
    d.position = loc.position


def _mention_span(work: str, head: Head, a: int, b: int) -> tuple[int, int]:
    """The scope without leading conjunctions/punctuation and trailing punctuation."""
    s, e = a, b
    lead = LEADING_JUNK_RE.match(work, s, e)
    if lead:
        s = lead.end()
    tail = TRAILING_JUNK_RE.search(work[s:e])
    if tail:
        e = s + tail.start()
    return (s, e) if e > s else (head.start, head.end)


def _is_nodule_mention(work: str, sent: Sentence, head: Head, a: int, b: int, sizes: list[Size]) -> bool:
    """Pulmonary (not thyroid/adrenal/...), focal (for ground glass) and a finding (not an
    indication such as "history of RUL nodule" or "lung nodule follow-up")."""
    if not _lung_context_ok(work, head, a, b, sent):
        return False
    if head.kind == "ggo" and not _ggo_is_focal(work, head, a, b, sizes):
        return False
    if NON_FINDING_CONTEXT_RE.search(work[max(sent.start, head.start - 80) : head.start]):
        return False
    return not NON_FINDING_AFTER_RE.match(work, head.end, b)


def _set_size(d: Draft, sizes: list[Size], scope_text: str) -> None:
    d.size_mm, d.size_qualifier = _pick_size(sizes, d.plural)
    if d.size_mm is None and SUBCM_RE.search(scope_text):
        d.size_qualifier = "subcentimeter"
    changes = [z for z in sizes if z.change_from is not None]
    priors = [z for z in sizes if z.prior and not z.component and not z.excluded]
    if changes:
        d.prior_size_mm = changes[0].change_from
    elif priors:
        d.prior_size_mm = priors[0].value


def _set_descriptors(d: Draft, head: Head, scope_text: str, rel_anchor: int) -> None:
    """Texture, margin, shape, calcification, cavitation and stability from the scope."""
    d.texture = find_texture(scope_text)
    if d.texture is None and head.kind == "ggo":
        d.texture = "ground-glass"
    d.margin = first_match(MARGIN_RES, scope_text, MARGIN_NEEDS)
    d.shape = first_match(SHAPE_RES, scope_text, SHAPE_NEEDS)
    if d.shape is None and head.kind == "opacity" and "round" in scope_text[rel_anchor : rel_anchor + 8].lower():
        d.shape = "round"  # "rounded opacity"
    d.calcification = nearest_flag(scope_text, rel_anchor, CALC_POS_RE, CALC_NEG_RE)
    d.calcification_pattern = calc_pattern(scope_text) if d.calcification else None
    d.benign = find_benign(scope_text, head.kind, d.calcification_pattern)
    d.cavitation = nearest_flag(scope_text, rel_anchor, CAVITY_POS_RE, CAVITY_NEG_RE)
    d.stable = find_stability(scope_text, rel_anchor)
    if d.stable is None and d.size_mm is not None and d.prior_size_mm is not None:
        d.stable = abs(d.size_mm - d.prior_size_mm) <= 1.0


def _draft_for(
    work: str,
    sent: Sentence,
    head: Head,
    scope: tuple[int, int],
    hedge_region: tuple[int, int],
    lung_rads: list[tuple[int, int, str]],
) -> Draft | None:
    """Build the draft claim for one nodule head with scope ``[a, b)``; None when the
    head is not a pulmonary nodule mention.  ``hedge_region`` spans from the previous to
    the next nodule anchor of the sentence (see :func:`is_uncertain`)."""
    a, b = scope
    sizes = find_sizes(work, a, b)
    if not _is_nodule_mention(work, sent, head, a, b, sizes):
        return None
    s, e = _mention_span(work, head, a, b)
    d = Draft(start=s, end=e, anchor=head.start, section=sent.section, sentence=sent.index, kind=head.kind)
    scope_text = work[a:b]
    pre = work[a : head.start]
    d.negated = pre_negated(work, sent.start, head.start) or post_negated(work, head.end, b)
    d.count, d.multiple = find_count(pre, head.plural)
    if sent.label_nodule and head.start < sent.start + 40:
        # "Nodules: RUL 4 mm" - the label names the category, the content the count
        current = [z for z in sizes if not (z.prior or z.component or z.excluded)]
        d.count, d.multiple = (1, False) if len(current) <= 1 else (None, True)
    _set_size(d, sizes, scope_text)
    _resolve_location(d, find_location(work, a, b))
    _set_descriptors(d, head, scope_text, head.start - a)
    d.uncertain = is_uncertain(work, hedge_region[0], head.start, head.end, hedge_region[1])
    for ls, le, cat in lung_rads:
        if ls < b and a < le:
            d.lung_rads = cat
    lead_junk = LEADING_JUNK_RE.match(pre)
    first_word = pre[lead_junk.end() if lead_junk else 0 :].strip()
    d.definite = bool(DEFINITE_RE.match(first_word))
    d.indefinite = bool(INDEFINITE_RE.match(first_word) or NEW_ITEM_RE.search(pre))
    d.same_lobe = d.lobe is None and bool(SAME_LOBE_RE.search(work, a, b))
    if d.negated:
        d.count, d.multiple = 0, False
    return d


def _split_plural(work: str, d: Draft, a: int, b: int) -> list[Draft]:
    """Split a plural mention that lists one size per nodule ("two nodules measuring 4
    and 6 mm in the RUL and LLL, respectively") into one draft per nodule."""
    if d.negated or not d.plural:
        return [d]
    sizes = [z for z in find_sizes(work, a, b) if not (z.prior or z.component or z.excluded)]
    if len(sizes) < 2 or any(z.qualifier in ("<=", "<", "range") for z in sizes):
        return [d]
    loc = find_location(work, a, b)
    lobes: list[tuple[int, str]] = []
    for pos, lb in loc.lobes:
        if not lobes or lobes[-1][1] != lb:
            lobes.append((pos, lb))
    if d.count is not None and d.count != len(sizes):
        return [d]
    if len(lobes) not in (0, 1, len(sizes)):
        return [d]
    out = []
    for i, z in enumerate(sizes):
        part = Draft(**{f.name: getattr(d, f.name) for f in fields(Draft)})
        part.size_mm, part.size_qualifier = z.value, z.qualifier if z.qualifier not in ("range",) else None
        part.count, part.multiple = 1, False
        if len(lobes) == len(sizes):
            part.lobe = lobes[i][1]
            lpos = lobes[i][0]
            lo, hi = min(z.start, lpos), max(z.end, loc.lobe_ends.get(lpos, lpos + 3))
        else:
            if len(lobes) == 1:
                part.lobe = lobes[0][1]
            lo, hi = z.start, z.end
        if part.lobe is not None:
            part.side = LOBE_SIDE[part.lobe]
        if i == 0:
            lo = d.start  # the first item keeps the anchor phrase ("Two nodules measuring 4 ...")
        if hi < len(work) and work[hi] == ")":
            hi += 1  # "(8 mm)"
        part.start = max(lo, d.start)
        part.end = max(part.start + 1, min(hi, max(d.end, hi)))
        part.anchor = max(part.start, min(d.anchor, part.end))
        out.append(part)
    return out


def _implicit_list_head(work: str, sent: Sentence, heads: list[Head]) -> list[Head]:
    """"Lung nodules: 1. RUL 4 mm. 2. LLL 6 mm." - an item with a lobe and a size but no
    nodule word gets a zero-width nodule anchor at its lobe."""
    loc = find_location(work, sent.start, sent.end)
    sizes = [z for z in find_sizes(work, sent.start, sent.end) if not (z.prior or z.excluded)]
    if not loc.lobes or not sizes:
        return heads
    pos = loc.lobes[0][0]
    return sorted([*heads, Head(pos, pos, "nodule", False)], key=lambda h: h.start)


def _pronoun_draft(work: str, sent: Sentence, lung_rads: list[tuple[int, int, str]]) -> list[Draft]:
    """"It measures 6 mm." (no nodule word): a draft marked ``pronoun`` at "It", merged into
    the nodule of the sentence before or dropped (see ``claims._merge_coreferent``)."""
    m = PRONOUN_START_RE.match(work, sent.start, sent.end)
    if m is None:
        return []
    head = Head(m.start("pron"), m.end("pron"), "nodule", False)
    d = _draft_for(work, sent, head, (sent.start, sent.end), (sent.start, sent.end), lung_rads)
    if d is None or d.negated:
        return []
    d.pronoun, d.definite, d.indefinite = True, True, False
    return [d]


def _split_largest(work: str, d: Draft, scope: tuple[int, int]) -> list[Draft]:
    """"Multiple bilateral nodules, the largest 14 mm in the LLL": the group keeps what is
    said before "the largest", the largest member becomes a claim of its own (count 1,
    ``largest=True``).  The group's size is "up to" the largest one's."""
    a, b = scope
    m = LARGEST_RE.search(work, d.anchor, b)
    if d.negated or not d.plural or m is None:
        return [d]
    big = Draft(**{f.name: getattr(d, f.name) for f in fields(Draft)})
    big.start, big.anchor, big.end = m.start(), m.start(), max(d.end, m.end())
    big.count, big.multiple, big.largest = 1, False, True
    big.definite, big.indefinite = False, True  # a new mention, never merged into an earlier nodule
    after = find_sizes(work, m.start(), b)
    before = find_sizes(work, a, m.start())
    big.size_mm, big.size_qualifier = _pick_size(after, False)
    d.size_mm, d.size_qualifier = _pick_size(before, True)
    if big.size_mm is None:
        big.size_mm = d.size_mm  # "up to 6 mm, the largest in the RLL"
    if d.size_mm is None and big.size_mm is not None:
        d.size_mm, d.size_qualifier = big.size_mm, "<="
    group_loc = find_location(work, a, m.start())
    big_loc = find_location(work, m.start(), b)
    d.lobe = d.side = d.segment = None  # the group's location is what precedes "the largest"
    _resolve_location(d, group_loc)
    if big_loc.lobes or big_loc.sides:
        big.lobe = big.side = None
        _resolve_location(big, big_loc)
    else:
        big.lobe = d.lobe
        big.side = d.side if d.side != "bilateral" else None  # one nodule lies in one lung
        big.segment = d.segment
    d.end = max(d.start + 1, m.start())
    tail = TRAILING_JUNK_RE.search(work, d.start, d.end)
    if tail:
        d.end = max(d.start + 1, tail.start())
    return [d, big]


def _label_location(work: str, sent: Sentence, drafts: list[Draft]) -> None:
    """A nodule with no lobe of its own lies in the lobe (or lung) of the label in force:
    "RIGHT UPPER LOBE: ...", "Left lung: a 5 mm nodule in the lower lobe"."""
    if sent.label_span is None:
        return
    label = find_location(work, *sent.label_span)
    lobes = {lb for _, lb in label.lobes}
    # side words of a label are capitalised ("Left lung:"); SIDE_WORD_RE is case-sensitive
    # for its "R"/"L" letters, so the label is searched lower-cased
    words = SIDE_WORD_RE.finditer(work[sent.label_span[0] : sent.label_span[1]].lower())
    sides = {"right" if w.group().startswith("r") else "left" for w in words} | {LOBE_SIDE[lb] for lb in lobes}
    for d in drafts:
        if d.lobe is not None or d.negated:
            continue
        if len(lobes) == 1 and d.side in (None, LOBE_SIDE[next(iter(lobes))]):
            d.lobe = next(iter(lobes))
            d.side = LOBE_SIDE[d.lobe]
        elif len(sides) == 1 and d.side in (None, next(iter(sides))):
            d.side = next(iter(sides))
            levels = {lv for _, lv in find_location(work, d.start, d.end).sideless}
            if len(levels) == 1:
                d.lobe = lobe_name(d.side, levels.pop())


def _sentence_lobe(work: str, sent: Sentence, drafts: list[Draft]) -> None:
    """A nodule whose scope names no lobe takes the sentence's only lobe when no other
    nodule of the sentence has it ("Within the right upper lobe there is scarring and a
    5 mm nodule": the partition gave the lobe to "scarring")."""
    if not drafts or all(d.lobe is not None or d.negated for d in drafts):
        return
    # only a lobe named before the nodule: one after it belongs to what follows
    # ("a 4.5 cm mass ... with atelectasis of the right middle lobe")
    first = min(d.anchor for d in drafts)
    lobes = {lb for _, lb in find_location(work, sent.start, first).lobes}
    if "lingula" in lobes:
        lobes.discard("LUL")
    if len(lobes) != 1:
        return
    lobe = lobes.pop()
    if any(d.lobe == lobe for d in drafts):
        return
    for d in drafts:
        if d.lobe is None and not d.negated and not d.plural and d.side in (None, LOBE_SIDE[lobe]):
            d.lobe, d.side = lobe, LOBE_SIDE[lobe]
            break


def _overlapping(found: list[tuple[int, int, str]], s: int, e: int) -> list[tuple[int, int, str]]:
    """The statements of ``found`` (text order, disjoint, as :func:`.claims.find_lung_rads` gives
    them) that overlap ``[s, e)``, by bisection: a 1 MB report has thousands of statements and of
    nodule mentions, and scanning all statements per mention was quadratic."""
    lo = bisect.bisect_right(found, s, key=lambda t: t[1])
    hi = bisect.bisect_left(found, e, key=lambda t: t[0])
    return found[lo:hi]


def drafts_for_sentence(work: str, sent: Sentence, lung_rads: list[tuple[int, int, str]]) -> list[Draft]:
    """Draft claims of one sentence; ``lung_rads`` are the report's Lung-RADS statements
    (:func:`.claims.find_lung_rads`, text order)."""
    lung_rads = _overlapping(lung_rads, sent.start, sent.end)
    text = work[sent.start : sent.end]
    if RECOMMEND_START_RE.match(text):
        return []
    heads = find_heads(work, sent.start, sent.end)
    if sent.list_item and not any(h.is_nodule for h in heads):
        heads = _implicit_list_head(work, sent, heads)
    if not any(h.is_nodule for h in heads):
        return _pronoun_draft(work, sent, lung_rads) if not heads else []
    # anchors after a recommendation / guideline phrase are references, not findings:
    # "4 mm RUL nodule; in a low-risk patient no follow-up is needed" keeps the nodule,
    # "Fleischner: solid nodules <6 mm need no follow-up" gives none.
    markers = [m.start() for m in (RECOMMEND_INNER_RE.search(text), GUIDELINE_RE.search(text)) if m]
    rec_at = sent.start + min(markers) if markers else sent.end
    drafts: list[Draft] = []
    nodule_heads = [h for h in heads if h.is_nodule]
    rank = {id(h): k for k, h in enumerate(nodule_heads)}
    for head, (a, b) in zip(heads, scopes(work, sent, heads), strict=True):
        if not head.is_nodule or head.start >= rec_at:
            continue
        k = rank[id(head)]
        hedge = (
            nodule_heads[k - 1].end if k > 0 else sent.start,
            nodule_heads[k + 1].start if k + 1 < len(nodule_heads) else sent.end,
        )
        d = _draft_for(work, sent, head, (a, b), hedge, lung_rads)
        if d is None:
            continue
        if not d.negated and LARGEST_RE.search(work, a, head.start):
            # ", the largest a 3.1 cm mass": this head is the largest of the group before it
            d.largest, d.count, d.multiple, d.definite, d.indefinite = True, 1, False, False, True
            group = next((g for g in reversed(drafts) if g.plural and not g.negated), None)
            if group is not None and group.size_mm is None and d.size_mm is not None:
                group.size_mm, group.size_qualifier = d.size_mm, "<="
            drafts.append(d)
            continue
        for part in _split_plural(work, d, a, b):
            drafts.extend(_split_largest(work, part, (a, b)))
    if drafts and heads[-1].is_nodule:
        drafts[-1].last_head = True
    _share_sentence_location(work, sent, drafts)
    _sentence_lobe(work, sent, drafts)
    _label_location(work, sent, drafts)
    return drafts


def _share_sentence_location(work: str, sent: Sentence, drafts: list[Draft]) -> None:
    """Sentence-level location sharing: a leading "In the right lower lobe, ..." applies
    to every nodule of the sentence; "..., respectively" distributes lobes in order."""
    if len(drafts) < 2:
        return
    text = work[sent.start : sent.end]
    lead = re.match(r"^\W*(?:in|within|at)\s+the\s+[^,]{3,60},", text, FLAGS)
    if lead:
        loc = find_location(work, sent.start, sent.start + lead.end())
        if loc.lobes:
            for d in drafts:
                if not d.has_location:
                    d.lobe = loc.lobes[0][1]
                    d.side = LOBE_SIDE[d.lobe]
    if re.search(r"\brespectively\b", text, FLAGS):
        last = drafts[-1]
        loc = find_location(work, last.anchor, sent.end)
        lobes = [lb for _, lb in loc.lobes]
        if len(lobes) == len(drafts):
            for d, lb in zip(drafts, lobes, strict=True):
                d.lobe, d.side = lb, LOBE_SIDE[lb]


def attach_lung_rads(sentences: list[Sentence], drafts: list[Draft], found: list[tuple[int, int, str]]) -> None:
    """A Lung-RADS statement in a sentence of its own ("1. 6 mm RUL nodule. Lung-RADS 3.")
    belongs to the single positive nodule of the previous sentence of the same section."""
    # sentences and drafts indexed once (a 1 MB report has thousands of statements)
    starts = [x.start for x in sentences]
    by_sentence: dict[int, list[Draft]] = {}
    for d in drafts:
        by_sentence.setdefault(d.sentence, []).append(d)
    for start, _end, cat in found:
        i = bisect.bisect_right(starts, start) - 1
        sent = sentences[i] if i >= 0 and start < sentences[i].end else None
        if sent is None or sent.index == 0 or sent.index in by_sentence:
            continue
        prev = sentences[sent.index - 1]
        if prev.section != sent.section:
            continue
        cands = [d for d in by_sentence.get(prev.index, []) if not d.negated]
        if len(cands) == 1 and cands[0].lung_rads is None:
            cands[0].lung_rads = cat
