"""What a generated report is about, how it is written, and what it says.

Research software, NOT for diagnostic use.

:class:`ReportSpec` (one reader's ratings, diameter in mm, side/lobe; validated, with no
malignancy field), :class:`ReportStyle` (completeness, typos, distractors, layout),
:class:`NoduleMention` and :class:`GeneratedReport` (the text, the kept descriptors and
the character spans of every positive nodule mention).  See :mod:`..reportgen`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from lungfuse.pipelines.lab.lidc import NoduleRatings

#: The value stored for a (nodule, reader) whose report is simulated as missing.  The
#: generator never produces it; callers decide when a report is missing and store this.
MISSING_REPORT: Final = None

#: The seven descriptors a report may keep, in the order of the claims parser's
#: completeness score.
DESCRIPTORS: tuple[str, ...] = ("size", "location", "texture", "margin", "calcification", "shape", "impression")

LOBES: tuple[str, ...] = ("RUL", "RML", "RLL", "LUL", "LLL", "lingula")
SIDES: tuple[str, ...] = ("right", "left")
HEADER_STYLES: tuple[str, ...] = ("caps", "title", "markdown", "bare", "none")

LOBE_SIDE = {"RUL": "right", "RML": "right", "RLL": "right", "LUL": "left", "LLL": "left", "lingula": "left"}
LOBE_NAME = {
    "RUL": "right upper lobe",
    "RML": "right middle lobe",
    "RLL": "right lower lobe",
    "LUL": "left upper lobe",
    "LLL": "left lower lobe",
    "lingula": "lingula",
}


# Rating scales (LIDC-IDRI), inclusive.
RATING_RANGES = {
    "texture": (1, 5),
    "calcification": (1, 6),
    "margin": (1, 5),
    "spiculation": (1, 5),
    "lobulation": (1, 5),
    "sphericity": (1, 5),
    "internalStructure": (1, 4),
    "subtlety": (1, 5),
}


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
        for name, (lo, hi) in RATING_RANGES.items():
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
        if self.side is not None and self.lobe is not None and LOBE_SIDE[self.lobe] != self.side:
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
        return self.side if self.side is not None else (LOBE_SIDE[self.lobe] if self.lobe else None)

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
