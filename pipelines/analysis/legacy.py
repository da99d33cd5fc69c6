"""Reading results saved with schema 1.0: :func:`upgrade_v1` turns such a dict into a 2.0 one.

Research software, NOT for diagnostic use.

Schema 1.0 named findings and claims by list position and wrote reasons and flags as sentences
only.  The upgrade assigns the 2.0 ids in list order (finding ``index`` 0 -> ``F1``; claim 0 ->
``C1``), codes each reason and flag from its sentence, derives each finding's tracking UID from
the case (series UID, case id and position in the list, so that loading twice gives the same
UID), and moves the identifying fields of ``volume`` to ``identifiers``.  What 1.0 did not record
(analysis UID, time, fingerprint, SOP Instance UIDs, masks) stays empty.
"""

from __future__ import annotations

import copy
from typing import Any

from lungfuse.pipelines.analysis.codes import ReasonCode
from lungfuse.pipelines.analysis.wording import discordance_code

__all__ = ["upgrade_v1"]

#: 1.0 flag sentences open with ``name:``; the code of each name (``ingest_*``: any ingest warning).
_FLAG_CODES = {"report_missing": ReasonCode.REPORT_MISSING, "report_empty": ReasonCode.REPORT_EMPTY,
               "no_lungs": ReasonCode.NO_LUNGS, "image_cache": ReasonCode.IMAGE_CACHE,
               "claim_unmatched": ReasonCode.CLAIM_UNMATCHED, "claim_attributed": ReasonCode.CLAIM_ATTRIBUTED,
               "unmentioned_finding": ReasonCode.UNMENTIONED_FINDING}
_IDENTIFYING_VOLUME_KEYS = ("patient_id", "study_instance_uid", "series_instance_uid", "frame_of_reference_uid")


def _fid(i: int | None) -> str | None:
    return None if i is None else f"F{int(i) + 1}"


def _cid(i: int | None) -> str | None:
    return None if i is None else f"C{int(i) + 1}"


def flag_code(sentence: str) -> ReasonCode:
    """The code of a 1.0 flag sentence (ValueError for a name 1.0 never wrote)."""
    name = sentence.split(":", 1)[0]
    if name.startswith("ingest_"):
        return ReasonCode.INGEST_WARNING
    if name not in _FLAG_CODES:
        raise ValueError(f"no reason code for the schema 1.0 flag {sentence!r}")
    return _FLAG_CODES[name]


def reason_code(sentence: str) -> ReasonCode:
    """The code of a 1.0 reason sentence: ``'<claim text>': <discordance>`` or the negative-report one."""
    if sentence.startswith("the report states there are no nodules") or sentence.startswith("the report describes no"):
        return ReasonCode.NEGATIVE_REPORT_WITH_FINDING
    cut = sentence.rfind("': ")
    if sentence.startswith("'") and cut > 0:
        return discordance_code(sentence[cut + 3 :])
    raise ValueError(f"no reason code for the schema 1.0 reason {sentence!r}")


def _ids_in_trajectory(o: Any) -> Any:
    """``claim_index``/``finding_index`` keys (at any depth) replaced by ``claim_id``/``finding_id``."""
    if isinstance(o, list):
        return [_ids_in_trajectory(v) for v in o]
    if not isinstance(o, dict):
        return o
    out = {}
    for k, v in o.items():
        if k == "claim_index":
            out["claim_id"] = _cid(v)
        elif k == "finding_index":
            out["finding_id"] = _fid(v)
        else:
            out[k] = _ids_in_trajectory(v)
    return out


def upgrade_v1(d: dict[str, Any]) -> dict[str, Any]:
    """A schema 2.0 dict from a 1.0 one (``d`` is not changed)."""
    from pydicom.uid import generate_uid

    d = copy.deepcopy(d)
    volume = d.get("volume", {})
    identifiers = {k: volume.pop(k, "") or "" for k in _IDENTIFYING_VOLUME_KEYS}
    identifiers["ct_path"] = volume.pop("path", None)
    identifiers["report_source"] = volume.pop("report_source", None)
    claims = d.get("claims") or {}
    nodules = [{"id": _cid(i), **n} for i, n in enumerate(claims.get("nodules", []))]
    claim_of_text = {str(n.get("text", "")).strip(): n["id"] for n in nodules}
    findings = []
    for f in d.get("findings", []):
        i = f.pop("index")
        f["id"] = _fid(i)
        f["claim_id"] = _cid(f.pop("claim_index", None))
        f["tracking_uid"] = str(generate_uid(entropy_srcs=["lungfuse v1 finding", identifiers["series_instance_uid"],
                                                           str(d.get("case_id")), str(i)]))
        f.setdefault("mask", None)
        findings.append(f)

    def reason(text: str) -> dict[str, Any]:
        code = reason_code(text)
        concerns = []
        if text.startswith("'"):
            cid = claim_of_text.get(text[1 : text.rfind("': ")].strip())
            if cid:
                concerns.append(cid)
        return {"code": code.value, "text": text, "concerns": concerns}

    eaf = d.get("eaf", {})
    if "finding_index" in eaf:
        eaf["finding_id"] = _fid(eaf.pop("finding_index"))
    return {
        **{k: v for k, v in d.items() if k not in ("findings", "reasons", "flags", "matches", "claims",
                                                   "consistency_trajectory", "eaf", "lungfuse_version", "arrays_file")},
        "schema_version": "2.0",
        "findings": findings,
        "reasons": [reason(r) for r in d.get("reasons", [])],
        "flags": [{"code": flag_code(f).value, "text": f, "concerns": []} for f in d.get("flags", [])],
        "matches": [{"claim_id": _cid(m["claim_index"]), "finding_id": _fid(m.get("finding_index")),
                     "resolved_by": m["resolved_by"], "discordances": m.get("discordances", []),
                     "consistency": m.get("consistency")} for m in d.get("matches", [])],
        "claims": ({"completeness": claims.get("completeness", 0.0),
                    "negative_statement": claims.get("negative_statement", False),
                    "lung_rads": claims.get("lung_rads"), "impression": claims.get("impression"), "nodules": nodules}
                   if claims else None),
        "consistency_trajectory": _ids_in_trajectory(d.get("consistency_trajectory", [])),
        "eaf": eaf,
        "volume": volume,
        "identifiers": identifiers,
        "provenance": {"lungfuse_version": d.get("lungfuse_version", "")},
    }
