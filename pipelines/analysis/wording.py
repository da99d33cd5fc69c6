"""The plain sentences of case analysis: where a finding is, what a claim says, which phrases describe it.

Research software, NOT for diagnostic use.

:func:`discordance_code` gives the :class:`~lungfuse.pipelines.analysis.result.ReasonCode` of each
discordance sentence the rules (:func:`~lungfuse.pipelines.analysis.consistency.pair_discordances`)
and the analysis write; the sentences themselves stay exactly what a reader is shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from lungfuse.pipelines.analysis.codes import ReasonCode
from lungfuse.pipelines.analysis.consistency import lobe_name
from lungfuse.pipelines.nlp.claims import NoduleClaim


class _Placed(Protocol):
    """Where a finding is (a :class:`~lungfuse.pipelines.analysis.result.Finding`)."""

    side: str | None
    lobe: str | None

__all__ = ["PHRASE_PATTERNS", "benign_wording_sentence", "describe_claim", "discordance_code", "phrases", "region_text", "where",
           "no_match_sentence", "low_consistency_sentence", "low_score_sentence"]

#: The rule names that open a :func:`pair_discordances` sentence ("side: the report places ...").
_RULE_CODES = {"side": ReasonCode.SIDE, "lobe": ReasonCode.LOBE, "size": ReasonCode.SIZE,
               "texture": ReasonCode.TEXTURE, "calcification": ReasonCode.CALCIFICATION,
               "benign_wording": ReasonCode.BENIGN_WORDING}
_NO_MATCH = "no image finding matches the claimed "
_LOW_CONSISTENCY = "image and report features disagree "
_LOW_SCORE = "detector score "


def no_match_sentence(claim: NoduleClaim) -> str:
    """A claim without an image match (:attr:`ReasonCode.CLAIM_NOT_FOUND`)."""
    return f"{_NO_MATCH}{describe_claim(claim)}"


def benign_wording_sentence(probability: float, operating_point: float) -> str:
    """The report calls a matched nodule benign while its malignancy probability is at or above the
    operating point (:attr:`ReasonCode.BENIGN_WORDING`)."""
    return (f"benign_wording: the report calls the nodule benign, but the image finding's malignancy "
            f"probability is {probability:.2f}, at or above the operating point {operating_point:.2f}")


def low_consistency_sentence(consistency: float, threshold: float) -> str:
    """Image and report features disagree (:attr:`ReasonCode.LOW_CONSISTENCY`)."""
    return f"{_LOW_CONSISTENCY}(consistency {consistency:.2f} < threshold {threshold:.2f})"


def low_score_sentence(score: float, threshold: float) -> str:
    """The claim's only image candidate scores below the operating threshold: a low-confidence
    match that does not confirm the claim (:attr:`ReasonCode.LOW_DETECTION_SCORE`)."""
    return (f"{_LOW_SCORE}{score:.2f} below the operating threshold {threshold:.2f}: a low-confidence match, "
            f"which does not confirm the claim")


def discordance_code(sentence: str) -> ReasonCode:
    """The code of a discordance sentence written by the rules or by the analysis.

    Raises:
        ValueError: a sentence none of them writes.
    """
    rule = sentence.split(":", 1)[0]
    if rule in _RULE_CODES:
        return _RULE_CODES[rule]
    for prefix, code in ((_NO_MATCH, ReasonCode.CLAIM_NOT_FOUND), (_LOW_CONSISTENCY, ReasonCode.LOW_CONSISTENCY),
                         (_LOW_SCORE, ReasonCode.LOW_DETECTION_SCORE)):
        if sentence.startswith(prefix):
            return code
    raise ValueError(f"no reason code for the discordance {sentence!r}")


def where(f: _Placed) -> str:
    """The finding's lobe in words, else its lung, else "chest"."""
    if f.lobe:
        return lobe_name(f.lobe)
    return f"{f.side} lung" if f.side else "chest"


def describe_claim(c: NoduleClaim) -> str:
    """A claim in words: "8 mm nodule in the right upper lobe"."""
    size = f"{c.size_mm:g} mm " if c.size_mm is not None else ""
    where = lobe_name(c.lobe) if c.lobe else (f"{c.side} lung" if c.side else "lungs")
    return f"{size}{c.kind} in the {where}"


def region_text(c: NoduleClaim, level: str) -> str:
    """The region a realignment iteration searches (``level``: lobe, side or lungs) in words."""
    if level == "lobe" and c.lobe:
        return lobe_name(c.lobe)
    if level in ("lobe", "side") and c.side:
        return f"{c.side} lung"
    return "both lungs"


PHRASE_PATTERNS = (
    r"\d+(?:\.\d+)?\s*(?:x\s*\d+(?:\.\d+)?\s*)?(?:mm|cm)",
    r"(?:right|left)\s+(?:upper|middle|lower)\s+lobe|lingula[r]?|(?:right|left)\s+lung",
    r"(?:part[- ]?solid|semi[- ]?solid|sub[- ]?solid|non[- ]?solid|ground[- ]?glass|solid)",
    r"(?:spiculated|lobulated|irregular|smooth(?:ly)?(?:\s+marginated)?|well[- ]circumscribed|ill[- ]defined)",
    r"(?:non[- ]?calcified|calcified|calcification)",
    r"(?:nodule|mass|opacity|lesion|granuloma)",
)


def phrases(claim: NoduleClaim, focus: str, pieces: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, str]]:
    """The descriptor phrases of a claim's mention (size, location, texture, margin, calcification,
    kind) as ``(start, end, text)`` in offsets of ``focus`` (the text the text branch reads, made
    of ``pieces`` = ``(focus_start, report_start, length)``)."""
    start = None
    for fs, rs, n in pieces:
        if rs <= claim.span[0] < rs + n:
            start = fs + (claim.span[0] - rs)
    if start is None:
        found = focus.find(claim.text)
        if found < 0:
            return []
        start = found
    out = []
    for pat in PHRASE_PATTERNS:
        m = re.search(pat, claim.text, flags=re.IGNORECASE)
        if m:
            out.append((start + m.start(), start + m.end(), m.group(0)))
    return sorted(out)
