"""Structured features of a report's nodule claim (the parser's view of the text).

The text branch sees the report twice: as a frozen MiniLM sentence embedding
and as this small vector of parsed descriptors of the claimed nodule.  The
same function serves training (synthetic reports) and analysis (real reports).
"""

from __future__ import annotations

import numpy as np

from lungfuse.pipelines.nlp.claims import NoduleClaim, ReportClaims
from lungfuse.pipelines.nlp.lexicon import BENIGN_CALC_PATTERNS

__all__ = ["CLAIM_FEATURES", "claim_features", "pick_target_claim"]

CLAIM_FEATURES: tuple[str, ...] = (
    "has_claim", "size_norm", "has_size", "solid", "part_solid", "ground_glass", "margin_smooth",
    "margin_lobulated", "margin_spiculated", "margin_irregular", "calcified", "not_calcified", "benign_calc_pattern",
    "cavitation", "uncertain", "negative_statement", "completeness", "lung_rads",
)
_LUNG_RADS = {"1": 0.1, "2": 0.3, "3": 0.5, "4A": 0.7, "4B": 0.85, "4X": 1.0, "4": 0.75}


def pick_target_claim(claims: ReportClaims | None, span: tuple[int, int] | None = None) -> NoduleClaim | None:
    """The claim a report makes about the nodule of interest.

    With ``span`` (character offsets of the intended mention) the overlapping
    positive claim is chosen; otherwise the largest positive claim (a report's
    lead finding is usually its largest nodule), else the first.
    """
    if claims is None:
        return None
    pos = list(claims.positive_nodules)
    if not pos:
        return None
    if span is not None:
        for c in pos:
            if c.span[0] < span[1] and span[0] < c.span[1]:
                return c
    sized = [c for c in pos if c.size_mm is not None]
    return max(sized, key=lambda c: c.size_mm or 0.0) if sized else pos[0]


def claim_features(claims: ReportClaims | None, target: NoduleClaim | None = None) -> np.ndarray:
    """Vector of :data:`CLAIM_FEATURES` (float32, roughly in [0, 1]); all zeros for a missing report."""
    f = np.zeros(len(CLAIM_FEATURES), np.float32)
    if claims is None:
        return f
    idx = {n: i for i, n in enumerate(CLAIM_FEATURES)}
    t = target if target is not None else pick_target_claim(claims)
    f[idx["negative_statement"]] = float(claims.negative_statement)
    f[idx["completeness"]] = float(claims.completeness)
    lr = (t.lung_rads if t is not None and t.lung_rads else None) or claims.lung_rads
    if lr:
        f[idx["lung_rads"]] = _LUNG_RADS.get(lr.upper(), 0.5)
    if t is None:
        return f
    f[idx["has_claim"]] = 1.0
    if t.size_mm is not None:
        f[idx["has_size"]] = 1.0
        f[idx["size_norm"]] = float(np.log1p(t.size_mm) / np.log1p(60.0))
    elif t.size_qualifier == "subcentimeter":
        f[idx["size_norm"]] = float(np.log1p(6.0) / np.log1p(60.0))
    tex = (t.texture or "").lower()
    f[idx["solid"]] = float(tex == "solid")
    f[idx["part_solid"]] = float(tex == "part-solid")
    f[idx["ground_glass"]] = float(tex == "ground-glass")
    mar = (t.margin or "").lower()
    f[idx["margin_smooth"]] = float(mar == "smooth")
    f[idx["margin_lobulated"]] = float(mar == "lobulated")
    f[idx["margin_spiculated"]] = float(mar == "spiculated")
    f[idx["margin_irregular"]] = float(mar == "irregular")
    if t.calcification is True:
        f[idx["calcified"]] = 1.0
        f[idx["benign_calc_pattern"]] = float((t.calcification_pattern or "") in BENIGN_CALC_PATTERNS)
    elif t.calcification is False:
        f[idx["not_calcified"]] = 1.0
    f[idx["cavitation"]] = float(bool(t.cavitation))
    f[idx["uncertain"]] = float(t.uncertain)
    return f
