"""The coded vocabularies of a :class:`~lungfuse.pipelines.analysis.result.CaseResult`: what a reason
or a flag is about (:class:`ReasonCode`) and how serious it is (:class:`Severity`).

Research software, NOT for diagnostic use.

The JSON Schema (``case_result.schema.json``) lists the same values; a test keeps them equal.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DEFAULT_SEVERITY", "NOT_ASSESSABLE_CODES", "ReasonCode", "Severity"]


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
    #: the report calls a matched nodule benign (benign, granuloma, hamartoma, a benign calcification
    #: pattern, Lung-RADS 2) while its malignancy probability is at or above the operating point
    BENIGN_WORDING = "benign_wording"
    #: no image finding matches a claim
    CLAIM_NOT_FOUND = "claim_not_found"
    #: image and report features disagree (calibrated AFA consistency below its threshold)
    LOW_CONSISTENCY = "low_consistency"
    #: the only image candidate for a claim scores below the operating threshold: a low-confidence
    #: match, which does not confirm the claim
    LOW_DETECTION_SCORE = "low_detection_score"
    #: the report describes no nodule, the image shows a >= 6 mm one above the missed-nodule threshold
    NEGATIVE_REPORT_WITH_FINDING = "negative_report_with_finding"
    #: an image finding a reader should not have missed (>= 6 mm, detector score at or above the
    #: val-calibrated missed-nodule threshold) that the report does not describe
    MISSED_NODULE = "missed_nodule"
    #: not assessable: the scan holds (almost) no lung
    NO_LUNG_IN_VIEW = "no_lung_in_view"
    #: not assessable: the scan covers too little of the lungs for what the report states
    LUNG_COVERAGE_SHORT = "lung_coverage_short"
    #: not assessable: the slices are thicker than the nodule sizes in question
    SLICES_TOO_THICK = "slices_too_thick"
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
    """How serious a reason or flag is, in increasing order.

    ``info``; ``warning``: worth a reader's look; ``discordance``: makes the case discordant;
    ``critical``: a discordance in which the report explicitly denies what the image shows ("No
    other pulmonary nodules" beside a confident 15 mm finding).
    """

    INFO = "info"
    WARNING = "warning"
    DISCORDANCE = "discordance"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 (info) to 3 (critical), for sorting."""
        return ("info", "warning", "discordance", "critical").index(self.value)


#: The codes that make a case ``not_assessable`` (what the analysis cannot judge).
NOT_ASSESSABLE_CODES = frozenset({"no_lung_in_view", "lung_coverage_short", "slices_too_thick"})


_DISCORDANCE_CODES = {ReasonCode.SIDE, ReasonCode.LOBE, ReasonCode.SIZE, ReasonCode.TEXTURE, ReasonCode.CALCIFICATION,
                      ReasonCode.BENIGN_WORDING, ReasonCode.CLAIM_NOT_FOUND, ReasonCode.LOW_CONSISTENCY,
                      ReasonCode.LOW_DETECTION_SCORE, ReasonCode.NEGATIVE_REPORT_WITH_FINDING, ReasonCode.MISSED_NODULE}
#: The severity a code gets unless told otherwise.
DEFAULT_SEVERITY = {c: (Severity.DISCORDANCE if c in _DISCORDANCE_CODES
                        else Severity.INFO if c is ReasonCode.IMAGE_CACHE else Severity.WARNING)
                    for c in ReasonCode}
