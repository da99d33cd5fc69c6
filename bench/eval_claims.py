"""Score the report-claims parser (and a naive regex baseline) on an annotated JSONL set.

Research software, NOT for diagnostic use.

Input: one JSON object per line::

    {"id": "...", "text": "<report>", "negative": bool,
     "nodules": [{"size_mm": float|null, "lobe": "RUL"|...|null, "side": "right"|"left"|"bilateral"|null}]}

Annotation conventions (tests/data/reports_dev.jsonl): one entry per pulmonary nodule
described on the current exam (calcified granulomas, lung masses and "possible" nodules
included; negated, resolved, thyroid/adrenal/breast/liver nodules and lymph nodes
excluded); a plural mention without individual measurements ("few bibasilar nodules up
to 3 mm", "three nodules in the right lung") is one entry (the group); "the largest ..."
of a group is an entry of its own besides the group entry ("multiple bilateral nodules,
the largest 14 mm in the LLL" -> {14, null, bilateral} and {14, LLL, left}); bounded
sizes ("sub-5 mm", "up to 3 mm", "2-3 mm") are annotated with the upper figure, sizes in
mm of the largest current dimension, null when not stated.  ``negative`` = the report
states there are no nodules and describes none.

Metrics (for the parser and for the baseline):

* ``presence_accuracy``: report has >= 1 positive nodule, predicted vs annotated.
* ``negative_accuracy``: ``negative_statement`` vs annotated ``negative`` (parser only).
* ``recall`` / ``precision`` / ``f1``: greedy one-to-one matching of predicted positive
  claims to annotated nodules; a pair is compatible when lobes agree (if both given),
  else sides agree (if both given, "bilateral" agreeing with any side), and sizes are
  within 1 mm or 20 % (if both given).  Pairs are taken best-first (exact lobe, then
  size closeness).
* ``size_accuracy`` / ``lobe_accuracy``: over matched pairs, exact agreement (sizes
  within 0.5 mm; null only agrees with null).

Usage::

    python bench/eval_claims.py tests/data/reports_dev.jsonl --json bench/results/claims_dev.json
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The package must be installed (`make venv` installs it editable): its modules import
# each other as lungfuse.*, so a bare checkout on sys.path cannot stand in for it.
from lungfuse.pipelines.nlp.claims import extract_claims

__all__ = ["Mention", "baseline_mentions", "evaluate", "load_jsonl", "main", "match_mentions", "parser_mentions"]

_LOBE_SIDE = {"RUL": "right", "RML": "right", "RLL": "right", "LUL": "left", "LLL": "left", "lingula": "left"}


@dataclass(frozen=True)
class Mention:
    """A positive nodule mention: size in mm, lobe and side (any may be None)."""

    size_mm: float | None
    lobe: str | None
    side: str | None


# ---------------------------------------------------------------------------
# Predictors
# ---------------------------------------------------------------------------
def parser_mentions(text: str) -> tuple[list[Mention], bool]:
    """Positive claims of :func:`extract_claims` and its ``negative_statement``."""
    claims = extract_claims(text)
    return [Mention(n.size_mm, n.lobe, n.side) for n in claims.positive_nodules], claims.negative_statement


# The baseline is deliberately simple: naive sentence split, the word "nodule(s)",
# a negation word anywhere in the sentence, the first number+unit, the first lobe.
_BASE_SENT_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_BASE_NODULE_RE = re.compile(r"\bnodules?\b", re.IGNORECASE)
_BASE_NEG_RE = re.compile(r"\b(?:no|without|negative\s+for|free\s+of)\b", re.IGNORECASE)
_BASE_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(mm|cm)\b", re.IGNORECASE)
_BASE_LOBE_RE = re.compile(
    r"\b(RUL|RML|RLL|LUL|LLL|right upper lobe|right middle lobe|right lower lobe|left upper lobe|left lower lobe|lingula)\b",
    re.IGNORECASE,
)
_BASE_LOBE_NAMES = {
    "right upper lobe": "RUL", "right middle lobe": "RML", "right lower lobe": "RLL",
    "left upper lobe": "LUL", "left lower lobe": "LLL", "lingula": "lingula",
}


def baseline_mentions(text: str) -> tuple[list[Mention], bool]:
    """Sentence-level regex baseline: one mention per sentence containing "nodule" and
    no negation word; size = first number+mm/cm; lobe = first lobe name/abbreviation."""
    out: list[Mention] = []
    negative = False
    for sent in _BASE_SENT_RE.split(text):
        if not _BASE_NODULE_RE.search(sent):
            continue
        if _BASE_NEG_RE.search(sent):
            negative = True
            continue
        size = None
        m = _BASE_SIZE_RE.search(sent)
        if m:
            size = float(m.group(1)) * (10.0 if m.group(2).lower() == "cm" else 1.0)
        lobe = None
        m = _BASE_LOBE_RE.search(sent)
        if m:
            word = m.group(1)
            lobe = word.upper() if len(word) == 3 else _BASE_LOBE_NAMES[word.lower()]
        out.append(Mention(size, lobe, _LOBE_SIDE.get(lobe) if lobe else None))
    return out, negative and not out


# ---------------------------------------------------------------------------
# Matching and metrics
# ---------------------------------------------------------------------------
def _size_ok(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return True
    return abs(a - b) <= max(1.0, 0.2 * max(a, b))


def _compatible(pred: Mention, gold: Mention) -> bool:
    if pred.lobe and gold.lobe:
        if pred.lobe != gold.lobe:
            return False
    elif pred.side and gold.side and "bilateral" not in (pred.side, gold.side) and pred.side != gold.side:
        return False
    return _size_ok(pred.size_mm, gold.size_mm)


def _pair_score(pred: Mention, gold: Mention) -> float:
    score = 0.0
    if pred.lobe and pred.lobe == gold.lobe:
        score += 4
    if pred.side and pred.side == gold.side:
        score += 1
    if pred.size_mm is not None and gold.size_mm is not None:
        score += 3 - min(3.0, abs(pred.size_mm - gold.size_mm))
    return score


def match_mentions(pred: Sequence[Mention], gold: Sequence[Mention]) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of compatible (pred, gold) pairs, best score first."""
    pairs = [
        (_pair_score(p, g), i, j)
        for i, p in enumerate(pred)
        for j, g in enumerate(gold)
        if _compatible(p, g)
    ]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    used_p: set[int] = set()
    used_g: set[int] = set()
    out = []
    for _, i, j in pairs:
        if i in used_p or j in used_g:
            continue
        used_p.add(i)
        used_g.add(j)
        out.append((i, j))
    return out


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 1.0


def evaluate(
    records: Iterable[dict[str, Any]], predictor: Callable[[str], tuple[list[Mention], bool]]
) -> dict[str, Any]:
    """Score ``predictor`` on annotated records; returns metrics and per-report errors."""
    n_reports = presence_ok = negative_ok = 0
    n_pred = n_gold = n_match = size_ok = lobe_ok = 0
    errors: list[dict[str, Any]] = []
    for rec in records:
        gold = [Mention(g.get("size_mm"), g.get("lobe"), g.get("side")) for g in rec.get("nodules", [])]
        pred, negative = predictor(rec["text"])
        n_reports += 1
        presence_ok += (len(pred) > 0) == (len(gold) > 0)
        negative_ok += bool(negative) == bool(rec.get("negative", False))
        pairs = match_mentions(pred, gold)
        n_pred += len(pred)
        n_gold += len(gold)
        n_match += len(pairs)
        report_errors = []
        for i, j in pairs:
            p, g = pred[i], gold[j]
            s_ok = (p.size_mm is None and g.size_mm is None) or (
                p.size_mm is not None and g.size_mm is not None and abs(p.size_mm - g.size_mm) <= 0.5
            )
            size_ok += s_ok
            lobe_ok += p.lobe == g.lobe
            if not s_ok or p.lobe != g.lobe:
                report_errors.append({"pred": p.__dict__, "gold": g.__dict__})
        unmatched_p = [pred[i].__dict__ for i in range(len(pred)) if i not in {a for a, _ in pairs}]
        unmatched_g = [gold[j].__dict__ for j in range(len(gold)) if j not in {b for _, b in pairs}]
        if report_errors or unmatched_p or unmatched_g or (len(pred) > 0) != (len(gold) > 0):
            errors.append({"id": rec.get("id"), "mismatched": report_errors, "false_positive": unmatched_p,
                           "missed": unmatched_g})
    recall = _safe_div(n_match, n_gold)
    precision = _safe_div(n_match, n_pred)
    return {
        "reports": n_reports,
        "presence_accuracy": round(_safe_div(presence_ok, n_reports), 4),
        "negative_accuracy": round(_safe_div(negative_ok, n_reports), 4),
        "gold_nodules": n_gold,
        "predicted_nodules": n_pred,
        "matched": n_match,
        "recall": round(recall, 4),
        "precision": round(precision, 4),
        "f1": round(_safe_div(2 * recall * precision, recall + precision), 4),
        "size_accuracy": round(_safe_div(size_ok, n_match), 4),
        "lobe_accuracy": round(_safe_div(lobe_ok, n_match), 4),
        "errors": errors,
    }


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read an annotated JSONL file (blank lines ignored)."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc})") from exc
            if "text" not in rec:
                raise ValueError(f"{path}:{lineno}: record has no 'text'")
            records.append(rec)
    return records


_METRICS = ("presence_accuracy", "negative_accuracy", "recall", "precision", "f1", "size_accuracy", "lobe_accuracy")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("jsonl", nargs="?", default=str(Path(__file__).resolve().parents[1] / "tests/data/reports_dev.jsonl"))
    ap.add_argument("--json", dest="json_out", help="write the metrics (parser and baseline) to this JSON file")
    ap.add_argument("--errors", action="store_true", help="print the per-report errors of the parser")
    args = ap.parse_args(argv)
    records = load_jsonl(args.jsonl)
    results = {"dataset": str(args.jsonl), "parser": evaluate(records, parser_mentions),
               "baseline": evaluate(records, baseline_mentions)}
    print(f"{len(records)} reports from {args.jsonl}")
    print(f"{'metric':<20}{'parser':>10}{'baseline':>10}")
    for key in _METRICS:
        print(f"{key:<20}{results['parser'][key]:>10.3f}{results['baseline'][key]:>10.3f}")
    if args.errors:
        for err in results["parser"]["errors"]:
            print(json.dumps(err))
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
