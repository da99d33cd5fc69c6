"""`make run`'s job, checked against the demo's ground truth.

`make run` writes the demo case (``lungfuse demo``: a chest CT derived from LIDC-IDRI-0001 as a DICOM
series, its report and ``truth.json`` holding the LIDC readers' nodule) and analyses it
(``lungfuse analyze``).  The demo's report describes exactly
the nodules of ``truth.json``, so a working product must (1) find each of them where
``truth.json`` puts it and (2) match it to the report sentence that describes it.  Any of
these can fail: a detector that misses a nodule, a geometry error (voxel <-> LPS), a claims
parser that loses a sentence, or a matcher that pairs the wrong claim and finding.

Tolerance: a finding's centre (LPS mm) lies within ``max(truth radius, 5 mm)`` of the truth
centre (``truth.json``'s ``center_lps_mm``: the mask voxel nearest the nodule's centroid),
the radius being half the nodule's axial long axis (``diameter_mm``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest

# Runs the demo and the analysis in subprocesses (about 40 s on the 2-core machine).
pytestmark = pytest.mark.slow

MIN_TOLERANCE_MM = 5.0


@dataclass
class DemoRun:
    truth: dict[str, Any]
    result: dict[str, Any]
    stdout: str


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """``lungfuse demo`` then ``lungfuse analyze`` as `make run` calls them (explanations
    off to save time; they do not change the findings or the matching)."""
    tmp = tmp_path_factory.mktemp("make_run")
    demo, out = tmp / "demo_case", tmp / "demo_result.json"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lungfuse.app.cli", *args], capture_output=True, text=True,
                              timeout=600)

    made = cli("demo", "--out", str(demo))
    assert made.returncode == 0, made.stderr
    done = cli("analyze", str(demo), "--json", str(out), "--no-explain", "--quiet", "--profile")
    assert done.returncode == 0, done.stderr
    return DemoRun(json.loads((demo / "truth.json").read_text()), json.loads(out.read_text()), done.stdout)


def _claim_of(truth_nodule: dict[str, Any], claims: list[dict[str, Any]]) -> str:
    """Id of the one positive claim whose side, lobe and size are those of ``truth_nodule``
    (the report states the rounded long axis in mm)."""
    hits = [
        c["id"] for c in claims
        if not c["negated"] and c["side"] == truth_nodule["side"] and c["lobe"] == truth_nodule["lobe"]
        and c["size_mm"] is not None and abs(c["size_mm"] - truth_nodule["diameter_mm_rounded"]) <= 1.0
    ]
    assert len(hits) == 1, f"expected one claim for truth nodule {truth_nodule}, got {hits} of {claims}"
    return hits[0]


def test_make_run_prints_the_status_and_the_notice(demo_run: DemoRun) -> None:
    assert "status:" in demo_run.stdout and "NOT FOR DIAGNOSTIC USE" in demo_run.stdout
    assert demo_run.result["report_present"]


def test_the_report_describes_exactly_the_truth_nodules(demo_run: DemoRun) -> None:
    claims = demo_run.result["claims"]["nodules"]
    positive = [c for c in claims if not c["negated"]]
    nodules = demo_run.truth["nodules"]
    assert nodules, "the demo has no nodules"
    assert len(positive) == len(nodules), positive
    assert sorted(_claim_of(n, claims) for n in nodules) == sorted(c["id"] for c in claims if not c["negated"])


def test_each_truth_nodule_is_found_at_its_position(demo_run: DemoRun) -> None:
    findings = demo_run.result["findings"]
    for n in demo_run.truth["nodules"]:
        tol = max(n["diameter_mm"] / 2.0, MIN_TOLERANCE_MM)
        dists = [math.dist(f["center_lps_mm"], n["center_lps_mm"]) for f in findings]
        assert dists and min(dists) <= tol, (
            f"no finding within {tol:.1f} mm of the truth nodule at {n['center_lps_mm']} (LPS mm); "
            f"nearest {min(dists, default=math.inf):.1f} mm; findings at {[f['center_lps_mm'] for f in findings]}"
        )


def test_each_truth_nodule_is_matched_to_its_report_claim(demo_run: DemoRun) -> None:
    r = demo_run.result
    claims, findings = r["claims"]["nodules"], r["findings"]
    match_of = {m["claim_id"]: m for m in r["matches"]}
    finding_of = {f["id"]: f for f in findings}
    for n in demo_run.truth["nodules"]:
        ci = _claim_of(n, claims)
        m = match_of.get(ci)
        assert m is not None and m["finding_id"] is not None, f"claim {ci} was not matched: {m}"
        f = finding_of[m["finding_id"]]
        assert f["claim_id"] == ci
        tol = max(n["diameter_mm"] / 2.0, MIN_TOLERANCE_MM)
        d = math.dist(f["center_lps_mm"], n["center_lps_mm"])
        assert d <= tol, f"claim {ci} was matched to finding {f['id']}, {d:.1f} mm from its nodule (> {tol:.1f})"


def test_the_undescribed_findings_are_the_known_ones(demo_run: DemoRun) -> None:
    """What the demo shows as it comes (nothing tuned to it; resources/demo/README.md and the README explain
    each): every finding the report does not describe is one of two known right-lower-lobe spots that no
    LIDC reader called a nodule -- F2 (~7 mm, posterior RLL, no reader mark within 15 mm) and F3 (~7 mm,
    lateral RLL, marked "non-nodule" by two readers).  A new undescribed finding fails here."""
    r = demo_run.result
    known = [(-59.1, 86.7, -176.5), (-93.6, 34.1, -175.0)]  # LPS mm, from the run recorded in the README
    for f in r["findings"]:
        if f["claim_id"] is None:
            assert min(math.dist(f["center_lps_mm"], k) for k in known) <= 5.0, f


@pytest.mark.xfail(strict=True, reason="known (README): the mass abuts the posterior pleura and its segmentation "
                   "apparently takes in chest wall "
                   "(48.5 mm against the readers' 32 mm: size discordance) and the undescribed RLL false positive F2 (19.8 mm) "
                   "scores 0.60 >= the missed-nodule threshold 0.56, so the demo is discordant")
def test_the_demo_verdict_is_concordant(demo_run: DemoRun) -> None:
    r = demo_run.result
    assert all(m["resolved_by"] in ("initial", "realignment") for m in r["matches"]), r["matches"]
    assert r["status"] in ("concordant", "realigned"), r["reasons"]
