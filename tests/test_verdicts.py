"""The verdicts a radiologist expects (issue 21): realignment that may not confirm a wrong claim, the
missed-nodule rule, group claims, benign wording and calcification against the image, and cases the
analysis cannot assess.

The unit tests run everywhere; the ``lidc`` ones analyse the real LIDC cases with reports written
here.  LIDC-IDRI-0003 is the TEST patient: it is only evaluated, never used to pick a threshold.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from lungfuse.pipelines.analysis.analyze import analyze_case, verdict
from lungfuse.pipelines.analysis.assessable import (
    MIN_LUNG_COVERAGE_MM,
    MIN_LUNG_VOLUME_ML,
    LungCoverage,
    claim_too_small,
    scan_not_assessable,
)
from lungfuse.pipelines.analysis.case import AnalysisSettings, Case
from lungfuse.pipelines.analysis.codes import DEFAULT_SEVERITY, ReasonCode, Severity
from lungfuse.pipelines.analysis.consistency import (
    CALCIFICATION_ABSENT_FRACTION,
    CALCIFIED_FRACTION,
    FindingView,
    clearly_stronger,
    group_members,
    is_group,
    pair_discordances,
    sides_disagree,
)
from lungfuse.pipelines.analysis.result import CaseResult, Reason
from lungfuse.pipelines.analysis.wording import benign_wording_sentence, discordance_code
from lungfuse.pipelines.inference.registry import ModelRegistry
from lungfuse.pipelines.io.dicom import CTVolume, load_ct
from lungfuse.pipelines.nlp.claims import NoduleClaim

SETTINGS = AnalysisSettings(device="cpu", explain=False)


def _view(d: float, score: float, side: str = "left", lobe: str = "LUL") -> FindingView:
    return FindingView(side, lobe, d, "solid", 0.0, score, (lobe,))


# ------------------------------------------------------------------------------------------------
# Units: the rules themselves
# ------------------------------------------------------------------------------------------------


def test_clearly_stronger_by_size_and_by_score() -> None:
    mass, weak = _view(29.0, 0.63), _view(6.0, 0.40)
    assert clearly_stronger(mass, weak)  # larger beyond the size tolerance, and scores higher
    assert not clearly_stronger(weak, mass)
    assert clearly_stronger(_view(6.5, 0.60), _view(6.0, 0.45))  # same size, clearly higher score
    assert not clearly_stronger(_view(6.5, 0.50), _view(6.0, 0.45))  # neither clearly larger nor higher
    assert clearly_stronger(_view(20.0, 0.42), _view(6.0, 0.45))  # a little weaker, much larger
    assert not clearly_stronger(_view(20.0, 0.30), _view(6.0, 0.45))  # clearly weaker


def test_bilateral_never_makes_a_side_discordance() -> None:
    group = NoduleClaim(size_mm=31.0, side="bilateral", multiple=True, count=None, text="multiple bilateral nodules")
    f = _view(29.0, 0.6, side="left", lobe="LLL")
    assert not sides_disagree(group, f)
    assert not any(p.startswith("side") for p in pair_discordances(group, f))
    right = NoduleClaim(size_mm=29.0, side="right", text="a 29 mm nodule in the right lung")
    assert sides_disagree(right, f)


def test_group_claim_is_satisfied_by_any_agreeing_findings() -> None:
    group = NoduleClaim(size_mm=4.0, multiple=True, count=None, text="several scattered nodules up to 4 mm")
    assert is_group(group) and is_group(NoduleClaim(count=3)) and not is_group(NoduleClaim())
    views = [_view(3.5, 0.5), _view(4.2, 0.5, "right", "RUL"), _view(15.0, 0.7)]
    assert group_members(group, views) == [0, 1]  # the 15 mm one is beyond "up to 4 mm"
    left = NoduleClaim(side="left", multiple=True, text="left lung nodules")
    assert group_members(left, views) == [0, 2]


def test_verdict_precedence() -> None:
    size = Reason(ReasonCode.SIZE, "size")
    thick = Reason(ReasonCode.SLICES_TOO_THICK, "slices")
    nolung = Reason(ReasonCode.NO_LUNG_IN_VIEW, "no lung", Severity.WARNING)
    status, reasons, aside = verdict([size], [nolung], False)
    assert status == "not_assessable" and reasons == [nolung] and aside[0].severity == Severity.INFO
    assert verdict([size, thick], [], False)[0] == "discordant"
    assert verdict([thick], [], True)[0] == "not_assessable"
    assert verdict([], [], True)[0] == "realigned"
    assert verdict([], [], False)[0] == "concordant"


def test_lung_coverage_rules() -> None:
    lungs = np.zeros((100, 20, 20), bool)
    lungs[10:90, 2:18, 2:18] = True
    cov = LungCoverage.from_mask(lungs, (1.5, 1.5, 1.5))
    assert cov.extent_mm == pytest.approx(120.0) and not cov.cut_superior and not cov.cut_inferior
    assert cov.volume_ml == pytest.approx(80 * 16 * 16 * 1.5 ** 3 / 1000)
    big = LungCoverage(4000.0, 250.0, False, False)
    assert scan_not_assessable(big, report_negative=True) == []
    assert [c for c, _ in scan_not_assessable(LungCoverage(20.0, 30.0, False, False), report_negative=False)] == [
        ReasonCode.NO_LUNG_IN_VIEW, ReasonCode.LUNG_COVERAGE_SHORT]
    cut = LungCoverage(3000.0, 200.0, True, False)
    assert scan_not_assessable(cut, report_negative=False) == []  # a positive report is checked locally
    assert [c for c, _ in scan_not_assessable(cut, report_negative=True)] == [ReasonCode.LUNG_COVERAGE_SHORT]
    assert MIN_LUNG_VOLUME_ML == 100.0 and MIN_LUNG_COVERAGE_MM == 50.0
    assert claim_too_small(4.0, 5.0) and not claim_too_small(4.0, 2.5) and claim_too_small(None, 7.5)


def test_calcification_contradiction_in_either_direction() -> None:
    """Reported calcified while (almost) nothing of the core is above 200 HU, or reported
    non-calcified while the measurement calls the finding calcified (>= 10 %): both disagree."""
    def calc(fraction: float) -> FindingView:
        return FindingView("left", "LUL", 29.0, "solid", fraction, 0.6, ("LUL",))

    calcified, non = NoduleClaim(calcification=True), NoduleClaim(calcification=False)
    # LIDC-IDRI-0001's mass: 0.07 % of its core above 200 HU, formerly let through by "no voxel at all"
    assert [p.split(":")[0] for p in pair_discordances(calcified, calc(0.00065))] == ["calcification"]
    assert "0.07 %" in pair_discordances(calcified, calc(0.00065))[0]
    assert "no voxel above 200 HU" in pair_discordances(calcified, calc(0.0))[0]
    assert pair_discordances(calcified, calc(CALCIFICATION_ABSENT_FRACTION)) == []  # a small calcification is one
    assert pair_discordances(non, calc(CALCIFIED_FRACTION - 0.01)) == []
    assert [p.split(":")[0] for p in pair_discordances(non, calc(CALCIFIED_FRACTION))] == ["calcification"]
    assert pair_discordances(NoduleClaim(), calc(0.5)) == []  # nothing said, nothing to contradict


def test_benign_wording_sentence_has_its_code() -> None:
    sentence = benign_wording_sentence(0.92, 0.81)
    assert discordance_code(sentence) == ReasonCode.BENIGN_WORDING
    assert "0.92" in sentence and "0.81" in sentence
    assert DEFAULT_SEVERITY[ReasonCode.BENIGN_WORDING] == Severity.DISCORDANCE


def test_not_assessable_needs_its_reason() -> None:
    from lungfuse.pipelines.analysis.result import STATUSES

    assert "not_assessable" in STATUSES
    assert Severity.CRITICAL.rank > Severity.DISCORDANCE.rank > Severity.WARNING.rank > Severity.INFO.rank


# ------------------------------------------------------------------------------------------------
# The real cases
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry()


def _run(ct: Path | CTVolume, report: str | None, registry: ModelRegistry) -> CaseResult:
    return analyze_case(Case(ct, report=report, find_report=False), SETTINGS, models=registry)


def _codes(r: CaseResult) -> set[str]:
    return {str(x.code) for x in r.reasons}


@pytest.mark.parametrize("report", [
    "FINDINGS: A 6 mm solid nodule in the left upper lobe. No other nodules.",
    "FINDINGS: An 8 mm ground-glass nodule in the left upper lobe. No other nodules.",
])
def test_undersized_claim_beside_a_mass_is_discordant(lidc_root: Path, registry: ModelRegistry, report: str) -> None:
    """LIDC-IDRI-0001's 33 mm mass (left upper lobe) reported as a small nodule: a weak candidate nearby
    may not 'confirm' the claim while the mass lies in the same lobe."""
    r = _run(lidc_root / "LIDC-IDRI-0001", report, registry)
    assert r.status == "discordant", r.reasons
    assert "size" in _codes(r), r.reasons
    mass = max(r.findings, key=lambda f: f.diameter_mm)
    assert mass.diameter_mm > 20 and mass.claim_id == "C1"  # the claim stays with the mass it under-sizes
    assert all(m.resolved_by != "realignment" for m in r.matches)
    rejected = [e for e in r.consistency_trajectory[1:] if e.get("candidate") and not e["accepted"]]
    assert any(e.get("stronger_finding") == mass.id for e in rejected) or not rejected


def test_correct_report_of_the_mass_stays_concordant(lidc_root: Path, registry: ModelRegistry) -> None:
    r = _run(lidc_root / "LIDC-IDRI-0001", "FINDINGS: A 33 mm spiculated solid mass in the left upper lobe. "
             "No other pulmonary nodules.", registry)
    assert r.status in ("concordant", "discordant"), r.reasons
    assert not ({"size", "side", "lobe", "claim_not_found"} & _codes(r)), r.reasons


@pytest.mark.parametrize("report", [
    "FINDINGS: 33 mm calcified granuloma in the left upper lobe, benign. No other pulmonary nodules.",
    "FINDINGS: A 33 mm solid nodule in the left upper lobe, likely benign. No other pulmonary nodules.",
    "FINDINGS: Left upper lobe: 33 mm solid nodule. Lung-RADS 2.",
], ids=["granuloma", "likely-benign", "lung-rads-2"])
def test_benign_wording_against_a_likely_malignant_mass(lidc_root: Path, registry: ModelRegistry, report: str) -> None:
    """LIDC-IDRI-0001's 33 mm spiculated mass (malignancy probability about 0.9) called benign: a
    ``benign_wording`` discordance on the claim and the mass; a calcified claim also contradicts the
    HU (0.07 % of the core above 200 HU)."""
    r = _run(lidc_root / "LIDC-IDRI-0001", report, registry)
    mass = max(r.findings, key=lambda f: f.diameter_mm)
    op = r.models["fusion"]["decision_thresholds"]["afa_eaf"]
    assert mass.claim_id == "C1" and mass.malignancy_probability is not None and mass.malignancy_probability >= op
    assert r.status == "discordant", r.reasons
    benign = r.reasons_with(ReasonCode.BENIGN_WORDING)
    assert len(benign) == 1 and benign[0].severity == Severity.DISCORDANCE, r.reasons
    assert set(benign[0].concerns) == {"C1", mass.id}
    assert f"{mass.malignancy_probability:.2f}" in benign[0].text
    assert not ({"size", "side", "lobe", "claim_not_found"} & _codes(r)), r.reasons
    assert ("calcification" in _codes(r)) == ("calcif" in report), r.reasons


def test_denied_but_present_nodules_are_missed(lidc_root: Path, registry: ModelRegistry) -> None:
    """LIDC-IDRI-0003 (test patient, evaluated only): one nodule reported, "No other pulmonary nodules",
    while the image holds two more 13-15 mm nodules."""
    from lungfuse.pipelines.lab.lidc import scan_nodules

    r = _run(lidc_root / "LIDC-IDRI-0003", None, registry)
    reals = [n for n in scan_nodules("LIDC-IDRI-0003") if n.n_readers >= 2]
    inside = {n.nodule_index: [f for f in r.findings if n.contains(f.center_voxel)] for n in reals}
    found = {k: max(v, key=lambda f: f.detection_score) for k, v in inside.items() if v}
    assert len(found) >= 2
    first, *others = sorted(found.values(), key=lambda f: -f.diameter_mm)
    report = (f"FINDINGS: A {first.diameter_mm:.0f} mm solid nodule in the {first.side} lung. "
              f"No other pulmonary nodules.")
    rr = _run(lidc_root / "LIDC-IDRI-0003", report, registry)
    assert rr.status == "discordant", rr.reasons
    missed = rr.reasons_with(ReasonCode.MISSED_NODULE)
    # the rule's threshold: the calibrated one, never below the operating threshold (a models
    # folder without rules.json falls back to the operating threshold)
    op = rr.models["detector"]["operating_threshold"]
    thr = max(rr.models["rules"]["missed_nodule_threshold"] or op, op)
    big_others = [f for f in others if f.diameter_mm >= 6.0 and f.detection_score >= thr]
    assert big_others, "the other real nodules score below the missed-nodule threshold"
    assert missed and all(x.severity == Severity.CRITICAL for x in missed)  # the report denies them
    assert {f.id for f in big_others} <= {c for x in missed for c in x.concerns}


def test_group_claim_with_largest_member(lidc_root: Path, registry: ModelRegistry) -> None:
    r = _run(lidc_root / "LIDC-IDRI-0003", "FINDINGS: Multiple bilateral pulmonary nodules, the largest a 3.1 cm "
             "mass in the left lower lobe.", registry)
    assert not any(x.code == ReasonCode.SIDE and "bilateral" in x.text for x in r.reasons), r.reasons
    assert r.claims is not None and any(c.nodule.side == "bilateral" for c in r.claims.nodules)


def _slab(vol: CTVolume, a: int, b: int) -> CTVolume:
    """Slices ``a:b`` of ``vol`` as a CT of its own."""
    return dataclasses.replace(vol, hu=vol.hu[a:b].copy(), slice_positions=vol.slice_positions[a:b],
                               sop_instance_uids=vol.sop_instance_uids[a:b], origin=tuple(vol.slice_positions[a]),
                               source_files=vol.source_files[a:b] if vol.source_files else (),
                               series_instance_uid=f"{vol.series_instance_uid}.{a}.{b}")


@pytest.mark.parametrize("where", ["inferior15", "superior10", "three"])
def test_scan_without_lungs_or_too_short_is_not_assessable(lidc_root: Path, registry: ModelRegistry, where: str) -> None:
    vol = load_ct(lidc_root / "LIDC-IDRI-0001")
    n = vol.n_slices
    # array index grows along +z (superior) for the LIDC series: the first slices are the most inferior
    a, b = {"inferior15": (0, 15), "superior10": (n - 10, n), "three": (n // 2 - 1, n // 2 + 2)}[where]
    r = _run(_slab(vol, a, b), "FINDINGS: No pulmonary nodules.", registry)
    assert r.status == "not_assessable", (r.status, r.reasons)
    assert _codes(r) <= {"no_lung_in_view", "lung_coverage_short"} and r.reasons
