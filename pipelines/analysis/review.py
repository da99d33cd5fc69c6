"""The reader's review of a :class:`~lungfuse.pipelines.analysis.result.CaseResult`, kept apart from it.

Research software, NOT for diagnostic use.

The machine's output and the reader's decisions never mix: a review lives in a sidecar beside
the result JSON (``case.json`` -> ``case.review.json``, :func:`review_path`), which
:meth:`CaseResult.load` merges in as ``result.review`` and which :meth:`CaseResult.save` (a
re-analysis) never touches.  A review holds, per finding, accept or reject, an edited Lung-RADS
category and a comment; the findings the reader added by hand; the reader's name and the time.
Per-finding entries name the finding by id *and* tracking UID: the tracking UID is derived from
the CT and the finding's position, so a re-analysis of the same CT finds its review again even
when the ids moved (:meth:`Review.for_finding`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from lungfuse.pipelines.analysis.atomic import atomic_write_bytes
from lungfuse.pipelines.nlp.claims import LUNG_RADS_CATEGORIES

__all__ = ["DECISIONS", "REVIEW_VERSION", "FindingReview", "ReaderFinding", "Review", "review_path"]

REVIEW_VERSION = "1.0"
DECISIONS = ("accepted", "rejected")
_READER_ID = re.compile(r"^R[1-9][0-9]*$")


class _Identified(Protocol):
    id: str
    tracking_uid: str


def review_path(result_json: str | os.PathLike[str]) -> Path:
    """The review sidecar of a result JSON: ``<stem>.review.json`` in the same folder."""
    p = Path(result_json)
    return p.with_name(p.stem + ".review.json")


def _check_category(name: str, value: str | None) -> None:
    if value is not None and value not in LUNG_RADS_CATEGORIES:
        raise ValueError(f"{name}={value!r} not a Lung-RADS category {LUNG_RADS_CATEGORIES}")


@dataclass
class FindingReview:
    """The reader's decision on one machine finding.

    Attributes:
        finding_id: the finding's id (``F1``...) in the result reviewed.
        tracking_uid: its tracking UID (how a re-analysis finds this entry again).
        decision: ``accepted``, ``rejected`` or None (not decided yet).
        category: the reader's Lung-RADS category, when edited (None: the machine's stands).
        comment: free text.
    """

    finding_id: str
    tracking_uid: str | None = None
    decision: str | None = None
    category: str | None = None
    comment: str = ""

    def __post_init__(self) -> None:
        if not re.match(r"^F[1-9][0-9]*$", str(self.finding_id)):
            raise ValueError(f"FindingReview.finding_id={self.finding_id!r} is not a finding id (F..)")
        if self.decision is not None and self.decision not in DECISIONS:
            raise ValueError(f"FindingReview.decision={self.decision!r} not in {DECISIONS} or None")
        _check_category("FindingReview.category", self.category)


@dataclass
class ReaderFinding:
    """A finding the reader added by hand (the machine did not report it).

    Attributes:
        id: ``R1``, ``R2``, ... (apart from the machine's ``F`` ids).
        center_lps_mm: centre in DICOM patient LPS (x, y, z) mm.
        diameter_mm: the reader's long-axis diameter (mm), if measured.
        category: the reader's Lung-RADS category.
        comment: free text.
        tracking_uid: a DICOM UID for SR/SEG, if the exporter assigned one.
    """

    id: str
    center_lps_mm: list[float]
    diameter_mm: float | None = None
    category: str | None = None
    comment: str = ""
    tracking_uid: str | None = None

    def __post_init__(self) -> None:
        if not _READER_ID.match(str(self.id)):
            raise ValueError(f"ReaderFinding.id={self.id!r} is not a reader finding id (R..)")
        if len(self.center_lps_mm) != 3:
            raise ValueError("ReaderFinding.center_lps_mm must have 3 coordinates (LPS mm)")
        if self.diameter_mm is not None and not self.diameter_mm >= 0:
            raise ValueError(f"ReaderFinding.diameter_mm={self.diameter_mm!r} must be >= 0")
        _check_category("ReaderFinding.category", self.category)


@dataclass
class Review:
    """One reader's review of a result (see the module docstring).

    Attributes:
        reviewer: the reader's name.
        reviewed_utc: when the review was saved, ISO 8601 UTC (set by :meth:`save`).
        analysis_uid: the analysis UID of the result reviewed.
        findings: per-finding decisions.
        added_findings: findings the reader added.
        comment: a free-text comment on the case.
    """

    reviewer: str
    reviewed_utc: str | None = None
    analysis_uid: str | None = None
    findings: list[FindingReview] = field(default_factory=list)
    added_findings: list[ReaderFinding] = field(default_factory=list)
    comment: str = ""
    review_version: str = REVIEW_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.reviewer, str) or not self.reviewer.strip():
            raise ValueError("Review.reviewer must name the reader")
        ids = [f.finding_id for f in self.findings]
        if len(set(ids)) != len(ids):
            raise ValueError(f"Review.findings names a finding twice: {ids}")
        rids = [f.id for f in self.added_findings]
        if len(set(rids)) != len(rids):
            raise ValueError(f"Review.added_findings has repeated ids: {rids}")

    def for_finding(self, finding: _Identified) -> FindingReview | None:
        """The entry about ``finding``: by tracking UID, else (entries without one) by id."""
        for r in self.findings:
            if r.tracking_uid is not None and r.tracking_uid == finding.tracking_uid:
                return r
        return next((r for r in self.findings if r.tracking_uid is None and r.finding_id == finding.id), None)

    def stale(self, analysis_uid: str | None) -> bool:
        """True when the review was made on another analysis than ``analysis_uid`` (a re-analysis)."""
        return self.analysis_uid is not None and self.analysis_uid != analysis_uid

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Review:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["findings"] = [FindingReview(**f) for f in d.get("findings", [])]
        kw["added_findings"] = [ReaderFinding(**f) for f in d.get("added_findings", [])]
        return cls(**kw)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the sidecar atomically (temporary file + ``os.replace``), stamping ``reviewed_utc``."""
        self.reviewed_utc = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2).encode())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Review:
        return cls.from_dict(json.loads(Path(path).read_text()))
