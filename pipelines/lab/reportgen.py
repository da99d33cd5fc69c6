"""Synthetic free-text chest-CT reports rendered from one LIDC reader's ratings.

Research software, NOT for diagnostic use.

Purpose: training text for the report branch.  One report is rendered per (nodule,
reader) of the LIDC database from THAT reader's semantic ratings
(:class:`~lungfuse.pipelines.lab.lidc.NoduleRatings`: texture, calcification, margin,
spiculation, lobulation, sphericity, internalStructure, subtlety) plus the measured size
(mm) and location (side, lobe).

The malignancy rating is the label of the classification task and must never leak into
the text: :class:`ReportSpec` has no field that could carry it and
:class:`~lungfuse.pipelines.lab.lidc.NoduleRatings` has none either.  The IMPRESSION may
state an interpretation ("suspicious for malignancy", "benign-appearing calcified
granuloma") and a Lung-RADS category, but both are derived *only* from the descriptors
that the report keeps (see :func:`_interpretation` and :func:`_lung_rads`), exactly as a
radiologist reasons from what they describe.

Main entry points
-----------------
* :class:`ReportSpec` - what is true about the nodule (validated at construction).
* :class:`ReportStyle` - how the report is written (completeness, typos, distractor
  findings, layout, abbreviations, headers).
* :func:`generate_report` - ``(spec, style, rng) -> GeneratedReport``; deterministic for
  a given ``numpy.random.Generator`` state.
* :func:`sample_style` - the style distribution used for training.
* :data:`MISSING_REPORT` - ``None``: the value a caller stores for a (nodule, reader)
  whose report is simulated as *missing*.  Producing no text is the caller's business;
  :func:`generate_report` always returns a report.

Completeness
------------
The seven descriptors of :data:`DESCRIPTORS` (size, location, texture, margin,
calcification, shape, impression) are those scored by
:func:`lungfuse.pipelines.nlp.claims.completeness_score`.  ``completeness_target`` t keeps
``floor(7 t + U)`` of them (stochastic rounding, so the expected kept fraction is t),
chosen at random with weights that favour size and location (the descriptors that real
terse reports keep).  "impression" dropped means the report has no IMPRESSION section.
A dropped descriptor leaves no trace: no word of it appears anywhere in the report, the
impression included, and the impression's interpretation and Lung-RADS category use the
kept descriptors only.

Several phrasings were chosen so that one descriptor's words are not read as another
descriptor by the rule-based parser (and, more to the point, by a reader): e.g. the
word "lobulated" alone also names a *shape*, so lobulation is written "lobular margins"
or "lobulation" when the shape is dropped, and "irregular" is only used as "irregular
margins" (a bare "irregular nodule" would state a shape).  Attenuation is written
"soft tissue / ground-glass attenuation", never "... density" after the noun: "a density"
is itself a finding, so the phrase would read as a second object and take the
descriptors that follow it.  Negated words ("non-calcified", "without calcification")
always come after every other descriptor of their clause, because a negation cue
reaches forward ("non-calcified nodule with smooth margins" can be read as "not smooth").

Size: the figure is the diameter rounded to 1 mm (or 0.1 cm; "8 x 6 mm" gives the
diameter as the largest figure).  Below 1 cm and only when ``completeness_target`` < 1,
one size in ten is written without a figure ("subcentimeter", "measuring less than
1 cm"): a size statement, so "size" counts as kept, but not a number; a fully complete
report always gives the figure.  When size is dropped, vague words ("small", "tiny")
may still appear, as in real terse reports; they are not a size statement.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from lungfuse.pipelines.lab.lidc import NoduleRatings

__all__ = [
    "DESCRIPTORS",
    "HEADER_STYLES",
    "LOBES",
    "MISSING_REPORT",
    "GeneratedReport",
    "NoduleMention",
    "ReportSpec",
    "ReportStyle",
    "generate_report",
    "sample_style",
    "texture_category",
]

#: The value stored for a (nodule, reader) whose report is simulated as missing.  The
#: generator never produces it; callers decide when a report is missing and store this.
MISSING_REPORT: Final = None

#: The seven descriptors a report may keep, in the order of the claims parser's
#: completeness score.
DESCRIPTORS: tuple[str, ...] = ("size", "location", "texture", "margin", "calcification", "shape", "impression")

LOBES: tuple[str, ...] = ("RUL", "RML", "RLL", "LUL", "LLL", "lingula")
SIDES: tuple[str, ...] = ("right", "left")
HEADER_STYLES: tuple[str, ...] = ("caps", "title", "markdown", "bare", "none")

_LOBE_SIDE = {"RUL": "right", "RML": "right", "RLL": "right", "LUL": "left", "LLL": "left", "lingula": "left"}
_LOBE_NAME = {
    "RUL": "right upper lobe",
    "RML": "right middle lobe",
    "RLL": "right lower lobe",
    "LUL": "left upper lobe",
    "LLL": "left lower lobe",
    "lingula": "lingula",
}
# Segments by lobe (only anatomically compatible ones are ever written).
_SEGMENTS = {
    "RUL": ("apical", "posterior", "anterior"),
    "RML": ("lateral", "medial"),
    "RLL": ("superior", "medial basal", "anterior basal", "lateral basal", "posterior basal"),
    "LUL": ("apicoposterior", "anterior"),
    "LLL": ("superior", "anteromedial basal", "lateral basal", "posterior basal"),
    "lingula": ("superior lingular", "inferior lingular"),
}
# Lung zones that name a lobe unambiguously ("right apex" = RUL, "left base" = LLL).
_ZONE = {"RUL": ("right", "apex"), "LUL": ("left", "apex"), "RLL": ("right", "base"), "LLL": ("left", "base")}

# Rating scales (LIDC-IDRI), inclusive.
_RATING_RANGES = {
    "texture": (1, 5),
    "calcification": (1, 6),
    "margin": (1, 5),
    "spiculation": (1, 5),
    "lobulation": (1, 5),
    "sphericity": (1, 5),
    "internalStructure": (1, 4),
    "subtlety": (1, 5),
}

# Relative chance that a descriptor survives when some must be dropped: terse real
# reports nearly always keep size and location, and rarely the shape.
_KEEP_WEIGHTS = {
    "size": 3.0,
    "location": 3.0,
    "texture": 1.5,
    "margin": 1.0,
    "calcification": 0.8,
    "shape": 0.6,
    "impression": 2.0,
}

_BENIGN_CALCIFICATION = (1, 2, 3, 5)  # popcorn, laminated, solid/diffuse, central
_NEG_CUE_RE = re.compile(r"\b(?:no|not|without|non)\b", re.IGNORECASE)


# ---------------------------------------------------------------------------
# Public data model
# ---------------------------------------------------------------------------
def texture_category(texture: float) -> str:
    """LIDC texture rating -> "ground-glass" (1-2), "part-solid" (3-4) or "solid" (5)."""
    if texture <= 2:
        return "ground-glass"
    if texture <= 4:
        return "part-solid"
    return "solid"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


@dataclass(frozen=True)
class ReportSpec:
    """What is true about the nodule: one reader's ratings, size and location.

    Validated at construction (``ValueError`` naming the field):

    * ``ratings``: one reader's :class:`NoduleRatings`; every rating must be a whole
      number inside its LIDC scale (a consensus median such as 2.5 is refused because a
      categorical median, e.g. of calcification, has no meaning).
    * ``diameter_mm``: finite, > 0 and <= 300.
    * ``side``: "right", "left" or None; ``lobe``: one of :data:`LOBES` or None.  When
      both are given they must agree; a lobe alone implies its side.
    * ``image_ref``: ``(series, image)`` non-negative integers, or None.

    There is deliberately no malignancy field: malignancy is the label.
    """

    ratings: NoduleRatings
    diameter_mm: float
    side: str | None = None
    lobe: str | None = None
    image_ref: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.ratings, NoduleRatings):
            raise ValueError(f"ReportSpec.ratings must be a NoduleRatings, got {type(self.ratings).__name__}")
        for name, (lo, hi) in _RATING_RANGES.items():
            value = getattr(self.ratings, name)
            if not _is_number(value) or not math.isfinite(value) or value != round(value) or not lo <= value <= hi:
                raise ValueError(
                    f"ReportSpec.ratings.{name} must be a whole number in {lo}..{hi} (one reader's rating), got {value!r}"
                )
        d = self.diameter_mm
        if not _is_number(d) or not math.isfinite(d) or not 0 < d <= 300:
            raise ValueError(f"ReportSpec.diameter_mm must be a finite number in (0, 300] mm, got {d!r}")
        object.__setattr__(self, "diameter_mm", float(d))
        if self.side is not None and self.side not in SIDES:
            raise ValueError(f"ReportSpec.side must be one of {SIDES} or None, got {self.side!r}")
        if self.lobe is not None and self.lobe not in LOBES:
            raise ValueError(f"ReportSpec.lobe must be one of {LOBES} or None, got {self.lobe!r}")
        if self.side is not None and self.lobe is not None and _LOBE_SIDE[self.lobe] != self.side:
            raise ValueError(f"ReportSpec.side={self.side!r} contradicts lobe={self.lobe!r}")
        if self.image_ref is not None:
            ref = self.image_ref
            ok = isinstance(ref, tuple | list) and len(ref) == 2 and all(
                _is_number(v) and v == int(v) and v >= 0 for v in ref
            )
            if not ok:
                raise ValueError(f"ReportSpec.image_ref must be (series, image) non-negative integers, got {ref!r}")
            object.__setattr__(self, "image_ref", (int(ref[0]), int(ref[1])))

    @property
    def effective_side(self) -> str | None:
        """The side, implied by the lobe when only the lobe is given."""
        return self.side if self.side is not None else (_LOBE_SIDE[self.lobe] if self.lobe else None)

    @property
    def has_location(self) -> bool:
        """Whether there is any location to write (a lobe or at least a side)."""
        return self.effective_side is not None


@dataclass(frozen=True)
class ReportStyle:
    """How a report is written.

    * ``completeness_target`` in [0, 1]: fraction of :data:`DESCRIPTORS` kept (1.0 keeps
      all that the spec allows; the location cannot be kept when the spec has none).
    * ``typo_rate`` in [0, 0.5]: probability per eligible word (alphabetic, >= 4
      letters, not all-caps, not a header, unit or image-reference word) of one
      realistic typo: adjacent transposition, dropped letter or doubled letter (the
      first letter is never touched).  Digits and units are never changed.
    * ``distractors``: add other findings - normal and abnormal other organs, negated
      nodule statements ("No other suspicious pulmonary nodules.", "No thyroid
      nodules."), and extrapulmonary nodules (thyroid, adrenal; reported in
      :attr:`GeneratedReport.mentions` with role "extrapulmonary").
    * ``positive_distractors``: add a second *pulmonary* nodule (a calcified granuloma
      in another lobe).  This changes what the report claims about lung nodules, so it
      is off by default and every such mention is listed with role "distractor".
    * ``one_paragraph``: the whole report on one line (inline headers).
    * ``abbreviations``: RUL, GGO/GGN, "w/", "approx.", "hx" ...
    * ``header_style``: "caps" (``FINDINGS:``), "title" (``Findings:``), "markdown"
      (``## Findings`` / ``**Findings:**``), "bare" (``FINDINGS`` on its own line) or
      "none" (prose without section headers except the "Impression:" lead-in).
    * ``numbered_impression``: numbered IMPRESSION items instead of prose.
    * ``lung_rads``: state a Lung-RADS category when the kept descriptors determine one.
    * ``image_refs``: cite the spec's ``(series, image)`` when it has one.
    """

    completeness_target: float = 1.0
    typo_rate: float = 0.0
    distractors: bool = False
    positive_distractors: bool = False
    one_paragraph: bool = False
    abbreviations: bool = False
    header_style: str = "caps"
    numbered_impression: bool = True
    lung_rads: bool = False
    image_refs: bool = True

    def __post_init__(self) -> None:
        t = self.completeness_target
        if not _is_number(t) or not math.isfinite(t) or not 0.0 <= t <= 1.0:
            raise ValueError(f"ReportStyle.completeness_target must lie in [0, 1], got {t!r}")
        r = self.typo_rate
        if not _is_number(r) or not math.isfinite(r) or not 0.0 <= r <= 0.5:
            raise ValueError(f"ReportStyle.typo_rate must lie in [0, 0.5], got {r!r}")
        if self.header_style not in HEADER_STYLES:
            raise ValueError(f"ReportStyle.header_style must be one of {HEADER_STYLES}, got {self.header_style!r}")
        for name in ("distractors", "positive_distractors", "one_paragraph", "abbreviations",
                     "numbered_impression", "lung_rads", "image_refs"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ValueError(f"ReportStyle.{name} must be a bool, got {getattr(self, name)!r}")
        object.__setattr__(self, "completeness_target", float(t))
        object.__setattr__(self, "typo_rate", float(r))


@dataclass(frozen=True)
class NoduleMention:
    """One positive nodule mention in a generated report.

    ``span``: character offsets into :attr:`GeneratedReport.text` (one sentence or one
    impression item).  ``role``: "target" (the spec's nodule), "distractor" (another
    *pulmonary* nodule) or "extrapulmonary" (thyroid/adrenal nodule).  ``nodule``: 0 for
    the target, 1.. for other nodules (several mentions of one nodule share it).
    ``section``: "FINDINGS" or "IMPRESSION".
    """

    span: tuple[int, int]
    role: str
    nodule: int
    section: str


@dataclass(frozen=True)
class GeneratedReport:
    """A generated report and what it says.

    ``kept_descriptors``: the subset of :data:`DESCRIPTORS` written.  ``extras``: other
    facts written: "internal_structure", "subtlety", "segment" (a segment compatible
    with the lobe, invented for variety), "image_ref", "lung_rads".  ``mentions``: every
    positive nodule mention (target first).  ``target_span``: the FINDINGS sentence that
    introduces the target.  ``lung_rads``: the stated category, or None.
    """

    text: str
    kept_descriptors: frozenset[str]
    style: ReportStyle
    mentions: tuple[NoduleMention, ...]
    target_span: tuple[int, int]
    extras: frozenset[str] = frozenset()
    lung_rads: str | None = None

    @property
    def pulmonary_nodule_count(self) -> int:
        """Distinct pulmonary nodules positively mentioned (1 + positive distractors)."""
        return len({m.nodule for m in self.mentions if m.role in ("target", "distractor")})

    def mention_text(self, mention: NoduleMention) -> str:
        return self.text[mention.span[0] : mention.span[1]]


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _chance(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def _article(next_text: str) -> str:
    """"a" or "an" by the sound of the next word ("an 8 mm", "an RUL", "a 1.2 cm")."""
    w = next_text.lstrip("(")
    if not w:
        return "a"
    if w[0].isdigit():
        num = re.match(r"\d+", w).group()  # type: ignore[union-attr]
        return "an" if num[0] == "8" or num in ("11", "18") else "a"
    head = re.match(r"[A-Za-z]+", w)
    word = head.group() if head else w
    if len(word) >= 2 and word.isupper():  # spelled-out acronym: "an RUL", "a GGN"
        return "an" if word[0] in "AEFHILMNORSX" else "a"
    if word.lower().startswith(("un", "ill")) or word[0].lower() in "aeio":
        return "an"
    return "a"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text and text[0].islower() else text


def _join_and(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _with(ab: bool, rng: np.random.Generator) -> str:
    return "w/" if ab and _chance(rng, 0.5) else "with"


# ---------------------------------------------------------------------------
# Descriptor realisations
# ---------------------------------------------------------------------------
@dataclass
class _Forms:
    """Ways to write one descriptor: pre-noun adjectives, "with ..." objects, other
    post-noun phrases, predicative adjectives ("The nodule is ___") and whole
    follow-up sentences (with ``{N}`` for "The nodule")."""

    pre: list[str] = field(default_factory=list)
    with_obj: list[str] = field(default_factory=list)
    post: list[str] = field(default_factory=list)
    pred: list[str] = field(default_factory=list)
    own: list[str] = field(default_factory=list)


@dataclass
class _Size:
    pre: str
    post: str
    vague: bool = False  # no figure ("subcentimeter")


def _fmt_mm(value: float, rng: np.random.Generator, decimals: bool) -> str:
    if decimals and value < 10 and abs(value - round(value)) > 0.05:
        return f"{value:.1f}"
    return str(max(1, int(round(value))))


def _size_forms(d: float, ab: bool, rng: np.random.Generator, allow_vague: bool) -> _Size:
    """Pre- and post-noun size phrases.  The largest figure is always the diameter
    rounded to the nearest mm (or 0.1 cm), so a reader recovers it within 0.5 mm."""
    if allow_vague and d < 10 and _chance(rng, 0.1):
        # "subcentimeter" with no figure: a size statement, but not a number.
        return _Size(_pick(rng, ["subcentimeter", "sub-centimeter"]),
                     _pick(rng, ["measuring less than 1 cm", "measuring under 1 cm"]), vague=True)
    use_cm = d >= 5 and _chance(rng, 0.35 if d >= 10 else 0.12)
    dims = _chance(rng, 0.35)
    second = d * float(rng.uniform(0.55, 0.95))
    if use_cm:
        a, b = f"{d / 10:.1f}", f"{second / 10:.1f}"
        unit = "cm"
    else:
        decimals = _chance(rng, 0.3)
        a = _fmt_mm(d, rng, decimals)
        b = _fmt_mm(min(second, float(a)), rng, decimals)
        unit = "mm"
    times = _pick(rng, [" x ", " x ", "x", " \u00d7 "])
    value = f"{a}{times}{b} {unit}" if dims else f"{a} {unit}"
    approx = "approx." if ab else "approximately"
    pre_opts = [value, value, f"{approx} {value}"]
    if not dims and unit == "mm":
        pre_opts.append(f"{a}-mm")
    post_opts = [
        f"measuring {value}",
        f"measuring {approx} {value}",
        f"that measures {value}",
        f"({value})",
        f"measuring {value} in greatest dimension" if not dims else f"measuring {value} in axial dimensions",
    ]
    return _Size(_pick(rng, pre_opts), _pick(rng, post_opts))


def _location_forms(spec: ReportSpec, ab: bool, rng: np.random.Generator) -> tuple[str, str, str, bool]:
    """(pre-noun adjective, post phrase "in the ...", label form, segment_used)."""
    lobe, side = spec.lobe, spec.effective_side
    if lobe is None:
        assert side is not None
        pre = _pick(rng, [f"{side}-sided", f"{side} lung"])
        post = _pick(rng, [f"in the {side} lung", f"within the {side} lung", f"in the {side} hemithorax"])
        return pre, post, f"{_cap(side)} lung", False
    name = _LOBE_NAME[lobe]
    short = lobe if ab and lobe != "lingula" and _chance(rng, 0.7) else name
    segment_used = _chance(rng, 0.15)
    if segment_used:
        seg = _pick(rng, _SEGMENTS[lobe])
        if lobe == "lingula":
            post = f"in the {seg} segment"
            pre = "lingular"
        else:
            post = _pick(rng, [f"in the {seg} segment of the {short}", f"in the {short}, {seg} segment",
                               f"in the {short} {seg} segment"])
            pre = short
        return pre, post, _cap(short), True
    posts = [f"in the {short}", f"in the {short}", f"within the {short}"]
    pres = [short]
    if lobe == "lingula":
        pres = ["lingular"]
    elif not ab:
        level = name.split()[1]
        posts.append(f"in the {level} lobe of the {_LOBE_SIDE[lobe]} lung")
    if lobe in _ZONE and _chance(rng, 0.3):
        zside, zone = _ZONE[lobe]
        posts = [f"at the {zside} lung {zone}", f"in the {zside} {zone}"]
        pres = [f"{zside} {'apical' if zone == 'apex' else 'basilar'}"]
    return _pick(rng, pres), _pick(rng, posts), _cap(short), False


def _texture_forms(cat: str) -> _Forms:
    if cat == "solid":
        return _Forms(
            pre=["solid", "solid", "solid"],
            post=["of soft tissue attenuation"],
            with_obj=["soft tissue attenuation"],
            pred=["solid", "solid in attenuation", "of soft tissue attenuation"],
            own=["{N} is solid.", "{N} is of soft tissue attenuation.", "{N} is solid in attenuation."],
        )
    if cat == "part-solid":
        return _Forms(
            pre=["part-solid", "part-solid", "subsolid", "partly solid", "mixed attenuation", "semi-solid"],
            with_obj=["mixed ground-glass and solid components",
                      "a solid component and surrounding ground-glass attenuation"],
            pred=["part-solid", "subsolid", "of mixed solid and ground-glass attenuation"],
            own=["{N} is part-solid.", "{N} has both solid and ground-glass components.",
                 "{N} is subsolid, with a central solid component and ground-glass periphery."],
        )
    return _Forms(
        pre=["ground-glass", "pure ground-glass", "ground glass"],
        post=["of ground-glass attenuation"],
        with_obj=["ground-glass attenuation"],
        pred=["ground-glass in attenuation", "purely ground-glass"],
        own=["{N} is purely ground-glass in attenuation.", "{N} is non-solid (ground-glass).",
             "{N} is of ground-glass attenuation."],
    )


def _margin_forms(r: dict[str, int], shape_kept: bool) -> _Forms:
    """Margin wording from margin, spiculation and lobulation.  Spiculation dominates;
    lobulation is written without the bare word "lobulated" when the shape is dropped
    (that word also names a shape)."""
    spic, lob, margin = r["spiculation"], r["lobulation"], r["margin"]
    lob_adj = ["lobulated", "microlobulated"] if shape_kept else ["microlobulated"]
    lob_with = (["lobulated margins", "lobulation"] if shape_kept else []) + ["lobular margins", "lobulation",
                                                                             "microlobulated margins"]
    if spic >= 3:
        adj = {3: ["mildly spiculated", "finely spiculated", "spiculated"], 4: ["spiculated"],
               5: ["markedly spiculated", "coarsely spiculated", "spiculated"]}[spic]
        obj = {3: ["fine spiculation", "a few fine spicules", "mildly spiculated margins"],
               4: ["spiculated margins", "spiculation", "spiculated, irregular margins"],
               5: ["marked spiculation", "coarse spiculation", "spiculated margins", "radiating spicules"]}[spic]
        if lob >= 3:
            adj = [f"{a}, {lob_adj[-1]}" for a in adj]
            obj = [f"{o} and lobulation" for o in obj] + (["spiculated and lobulated margins"] if shape_kept else [])
        own = ["{N} has " + o + "." for o in obj] + ["{N} demonstrates " + o + "." for o in obj]
        own += ["The margins of the nodule are " + a + "." for a in adj]
        return _Forms(pre=adj, with_obj=obj, pred=[a.replace(", ", " and ") for a in adj], own=own)
    if lob >= 3:
        if margin <= 2:
            adj = [f"ill-defined, {lob_adj[-1]}", f"poorly defined, {lob_adj[-1]}"]
            obj = ["lobular, indistinct margins", "lobulation and ill-defined margins"]
        else:
            adj, obj = lob_adj, lob_with
        own = ["{N} has " + o + "." for o in obj] + ["{N} is " + a + "." for a in adj]
        return _Forms(pre=adj, with_obj=obj, pred=[a.replace(", ", " and ") for a in adj], own=own)
    if margin <= 2:
        adj = ["ill-defined", "poorly defined", "poorly marginated"]
        obj = ["ill-defined margins", "indistinct margins", "irregular margins", "poorly defined borders"]
    elif margin == 3:
        adj = ["fairly well-defined", "moderately well-circumscribed"]
        obj = ["moderately well-defined margins", "slightly indistinct margins", "mildly irregular margins"]
    else:
        adj = ["well-circumscribed", "smooth", "smoothly marginated", "well-defined", "sharply marginated"]
        obj = ["smooth margins", "well-defined margins", "sharply defined margins", "well-circumscribed margins"]
    own = ["{N} has " + o + "." for o in obj] + ["The margins of the nodule are " + a + "." for a in adj[:2]]
    return _Forms(pre=adj, with_obj=obj, pred=[a.replace(", ", " and ") for a in adj], own=own)


def _shape_forms(r: dict[str, int], rng: np.random.Generator) -> _Forms:
    s = r["sphericity"]
    if s <= 3 and (r["lobulation"] >= 4 or r["spiculation"] >= 4) and _chance(rng, 0.4):
        return _Forms(pre=["irregularly shaped"], pred=["irregularly shaped"], own=["{N} is irregularly shaped."])
    words = {
        5: ["round", "spherical", "rounded"],
        4: ["round", "rounded", "roughly round", "nearly round"],
        3: ["oval", "ovoid", "elliptical"],
        2: ["oval", "elongated", "ovoid", "elliptical"],
        1: ["elongated", "markedly elongated"],
    }[s]
    w = _pick(rng, words)
    return _Forms(
        pre=[w],
        with_obj=[f"{_article(w)} {w} configuration", f"{_article(w)} {w} contour"],
        pred=[w, f"{w} in shape"],
        own=["{N} is " + w + " in shape.", "{N} has " + _article(w) + " " + w + " configuration.",
             "{N} is " + w + "."],
    )


def _calc_forms(calc: int) -> _Forms:
    if calc == 6:
        return _Forms(
            pre=["non-calcified", "noncalcified", "uncalcified"],
            post=[", without calcification", ", without internal calcification"],
            pred=["not calcified", "non-calcified"],
            own=["No calcification is seen within the nodule.", "There is no calcification within the nodule.",
                 "{N} is not calcified.", "No internal calcification is identified within the nodule."],
        )
    pattern = {
        1: (["calcified"], ["popcorn calcification", "popcorn-type calcification", "chondroid (popcorn) calcification"]),
        2: (["calcified"], ["laminated calcification", "concentric laminated calcification",
                            "lamellated calcification"]),
        3: (["densely calcified", "diffusely calcified", "completely calcified"],
            ["dense calcification", "diffuse calcification"]),
        4: (["eccentrically calcified"], ["eccentric calcification", "an eccentric focus of calcification",
                                          "peripheral (eccentric) calcification"]),
        5: (["centrally calcified"], ["central calcification", "a central calcification"]),
    }[calc]
    adj, obj = pattern
    own = ["{N} contains " + o + "." for o in obj] + ["There is " + o + " within the nodule." for o in obj[:1]]
    if calc in (3, 4, 5):
        own += ["{N} is " + a + "." for a in adj]
    return _Forms(pre=adj, with_obj=obj, pred=adj if calc in (3, 4, 5) else [], own=own)


# ---------------------------------------------------------------------------
# Interpretation and Lung-RADS (from KEPT descriptors only)
# ---------------------------------------------------------------------------
def _lung_rads(spec: ReportSpec, r: dict[str, int], kept: frozenset[str], fat_written: bool) -> str | None:
    """Lung-RADS v1.1 baseline category from the kept descriptors, or None when they do
    not determine one.  Benign calcification or fat -> 1.  Solid: <6 -> 2, 6-<8 -> 3,
    8-<15 -> 4A, >=15 -> 4B.  Ground-glass: <30 -> 2, >=30 -> 3.  Part-solid: <6 -> 2;
    otherwise by the solid component, which LIDC does not measure and is approximated
    as 0.5 x diameter (texture 3) or 0.75 x diameter (texture 4): <6 -> 3, 6-<8 -> 4A,
    >=8 -> 4B.  A kept spiculated margin upgrades 3/4A to 4X ("additional features")."""
    if ("calcification" in kept and r["calcification"] in _BENIGN_CALCIFICATION) or fat_written:
        return "1"
    if "size" not in kept or "texture" not in kept:
        return None
    d = spec.diameter_mm
    cat = texture_category(r["texture"])
    if cat == "ground-glass":
        lr = "2" if d < 30 else "3"
    elif cat == "solid":
        lr = "2" if d < 6 else "3" if d < 8 else "4A" if d < 15 else "4B"
    else:
        solid = d * (0.5 if r["texture"] == 3 else 0.75)
        lr = "2" if d < 6 else "3" if solid < 6 else "4A" if solid < 8 else "4B"
    if "margin" in kept and r["spiculation"] >= 3 and lr in ("3", "4A"):
        lr = "4X"
    return lr


def _interpretation(spec: ReportSpec, r: dict[str, int], kept: frozenset[str], fat_written: bool,
                    rng: np.random.Generator) -> tuple[str, str]:
    """(kind, phrase): the radiologist's reading of the kept descriptors.  kind is
    "benign", "hamartoma", "suspicious", "ground-glass", "part-solid", "small" or
    "indeterminate"."""
    d = spec.diameter_mm
    tex = texture_category(r["texture"]) if "texture" in kept else None
    calc_kept = "calcification" in kept
    if calc_kept and r["calcification"] == 1:
        return "hamartoma", _pick(rng, ["likely a hamartoma", "compatible with a hamartoma", "benign-appearing"])
    if calc_kept and r["calcification"] in _BENIGN_CALCIFICATION:
        return "benign", _pick(rng, ["benign-appearing", "with a benign pattern of calcification",
                                      "consistent with sequela of prior granulomatous disease", "benign"])
    if fat_written:
        return "hamartoma", _pick(rng, ["compatible with a hamartoma", "likely a hamartoma"])
    spic = "margin" in kept and r["spiculation"] >= 3
    # a >= 3 cm pure ground-glass nodule is Lung-RADS 3, not "suspicious"
    big = "size" in kept and tex != "ground-glass" and (d >= 30 or (d >= 15 and tex is not None))
    if spic or big:
        strong = (spic and r["spiculation"] >= 4) or ("size" in kept and d >= 20)
        opts = ["suspicious for malignancy", "concerning for primary lung malignancy"]
        if strong:
            opts += ["highly suspicious for bronchogenic carcinoma", "highly suspicious for malignancy"]
        return "suspicious", _pick(rng, opts)
    if tex == "ground-glass":
        return "ground-glass", _pick(rng, ["which could represent atypical adenomatous hyperplasia or adenocarcinoma "
                                           "in situ", "indeterminate; adenocarcinoma spectrum disease is a "
                                           "consideration", "indeterminate"])
    if tex == "part-solid":
        return "part-solid", _pick(rng, ["concerning for adenocarcinoma spectrum disease", "indeterminate",
                                         "for which adenocarcinoma should be considered"])
    if "size" in kept and d < 6:
        return "small", _pick(rng, ["likely benign", "statistically likely benign", "probably benign",
                                    "of low suspicion"])
    return "indeterminate", _pick(rng, ["indeterminate", "nonspecific", "of indeterminate significance"])


_RECOMMENDATIONS = {
    "1": ["Continue annual screening with low-dose CT in 12 months.", "Annual low-dose CT screening is advised."],
    "2": ["Continue annual screening with low-dose CT in 12 months.", "Annual low-dose CT screening is advised."],
    "3": ["Follow-up low-dose CT in 6 months is recommended.", "Recommend 6-month follow-up low-dose CT."],
    "4A": ["Follow-up low-dose CT in 3 months is recommended; PET/CT may be considered.",
           "Recommend 3-month follow-up CT."],
    "4B": ["Recommend PET/CT and/or tissue sampling.", "Recommend chest CT with contrast, PET/CT and/or biopsy."],
    "4X": ["Recommend PET/CT and/or tissue sampling.", "Recommend multidisciplinary review and tissue sampling."],
    "benign": ["No specific follow-up is required.", "No further imaging follow-up is needed for this finding."],
    "suspicious": ["Recommend PET/CT and tissue sampling.", "Recommend multidisciplinary thoracic tumor board review."],
    "other": ["Follow-up chest CT in 3 to 6 months is recommended.", "Recommend follow-up CT per Fleischner Society "
              "guidelines.", "Consider short-interval follow-up CT."],
}


# ---------------------------------------------------------------------------
# Report skeleton
# ---------------------------------------------------------------------------
@dataclass
class _Sent:
    text: str
    tag: tuple[str, int] | None = None  # (role, nodule index) for positive nodule mentions


@dataclass
class _Para:
    sents: list[_Sent]
    label: str | None = None  # organ sub-header ("Lungs:") or enumerator ("1.")


@dataclass
class _Section:
    key: str  # EXAM, HISTORY, TECHNIQUE, COMPARISON, FINDINGS, IMPRESSION
    paras: list[_Para]


_HEADER_WORDS = {
    "EXAM": ["EXAMINATION", "EXAM", "PROCEDURE"],
    "HISTORY": ["CLINICAL HISTORY", "INDICATION", "HISTORY", "CLINICAL INDICATION", "REASON FOR EXAM"],
    "TECHNIQUE": ["TECHNIQUE"],
    "COMPARISON": ["COMPARISON", "COMPARISON STUDIES"],
    "FINDINGS": ["FINDINGS"],
    "IMPRESSION": ["IMPRESSION", "CONCLUSION", "IMPRESSION AND RECOMMENDATIONS"],
}
# Names that the report splitter recognises as ALL-CAPS headers without a colon inside
# a line; the one-paragraph "bare" style uses only these.
_BARE_INLINE_OK = {"CLINICAL HISTORY", "INDICATION", "HISTORY", "TECHNIQUE", "COMPARISON", "FINDINGS", "IMPRESSION"}
_SHORT_SECTIONS = {"EXAM", "HISTORY", "TECHNIQUE", "COMPARISON"}


def _exam_text(rng: np.random.Generator, ab: bool) -> tuple[str, bool]:
    contrast = _chance(rng, 0.35)
    if contrast:
        opts = ["CT chest with contrast.", "CT of the chest with intravenous contrast.", "CT thorax with IV contrast."]
        if ab:
            opts.append("CT chest w/ contrast.")
    else:
        opts = ["CT chest without contrast.", "CT of the chest without intravenous contrast.",
                "Low-dose CT chest for lung cancer screening.", "Non-contrast CT of the chest."]
        if ab:
            opts += ["CT chest w/o contrast.", "LDCT chest (lung cancer screening)."]
    return _pick(rng, opts), contrast


def _history_text(rng: np.random.Generator, ab: bool, nodule_words_ok: bool) -> str:
    opts = ["Cough.", "Shortness of breath.", "Chronic cough and dyspnea.", "Hemoptysis.", "Weight loss.",
            "Lung cancer screening. Former smoker, 30 pack-years.", "Current smoker, 40 pack-years.",
            "Abnormal chest radiograph.", "Chest pain.", "Staging of known extrathoracic malignancy."]
    if nodule_words_ok:
        opts += ["Pulmonary nodule seen on chest radiograph.", "Evaluate lung nodule."]
    if ab:
        opts += ["Pt w/ chronic cough.", "Hx of smoking, 35 pack-years.", "SOB."]
    return _pick(rng, opts)


def _technique_text(rng: np.random.Generator, contrast: bool) -> str:
    thick = _pick(rng, ["0.625", "1", "1.25", "2", "2.5", "3", "5"])
    acq = _pick(rng, [
        "Helical CT images of the chest were obtained {c}.",
        "Axial CT images were acquired from the lung apices through the upper abdomen {c}.",
        "Low-dose helical CT of the chest was performed {c}.",
    ]).format(c="following intravenous contrast" if contrast else "without intravenous contrast")
    recon = _pick(rng, [
        f"Images were reconstructed at {thick} mm slice thickness.",
        f"Contiguous {thick} mm axial sections were reviewed in lung and soft tissue windows.",
        f"Reconstructions at {thick} mm slice thickness with coronal and sagittal reformats.",
    ])
    return f"{acq} {recon}"


def _comparison_text(rng: np.random.Generator) -> str:
    return _pick(rng, ["None.", "None available.", "No prior studies.", "No prior imaging available for comparison.",
                       "Chest radiograph from 03/14/2009.", "None."])


def _other_lobe(spec: ReportSpec, rng: np.random.Generator) -> str:
    options = [lb for lb in LOBES if lb != spec.lobe and lb != "lingula"]
    if spec.lobe is None and spec.effective_side is not None:
        options = [lb for lb in options if _LOBE_SIDE[lb] != spec.effective_side]
    return _pick(rng, options)


@dataclass
class _Organ:
    key: str
    labels: list[str]
    sents: list[_Sent]


def _organs(spec: ReportSpec, style: ReportStyle, rng: np.random.Generator, ab: bool,
            impression_items: list[str], next_nodule: list[int]) -> list[_Organ]:
    """Non-target FINDINGS content: normal statements for each organ system, plus (when
    ``style.distractors``) abnormal other findings, negated nodule statements and
    extrapulmonary nodules, plus (when ``style.positive_distractors``) a second
    pulmonary nodule.  Abnormal findings may be echoed in ``impression_items``."""
    lungs: list[_Sent] = []
    if _chance(rng, 0.5):
        lungs.append(_Sent(_pick(rng, ["The central airways are patent.", "No focal consolidation.",
                                       "No consolidation or pneumothorax.", "No pneumothorax."])))
    pleura = [_Sent(_pick(rng, ["No pleural effusion or pneumothorax.", "No pleural effusion.",
                                "The pleural spaces are clear."]))]
    mediastinum = [_Sent(_pick(rng, ["No mediastinal, hilar, or axillary lymphadenopathy.",
                                     "No enlarged mediastinal or hilar lymph nodes.",
                                     "No thoracic lymphadenopathy."]))]
    heart = [_Sent(_pick(rng, ["Heart size is normal. No pericardial effusion.",
                               "The heart and great vessels are unremarkable.", "Normal heart size."]))]
    abdomen = [_Sent(_pick(rng, ["The visualized upper abdomen is unremarkable.",
                                 "Limited images of the upper abdomen are unremarkable."]))]
    bones = [_Sent(_pick(rng, ["No suspicious osseous lesions.", "No acute osseous abnormality."]))]
    thyroid: list[_Sent] = []
    if style.distractors:
        pool_lung = [
            ("Mild centrilobular emphysema.", "Mild emphysema."),
            ("Mild paraseptal emphysema in the upper lobes.", "Mild emphysema."),
            ("Minimal dependent atelectasis at the lung bases.", None),
            ("Mild bronchial wall thickening.", None),
            ("No other suspicious pulmonary nodules.", None),
            ("No additional pulmonary nodules are identified.", None),
            ("No other nodules or masses.", None),
        ]
        for k in rng.permutation(len(pool_lung))[: int(rng.integers(1, 3))]:
            text, echo = pool_lung[int(k)]
            lungs.append(_Sent(text))
            if echo:
                impression_items.append(echo)
        node, thy, adr = int(rng.integers(11, 16)), int(rng.integers(6, 16)), int(rng.integers(10, 25))
        # (organ, text, impression echo, is an extrapulmonary nodule)
        extras = [
            ("pleura", "Small right pleural effusion.", "Small right pleural effusion.", False),
            ("mediastinum", f"{_cap(_article(str(node)))} {node} mm short-axis subcarinal lymph node is mildly enlarged.",
             "Mildly enlarged subcarinal lymph node.", False),
            ("mediastinum", "Scattered subcentimeter mediastinal lymph nodes, not enlarged by size criteria.", None,
             False),
            ("heart", "Moderate coronary artery calcifications.", "Coronary artery calcifications.", False),
            ("heart", "Atherosclerotic calcification of the thoracic aorta.", None, False),
            ("abdomen", "Small hiatal hernia.", "Small hiatal hernia.", False),
            ("abdomen", "Cholelithiasis.", None, False),
            ("bones", "Degenerative changes of the thoracic spine.", None, False),
            ("thyroid", "No thyroid nodules.", None, False),
            ("thyroid", f"{_cap(_article(str(thy)))} {thy} mm hypodense nodule in the {_pick(rng, ['right', 'left'])} "
                        "thyroid lobe.", "Thyroid nodule; nonemergent thyroid ultrasound may be considered.", True),
            ("abdomen", f"{_cap(_article(str(adr)))} {adr} mm left adrenal nodule, likely an adenoma.", None, True),
        ]
        target = {"pleura": pleura, "mediastinum": mediastinum, "heart": heart, "abdomen": abdomen,
                  "bones": bones, "thyroid": thyroid}
        for k in rng.permutation(len(extras))[: int(rng.integers(1, 4))]:
            organ, text, echo, extrapulmonary = extras[int(k)]
            tag = None
            if extrapulmonary:
                tag = ("extrapulmonary", next_nodule[0])
                next_nodule[0] += 1
            sent = _Sent(text, tag)
            if organ == "thyroid" or _chance(rng, 0.5):
                target[organ].append(sent)
            else:
                target[organ][0] = sent  # an abnormal finding replaces the normal statement
            if echo and _chance(rng, 0.6):
                impression_items.append(echo)
    if style.positive_distractors:
        lobe = _other_lobe(spec, rng)
        where = lobe if ab else _LOBE_NAME[lobe]
        size = int(rng.integers(2, 6))
        text = _pick(rng, [
            f"{_cap(_article(str(size)))} {size} mm calcified granuloma in the {where} is unchanged.",
            f"Stable {size} mm densely calcified granuloma in the {where}.",
            f"Punctate calcified granuloma in the {where}.",
        ])
        lungs.append(_Sent(text, ("distractor", next_nodule[0])))
        next_nodule[0] += 1
    organs = [
        _Organ("lungs", ["Lungs:", "Lungs and airways:", "Lung parenchyma:", "Lungs/airways:"], lungs),
        _Organ("pleura", ["Pleura:", "Pleural spaces:"], pleura),
        _Organ("mediastinum", ["Mediastinum:", "Mediastinum and hila:", "Lymph nodes:"], mediastinum),
        _Organ("heart", ["Heart:", "Heart and vessels:", "Cardiovascular:"], heart),
        _Organ("thyroid", ["Thyroid:", "Lower neck:"], thyroid),
        _Organ("abdomen", ["Upper abdomen:", "Abdomen:"], abdomen),
        _Organ("bones", ["Bones:", "Musculoskeletal:", "Osseous structures:"], bones),
    ]
    return [o for o in organs if o.sents or o.key == "lungs"]


# ---------------------------------------------------------------------------
# The target nodule
# ---------------------------------------------------------------------------
@dataclass
class _Ctx:
    spec: ReportSpec
    r: dict[str, int]
    kept: frozenset[str]
    style: ReportStyle
    rng: np.random.Generator
    ab: bool
    extras: set[str]
    fat_written: bool = False
    vague_size: bool = False  # the FINDINGS gave no figure: the impression must not either


def _choose_kept(spec: ReportSpec, target: float, rng: np.random.Generator) -> frozenset[str]:
    available = [d for d in DESCRIPTORS if d != "location" or spec.has_location]
    # Stochastic rounding: E[k] = 7 t, so the expected kept fraction is the target.
    k = int(math.floor(target * len(DESCRIPTORS) + rng.random()))
    k = min(max(k, 0), len(available))
    if k >= len(available):
        return frozenset(available)
    # Weighted sampling without replacement (Efraimidis-Spirakis keys u^(1/w)).
    keys = [float(rng.random()) ** (1.0 / _KEEP_WEIGHTS[d]) for d in available]
    order = sorted(range(len(available)), key=lambda i: -keys[i])
    return frozenset(available[i] for i in order[:k])


def _noun(ctx: _Ctx) -> tuple[str, bool]:
    """(head noun, texture_in_noun).  Ground-glass nouns carry the texture; "mass" is
    only used for >= 3 cm with size and location written (a "mass" needs lung context
    to be read as pulmonary, and the word itself implies the size)."""
    rng, r, kept, ab = ctx.rng, ctx.r, ctx.kept, ctx.ab
    # no "calcified ground-glass opacity": contradictory, and "diffuse(ly calcified)" next
    # to a ground-glass opacity reads as diffuse ground glass rather than a nodule
    calcified = "calcification" in kept and r["calcification"] != 6
    if "texture" in kept and texture_category(r["texture"]) == "ground-glass" and not calcified and \
            _chance(rng, 0.45):
        opts = ["ground-glass nodule", "focal ground-glass opacity"] + (["GGN", "focal GGO"] if ab else [])
        return _pick(rng, opts), True
    if "size" in kept and "location" in kept and ctx.spec.diameter_mm >= 30 and _chance(rng, 0.6):
        return "mass", False
    return _pick(rng, ["nodule", "nodule", "pulmonary nodule", "pulmonary nodule", "nodular opacity", "lung nodule",
                       "nodular density"]), False


def _target_findings(ctx: _Ctx) -> list[str]:
    """The FINDINGS sentences about the target: one main sentence carrying size and
    location (a later sentence with either would read as another nodule), optionally
    followed by "The nodule ..." sentences with the other descriptors."""
    spec, r, kept, rng, ab = ctx.spec, ctx.r, ctx.kept, ctx.rng, ctx.ab
    noun, tex_in_noun = _noun(ctx)
    pre: dict[str, str] = {}
    with_objs: list[str] = []
    posts: list[str] = []  # non-"with" post phrases
    neg_tail: str | None = None  # a negated phrase must come last (its cue reaches 30 chars on)
    own: list[str] = []
    preds: list[str] = []  # predicative adjectives for one combined "The nodule is ..." sentence
    neg_pred: str | None = None

    # ---- size and location (main sentence only)
    size_post = None
    if "size" in kept:
        sz = _size_forms(spec.diameter_mm, ab, rng, allow_vague=ctx.style.completeness_target < 1.0)
        ctx.vague_size = sz.vague
        if _chance(rng, 0.6):
            pre["size"] = sz.pre
        else:
            size_post = sz.post
    elif spec.diameter_mm < 5 and _chance(rng, 0.3):
        pre["size"] = _pick(rng, ["small", "tiny"])  # vague words are not a size statement
    elif spec.diameter_mm < 10 and _chance(rng, 0.2):
        pre["size"] = "small"
    loc_post = loc_label = None
    if "location" in kept:
        loc_pre, loc_post, loc_label, seg = _location_forms(spec, ab, rng)
        if seg:
            ctx.extras.add("segment")
        if _chance(rng, 0.3) and "segment" not in ctx.extras:
            pre["location"] = loc_pre
            loc_post = None

    # ---- the other descriptors: pre-noun, post-noun or a follow-up sentence
    def place(weights: tuple[float, float, float]) -> str:
        return ("pre", "post", "follow")[int(rng.choice(3, p=np.array(weights) / sum(weights)))]

    if "texture" in kept and not tex_in_noun:
        f = _texture_forms(texture_category(r["texture"]))
        where = place((0.65, 0.15, 0.2))
        if where == "pre":
            pre["texture"] = _pick(rng, f.pre)
        elif where == "post":
            opts = f.post + f.with_obj
            choice = _pick(rng, opts)
            (posts if choice in f.post else with_objs).append(choice)
        else:
            (own.append(_pick(rng, f.own)) if _chance(rng, 0.4) else preds.append(_pick(rng, f.pred)))
    if "shape" in kept:
        f = _shape_forms(r, rng)
        where = place((0.45, 0.2, 0.35))
        if where == "pre":
            pre["shape"] = _pick(rng, f.pre)
        elif where == "post" and f.with_obj:
            with_objs.append(_pick(rng, f.with_obj))
        else:
            (own.append(_pick(rng, f.own)) if _chance(rng, 0.4) else preds.append(_pick(rng, f.pred)))
    if "margin" in kept:
        f = _margin_forms(r, "shape" in kept)
        where = place((0.35, 0.4, 0.25))
        if where == "pre":
            pre["margin"] = _pick(rng, f.pre)
        elif where == "post":
            with_objs.append(_pick(rng, f.with_obj))
        else:
            (own.append(_pick(rng, f.own)) if _chance(rng, 0.6) else preds.append(_pick(rng, f.pred)))
    if "calcification" in kept:
        calc = r["calcification"]
        f = _calc_forms(calc)
        where = place((0.35, 0.35, 0.3))
        if calc == 6:
            if where == "pre":
                pre["calcification"] = _pick(rng, f.pre)
            elif where == "post":
                neg_tail = _pick(rng, f.post)
            elif _chance(rng, 0.6):
                own.append(_pick(rng, f.own))
            else:
                neg_pred = _pick(rng, f.pred)
        elif where == "pre":
            pre["calcification"] = _pick(rng, f.pre)
        elif where == "post" or not (f.pred or f.own):
            with_objs.append(_pick(rng, f.with_obj))
        elif f.pred and _chance(rng, 0.4):
            preds.append(_pick(rng, f.pred))
        else:
            own.append(_pick(rng, f.own))

    # ---- extras: internal structure, subtlety, image reference
    internal = r["internalStructure"]
    # At most four "The nodule ..." sentences: a reader (and the claims parser) ties a
    # bare "The nodule ..." to the nodule introduced a few sentences earlier, not to one
    # introduced five sentences back; the internal structure yields first.
    n_follow = len(own) + bool(preds or neg_pred)
    if internal > 1 and _chance(rng, 0.4 + 0.5 * ctx.style.completeness_target):
        written = True
        if internal == 2:
            written = n_follow < 4
            if written:
                own.append(_pick(rng, ["{N} demonstrates internal fluid attenuation.", "{N} appears cystic."]))
        elif internal == 3:
            if _chance(rng, 0.5) or n_follow >= 4:
                with_objs.append(_pick(rng, ["internal fat attenuation", "macroscopic fat"]))
            else:
                own.append(_pick(rng, ["{N} contains macroscopic fat.", "{N} contains internal fat attenuation."]))
            ctx.fat_written = True
        elif _chance(rng, 0.5) or n_follow >= 4:
            pre["cavity"] = "cavitary"
        else:
            own.append(_pick(rng, ["{N} is cavitary.", "There is internal cavitation within the nodule."]))
        if written:
            ctx.extras.add("internal_structure")
    if r["subtlety"] != 3 and _chance(rng, 0.25):
        ctx.extras.add("subtlety")
        pre["subtlety"] = _pick(rng, ["subtle", "faint"] if r["subtlety"] <= 2 else ["conspicuous"])
    image_ref = ""
    if spec.image_ref is not None and ctx.style.image_refs and _chance(rng, 0.7):
        ctx.extras.add("image_ref")
        se, im = spec.image_ref
        image_ref = _pick(rng, [f"(series {se}, image {im})", f"(se {se}, im {im})", f"(image {im})",
                                f"({se}:{im})", f"(series {se} image {im})"])

    # A pre-noun negated adjective ("non-calcified") would negate a descriptor written
    # after it within the same clause, so it is moved behind all of them.
    # The same holds for a noun that carries the texture ("non-calcified ground-glass nodule").
    if "calcification" in pre and _NEG_CUE_RE.search(pre["calcification"]) and (with_objs or posts or tex_in_noun):
        neg_tail = ", without calcification"
        del pre["calcification"]

    # ---- noun phrase
    order = ["subtlety", "size", "margin", "shape", "texture", "cavity", "calcification", "location"]
    if "margin" in pre and "size" in pre and _chance(rng, 0.3):
        order = ["subtlety", "margin", "size", "shape", "texture", "cavity", "calcification", "location"]
    adjs = [pre[k] for k in order if k in pre]
    np_core = " ".join(adjs + [noun])
    post_parts: list[str] = []
    if size_post:
        post_parts.append(size_post)
    if loc_post:
        post_parts.append(loc_post)
    post_parts.extend(posts)
    if with_objs:
        post_parts.append(f"{_with(ab, rng)} {_join_and(with_objs)}")
    post = (" " + " ".join(post_parts)) if post_parts else ""
    if neg_tail:
        post += neg_tail if neg_tail.startswith(",") else " " + neg_tail
    if image_ref:
        post += " " + image_ref

    det_np = f"{_article(np_core)} {np_core}"
    templates = ["there", "there", "tele", "seen", "noted"]
    if loc_post and not size_post:
        templates += ["loc_first", "loc_first"]
    if loc_label is not None:
        templates.append("label")
    tpl = _pick(rng, templates)
    if tpl == "there":
        main = f"There is {det_np}{post}."
    elif tpl == "tele":
        main = f"{_cap(np_core)}{post}."
    elif tpl == "seen":
        verb = _pick(rng, ["is seen", "is noted", "is present", "is identified"])
        main = f"{_cap(det_np)} {verb}{post}."
    elif tpl == "noted":
        main = f"{_pick(rng, ['Noted is', 'Present is'])} {det_np}{post}."
    elif tpl == "loc_first":
        rest = post.replace(" " + loc_post, "", 1)  # type: ignore[operator]
        main = f"{_cap(loc_post)}, there is {det_np}{rest}."  # type: ignore[arg-type]
    else:  # "RUL: 8 mm solid nodule ..." - location as a line label, written once
        rest = post.replace(" " + loc_post, "", 1) if loc_post else post
        core = np_core if "location" not in pre else " ".join([a for a in adjs if a != pre["location"]] + [noun])
        main = f"{loc_label}: {_cap(core) if _chance(rng, 0.5) else core}{rest}."
    sentences = [main]

    # ---- follow-up sentences ("The nodule ...": the subject must name the nodule, a
    # bare "It is solid." is not attributable)
    subject = _pick(rng, ["The nodule", "This nodule", "The nodule"])
    if preds or neg_pred:
        items = list(preds) + ([neg_pred] if neg_pred else [])
        sentences.append(f"{subject} is {_join_and(items)}.")
    for o in own:
        sentences.append(o.replace("{N}", _pick(rng, ["The nodule", "This nodule"])))
    return sentences


def _target_impression(ctx: _Ctx) -> tuple[str, str | None, str]:
    """(impression sentence about the target, Lung-RADS category or None, interpretation
    kind).  It repeats only kept descriptors (size and location usually, texture,
    margin and calcification sometimes) so that it never states a dropped one."""
    spec, r, kept, rng, ab = ctx.spec, ctx.r, ctx.kept, ctx.rng, ctx.ab
    kind, interp = _interpretation(spec, r, kept, ctx.fat_written, rng)
    adjs: list[str] = []
    if "size" in kept and _chance(rng, 0.85):
        adjs.append("subcentimeter" if ctx.vague_size else _size_forms(spec.diameter_mm, ab, rng, False).pre)
    if "margin" in kept and (r["spiculation"] >= 3 or _chance(rng, 0.3)):
        adjs.append(_pick(rng, _margin_forms(r, "shape" in kept).pre))
    if "shape" in kept and _chance(rng, 0.1):
        adjs.append(_pick(rng, _shape_forms(r, rng).pre))
    noun = "nodule"
    if "texture" in kept and _chance(rng, 0.7):
        cat = texture_category(r["texture"])
        if cat == "ground-glass" and ab and _chance(rng, 0.4):
            noun = "GGN"
        else:
            adjs.append({"solid": "solid", "part-solid": _pick(rng, ["part-solid", "subsolid"]),
                         "ground-glass": _pick(rng, ["ground-glass", "pure ground-glass"])}[cat])
    if "calcification" in kept:
        calc = r["calcification"]
        if calc in (2, 3, 5) and _chance(rng, 0.6):
            noun = "granuloma"
            adjs.append(_pick(rng, ["calcified", _calc_forms(calc).pre[0]]))
        elif calc != 6 and _chance(rng, 0.6):
            adjs.append(_pick(rng, _calc_forms(calc).pre))
        elif calc == 6 and noun == "nodule" and _chance(rng, 0.3):
            adjs.append("non-calcified")  # last adjective, before a noun that states nothing
    if noun == "nodule" and "size" in kept and "location" in kept and spec.diameter_mm >= 30 and _chance(rng, 0.5):
        noun = "mass"
    loc = ""
    if "location" in kept and _chance(rng, 0.85):
        loc_pre, loc_post, _, _ = _location_forms(spec, ab, rng)
        if "segment" in loc_post:  # keep the impression short
            loc_post = f"in the {spec.lobe if ab and spec.lobe else _LOBE_NAME.get(spec.lobe or '', '')}".rstrip()
        if _chance(rng, 0.5) and noun != "mass":
            adjs.append(loc_pre)
        else:
            loc = " " + loc_post
    if not adjs and not loc:
        noun = _pick(rng, ["pulmonary nodule", "nodule"])
    np_text = " ".join(adjs + [noun])
    lr = _lung_rads(spec, r, kept, ctx.fat_written) if ctx.style.lung_rads else None
    as_above = _pick(rng, ["", "", " as described above", " as above"])
    if kind in ("suspicious", "indeterminate") and interp.split()[0] in ("suspicious", "indeterminate") and \
            _chance(rng, 0.4):
        lead = "Suspicious" if kind == "suspicious" else "Indeterminate"
        text = f"{lead} {np_text}{loc}{as_above}."
    elif kind == "benign" and interp == "benign-appearing" and _chance(rng, 0.6):
        text = f"Benign-appearing {np_text}{loc}{as_above}."
    else:
        det = _article(np_text) if _chance(rng, 0.3) else ""
        text = f"{_cap(det + ' ' if det else '')}{np_text if det else _cap(np_text)}{loc}{as_above}, {interp}."
    if lr is not None:
        ctx.extras.add("lung_rads")
        text = text[:-1] + _pick(rng, [f". Lung-RADS {lr}.", f" (Lung-RADS {lr}).", f". Lung-RADS category {lr}.",
                                       f". Lung-RADS v1.1 category {lr}."])
    rec_key = lr if lr is not None else ("benign" if kind in ("benign", "hamartoma") else
                                         "suspicious" if kind == "suspicious" else "other")
    return text, lr, rec_key


# ---------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------
class _Writer:
    """Accumulates text; records the spans of tagged sentences and of headers."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.n = 0
        self.tagged: list[tuple[int, int, tuple[str, int], str]] = []
        self.protected: list[tuple[int, int]] = []

    def write(self, text: str, tag: tuple[str, int] | None = None, section: str = "", protect: bool = False) -> None:
        start = self.n
        self.parts.append(text)
        self.n += len(text)
        if tag is not None:
            self.tagged.append((start, self.n, tag, section))
        if protect:
            self.protected.append((start, self.n))

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _header(key: str, style: ReportStyle, rng: np.random.Generator, inline: bool) -> str | None:
    """The header as written (with its delimiter), or None for no header."""
    hs = style.header_style
    if key == "BODY":  # headerless prose (header style "none")
        return None
    if hs == "none":
        return _pick(rng, ["Impression:", "IMPRESSION:", "Conclusion:"]) if key == "IMPRESSION" else None
    words = _HEADER_WORDS[key]
    if hs == "bare" and inline:
        words = [w for w in words if w in _BARE_INLINE_OK] or words
    word = _pick(rng, words)
    if hs == "caps":
        return f"{word}:"
    if hs == "title":
        return f"{word.capitalize()}:"
    if hs == "markdown":
        if inline or key in _SHORT_SECTIONS:
            return f"**{word.title()}:**"
        return f"## {word.title()}"
    return word  # bare


def _layout(sections: list[_Section], style: ReportStyle, rng: np.random.Generator) -> _Writer:
    w = _Writer()
    inline = style.one_paragraph
    blank = "\n\n" if _chance(rng, 0.6) else "\n"
    first = True
    for sec in sections:
        header = _header(sec.key, style, rng, inline)
        if not first:
            w.write(" " if inline else (blank if header is not None or sec.key == "FINDINGS" else " "))
        first = False
        if header is not None:
            w.write(header, protect=True)
            same_line = inline or (sec.key in _SHORT_SECTIONS and style.header_style != "bare")
            w.write(" " if same_line else "\n")
        for j, para in enumerate(sec.paras):
            if j:
                w.write(" " if inline else "\n")
            if para.label:
                w.write(para.label + " ", protect=True)  # sub-headers and enumerators: never typo them
            for k, sent in enumerate(para.sents):
                if k:
                    w.write(" ")
                w.write(sent.text, sent.tag, sec.key)
    w.write("\n")
    return w


# ---------------------------------------------------------------------------
# Typos
# ---------------------------------------------------------------------------
_WORD_RE = re.compile(r"[A-Za-z]+")
_NO_TYPO = frozenset({"series", "image", "images", "slice", "slices", "thickness", "lung", "rads", "category",
                      "sections", "with", "without"})
_PROTECTED_RE = re.compile(r"\bLung-RADS[^.)]*|\((?:series|se|image)[^)]*\)", re.IGNORECASE)


def _typo(word: str, rng: np.random.Generator) -> tuple[str, list[int]]:
    """One realistic typo (first letter kept); returns the new word and, for each old
    character, its new index."""
    n = len(word)
    op = int(rng.integers(3))
    if op == 0:  # transposition of two adjacent, different letters
        cands = [i for i in range(1, n - 1) if word[i] != word[i + 1]]
        if cands:
            i = cands[int(rng.integers(len(cands)))]
            new = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
            idx = list(range(n))
            idx[i], idx[i + 1] = i + 1, i
            return new, idx
        op = 2
    if op == 1:  # dropped letter
        i = int(rng.integers(1, n))
        return word[:i] + word[i + 1 :], [k if k <= i else k - 1 for k in range(n)]
    i = int(rng.integers(1, n))  # doubled letter
    return word[: i + 1] + word[i] + word[i + 1 :], [k if k <= i else k + 1 for k in range(n)]


def _apply_typos(text: str, rate: float, rng: np.random.Generator,
                 protected: list[tuple[int, int]]) -> tuple[str, list[int]]:
    """Text with typos and the old->new offset map (length ``len(text) + 1``).  Only
    alphabetic words of >= 4 letters are eligible, never all-caps words (acronyms,
    headers), units, image-reference or Lung-RADS words, so digits and units are
    untouched."""
    spans = list(protected) + [(m.start(), m.end()) for m in _PROTECTED_RE.finditer(text)]
    out: list[str] = []
    mapping = [0] * (len(text) + 1)
    pos = 0
    for m in _WORD_RE.finditer(text):
        word = m.group()
        eligible = (
            len(word) >= 4 and not word.isupper() and word.lower() not in _NO_TYPO
            and not any(s <= m.start() < e for s, e in spans)
        )
        if not eligible or not _chance(rng, rate):
            continue
        for i in range(pos, m.start()):
            mapping[i] = len(out)
            out.append(text[i])
        new, idx = _typo(word, rng)
        base = len(out)
        for k, j in enumerate(idx):
            mapping[m.start() + k] = base + j
        out.extend(new)
        pos = m.end()
    for i in range(pos, len(text)):
        mapping[i] = len(out)
        out.append(text[i])
    mapping[len(text)] = len(out)
    return "".join(out), mapping


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------
def generate_report(spec: ReportSpec, style: ReportStyle, rng: np.random.Generator) -> GeneratedReport:
    """Render one chest-CT report for ``spec`` in ``style``.

    Deterministic for a given ``rng`` state.  The typo stream is seeded from the first
    draw, so the same seed with typos on or off gives the same report up to the typos.
    The malignancy rating is never an input (see the module docstring).
    """
    if not isinstance(spec, ReportSpec):
        raise TypeError(f"spec must be a ReportSpec, got {type(spec).__name__}")
    if not isinstance(style, ReportStyle):
        raise TypeError(f"style must be a ReportStyle, got {type(style).__name__}")
    typo_seed = int(rng.integers(2**63 - 1))
    r = {name: int(round(getattr(spec.ratings, name))) for name in _RATING_RANGES}
    ab = style.abbreviations
    kept = _choose_kept(spec, style.completeness_target, rng)
    ctx = _Ctx(spec, r, kept, style, rng, ab, set())

    target_sents = _target_findings(ctx)
    impression_items: list[str] = []
    next_nodule = [1]
    organs = _organs(spec, style, rng, ab, impression_items, next_nodule)
    lungs = next(o for o in organs if o.key == "lungs")
    # target first in the lungs paragraph: follow-up "The nodule ..." sentences then
    # refer to it, and distractor nodules come after it
    lungs.sents[0:0] = [_Sent(s, ("target", 0)) for s in target_sents]

    # ---- FINDINGS
    if _chance(rng, 0.6) and not (style.header_style == "none" and _chance(rng, 0.5)):
        if _chance(rng, 0.3):  # mediastinum/heart first, then lungs
            organs.sort(key=lambda o: {"mediastinum": 0, "heart": 1}.get(o.key, 2))
        labels = _chance(rng, 0.6)
        paras = [_Para(o.sents, _pick(rng, o.labels) if labels else None) for o in organs]
        if labels and style.header_style == "markdown" and not style.one_paragraph:
            for p in paras:
                p.label = "- " + p.label  # type: ignore[operator]
    else:  # lungs paragraph, then everything else
        rest = [s for o in organs if o.key != "lungs" for s in o.sents]
        paras = [_Para(lungs.sents)] + ([_Para(rest)] if rest else [])
    sections: list[_Section] = []

    # ---- EXAM / HISTORY / TECHNIQUE / COMPARISON
    exam, contrast = _exam_text(rng, ab)
    if style.header_style == "none":
        # prose without headers: the history must not name a nodule (it would be
        # read as a finding) and every sentence stays in the report body
        history = _history_text(rng, False, False)
        intro = [exam, history if ". " in history else f"Indication is {history[0].lower()}{history[1:]}"]
        if _chance(rng, 0.5):
            intro.append(_technique_text(rng, contrast))
        intro.append(_pick(rng, ["No prior studies are available for comparison.", "There are no prior studies."]))
        sections.append(_Section("BODY", [_Para([_Sent(s) for s in intro])]))
    else:
        sections.append(_Section("EXAM", [_Para([_Sent(exam)])]))
        sections.append(_Section("HISTORY", [_Para([_Sent(_history_text(rng, ab, True))])]))
        if _chance(rng, 0.7):
            sections.append(_Section("TECHNIQUE", [_Para([_Sent(_technique_text(rng, contrast))])]))
        sections.append(_Section("COMPARISON", [_Para([_Sent(_comparison_text(rng))])]))
    sections.append(_Section("FINDINGS", paras))

    # ---- IMPRESSION (only when kept: "impression" is a completeness descriptor)
    lung_rads = None
    if "impression" in kept:
        imp_text, lung_rads, rec_key = _target_impression(ctx)
        items: list[_Sent] = [_Sent(imp_text, ("target", 0))]
        if _chance(rng, 0.5):
            items.append(_Sent(_pick(rng, _RECOMMENDATIONS[rec_key])))
        seen: set[str] = set()
        for it in impression_items:
            if it not in seen and len(items) < 4:
                seen.add(it)
                items.append(_Sent(it))
        if style.numbered_impression:
            imp_paras = [_Para([s], f"{i + 1}.") for i, s in enumerate(items)]
        else:
            imp_paras = [_Para(items)]
        sections.append(_Section("IMPRESSION", imp_paras))

    writer = _layout(sections, style, rng)
    text = writer.text
    tagged = writer.tagged

    if style.typo_rate > 0:
        text, mapping = _apply_typos(text, style.typo_rate, np.random.default_rng(typo_seed), writer.protected)
        tagged = [(mapping[s], mapping[e], tag, sec) for s, e, tag, sec in tagged]

    mentions = tuple(NoduleMention((s, e), tag[0], tag[1], sec) for s, e, tag, sec in tagged)
    target = next(m for m in mentions if m.role == "target" and m.section == "FINDINGS")
    return GeneratedReport(
        text=text,
        kept_descriptors=kept,
        style=style,
        mentions=mentions,
        target_span=target.span,
        extras=frozenset(ctx.extras),
        lung_rads=lung_rads,
    )


def sample_style(rng: np.random.Generator, *, positive_distractor_rate: float = 0.0) -> ReportStyle:
    """Draw a training style: completeness target 1.0 with probability 0.25, else
    uniform on [0, 1]; typos in 15 % (rate 1-5 % of eligible words); one paragraph 30 %;
    abbreviations 40 %; distractors 40 %; headers caps 40 / title 25 / markdown 15 /
    bare 10 / none 10 %; numbered impression 60 %; Lung-RADS 35 %; image references
    60 %.  Positive (pulmonary) distractors only with ``positive_distractor_rate`` > 0
    (default 0: they change what the report claims)."""
    if not 0.0 <= positive_distractor_rate <= 1.0:
        raise ValueError(f"positive_distractor_rate must lie in [0, 1], got {positive_distractor_rate!r}")
    full = _chance(rng, 0.25)
    target = 1.0 if full else float(rng.uniform(0.0, 1.0))
    typos = _chance(rng, 0.15)
    typo_rate = float(rng.uniform(0.01, 0.05)) if typos else 0.0
    header_style = HEADER_STYLES[int(rng.choice(len(HEADER_STYLES), p=[0.4, 0.25, 0.15, 0.1, 0.1]))]
    return ReportStyle(
        completeness_target=target,
        typo_rate=typo_rate,
        distractors=_chance(rng, 0.4),
        positive_distractors=_chance(rng, positive_distractor_rate),
        one_paragraph=_chance(rng, 0.3),
        abbreviations=_chance(rng, 0.4),
        header_style=header_style,
        numbered_impression=_chance(rng, 0.6),
        lung_rads=_chance(rng, 0.35),
        image_refs=_chance(rng, 0.6),
    )
