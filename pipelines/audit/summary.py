"""The audit summary: the priority score, ``summary.csv`` and the self-contained ``summary.html``.

Research software, NOT for diagnostic use.

**Audit priority** (:func:`priority_score`; higher = look first).  Each coded reason of a case adds
``weight(code) x severity factor``; the reasons about a nodule the report misses or plays down
also add its size and malignancy:

* weights (:data:`REASON_WEIGHTS`): ``missed_nodule`` and ``negative_report_with_finding`` 40,
  ``benign_wording`` 30, ``claim_not_found`` 30, ``side`` 25, ``size`` 15, ``lobe`` 12,
  ``calcification`` 10, ``texture`` 8, ``low_detection_score`` 8, ``low_consistency`` 5, the
  not-assessable codes 3, any other code 5;
* severity factors (:data:`SEVERITY_FACTOR`): ``critical`` 2 (the report denies what the image
  shows), ``discordance`` 1, ``warning`` 0.5, ``info`` 0;
* for ``missed_nodule``, ``negative_report_with_finding`` and ``benign_wording``: + 20 x
  min(long axis, 30 mm) / 30 mm + 20 x the finding's malignancy probability (largest concerned finding);
* ``unmentioned_finding`` flags (a >= 6 mm finding below the missed-nodule threshold): 3 each,
  at most 9.

A concordant case without flags scores 0; one critical 15 mm missed nodule of probability 0.9
scores 80 + 10 + 18 = 108.  Error cases have no score and are listed after the scored ones.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lungfuse.pipelines.analysis.atomic import atomic_write_bytes
from lungfuse.pipelines.analysis.codes import NOT_ASSESSABLE_CODES
from lungfuse.pipelines.analysis.result import NOTICE

if TYPE_CHECKING:
    from lungfuse.pipelines.audit.inputs import AuditCase

__all__ = ["REASON_WEIGHTS", "SEVERITY_FACTOR", "SUMMARY_COLUMNS", "priority_score", "ranked", "write_summary"]

REASON_WEIGHTS: dict[str, float] = {
    "missed_nodule": 40, "negative_report_with_finding": 40, "benign_wording": 30, "claim_not_found": 30,
    "side": 25, "size": 15, "lobe": 12, "calcification": 10, "texture": 8, "low_detection_score": 8,
    "low_consistency": 5, **{c: 3 for c in NOT_ASSESSABLE_CODES},
}
SEVERITY_FACTOR = {"critical": 2.0, "discordance": 1.0, "warning": 0.5, "info": 0.0}
_NODULE_CODES = frozenset({"missed_nodule", "negative_report_with_finding", "benign_wording"})
_OTHER_WEIGHT, _FLAG_WEIGHT, _FLAG_CAP = 5.0, 3.0, 9.0

SUMMARY_COLUMNS = ("rank", "case_id", "state", "status", "priority", "reasons", "n_findings", "n_claims",
                   "report_present", "top_finding", "top_long_axis_mm", "top_side", "top_lobe",
                   "top_malignancy_probability", "max_malignancy_probability", "error_code", "error_message",
                   "attempts", "analysis_s", "wall_s", "result_json", "report_pdf", "input_fingerprint")
STATUS_ORDER = ("concordant", "realigned", "discordant", "not_assessable", "error")


def priority_score(status: str, reasons: Sequence[dict[str, Any]], summary: dict[str, Any]) -> float:
    """The audit priority of a case from its coded reasons (dicts: code, severity, concerns) and
    the summary of :func:`~.worker.run_job` (findings' sizes and probabilities, flags)."""
    findings = summary.get("findings") or {}
    score = 0.0
    for r in reasons:
        code, sev = str(r.get("code")), str(r.get("severity"))
        score += REASON_WEIGHTS.get(code, _OTHER_WEIGHT) * SEVERITY_FACTOR.get(sev, 1.0)
        if code in _NODULE_CODES:
            concerned = [findings[c] for c in r.get("concerns", ()) if c in findings]
            if concerned:
                f = max(concerned, key=lambda x: x.get("diameter_mm") or 0.0)
                score += 20.0 * min(float(f.get("diameter_mm") or 0.0), 30.0) / 30.0
                score += 20.0 * float(f.get("malignancy_probability") or 0.0)
    n_flags = int(summary.get("n_unmentioned", 0) or 0)
    score += min(_FLAG_WEIGHT * n_flags, _FLAG_CAP)
    return round(score, 1)


def ranked(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ledger rows by audit priority (highest first; ties by case id), errors and unfinished last."""
    return sorted(rows, key=lambda r: (r["state"] != "done", -(r["priority"] or 0.0), r["case_id"]))


def _kind(r: dict[str, Any]) -> str:
    return str(r["status"]) if r["state"] == "done" else str(r["state"])


def _case_files(out: Path, r: dict[str, Any]) -> tuple[str | None, str | None]:
    """(result.json, report.pdf) relative to ``out`` when they exist."""
    d = out / "cases" / r["case_id"]
    if r["state"] != "done":
        return None, None
    j = f"cases/{r['case_id']}/result.json" if (d / "result.json").is_file() else None
    p = f"cases/{r['case_id']}/report.pdf" if (d / "report.pdf").is_file() else None
    return j, p


def _csv_row(out: Path, rank: int, r: dict[str, Any]) -> dict[str, Any]:
    s = r.get("summary") or {}
    top = s.get("top_finding") or {}
    timings = r.get("timings") or {}
    j, p = _case_files(out, r)
    return {
        "rank": rank, "case_id": r["case_id"], "state": r["state"], "status": r["status"] or "",
        "priority": "" if r["priority"] is None else r["priority"],
        "reasons": ";".join(f"{x['code']}:{x['severity']}" for x in r.get("reasons") or []),
        "n_findings": s.get("n_findings", ""), "n_claims": s.get("n_claims", ""),
        "report_present": "" if not s else int(bool(s.get("report_present"))),
        "top_finding": top.get("id", ""), "top_long_axis_mm": top.get("diameter_mm", ""),
        "top_side": top.get("side") or "", "top_lobe": top.get("lobe") or "",
        "top_malignancy_probability": "" if top.get("malignancy_probability") is None else top["malignancy_probability"],
        "max_malignancy_probability": "" if s.get("max_malignancy") is None else s["max_malignancy"],
        "error_code": r["error_code"] or "", "error_message": r["error_message"] or "", "attempts": r["attempts"],
        "analysis_s": timings.get("analysis", ""), "wall_s": timings.get("worker_wall", ""),
        "result_json": j or "", "report_pdf": p or "", "input_fingerprint": r["input_fingerprint"] or "",
    }


def write_summary(out: str | os.PathLike[str], cases: Sequence[AuditCase], rows: Sequence[dict[str, Any]]) -> None:
    """``out/summary.csv`` and ``out/summary.html`` for ``cases`` (their ledger ``rows``), atomically."""
    outp = Path(out)
    by_id = {r["case_id"]: r for r in rows}
    order = ranked([by_id[c.case_id] for c in cases if c.case_id in by_id])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for i, r in enumerate(order, start=1):
        w.writerow(_csv_row(outp, i, r))
    atomic_write_bytes(outp / "summary.csv", buf.getvalue().encode())
    atomic_write_bytes(outp / "summary.html", render_html(outp, order).encode())


# -- the dashboard ---------------------------------------------------------------------------------
_CSS = """
:root{--bg:#f6f7f9;--card:#fff;--ink:#1d2430;--muted:#667085;--line:#e4e7ec;--conc:#1a7f37;--real:#0969da;
--disc:#cf222e;--na:#9a6700;--err:#6e40c9}
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:var(--bg);color:var(--ink)}header{background:#101828;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px}header p{margin:4px 0 0;color:#d0d5dd;font-size:12px}
main{padding:16px 24px}.counts{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:14px}
.count{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 16px;min-width:130px;
border-top:4px solid var(--muted);cursor:pointer}.count b{display:block;font-size:24px}
.count span{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.count.concordant{border-top-color:var(--conc)}.count.realigned{border-top-color:var(--real)}
.count.discordant{border-top-color:var(--disc)}.count.not_assessable{border-top-color:var(--na)}
.count.error{border-top-color:var(--err)}.filters{display:flex;gap:12px;align-items:center;margin:8px 0 12px}
.filters label{color:var(--muted);font-size:12px}select,input{font:inherit;padding:4px 8px;border:1px solid var(--line);
border-radius:6px;background:#fff}table{width:100%;border-collapse:collapse;background:var(--card);
border:1px solid var(--line);border-radius:8px;overflow:hidden}th,td{padding:8px 10px;border-bottom:1px solid var(--line);
text-align:left;vertical-align:top}th{background:#f2f4f7;font-size:12px;text-transform:uppercase;letter-spacing:.04em;
color:#475467;cursor:pointer;user-select:none;white-space:nowrap}th.sorted-asc:after{content:" \\25B2"}
th.sorted-desc:after{content:" \\25BC"}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.badge.concordant{background:var(--conc)}.badge.realigned{background:var(--real)}.badge.discordant{background:var(--disc)}
.badge.not_assessable{background:var(--na)}.badge.error,.badge.pending,.badge.running{background:var(--err)}
.reason{display:block;margin-bottom:4px}.code{font-family:ui-monospace,Menlo,monospace;font-size:12px;
background:#f2f4f7;border-radius:4px;padding:1px 5px}.sev-critical{color:var(--disc);font-weight:700}
.sev-discordance{color:var(--disc)}.sev-warning{color:var(--na)}.muted{color:var(--muted);font-size:12px}
img.thumb{width:128px;height:128px;border-radius:6px;background:#000;display:block}
.nothumb{width:128px;height:128px;border-radius:6px;background:#eaecf0;display:flex;align-items:center;
justify-content:center;color:var(--muted);font-size:11px}a{color:var(--real);white-space:nowrap}
td.case b{white-space:nowrap}footer{padding:12px 24px;color:var(--muted);
font-size:12px}
"""

_JS = """
(function(){
var table=document.getElementById('cases'),tbody=table.tBodies[0];
var st=document.getElementById('f-status'),rs=document.getElementById('f-reason'),q=document.getElementById('f-text');
function apply(){var s=st.value,r=rs.value,t=q.value.toLowerCase(),n=0;
 Array.prototype.forEach.call(tbody.rows,function(tr){
  var ok=(!s||tr.dataset.status===s)&&(!r||(' '+tr.dataset.reasons+' ').indexOf(' '+r+' ')>=0)&&
   (!t||tr.textContent.toLowerCase().indexOf(t)>=0);tr.style.display=ok?'':'none';if(ok)n++;});
 document.getElementById('shown').textContent=n;}
[st,rs].forEach(function(e){e.addEventListener('change',apply);});q.addEventListener('input',apply);
Array.prototype.forEach.call(document.querySelectorAll('.count'),function(c){c.addEventListener('click',function(){
 st.value=(st.value===c.dataset.status)?'':c.dataset.status;apply();});});
Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){if(!th.dataset.type)return;
 th.addEventListener('click',function(){var asc=!th.classList.contains('sorted-asc');
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.classList.remove('sorted-asc','sorted-desc');});
  th.classList.add(asc?'sorted-asc':'sorted-desc');var num=th.dataset.type==='num';
  var rows=Array.prototype.slice.call(tbody.rows);rows.sort(function(a,b){
   var x=a.cells[i].dataset.v,y=b.cells[i].dataset.v;if(num){x=parseFloat(x);y=parseFloat(y);
    x=isNaN(x)?-1e9:x;y=isNaN(y)?-1e9:y;return asc?x-y:y-x;}return asc?x.localeCompare(y):y.localeCompare(x);});
  rows.forEach(function(tr){tbody.appendChild(tr);});});});
apply();document.body.setAttribute('data-ready','1');})();
"""


def _thumb(out: Path, r: dict[str, Any]) -> str:
    p = out / "cases" / r["case_id"] / "thumb.png"
    if r["state"] == "done" and p.is_file():
        data = base64.b64encode(p.read_bytes()).decode()
        top = (r.get("summary") or {}).get("top_finding") or {}
        alt = html.escape(f"{r['case_id']} {top.get('id', '')}")
        return f'<img class="thumb" alt="{alt}" src="data:image/png;base64,{data}">'
    return '<div class="nothumb">no finding</div>' if r["state"] == "done" else '<span class="muted">—</span>'


def _reasons_html(r: dict[str, Any]) -> str:
    if r["state"] != "done":
        code = html.escape(r["error_code"] or r["state"])
        return f'<span class="reason"><span class="code">{code}</span> {html.escape(r["error_message"] or "")}</span>'
    items = r.get("reasons") or []
    if not items:
        flags = (r.get("summary") or {}).get("flags") or []
        n = (r.get("summary") or {}).get("n_unmentioned") or 0
        what = [f"{n} unmentioned finding(s) below the missed-nodule threshold" if n else "",
                *(f.replace("_", " ") for f in flags if f not in ("unmentioned_finding", "report_missing"))]
        extra = "; ".join(w for w in what if w)
        tail = f'<span class="muted">{html.escape(extra)}</span>' if extra else ""
        return '<span class="reason">no discordance</span>' + tail
    return "".join(f'<span class="reason"><span class="code">{html.escape(x["code"])}</span> '
                   f'<span class="sev-{html.escape(x["severity"])}">{html.escape(x["severity"])}</span> '
                   f'<span class="muted">{html.escape(x["text"])}</span></span>' for x in items)


def _td(content: str, v: Any, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<td{c} data-v="{html.escape(str(v))}">{content}</td>'


def _top_html(top: dict[str, Any]) -> str:
    if not top:
        return '<span class="muted">—</span>'
    where = html.escape(str(top.get("lobe") or top.get("side") or ""))
    txt = f'{html.escape(top["id"])} · {top["diameter_mm"]:.0f} mm · {where}'
    if top.get("malignancy_probability") is not None:
        txt += f'<br><span class="muted">p(malignant) {top["malignancy_probability"]:.2f}</span>'
    return txt


def _row_html(out: Path, rank: int, r: dict[str, Any]) -> str:
    """One table row; ``data-v`` of each cell is its sort key, ``data-status``/``data-reasons`` feed the filters."""
    kind = _kind(r)
    s = r.get("summary") or {}
    top = s.get("top_finding") or {}
    j, p = _case_files(out, r)
    links = [f'<a href="{html.escape(x)}">{name}</a>' for x, name in ((j, "result JSON"), (p, "PDF")) if x]
    codes = {x["code"] for x in (r.get("reasons") or [])} | ({r["error_code"]} if r["error_code"] else set())
    rcodes = " ".join(sorted(codes))
    case = f'<b>{html.escape(r["case_id"])}</b>'
    if s:
        case += (f'<br><span class="muted">{s.get("n_findings", "—")} finding(s), '
                 f'{"report" if s.get("report_present") else "no report"}</span>')
    prio = r["priority"]
    order_key = STATUS_ORDER.index(kind) if kind in STATUS_ORDER else 9
    return (f'<tr data-status="{kind}" data-reasons="{html.escape(rcodes)}" data-case="{html.escape(r["case_id"])}">'
            + _td(str(rank), rank, "num") + _td(case, r["case_id"], "case")
            + _td(f'<span class="badge {kind}">{kind.replace("_", " ")}</span>', order_key)
            + _td("—" if prio is None else f"{prio:g}", "" if prio is None else prio, "num")
            + _td(_reasons_html(r), rcodes) + _td(_thumb(out, r), top.get("id", ""))
            + _td(_top_html(top), top.get("diameter_mm", "")) + _td(" · ".join(links) or "—", j or "") + "</tr>")


def render_html(out: Path, order: Sequence[dict[str, Any]]) -> str:
    """The dashboard page: self-contained (inline CSS and JS, thumbnails as base64 PNG, no network)."""
    counts = {k: sum(1 for r in order if _kind(r) == k) for k in STATUS_ORDER}
    others = {k: n for k in ("pending", "running") if (n := sum(1 for r in order if _kind(r) == k))}
    codes = sorted({x["code"] for r in order for x in (r.get("reasons") or [])}
                   | {r["error_code"] for r in order if r["error_code"]})
    cards = "".join(f'<div class="count {k}" data-status="{k}"><b>{counts[k]}</b><span>{k.replace("_", " ")}</span></div>'
                    for k in STATUS_ORDER)
    cards += "".join(f'<div class="count {k}" data-status="{k}"><b>{n}</b><span>{k}</span></div>' for k, n in others.items())
    status_opts = "".join(f'<option value="{k}">{k.replace("_", " ")}</option>' for k in (*STATUS_ORDER, *others))
    reason_opts = "".join(f'<option value="{html.escape(c)}">{html.escape(c)}</option>' for c in codes)
    body = "".join(_row_html(out, i, r) for i, r in enumerate(order, start=1))
    n = len(order)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>LungFuse audit — {n} case(s)</title><style>{_CSS}</style></head>
<body><header><h1>LungFuse batch audit</h1><p>{html.escape(NOTICE)}</p></header>
<main><div class="counts">{cards}</div>
<div class="filters"><label>Status <select id="f-status"><option value="">all</option>{status_opts}</select></label>
<label>Reason <select id="f-reason"><option value="">all</option>{reason_opts}</select></label>
<label>Search <input id="f-text" type="search" placeholder="case, finding, text"></label>
<span class="muted"><span id="shown">{n}</span> of {n} case(s), ranked by audit priority (click a column to sort)</span></div>
<table id="cases"><thead><tr><th data-type="num">#</th><th data-type="text">Case</th><th data-type="num">Status</th>
<th data-type="num">Priority</th><th data-type="text">Coded reasons</th><th>Top finding</th>
<th data-type="num">Size</th><th>Files</th></tr></thead>
<tbody>{body}</tbody></table></main>
<footer>Priority: weighted coded reasons (missed nodule, claim not found, side/size/lobe mismatch, benign wording of a
probably malignant finding), plus the missed finding's size and malignancy; see docs/audit.md. Sizes are long axes (mm).
{html.escape(NOTICE)}</footer>
<script>{_JS}</script></body></html>
"""


def load_summary_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a ``summary.csv`` (strings), for tests and tools."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))

