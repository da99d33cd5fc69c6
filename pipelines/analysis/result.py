"""What :func:`~lungfuse.pipelines.analysis.analyze.analyze_case` returns: :class:`CaseResult` (schema 2.0).

Research software, NOT for diagnostic use.

A :class:`CaseResult` is the contract the CLI, the GUI, the exports (DICOM SR/SEG) and the batch
audit build on.  It is saved as JSON (validated by the JSON Schema shipped beside this module,
``case_result.schema.json``, see :func:`schema`) plus an NPZ of arrays beside it, and loads back
typed with :meth:`CaseResult.load` / :meth:`CaseResult.from_dict` (schema 1.0 files load too).

* **Identifiers.**  Every finding has an id ``F1, F2, ...`` (in the order the analysis found
  them) and a DICOM tracking UID; every report claim (nodule mention, negated ones included, in
  text order) an id ``C1, C2, ...``.  Matches, reasons, flags, the EAF summary and the
  realignment trajectory refer to these ids, never to list positions.
* **Reasons and flags** are :class:`Reason` / :class:`Flag` objects: a :class:`ReasonCode`, a
  :class:`Severity`, the ids they concern and the plain sentence shown to the reader
  (``str(reason)`` is that sentence).
* **Provenance** (:class:`Provenance`): analysis UID, UTC time, lungfuse version, an input
  fingerprint and the source SOP Instance UIDs in slice order; the model hashes are in ``models``.
* **Identifying data** (patient, study, series, frame of reference, file paths) sit apart in
  :class:`Identifiers`, so that ``to_dict(deidentify=True)`` can drop them.
* **Masks.**  Each finding's segmentation mask is an array of the NPZ (``Finding.mask`` names it
  and gives its voxel->LPS affine), so DICOM SEG can be written from a saved result.
* **Review.**  A reader's decisions live in a sidecar (:mod:`.review`), merged on load, never
  part of the machine output and never overwritten by re-analysis.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import numpy as np

from lungfuse.pipelines.analysis.atomic import atomic_write_bytes
from lungfuse.pipelines.analysis.codes import DEFAULT_SEVERITY, NOT_ASSESSABLE_CODES, ReasonCode, Severity
from lungfuse.pipelines.analysis.review import Review, review_path
from lungfuse.pipelines.nlp.claims import NoduleClaim

__all__ = [
    "SCHEMA_VERSION",
    "NOTICE",
    "STATUSES",
    "Reason",
    "Flag",
    "Claim",
    "ClaimSet",
    "Finding",
    "ClaimMatch",
    "Provenance",
    "Identifiers",
    "CaseResult",
    "input_fingerprint",
    "schema",
]

SCHEMA_VERSION = "2.0"
#: Schema versions :meth:`CaseResult.from_dict` reads (1.0 is upgraded on load).
READABLE_VERSIONS = ("1.0", "2.0")
NOTICE = "LungFuse is research software - NOT FOR DIAGNOSTIC USE."
STATUSES = ("concordant", "realigned", "discordant", "not_assessable")
RESOLVED_BY = ("initial", "realignment", "unresolved")
FINDING_SOURCES = ("detector", "realignment")
#: ``imaging.measure.TEXTURES``, written out: reading a result should not import scipy (a test keeps them equal)
TEXTURES = ("solid", "part-solid", "ground-glass", "unknown")
FINDING_ID = re.compile(r"^F[1-9][0-9]*$")
CLAIM_ID = re.compile(r"^C[1-9][0-9]*$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def _check_id(name: str, value: str | None, pattern: re.Pattern[str], optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError(f"{name}={value!r} is not an id of the form {pattern.pattern}")


def _check_uid(name: str, value: str | None, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or len(value) > 64 or not _UID.match(value):
        raise ValueError(f"{name}={value!r} is not a DICOM UID (digits and dots, at most 64 characters)")


def _check_unit(name: str, value: float | None) -> None:
    if value is not None and not (isinstance(value, int | float) and 0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name}={value!r} outside [0, 1]")


@dataclass(frozen=True)
class Reason:
    """Why a case is discordant (or, as a :class:`Flag`, something worth knowing).

    Attributes:
        code: what it is about (:class:`ReasonCode`).
        text: the plain sentence shown to the reader (``str(reason)``).
        severity: :class:`Severity` (default: :data:`DEFAULT_SEVERITY` of the code).
        concerns: the ids (``F..``, ``C..``) of the findings and claims it is about.
    """

    code: ReasonCode
    text: str
    severity: Severity | None = None
    concerns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        kind = type(self).__name__
        try:
            object.__setattr__(self, "code", ReasonCode(self.code))
        except ValueError:
            raise ValueError(f"{kind}.code={self.code!r} not in {[c.value for c in ReasonCode]}") from None
        sev = DEFAULT_SEVERITY[self.code] if self.severity is None else self.severity
        try:
            object.__setattr__(self, "severity", Severity(sev))
        except ValueError:
            raise ValueError(f"{kind}.severity={sev!r} not in {[s.value for s in Severity]}") from None
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"{kind}.text must be a non-empty sentence")
        object.__setattr__(self, "concerns", tuple(self.concerns))
        for c in self.concerns:
            if not (isinstance(c, str) and (FINDING_ID.match(c) or CLAIM_ID.match(c))):
                raise ValueError(f"{kind}.concerns holds {c!r}, not a finding (F..) or claim (C..) id")

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code.value, "severity": str(self.severity), "concerns": list(self.concerns),
                "text": self.text}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cls(d["code"], d["text"], d.get("severity"), tuple(d.get("concerns", ())))


@dataclass(frozen=True, eq=True)
class Flag(Reason):
    """A note on the analysis that does not make the case discordant (same fields as :class:`Reason`)."""


@dataclass(frozen=True)
class Claim:
    """One nodule mention of the report, with its stable id (``C1`` = the first mention in text order)."""

    id: str
    nodule: NoduleClaim

    def __post_init__(self) -> None:
        _check_id("Claim.id", self.id, CLAIM_ID)
        if not isinstance(self.nodule, NoduleClaim):
            raise ValueError(f"Claim.nodule must be a NoduleClaim, got {type(self.nodule).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **self.nodule.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Claim:
        names = {f.name for f in fields(NoduleClaim)}
        kw = {k: v for k, v in d.items() if k in names}
        if "span" in kw:
            kw["span"] = tuple(kw["span"])
        return cls(d["id"], NoduleClaim(**kw))


@dataclass
class ClaimSet:
    """The report's claims: report-level attributes and every nodule mention (:class:`Claim`)."""

    nodules: list[Claim]
    completeness: float = 0.0
    negative_statement: bool = False
    lung_rads: str | None = None
    impression: str | None = None

    def __post_init__(self) -> None:
        _check_unit("ClaimSet.completeness", self.completeness)
        ids = [c.id for c in self.nodules]
        if len(set(ids)) != len(ids):
            raise ValueError(f"ClaimSet.nodules has repeated ids: {ids}")

    def by_id(self, claim_id: str) -> Claim:
        for c in self.nodules:
            if c.id == claim_id:
                return c
        raise KeyError(claim_id)

    def to_dict(self) -> dict[str, Any]:
        return {"completeness": float(self.completeness), "negative_statement": bool(self.negative_statement),
                "lung_rads": self.lung_rads, "impression": self.impression,
                "nodules": [c.to_dict() for c in self.nodules]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClaimSet:
        return cls([Claim.from_dict(n) for n in d.get("nodules", [])], d.get("completeness", 0.0),
                   d.get("negative_statement", False), d.get("lung_rads"), d.get("impression"))


@dataclass
class Finding:
    """One image finding (a nodule candidate above the operating threshold, or one the
    realignment loop found with the report's prior).

    Coordinates: ``center_voxel`` in the *source* CT's voxels (z-y-x, ``CTVolume.hu`` indices),
    ``center_lps_mm`` in DICOM patient LPS (x, y, z) mm; ``bbox_voxel`` = ``[lo, hi)`` source
    voxels.  ``diameter_mm`` is the axial long axis, ``mean_diameter_mm`` the mean of long and
    short axes (Lung-RADS v2022: on the axial slice of largest area, the long axis and the largest
    extent perpendicular to it); ``long_axis_mm`` repeats ``diameter_mm`` under its Lung-RADS name
    and ``short_axis_mm`` is that perpendicular axis (None in results written before them).
    ``solid_component_mm``: a part-solid nodule's solid component, mean diameter (mm), which
    Lung-RADS v2022 categorises part-solid nodules by; None for every other texture.
    ``lobes_possible``: the lobes the position allows given the
    geometric lobe estimate's uncertainty (no fissure detection).  ``heatmaps`` maps a name to
    ``{"array": npz key, "affine_lps": 4x4 voxel->LPS, "kind": ...}``; ``mask`` is
    ``{"array": npz key (bool, z-y-x), "affine_lps": 4x4 mask voxel->LPS, "spacing_mm", "kind"}``.
    ``id`` is ``F1, F2, ...``; ``tracking_uid`` a DICOM UID that follows this finding into SR/SEG
    (the same CT and position give the same UID); ``claim_id`` the report claim it is matched with.
    """

    id: str
    tracking_uid: str
    center_voxel: list[float]
    center_lps_mm: list[float]
    bbox_voxel: list[list[int]]
    diameter_mm: float
    mean_diameter_mm: float
    volume_mm3: float
    side: str | None
    lobe: str | None
    detection_score: float
    texture: str
    calcified: bool
    measurement: dict[str, Any]
    source: str = "detector"
    lobes_possible: list[str] = field(default_factory=list)
    malignancy_probability: float | None = None
    malignancy_by_variant: dict[str, float] = field(default_factory=dict)
    eaf: dict[str, Any] = field(default_factory=dict)
    afa: dict[str, Any] = field(default_factory=dict)
    claim_id: str | None = None
    consistency: float | None = None
    discordances: list[str] = field(default_factory=list)
    lung_rads: str | None = None
    guidance: dict[str, Any] = field(default_factory=dict)
    heatmaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    word_attributions: list[dict[str, Any]] = field(default_factory=list)
    phrases: list[dict[str, Any]] = field(default_factory=list)
    mask: dict[str, Any] | None = None
    long_axis_mm: float | None = None
    short_axis_mm: float | None = None
    solid_component_mm: float | None = None

    def __post_init__(self) -> None:
        _check_id("Finding.id", self.id, FINDING_ID)
        for name in ("long_axis_mm", "short_axis_mm", "solid_component_mm"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"Finding.{name}={v!r} must be a finite size >= 0 mm or None")
        if self.short_axis_mm is not None and self.long_axis_mm is not None and self.short_axis_mm > self.long_axis_mm + 1e-6:
            raise ValueError(f"Finding.short_axis_mm ({self.short_axis_mm:g}) exceeds long_axis_mm ({self.long_axis_mm:g})")
        if self.solid_component_mm is not None:
            if self.texture != "part-solid":
                raise ValueError(f"Finding.solid_component_mm applies to part-solid findings only (texture {self.texture!r})")
            if self.solid_component_mm > self.diameter_mm + 1e-6:
                raise ValueError(f"Finding.solid_component_mm ({self.solid_component_mm:g}) exceeds the nodule's "
                                 f"diameter ({self.diameter_mm:g} mm)")
        _check_uid("Finding.tracking_uid", self.tracking_uid, optional=False)
        _check_id("Finding.claim_id", self.claim_id, CLAIM_ID, optional=True)
        if len(self.center_lps_mm) != 3 or len(self.center_voxel) != 3:
            raise ValueError("Finding centres must have 3 coordinates")
        if len(self.bbox_voxel) != 2 or any(len(b) != 3 for b in self.bbox_voxel):
            raise ValueError(f"Finding.bbox_voxel={self.bbox_voxel!r} must be [lo, hi], 3 voxels each")
        if not 0.0 <= self.detection_score <= 1.0:
            raise ValueError(f"Finding.detection_score={self.detection_score!r} outside [0, 1]")
        if self.diameter_mm < 0 or self.volume_mm3 < 0:
            raise ValueError("Finding sizes must be >= 0")
        if self.texture not in TEXTURES:
            raise ValueError(f"Finding.texture={self.texture!r} not in {TEXTURES}")
        if self.side not in (None, "left", "right"):
            raise ValueError(f"Finding.side={self.side!r} not left, right or None")
        if self.source not in FINDING_SOURCES:
            raise ValueError(f"Finding.source={self.source!r} not in {FINDING_SOURCES}")
        _check_unit("Finding.malignancy_probability", self.malignancy_probability)
        _check_unit("Finding.consistency", self.consistency)
        if self.mask is not None and not {"array", "affine_lps"} <= set(self.mask):
            raise ValueError("Finding.mask must name its 'array' and 'affine_lps'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"Finding has no field(s) {sorted(unknown)}")
        return cls(**d)


@dataclass
class ClaimMatch:
    """How one (non-negated) report claim was matched: ``finding_id`` (None: no image match) and why."""

    claim_id: str
    finding_id: str | None
    resolved_by: str  # "initial", "realignment" or "unresolved"
    discordances: list[str] = field(default_factory=list)
    consistency: float | None = None

    def __post_init__(self) -> None:
        _check_id("ClaimMatch.claim_id", self.claim_id, CLAIM_ID)
        _check_id("ClaimMatch.finding_id", self.finding_id, FINDING_ID, optional=True)
        if self.resolved_by not in RESOLVED_BY:
            raise ValueError(f"ClaimMatch.resolved_by={self.resolved_by!r} not in {RESOLVED_BY}")
        _check_unit("ClaimMatch.consistency", self.consistency)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClaimMatch:
        return cls(d["claim_id"], d.get("finding_id"), d["resolved_by"], list(d.get("discordances", [])),
                   d.get("consistency"))


@dataclass
class Provenance:
    """Where a result comes from (not identifying; the model hashes are in ``CaseResult.models``).

    Attributes:
        analysis_uid: a DICOM UID of this analysis (new for every run).
        created_utc: when the analysis finished, ISO 8601 UTC (``2026-01-31T12:00:00Z``).
        lungfuse_version: the installed package version.
        input_fingerprint: SHA-256 hex of the inputs, :func:`input_fingerprint`.
        source_sop_instance_uids: the CT's SOP Instance UIDs in slice order (``CTVolume.hu`` z
            index); empty for NIfTI input and in de-identified exports.
    """

    analysis_uid: str | None = None
    created_utc: str | None = None
    lungfuse_version: str = ""
    input_fingerprint: str | None = None
    source_sop_instance_uids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_uid("Provenance.analysis_uid", self.analysis_uid)
        if self.input_fingerprint is not None and not re.fullmatch(r"[0-9a-f]{64}", self.input_fingerprint):
            raise ValueError(f"Provenance.input_fingerprint={self.input_fingerprint!r} is not a SHA-256 hex digest")
        if self.created_utc is not None and not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z",
                                                             self.created_utc):
            raise ValueError(f"Provenance.created_utc={self.created_utc!r} is not ISO 8601 UTC (...Z)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Provenance:
        return cls(**{k: d[k] for k in (f.name for f in fields(cls)) if k in d})


@dataclass
class Identifiers:
    """Identifying data of the case, kept apart so that a de-identified export can drop the block.

    Empty strings mean unknown (as in ``CTVolume``); ``ct_path`` and ``report_source`` are where
    the inputs came from (paths may name the patient).
    """

    patient_id: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    ct_path: str | None = None
    report_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"identifying": True, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Identifiers:
        return cls(**{k: d[k] for k in (f.name for f in fields(cls)) if k in d})


def input_fingerprint(series_instance_uid: str, sop_instance_uids: Sequence[str], report_text: str | None,
                      voxels: np.ndarray | None = None) -> str:
    """SHA-256 (hex) of the series UID, the SOP Instance UIDs in slice order and the report text.

    Each part is UTF-8, separated by a NUL byte; a missing report counts as empty text.  An input
    without SOP Instance UIDs (NIfTI) hashes ``voxels``' bytes in their place, so that two
    different NIfTI volumes never share a fingerprint.
    """
    h = hashlib.sha256()
    h.update(series_instance_uid.encode())
    if sop_instance_uids:
        for uid in sop_instance_uids:
            h.update(b"\0" + uid.encode())
    elif voxels is not None:
        h.update(b"\0" + hashlib.sha256(np.ascontiguousarray(voxels).tobytes()).digest())
    h.update(b"\0" + (report_text or "").encode())
    return h.hexdigest()


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a saved :class:`CaseResult`, shipped as package data."""
    from importlib.resources import files

    return json.loads(files("lungfuse.pipelines.analysis").joinpath("case_result.schema.json").read_text())


@dataclass
class CaseResult:
    """The typed, versioned result of :func:`analyze_case` (JSON via :meth:`to_dict` / :meth:`save`).

    ``arrays`` holds the heatmaps and masks (numpy arrays); it is not serialised inline:
    :meth:`save` writes them to an NPZ beside the JSON and records its name in ``arrays_file``.
    ``review`` is the reader's review from the sidecar (:mod:`.review`), None when there is none;
    it is never part of :meth:`to_dict`.
    """

    case_id: str
    status: str
    reasons: list[Reason]
    findings: list[Finding]
    claims: ClaimSet | None
    matches: list[ClaimMatch]
    eaf: dict[str, Any]
    consistency_trajectory: list[dict[str, Any]]
    consistency_threshold: float
    flags: list[Flag]
    timings_s: dict[str, float]
    models: dict[str, Any]
    device: str
    volume: dict[str, Any]
    report_present: bool
    report_text: str | None
    provenance: Provenance = field(default_factory=Provenance)
    identifiers: Identifiers | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION
    notice: str = NOTICE
    deidentified: bool = False
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    review: Review | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"CaseResult.status={self.status!r} not in {STATUSES}")
        if self.status == "discordant" and not self.reasons:
            raise ValueError("a discordant CaseResult needs at least one reason")
        if self.status == "not_assessable" and not any(r.code in NOT_ASSESSABLE_CODES for r in self.reasons):
            raise ValueError("a not_assessable CaseResult needs a reason coded "
                             f"{' / '.join(sorted(NOT_ASSESSABLE_CODES))}")
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"CaseResult.schema_version={self.schema_version!r}: this code writes {SCHEMA_VERSION}")
        for name, items, kind in (("reasons", self.reasons, Reason), ("flags", self.flags, Flag),
                                  ("findings", self.findings, Finding), ("matches", self.matches, ClaimMatch)):
            for x in items:
                if not isinstance(x, kind):
                    raise ValueError(f"CaseResult.{name} must hold {kind.__name__} objects, got {type(x).__name__}")
        fids = [f.id for f in self.findings]
        if len(set(fids)) != len(fids):
            raise ValueError(f"CaseResult.findings has repeated ids: {fids}")
        cids = {c.id for c in self.claims.nodules} if self.claims else set()
        known = set(fids) | cids
        for f in self.findings:
            if f.claim_id is not None and f.claim_id not in cids:
                raise ValueError(f"CaseResult.findings: {f.id}.claim_id={f.claim_id!r} names no claim")
        for m in self.matches:
            if m.claim_id not in cids or (m.finding_id is not None and m.finding_id not in fids):
                raise ValueError(f"CaseResult.matches: {m.claim_id} -> {m.finding_id} names an unknown id")
        for name, items in (("reasons", self.reasons), ("flags", self.flags)):
            for r in items:
                if set(r.concerns) - known:
                    raise ValueError(f"CaseResult.{name}: {sorted(set(r.concerns) - known)} name no finding or claim")
        if self.eaf.get("finding_id") is not None and self.eaf["finding_id"] not in fids:
            raise ValueError(f"CaseResult.eaf.finding_id={self.eaf['finding_id']!r} names no finding")

    # -- look-ups -------------------------------------------------------------------------------
    def finding(self, finding_id: str) -> Finding:
        """The finding with id ``finding_id`` (KeyError when there is none)."""
        for f in self.findings:
            if f.id == finding_id:
                return f
        raise KeyError(finding_id)

    def claim(self, claim_id: str) -> Claim:
        """The report claim with id ``claim_id`` (KeyError when there is none)."""
        if self.claims is None:
            raise KeyError(claim_id)
        return self.claims.by_id(claim_id)

    def reasons_with(self, code: ReasonCode | str) -> list[Reason]:
        """The reasons and flags with ``code``."""
        return [r for r in [*self.reasons, *self.flags] if r.code == code]

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self, deidentify: bool = False) -> dict[str, Any]:
        """The JSON-ready dict (schema :data:`SCHEMA_VERSION`; no arrays, no review).

        ``deidentify``: drop the :class:`Identifiers` block and the source SOP Instance UIDs, and
        replace ``case_id`` (which may be the patient ID) by ``case-`` + 16 hex digits of the input
        fingerprint.  The report text is kept: free-text de-identification is the exporter's job.
        """
        d: dict[str, Any] = {
            "schema_version": self.schema_version, "notice": self.notice, "case_id": self.case_id,
            "status": self.status, "reasons": [r.to_dict() for r in self.reasons],
            "flags": [f.to_dict() for f in self.flags], "findings": [f.to_dict() for f in self.findings],
            "claims": self.claims.to_dict() if self.claims is not None else None,
            "matches": [m.to_dict() for m in self.matches], "eaf": self.eaf,
            "consistency_trajectory": self.consistency_trajectory, "consistency_threshold": self.consistency_threshold,
            "timings_s": self.timings_s, "models": self.models, "device": self.device, "volume": self.volume,
            "report_present": self.report_present, "report_text": self.report_text, "candidates": self.candidates,
            "settings": self.settings, "provenance": self.provenance.to_dict(),
            "identifiers": self.identifiers.to_dict() if self.identifiers is not None else None,
            "deidentified": self.deidentified,
        }
        if deidentify and not self.deidentified:
            d["identifiers"] = None
            d["provenance"]["source_sop_instance_uids"] = []
            fp = self.provenance.input_fingerprint
            d["case_id"] = f"case-{fp[:16]}" if fp else "case-deidentified"
            d["deidentified"] = True
        return _jsonable(d)

    def to_json(self, indent: int | None = 2, deidentify: bool = False) -> str:
        return json.dumps(self.to_dict(deidentify=deidentify), indent=indent)

    def save(self, json_path: str | os.PathLike[str], deidentify: bool = False) -> Path:
        """Write the JSON to ``json_path`` and the arrays to ``<stem>.npz`` beside it, each atomically
        (temporary file + ``os.replace``).  The review sidecar is never written here."""
        import io

        p = Path(json_path)
        d = self.to_dict(deidentify=deidentify)
        npz = p.with_suffix(".npz")
        if self.arrays:
            d["arrays_file"] = npz.name
        text = json.dumps(d, indent=2).encode()  # first: a result that cannot be serialised writes nothing
        if self.arrays:
            buf = io.BytesIO()
            np.savez_compressed(buf, **self.arrays)  # type: ignore[arg-type]  # numpy's stub: a key could be allow_pickle
            atomic_write_bytes(npz, buf.getvalue())
        atomic_write_bytes(p, text)
        return p

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaseResult:
        """A typed result from a saved dict of schema 2.0, or 1.0 (upgraded: ids assigned in list
        order, reasons and flags coded from their sentences, tracking UIDs derived from the case)."""
        version = d.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise ValueError(f"CaseResult.schema_version={version!r}: this code reads {READABLE_VERSIONS}")
        if version == "1.0":
            from lungfuse.pipelines.analysis.legacy import upgrade_v1

            d = upgrade_v1(d)
        return cls(
            case_id=d["case_id"], status=d["status"], reasons=[Reason.from_dict(r) for r in d["reasons"]],
            findings=[Finding.from_dict(f) for f in d["findings"]],
            claims=ClaimSet.from_dict(d["claims"]) if d.get("claims") else None,
            matches=[ClaimMatch.from_dict(m) for m in d["matches"]], eaf=d["eaf"],
            consistency_trajectory=d["consistency_trajectory"], consistency_threshold=d["consistency_threshold"],
            flags=[Flag.from_dict(f) for f in d["flags"]], timings_s=d["timings_s"], models=d["models"],
            device=d["device"], volume=d["volume"], report_present=d["report_present"], report_text=d["report_text"],
            provenance=Provenance.from_dict(d.get("provenance") or {}),
            identifiers=Identifiers.from_dict(d["identifiers"]) if d.get("identifiers") else None,
            candidates=d.get("candidates", []), settings=d.get("settings", {}), notice=d.get("notice", NOTICE),
            deidentified=bool(d.get("deidentified", False)),
        )

    @classmethod
    def load(cls, json_path: str | os.PathLike[str], arrays: bool = True, review: bool = True) -> CaseResult:
        """A saved result (schema 2.0 or 1.0) with its arrays (``arrays``) and the review sidecar
        beside it merged in (``review``; see :func:`.review.review_path`)."""
        p = Path(json_path)
        d = json.loads(p.read_text())
        r = cls.from_dict(d)
        if arrays:
            r.arrays = cls.load_arrays(p)
        if review and review_path(p).is_file():
            r.review = Review.load(review_path(p))
        return r

    @staticmethod
    def load_arrays(json_path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
        """The heatmap and mask arrays saved beside a result JSON."""
        p = Path(json_path)
        d = json.loads(p.read_text())
        name = d.get("arrays_file")
        if not name:
            return {}
        with np.load(p.parent / name) as z:
            return {k: z[k] for k in z.files}


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, StrEnum):
        return o.value
    if isinstance(o, float | np.floating):
        f = float(o)
        return f if math.isfinite(f) else None
    return o
