"""Image/report consistency: the calibrated AFA agreement score, claim matching and discordance rules.

Research software, NOT for diagnostic use.

**Consistency score (what exactly is computed).**  For one finding and the report text that
describes it, AFA projects the image embedding and the text feature into its shared space
(``z_img``, ``z_txt``, the space its InfoNCE loss trains).  The statistic is their cosine
similarity ``s = cos(z_img, z_txt)``.  A raw cosine has no fixed meaning, so it is calibrated
on the **validation** split (never test): ``s`` is computed for every true (nodule, its own
report) pair and for as many mismatched pairs (the same nodule with another nodule's report,
drawn at random), and a one-feature logistic regression maps ``s`` to
``consistency = P(pair is a true pair | s)`` in [0, 1].  The *threshold* below which the
realignment loop runs is the val point that maximises Youden's J (sensitivity + specificity
- 1) of telling true from mismatched pairs would flag many correct reports when the score
separates the two poorly, so the threshold is set by a stated false-alarm budget instead: the
``false_alarm`` quantile (default 5 %) of the true pairs' consistency on val, i.e. about 1 in 20
correctly described nodules enters the loop on this score alone.  The share of mismatched val
pairs caught at that threshold and the Youden threshold are stored beside it.  This replaces the design's "FID-style" score: a
Fréchet distance needs two *distributions* of features, whereas a case gives one image vector
and one text vector per finding; the calibrated pair probability is the well-defined per-finding
analogue.  ``fit_consistency`` writes ``consistency.json`` (slope, intercept, threshold, val AUC);
the fitted map is :class:`lungfuse.pipelines.inference.calibration.ConsistencyCalibration`, a model
artefact loaded with the other models by the :class:`~lungfuse.pipelines.inference.registry.ModelRegistry`.

**Matching** claims to image findings (:func:`match_claims`): Hungarian assignment on a cost of
side/lobe disagreement, size disagreement and detector confidence; a claim whose best cost is
above ``MAX_MATCH_COST`` stays unmatched.

**Group claims** ("multiple bilateral nodules, the largest ...", "three nodules", "scattered
micronodules up to 4 mm"; :func:`is_group`) take no part in the one-to-one matching: they are
satisfied by any findings that agree with them (:func:`group_members`), and "the largest ..." is a
claim of its own that is matched like any singular claim.  "bilateral" never makes a side
discordance.

**Discordance rules** (:func:`pair_discordances`), each a plain-English reason:

* side or lobe differs (lobe only when the side agrees, and only when the claimed lobe is not
  among the lobes the finding's position allows once the geometric lobe estimate's uncertainty
  is taken into account, :meth:`lung.LobeLocator.plausible`);
* size differs by more than ``max(3 mm, 30 %)`` of the reported size from both the finding's long
  axis and its mean diameter (a report may quote either; see
  ``SIZE_TOL_MM``/``SIZE_TOL_REL``: both tolerances must be exceeded, because diameter
  measurement varies by ~1.5-3 mm between readers for small nodules and proportionally for
  large ones);
* texture contradicts the measured HU (report solid / image ground glass, or the reverse;
  part-solid is compatible with either);
* calcification contradicts the measured HU, in either direction: reported calcified while under
  1 % of the core is above 200 HU (``CALCIFICATION_ABSENT_FRACTION``: less than one voxel of a
  6 mm nodule's core; a 33 mm mass's handful of stray bright voxels - vessel walls, noise - no
  longer hides the contradiction, as the former "no voxel at all" rule let LIDC-IDRI-0001's mass,
  0.07 % above 200 HU, pass as "calcified granuloma"); or reported non-calcified while the
  measurement calls it calcified (>= 10 % of the core above 200 HU, ``CALCIFIED_FRACTION``, the
  measurement's own ``calcified`` flag; formerly 30 %, so a finding shown as calcified could be
  reported "without calcification" unremarked).

The benign-wording rule (a claim that calls its nodule benign while the matched finding's
malignancy probability is at or above the operating point) needs the fused probability, so the
analysis applies it after fusion (``pipeline``, sentence in :mod:`.wording`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lungfuse.pipelines.nlp.claims import NoduleClaim

__all__ = [
    "FindingView",
    "clearly_stronger",
    "group_members",
    "is_group",
    "match_claims",
    "sides_disagree",
    "pair_discordances",
    "CALCIFICATION_ABSENT_FRACTION",
    "CALCIFIED_FRACTION",
    "SIZE_TOL_MM",
    "SIZE_TOL_REL",
    "MAX_MATCH_COST",
]

#: reported calcified, yet under this share of the nodule core is above 200 HU: a contradiction
CALCIFICATION_ABSENT_FRACTION = 0.01
#: the share of the core above 200 HU at which the measurement calls a nodule calcified
#: (``imaging.measure.measure_nodule``'s ``calcified`` flag): reported non-calcified beyond it, a contradiction
CALCIFIED_FRACTION = 0.1
SIZE_TOL_MM = 3.0
SIZE_TOL_REL = 0.30
MAX_MATCH_COST = 3.0


@dataclass(frozen=True)
class FindingView:
    """What matching and the rules need to know of an image finding (mm, HU)."""

    side: str | None
    lobe: str | None
    diameter_mm: float
    texture: str
    calcified_fraction: float
    detection_score: float
    plausible_lobes: tuple[str, ...] = ()  # lobes within the estimate's uncertainty (empty: only ``lobe``)
    mean_diameter_mm: float | None = None  # Lung-RADS mean of long and short axes (None: not known)

    def lobe_agrees(self, lobe: str) -> bool:
        return lobe in self.plausible_lobes if self.plausible_lobes else lobe == self.lobe


def _claim_size(c: NoduleClaim) -> float | None:
    if c.size_mm is not None:
        return float(c.size_mm)
    return None


def sides_disagree(c: NoduleClaim, f: FindingView) -> bool:
    """The claim's side and the finding's differ ("bilateral" agrees with either lung: a group
    claim "multiple bilateral nodules" describes findings on both sides)."""
    return bool(c.side and f.side and c.side != "bilateral" and c.side != f.side)


def is_group(c: NoduleClaim) -> bool:
    """A plural or group claim ("multiple bilateral nodules", "three nodules", "scattered
    micronodules up to 4 mm"): it describes several nodules, so it is satisfied by any findings
    that agree with it, not by exactly one (:func:`group_members`)."""
    return bool(c.multiple or (c.count is not None and c.count > 1))


def group_members(c: NoduleClaim, findings: Sequence[FindingView], size_tol_mm: float = SIZE_TOL_MM,
                  size_tol_rel: float = SIZE_TOL_REL) -> list[int]:
    """Indices of the findings a group claim describes: same side (any side for "bilateral" or
    none stated), a plausible lobe when the claim names one, and, when the group states a size
    (its "up to" / largest figure, mm), no larger than that size beyond the size tolerances."""
    out = []
    size = _claim_size(c)
    for i, f in enumerate(findings):
        if sides_disagree(c, f) or (c.lobe and f.lobe and not f.lobe_agrees(c.lobe)):
            continue
        if size is not None and f.diameter_mm - size > max(size_tol_mm, size_tol_rel * size):
            continue
        out.append(i)
    return out


#: A finding is "clearly stronger" than a realignment candidate when it is not weaker by more than
#: this detector score, and either scores this much higher or is larger beyond the size tolerances.
STRONGER_SCORE_MARGIN = 0.10
#: ... and how much lower its score may be while its size alone makes it stronger.
WEAKER_SCORE_ALLOWANCE = 0.05


def clearly_stronger(f: FindingView, k: FindingView, size_tol_mm: float = SIZE_TOL_MM,
                     size_tol_rel: float = SIZE_TOL_REL) -> bool:
    """Whether finding ``f`` is clearly stronger than candidate ``k`` (detection score, long axis mm).

    ``f`` must be at least as large as ``k`` and score at least ``k``'s score minus
    :data:`WEAKER_SCORE_ALLOWANCE`; and either score :data:`STRONGER_SCORE_MARGIN` more, or be
    larger than ``k`` by more than ``max(size_tol_mm, size_tol_rel * k)`` (the size rule's
    tolerances: a difference the size rule would call a discordance).  Realignment may not resolve
    a claim with ``k`` while such an ``f`` lies in the claim's region: the 29 mm, 0.63 mass beside
    a 6 mm, 0.40 candidate is what the report under-sizes, not a second nodule that confirms it.
    """
    if f.diameter_mm < k.diameter_mm or f.detection_score < k.detection_score - WEAKER_SCORE_ALLOWANCE:
        return False
    larger = f.diameter_mm - k.diameter_mm > max(size_tol_mm, size_tol_rel * k.diameter_mm)
    return larger or f.detection_score >= k.detection_score + STRONGER_SCORE_MARGIN


def _cost(c: NoduleClaim, f: FindingView) -> float:
    cost = 0.0
    if sides_disagree(c, f):
        cost += 2.0
    elif c.lobe and f.lobe and not f.lobe_agrees(c.lobe):
        cost += 1.0
    size = _claim_size(c)
    if size is not None and f.diameter_mm > 0:
        cost += 2.0 * abs(f.diameter_mm - size) / max(size, f.diameter_mm)
    return cost - 0.5 * float(f.detection_score)


def match_claims(claims: Sequence[NoduleClaim], findings: Sequence[FindingView],
                 max_cost: float = MAX_MATCH_COST) -> list[int | None]:
    """For each claim, the index of its matched finding (or None); one finding per claim."""
    from scipy.optimize import linear_sum_assignment

    out: list[int | None] = [None] * len(claims)
    if not claims or not findings:
        return out
    cost = np.array([[_cost(c, f) for f in findings] for c in claims])
    rows, cols = linear_sum_assignment(cost)
    for r, col in zip(rows, cols, strict=True):
        if cost[r, col] <= max_cost:
            out[int(r)] = int(col)
    return out


def lobe_name(lobe: str) -> str:
    names = {"RUL": "right upper lobe", "RML": "right middle lobe", "RLL": "right lower lobe",
             "LUL": "left upper lobe", "LLL": "left lower lobe", "lingula": "lingula"}
    return names.get(lobe, lobe)


def pair_discordances(c: NoduleClaim, f: FindingView, size_tol_mm: float = SIZE_TOL_MM,
                      size_tol_rel: float = SIZE_TOL_REL) -> list[str]:
    """Plain-English reasons why claim ``c`` and image finding ``f`` disagree (empty: they agree)."""
    out: list[str] = []
    if sides_disagree(c, f):
        out.append(f"side: the report places the nodule in the {c.side} lung, the image finding is in the {f.side} lung")
    elif c.lobe and f.lobe and not f.lobe_agrees(c.lobe):
        out.append(f"lobe: the report says {lobe_name(c.lobe)}, the image finding is in the {lobe_name(f.lobe)} "
                   f"(lobe estimated from position, no fissure detection)")
    size = _claim_size(c)
    if size is not None and f.diameter_mm > 0:
        # A report's single size is usually the long axis, but Lung-RADS v2022 reports the mean of
        # long and short axes: a size that agrees with either measure is not a discordance (an
        # elongated ground-glass nodule's axes can differ by more than the tolerance).  The long
        # axis stays the one quoted in the reason.
        diff = abs(f.diameter_mm - size)
        if f.mean_diameter_mm is not None and f.mean_diameter_mm > 0:
            diff = min(diff, abs(f.mean_diameter_mm - size))
        if diff > size_tol_mm and diff > size_tol_rel * size:
            out.append(f"size: the report says {size:g} mm, the image measures {f.diameter_mm:.1f} mm "
                       f"(differs by {diff:.1f} mm, {100 * diff / size:.0f} %)")
    if c.texture:
        if (c.texture == "solid" and f.texture == "ground-glass") or (c.texture == "ground-glass" and f.texture == "solid"):
            out.append(f"texture: the report says {c.texture}, the measured HU look {f.texture}")
    if c.calcification is True and f.calcified_fraction < CALCIFICATION_ABSENT_FRACTION:
        out.append("calcification: the report says calcified, no voxel above 200 HU in the nodule core"
                   if f.calcified_fraction == 0.0 else
                   f"calcification: the report says calcified, only {100 * f.calcified_fraction:.2f} % of the nodule "
                   f"core is above 200 HU (under {100 * CALCIFICATION_ABSENT_FRACTION:g} %)")
    elif c.calcification is False and f.calcified_fraction >= CALCIFIED_FRACTION:
        out.append(f"calcification: the report says non-calcified, {100 * f.calcified_fraction:.0f} % of the "
                   f"nodule core is above 200 HU")
    return out
