"""Rule-based extraction of pulmonary-nodule claims from chest-CT reports.

Research software, NOT for diagnostic use.

``extract_claims(report)`` returns a :class:`ReportClaims` holding one
:class:`NoduleClaim` per nodule *mention* (negated mentions included, with
``negated=True``).  Sizes are in millimetres throughout (``"1.2 cm"`` -> ``12.0``).

Pipeline (each step is a small function; the vocabulary and every pattern are in
:mod:`.lexicon`, steps 1-3 in :mod:`.sentences`, step 4 in :mod:`.attributes`, step 5
and the plural split in :mod:`.mentions`, the merging here):

1. **Masking** - image references ("(series 3, image 45)", "(7:340)", "image 123"),
   dates, years and Lung-RADS statements are overwritten (same length, so offsets are
   kept) in a working copy, so that their numbers can never be read as sizes.
2. **Sentences** - each parsed section is split into sentences without breaking on
   decimals ("1.2 cm"), enumerators ("1.") or abbreviations ("approx.").  Organ
   sub-headers ("Lungs:", "Thyroid:", "Upper abdomen:") set the organ context.
3. **Heads** - nodule anchors (nodule incl. typos such as "nodlue"/"ndoule",
   micronodule, nodular opacity/density, GGO/GGN, focal ground-glass opacity, mass,
   granuloma, lesion) and *other* finding heads (lymph node, cyst, effusion, slices...).
   Other heads matter because each sentence is partitioned between all heads, so that
   "a 4 mm RUL nodule and a 1.2 cm subcarinal lymph node" gives the 12 mm to the node.
4. **Attributes** of each nodule head are read from its scope: size (largest
   dimension, ranges -> upper figure, prior sizes "(previously 5 mm)" kept apart),
   lobe/side/segment, texture, margin, shape, calcification, cavitation, stability,
   count, Lung-RADS, negation and uncertainty.
5. **Filtering** - non-pulmonary nodules (thyroid, adrenal, liver, breast, ...),
   masses/lesions without lung context, diffuse ground-glass, indication-like mentions
   ("history of", "follow-up of", "wedge resection of a ... nodule", "lung nodule
   follow-up"), anything after "recommend"/"Fleischner"/"guidelines" in a sentence, and
   the CLINICAL HISTORY, TECHNIQUE, COMPARISON, EXAM and RECOMMENDATION sections give
   no claim.
6. **Merging** - plural mentions listing several sizes/lobes are split into one claim
   per nodule ("two nodules measuring 4 and 6 mm in the RUL and LLL, respectively");
   anaphoric mentions ("The nodule is solid.", "The 1.1 cm nodule is new.") are merged
   into the nodule they refer to; plural summaries followed by the itemised nodules
   ("Two nodules: a 4 mm ... and a 6 mm ...") are dropped; IMPRESSION mentions that
   repeat a nodule described elsewhere (same lobe, size within 1 mm or 20 %) are merged
   into it (the FINDINGS span is kept, missing attributes are filled in).  Items of a
   "Lung nodules: 1. RUL 4 mm. 2. LLL 6 mm." list are nodules even without the word.

Documented decisions
--------------------
* ``margin``: "smooth" (also well-circumscribed / well-defined / sharply marginated),
  "lobulated", "spiculated" and a fourth value "irregular" (irregular, ill-defined,
  poorly defined) - as in the ACR Lung-RADS margin lexicon; "irregular" is not folded
  into "spiculated" because that would overstate spiculation.  Precedence when several
  are stated: spiculated > irregular > lobulated > smooth.
* ``texture``: "subsolid" and "semi-solid" map to "part-solid" (subsolid strictly also
  covers pure ground glass; the three-value scale has no better bin); "non-solid" and
  GGO/GGN map to "ground-glass"; ground glass plus a solid component -> "part-solid".
* ``uncertain`` is about the *existence* of the nodule: "possible", "questionable",
  "? nodule", "probable/likely nodule", "cannot exclude", "may represent a nodule",
  "nodule versus vessel/atelectasis", "may represent atelectasis/scar".  Words about its
  *nature* ("likely benign", "suspicious for malignancy", "probably a granuloma",
  "indeterminate") do not make it uncertain.
* ``negated``: "no", "without", "negative for", "no evidence of", "free of",
  "absence of", "resolved"/"resolution of", "no longer seen", "not identified" ...;
  "no change/no growth/no interval change" are *not* negations (they mean stable).
  Resolved nodules are reported as negated (not present now).
* ``count``: 1 for a singular mention, the stated number for "two nodules", ``None``
  with ``multiple=True`` for "multiple/several/few/scattered" or bare plurals, 0 for a
  negated mention.
* ``lobe`` for lung zones: "right lung base" -> RLL, "left apex" -> LUL, "right upper
  lung (zone)" -> RUL (a conventional approximation); "mid lung" gives the side only;
  "bibasilar"/"both lungs" -> side "bilateral", lobe None; "left upper lobe lingula"
  -> "lingula".
* ``negative_statement`` is True when at least one negated nodule mention exists and
  *no* positive (non-negated, uncertain included) nodule is described: "No new
  nodules" next to a described stable nodule is therefore not a negative statement,
  "No pulmonary nodules." alone is.  "Lungs are clear" without the word nodule is not.
* ``kind``: a lung mass (> 30 mm by definition) is a nodule mention with
  ``kind="mass"`` - its ``size_mm`` stays None unless measured; a granuloma is a nodule
  mention (``kind="granuloma"``; "calcified granuloma" -> ``calcification=True``).
* ``benign``: True when the mention calls the nodule benign - "benign", "likely benign",
  "benign-appearing", "hamartoma", a granuloma (``kind="granuloma"``), a benign calcification
  pattern (popcorn, laminated, central, diffuse) or a Lung-RADS 2 placement; False when the only
  benign words are negated ("not clearly benign"); None when nothing is said or both are weighed
  ("benign versus malignant").  It is about the nodule's nature, never its existence.
* ``stable``: True for stable / unchanged / no (interval) change / no growth / similar
  in size; False for new / enlarging / increased / grown / decreased; otherwise derived
  from a quoted prior size (within 1 mm -> True).
* ``completeness`` (see :func:`completeness_score`): the best-described positive
  nodule, six descriptors plus "the report has an impression", over seven.
"""

from __future__ import annotations

import bisect
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from lungfuse.pipelines.io.report import BODY, Report, load_report
from lungfuse.pipelines.nlp.lexicon import (
    CALCIFICATION_PATTERNS,
    IMPRESSION,
    LOBES,
    LR_ORDER,
    LUNG_RADS_CATEGORIES,
    LUNG_RADS_RE,
    MARGINS,
    NO_LUNG_RADS_SECTIONS,
    PRIOR_LR_RE,
    SIDES,
    TEXTURES,
)
from lungfuse.pipelines.nlp.mentions import Draft, attach_lung_rads, drafts_for_sentence
from lungfuse.pipelines.nlp.sentences import masked_text, report_sentences

__all__ = [
    "LOBES",
    "NODULE_DICT_KEYS",
    "NoduleClaim",
    "ReportClaims",
    "completeness_score",
    "extract_claims",
    "find_lung_rads",
]

#: keys of each nodule dict in ReportClaims.to_dict(), in order
NODULE_DICT_KEYS = (
    "size_mm", "side", "lobe", "segment", "texture", "margin", "calcification", "calcification_pattern",
    "cavitation", "shape", "lung_rads", "benign", "negated", "uncertain", "stable", "count", "multiple", "largest", "span",
    "text", "section",
)


# ---------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------
def _check_choice(name: str, value: Any, allowed: Iterable[str]) -> None:
    if value is not None and value not in tuple(allowed):
        raise ValueError(f"NoduleClaim.{name}={value!r} not in {tuple(allowed)}")


@dataclass(frozen=True)
class NoduleClaim:
    """One nodule mention in a report.

    ``size_mm`` is the largest stated dimension of the current exam in millimetres
    (ranges and "up to" give the upper figure, see ``size_qualifier``: ``"<"``, ``"<="``,
    ``">"``, ``">="``, ``"~"``, ``"range"`` or ``"subcentimeter"`` with no number).
    ``prior_size_mm`` is a size quoted for a prior exam ("previously 5 mm").
    ``span`` are character offsets into ``Report.text``; ``text`` is that slice.
    ``multiple`` marks a group mention ("multiple bilateral nodules up to 4 mm", ``count``
    the stated number or None); ``largest`` the separate claim for "the largest" member
    of a group ("..., the largest 14 mm in the LLL").
    ``kind`` is the anchor ("nodule", "micronodule", "mass", "granuloma", "ggo",
    "opacity", "lesion"); ``position`` a pleural/fissural relation ("perifissural",
    "subpleural", ...).
    """

    size_mm: float | None = None
    size_qualifier: str | None = None
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
    largest: bool = False
    kind: str = "nodule"
    position: str | None = None
    prior_size_mm: float | None = None
    span: tuple[int, int] = (0, 0)
    text: str = ""
    section: str = BODY

    def __post_init__(self) -> None:
        _check_choice("side", self.side, SIDES)
        _check_choice("lobe", self.lobe, LOBES)
        _check_choice("texture", self.texture, TEXTURES)
        _check_choice("margin", self.margin, MARGINS)
        _check_choice("calcification_pattern", self.calcification_pattern, CALCIFICATION_PATTERNS)
        _check_choice("lung_rads", self.lung_rads, LUNG_RADS_CATEGORIES)
        for name in ("size_mm", "prior_size_mm"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or not math.isfinite(value) or value < 0):
                raise ValueError(f"NoduleClaim.{name} must be a finite non-negative number of mm, got {value!r}")
        if self.count is not None and (not isinstance(self.count, int) or self.count < 0):
            raise ValueError(f"NoduleClaim.count must be a non-negative int or None, got {self.count!r}")
        span = tuple(self.span)
        if len(span) != 2 or not all(isinstance(v, int) for v in span) or not 0 <= span[0] <= span[1]:
            raise ValueError(f"NoduleClaim.span must be (start, end) with 0 <= start <= end, got {self.span!r}")
        object.__setattr__(self, "span", (int(span[0]), int(span[1])))

    @property
    def location_known(self) -> bool:
        return self.lobe is not None or self.segment is not None

    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON-ready values (span as a list)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["span"] = list(self.span)
        return out


@dataclass(frozen=True)
class ReportClaims:
    """Claims extracted from one report.

    ``nodules``: every nodule mention (negated ones included), in text order.
    ``negative_statement``: the report states there are no nodules and describes none.
    ``completeness``: descriptor coverage in [0, 1], see :func:`completeness_score`.
    ``lung_rads``: report-level stated Lung-RADS category; ``impression``: the
    IMPRESSION/CONCLUSION text or None.
    """

    nodules: tuple[NoduleClaim, ...] = ()
    negative_statement: bool = False
    completeness: float = 0.0
    lung_rads: str | None = None
    impression: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodules", tuple(self.nodules))
        if not all(isinstance(n, NoduleClaim) for n in self.nodules):
            raise TypeError("ReportClaims.nodules must hold NoduleClaim objects")
        if not 0.0 <= float(self.completeness) <= 1.0:
            raise ValueError(f"completeness must lie in [0, 1], got {self.completeness!r}")
        _check_choice("lung_rads", self.lung_rads, LUNG_RADS_CATEGORIES)

    @property
    def positive_nodules(self) -> tuple[NoduleClaim, ...]:
        """Non-negated nodule claims (uncertain ones included)."""
        return tuple(n for n in self.nodules if not n.negated)

    def to_dict(self) -> dict[str, Any]:
        """``{"completeness", "negative_statement", "lung_rads", "nodules": [...]}`` where each
        nodule dict has exactly the keys of :data:`NODULE_DICT_KEYS`."""
        nodules = []
        for n in self.nodules:
            full = n.to_dict()
            nodules.append({k: full[k] for k in NODULE_DICT_KEYS})
        return {
            "completeness": float(self.completeness),
            "negative_statement": bool(self.negative_statement),
            "lung_rads": self.lung_rads,
            "nodules": nodules,
        }


# ---------------------------------------------------------------------------
# Lung-RADS
# ---------------------------------------------------------------------------
def _normalise_lr(cat: str) -> str:
    return re.sub(r"\s", "", cat).upper()


def find_lung_rads(text: str) -> list[tuple[int, int, str]]:
    """All Lung-RADS statements in ``text``: ``(start, end, category)`` with category in
    ``LUNG_RADS_CATEGORIES`` ("Lung-RADS 4A", "Lung RADS category 2", "LR-3",
    "Lung-RADS v1.1 category 3").  The S modifier is dropped."""
    out = []
    for m in LUNG_RADS_RE.finditer(text):
        cat = _normalise_lr(m.group("cat"))
        if cat in LR_ORDER:
            out.append((m.start(), m.end(), cat))
    return out


def _max_lr(cats: Iterable[str]) -> str | None:
    cats = list(cats)
    return max(cats, key=lambda c: LR_ORDER[c]) if cats else None


def _report_lung_rads(report: Report, found: list[tuple[int, int, str]]) -> str | None:
    """Report-level category: the highest category stated in the IMPRESSION, else the
    highest anywhere outside history/comparison/technique; prior categories ("previously
    Lung-RADS 3") are ignored."""
    by_section: dict[str, list[str]] = {}
    # sections are in text order: bisect instead of Report.section_at per statement (a 1 MB
    # report has thousands of statements and sections)
    secs = [x for x in report.sections if x.end > x.start]
    sec_starts = [x.start for x in secs]
    for s, _e, cat in found:
        i = bisect.bisect_right(sec_starts, s) - 1
        sec = secs[i] if i >= 0 and s < secs[i].end else report.section_at(s)
        name = sec.name if sec else BODY
        if name in NO_LUNG_RADS_SECTIONS or PRIOR_LR_RE.search(report.text[max(0, s - 30) : s]):
            continue
        by_section.setdefault(name, []).append(cat)
    if IMPRESSION in by_section:
        return _max_lr(by_section[IMPRESSION])
    return _max_lr(c for cats in by_section.values() for c in cats)


# ---------------------------------------------------------------------------
# Merging
# ---------------------------------------------------------------------------
def _sizes_compatible(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return True
    return abs(a - b) <= max(1.0, 0.2 * max(a, b))


def _compatible(x: Draft, y: Draft) -> bool:
    if x.negated != y.negated:
        return False
    if x.lobe and y.lobe and x.lobe != y.lobe:
        return False
    if x.side and y.side and "bilateral" not in (x.side, y.side) and x.side != y.side:
        return False
    return _sizes_compatible(x.size_mm, y.size_mm)


def _match_score(x: Draft, y: Draft) -> int:
    score = 0
    if x.lobe and x.lobe == y.lobe:
        score += 4
    if x.side and x.side == y.side:
        score += 1
    if x.size_mm is not None and y.size_mm is not None:
        score += 3 if abs(x.size_mm - y.size_mm) < 0.51 else 1
    if x.texture and x.texture == y.texture:
        score += 1
    return score


def _merge_coreferent(drafts: list[Draft]) -> list[Draft]:
    """Within a section: "The nodule is solid." / "This nodule ..." after a described
    nodule refers to it; plural summaries ("Two nodules are present.") followed by the
    individual nodules are dropped."""
    out: list[Draft] = []
    positives: dict[str, list[Draft]] = {}
    for d in drafts:
        same = positives.get(d.section, [])[-20:]  # recent positives of the section
        target = None
        if d.pronoun:
            # "It measures 6 mm." describes the nodule of the sentence just before, when
            # nothing else was named after it there; otherwise "it" is not a nodule
            prev = same[-1] if same else None
            if prev is not None and prev.sentence == d.sentence - 1 and prev.last_head and not prev.plural:
                prev.fill_from(d)
            continue
        if d.same_lobe and same and same[-1].lobe is not None:
            d.lobe, d.side = same[-1].lobe, same[-1].side
        if not d.negated and same and not d.indefinite and not d.plural:
            bare = d.size_mm is None and not d.has_location and d.count in (1, None)
            if bare and d.sentence - same[-1].sentence <= 4:
                target = same[-1]
            elif d.definite and d.lobe is not None:
                cands = [p for p in same if _compatible(p, d) and p.lobe == d.lobe and not p.plural]
                if cands:
                    target = cands[-1]
            elif d.definite and not d.has_location and d.size_mm is not None:
                # "The 1.1 cm nodule is new." refers to the nodule of that size
                cands = [p for p in same if not p.plural and p.size_mm is not None
                         and abs(p.size_mm - d.size_mm) <= max(0.5, 0.1 * d.size_mm)]
                if cands:
                    target = cands[-1]
        if target is not None:
            target.fill_from(d)
            continue
        out.append(d)
        if not d.negated:
            positives.setdefault(d.section, []).append(d)
    # plural summaries followed by the individual nodules
    final: list[Draft] = []
    for i, d in enumerate(out):
        if d.plural and not d.negated and d.size_mm is None and d.lobe is None:
            following = [
                q for q in out[i + 1 : i + 30]
                if q.section == d.section and not q.negated and not q.plural and q.sentence - d.sentence <= 3
                and (q.size_mm is not None or q.lobe is not None)
            ]
            needed = d.count if d.count is not None else 2
            if len(following) >= needed:
                continue
        final.append(d)
    return final


_IMPRESSION_WINDOW = 60  # primaries either side of an IMPRESSION mention that it may repeat


def _merge_impression(drafts: list[Draft]) -> list[Draft]:
    """IMPRESSION mentions repeating a nodule described elsewhere are merged into it
    (its span kept, missing attributes filled from the impression)."""
    primary = [d for d in drafts if d.section != IMPRESSION]
    if not primary:
        return drafts
    kept = list(primary)
    starts = [p.start for p in primary]  # drafts come in text order
    for d in (d for d in drafts if d.section == IMPRESSION):
        # Only the primaries nearest in the text are compared: a real report describes far
        # fewer than _IMPRESSION_WINDOW nodules, while a 1 MB concatenation of reports
        # (~1,300 mentions) made this loop quadratic (7-17 s).
        at = bisect.bisect_left(starts, d.start)
        near = primary[max(0, at - _IMPRESSION_WINDOW) : at + _IMPRESSION_WINDOW]
        cands = [p for p in near if _compatible(p, d)]
        if d.plural and not d.negated:
            cands = [p for p in cands if p.plural] or cands
        if d.indefinite and d.has_location and d.lobe is not None:
            # "additional 5 mm LLL nodule" must match on lobe
            cands = [p for p in cands if p.lobe == d.lobe]
        if d.lobe is not None and not d.plural:
            same_lobe = [p for p in cands if p.lobe == d.lobe]
            cands = same_lobe or [p for p in cands if p.lobe is None]
        if cands:
            best = max(cands, key=lambda p: _match_score(p, d))
            best.fill_from(d)
            if d.lung_rads and best.lung_rads is None:
                best.lung_rads = d.lung_rads
            continue
        kept.append(d)
    kept.sort(key=lambda d: d.start)
    return kept


def _finalise(report: Report, d: Draft) -> NoduleClaim:
    start, end = max(0, d.start), min(len(report.text), max(d.end, d.start))
    return NoduleClaim(
        size_mm=round(d.size_mm, 3) if d.size_mm is not None else None,
        size_qualifier=d.size_qualifier,
        side=d.side,
        lobe=d.lobe,
        segment=d.segment,
        texture=d.texture,
        margin=d.margin,
        calcification=d.calcification,
        calcification_pattern=d.calcification_pattern,
        cavitation=d.cavitation,
        shape=d.shape,
        lung_rads=d.lung_rads,
        # a nodule placed in Lung-RADS 2 ("benign appearance or behavior") is called benign
        benign=True if d.benign is None and d.lung_rads == "2" else d.benign,
        negated=d.negated,
        uncertain=d.uncertain,
        stable=d.stable,
        count=d.count,
        multiple=d.multiple,
        largest=d.largest,
        kind=d.kind,
        position=d.position,
        prior_size_mm=round(d.prior_size_mm, 3) if d.prior_size_mm is not None else None,
        span=(start, end),
        text=report.text[start:end],
        section=d.section,
    )


# ---------------------------------------------------------------------------
# Completeness
# ---------------------------------------------------------------------------
def _nodule_descriptor_score(n: NoduleClaim) -> float:
    size = 1.0 if n.size_mm is not None or n.size_qualifier is not None else 0.0
    if n.lobe is not None or n.segment is not None:
        location = 1.0
    elif n.side is not None:
        location = 0.5
    else:
        location = 0.0
    others = sum(v is not None for v in (n.texture, n.margin, n.calcification, n.shape))
    return size + location + others


def completeness_score(nodules: Iterable[NoduleClaim], negative_statement: bool, has_impression: bool) -> float:
    """Report completeness in [0, 1] over seven descriptors: size, location, texture,
    margin, calcification, shape and impression.

    * With positive nodule claims: the *best-described* positive claim is scored (a
      report that fully characterises its index nodule is complete even if it also lists
      tiny ones).  size counts when a number or a qualifier ("subcentimeter") is given;
      location is 1 for a lobe or segment and 0.5 for a side only; calcification counts
      when stated either way ("calcified" or "non-calcified").
    * Without positive claims: an explicit negative statement ("No pulmonary nodules")
      covers the six nodule descriptors (score 6/7, 1.0 with an impression); a report
      that says nothing about nodules gets only the impression point (1/7 or 0).
    * impression = the report has a non-empty IMPRESSION/CONCLUSION section.
    """
    positive = [n for n in nodules if not n.negated]
    impression = 1.0 if has_impression else 0.0
    if positive:
        best = max(_nodule_descriptor_score(n) for n in positive)
    else:
        best = 6.0 if negative_statement else 0.0
    return round((best + impression) / 7.0, 4)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------
def extract_claims(report: Report | str | os.PathLike[str]) -> ReportClaims:
    """Extract nodule claims from a report (a :class:`Report`, or anything
    :func:`~lungfuse.pipelines.io.report.load_report` accepts: text or a path).

    Returns a :class:`ReportClaims`; sizes are in millimetres.  Never raises on odd
    text (any string that makes a valid Report).
    """
    rep = report if isinstance(report, Report) else load_report(report)
    lung_rads = find_lung_rads(rep.text)
    work = masked_text(rep.text, [(s, e) for s, e, _ in lung_rads])
    drafts: list[Draft] = []
    sentences = report_sentences(rep, work)
    for sent in sentences:
        drafts.extend(drafts_for_sentence(work, sent, lung_rads))
    attach_lung_rads(sentences, drafts, lung_rads)
    drafts = _merge_coreferent(drafts)
    drafts = _merge_impression(drafts)
    nodules = tuple(_finalise(rep, d) for d in sorted(drafts, key=lambda d: d.start))
    positive = [n for n in nodules if not n.negated]
    negative_statement = bool(nodules) and not positive
    impression = rep.section(IMPRESSION)
    return ReportClaims(
        nodules=nodules,
        negative_statement=negative_statement,
        completeness=completeness_score(nodules, negative_statement, impression is not None),
        lung_rads=_report_lung_rads(rep, lung_rads),
        impression=impression,
    )
