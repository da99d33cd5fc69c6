"""The JSON (full CaseResult v2) and the findings CSV (one row per finding, review decisions included).

Research software, NOT for diagnostic use.  Sizes in mm, volumes in mm3, centres LPS mm (x, y, z).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

from lungfuse.pipelines.analysis.result import CaseResult

__all__ = ["CSV_COLUMNS", "result_json", "review_json", "findings_csv"]

CSV_COLUMNS = ("case_id", "finding_id", "source", "tracking_uid", "x_lps_mm", "y_lps_mm", "z_lps_mm", "side", "lobe",
               "long_axis_mm", "short_axis_mm", "mean_diameter_mm", "volume_mm3", "texture", "calcified",
               "malignancy_probability", "lung_rads", "claim_id", "review_decision", "review_category",
               "review_comment")


Scrub = Callable[[str], str]
#: the keys of a result dict that hold report text (free text: they can name the patient)
REPORT_TEXT_KEYS = frozenset({"report_text", "impression", "text", "word", "comment"})


def _scrubbed(o: Any, scrub: Scrub, key: str = "") -> Any:
    """``o`` with every string under a :data:`REPORT_TEXT_KEYS` key passed through ``scrub``."""
    if isinstance(o, dict):
        return {k: _scrubbed(v, scrub, k) for k, v in o.items()}
    if isinstance(o, list):
        return [_scrubbed(v, scrub, key) for v in o]
    if isinstance(o, str) and key in REPORT_TEXT_KEYS:
        return scrub(o)
    return o


def result_json(result: CaseResult, deidentify: bool = False, case_id: str | None = None,
                scrub: Scrub | None = None) -> bytes:
    """The CaseResult v2 JSON (``to_dict(deidentify=...)``), UTF-8; ``case_id`` replaces the case
    id (the export's pseudonym with ``deidentify``).  The review goes to its own sidecar
    (:func:`review_json`), as beside any saved result, so the JSON stays schema-valid.
    ``scrub``: applied to the report's free text wherever the result quotes it (the report,
    claim mentions, phrases, attributed words; :func:`~.deid_text.scrub_text` when de-identified)."""
    d = result.to_dict(deidentify=deidentify)
    if case_id is not None:
        d["case_id"] = case_id
    if scrub is not None:
        d = _scrubbed(d, scrub)
    return (json.dumps(d, indent=2) + "\n").encode()


def review_json(result: CaseResult, deidentify: bool = False, scrub: Scrub | None = None) -> bytes | None:
    """The reader's review sidecar (``<stem>.review.json``) of the export, None without a review.

    With ``deidentify`` the reader's name is replaced (PS3.15 removes operators' and physicians'
    names too) and the review time removed; ``scrub`` is applied to the reader's comments.
    """
    if result.review is None:
        return None
    rv = result.review.to_dict()
    if deidentify:
        rv["reviewer"] = "(removed)"
        rv["reviewed_utc"] = None
    if scrub is not None:
        rv = _scrubbed(rv, scrub)
    return (json.dumps(rv, indent=2) + "\n").encode()


def findings_csv(result: CaseResult, case_id: str | None = None, scrub: Scrub | None = None) -> bytes:
    """One row per machine finding, then one per reader-added finding (``source`` = ``reader``);
    ``scrub`` is applied to the reader's comments."""
    cid = case_id or result.case_id
    sc: Scrub = scrub or str
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    rv = result.review
    for f in result.findings:
        fr = rv.for_finding(f) if rv is not None else None
        row: dict[str, Any] = {
            "case_id": cid, "finding_id": f.id, "source": f.source, "tracking_uid": f.tracking_uid,
            "x_lps_mm": round(f.center_lps_mm[0], 2), "y_lps_mm": round(f.center_lps_mm[1], 2),
            "z_lps_mm": round(f.center_lps_mm[2], 2), "side": f.side or "", "lobe": f.lobe or "",
            "long_axis_mm": round(f.diameter_mm, 2), "short_axis_mm": round(float(f.measurement.get("short_axis_mm", 0.0)), 2),
            "mean_diameter_mm": round(f.mean_diameter_mm, 2), "volume_mm3": round(f.volume_mm3, 1), "texture": f.texture,
            "calcified": f.calcified, "malignancy_probability": "" if f.malignancy_probability is None
            else round(f.malignancy_probability, 4), "lung_rads": f.lung_rads or "", "claim_id": f.claim_id or "",
            "review_decision": (fr.decision or "") if fr else "", "review_category": (fr.category or "") if fr else "",
            "review_comment": sc(fr.comment) if fr else "",
        }
        w.writerow(row)
    for r in rv.added_findings if rv is not None else []:
        w.writerow({"case_id": cid, "finding_id": r.id, "source": "reader", "tracking_uid": r.tracking_uid or "",
                    "x_lps_mm": round(r.center_lps_mm[0], 2), "y_lps_mm": round(r.center_lps_mm[1], 2),
                    "z_lps_mm": round(r.center_lps_mm[2], 2), "long_axis_mm": r.diameter_mm if r.diameter_mm is not None else "",
                    "review_category": r.category or "", "review_comment": sc(r.comment)})
    return buf.getvalue().encode()
