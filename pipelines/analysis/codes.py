"""The coded vocabularies of a :class:`~lungfuse.pipelines.analysis.result.CaseResult`: what a reason
or a flag is about (:class:`ReasonCode`) and how serious it is (:class:`Severity`).

Research software, NOT for diagnostic use.

The JSON Schema (``case_result.schema.json``) lists the same values; a test keeps them equal.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DEFAULT_SEVERITY", "ReasonCode", "Severity"]


class ReasonCode(StrEnum):
    """What a reason or a flag is about (the audit counts them by this code)."""

    #: a claim and its matched finding: the report's side differs from the image's
    SIDE = "side"
    #: the report's lobe is not among the lobes the finding's position allows
    LOBE = "lobe"
    #: the report's size differs from the measured one by more than the tolerances
    SIZE = "size"
    #: the report's texture (solid / ground glass) contradicts the measured HU
    TEXTURE = "texture"
    #: the report's calcification contradicts the measured HU
    CALCIFICATION = "calcification"
    #: no image finding matches a claim
    CLAIM_NOT_FOUND = "claim_not_found"
    #: image and report features disagree (calibrated AFA consistency below its threshold)
    LOW_CONSISTENCY = "low_consistency"
    #: a re-localised candidate's detector score is below the realignment minimum
    LOW_DETECTION_SCORE = "low_detection_score"
    #: the report describes no nodule, the image shows a >= 6 mm one
    NEGATIVE_REPORT_WITH_FINDING = "negative_report_with_finding"
    #: an image finding a reader should not have missed (large and confident) that the report does
    #: not describe: reserved for the calibrated missed-nodule rule, a discordance (not emitted yet)
    MISSED_NODULE = "missed_nodule"
    #: a >= 6 mm image finding the (positive) report does not describe, shown as a flag
    UNMENTIONED_FINDING = "unmentioned_finding"
    #: a hedged or plural claim without an image match (not a discordance)
    CLAIM_UNMATCHED = "claim_unmatched"
    #: an unresolved claim attributed to its closest image finding
    CLAIM_ATTRIBUTED = "claim_attributed"
    #: no report: consistency not assessed
    REPORT_MISSING = "report_missing"
    #: the report has no text
    REPORT_EMPTY = "report_empty"
    #: the CT reader warned (gap, uneven spacing, tilt, skipped file, ...; the sentence names it)
    INGEST_WARNING = "ingest_warning"
    #: the classical lung segmentation found no lung
    NO_LUNGS = "no_lungs"
    #: preprocessing and detection re-used from an earlier analysis of the same CT
    IMAGE_CACHE = "image_cache"


class Severity(StrEnum):
    """``discordance``: makes the case discordant; ``warning``: worth a reader's look; ``info``."""

    INFO = "info"
    WARNING = "warning"
    DISCORDANCE = "discordance"


_DISCORDANCE_CODES = {ReasonCode.SIDE, ReasonCode.LOBE, ReasonCode.SIZE, ReasonCode.TEXTURE, ReasonCode.CALCIFICATION,
                      ReasonCode.CLAIM_NOT_FOUND, ReasonCode.LOW_CONSISTENCY, ReasonCode.LOW_DETECTION_SCORE,
                      ReasonCode.NEGATIVE_REPORT_WITH_FINDING, ReasonCode.MISSED_NODULE}
#: The severity a code gets unless told otherwise.
DEFAULT_SEVERITY = {c: (Severity.DISCORDANCE if c in _DISCORDANCE_CODES
                        else Severity.INFO if c is ReasonCode.IMAGE_CACHE else Severity.WARNING)
                    for c in ReasonCode}
