"""Lung-RADS v2022 and Fleischner 2017 guidance: every size band at its boundaries,
benign features, modifiers, rounding, validation and the combined helper."""

from __future__ import annotations

import dataclasses
import math

import pytest

from lungfuse.pipelines.analysis.guidance import (
    FLEISCHNER_APPLIES_TO,
    GUIDANCE_NOTICE,
    FleischnerGuidance,
    LungRadsGuidance,
    fleischner_2017,
    guidance_for,
    lung_rads_v2022,
    round_half_up,
)


def cat(size: float | None, texture: str | None = "solid", **kw: object) -> str:
    return lung_rads_v2022(size, texture, **kw).category  # type: ignore[arg-type]


# --------------------------------------------------------------------------- rounding
@pytest.mark.parametrize(("value", "digits", "expected"), [
    (5.5, 0, 6.0), (6.5, 0, 7.0), (8.5, 0, 9.0), (8.49, 0, 8.0), (5.4, 0, 5.0),
    (14.95, 1, 15.0), (5.95, 1, 6.0), (5.94, 1, 5.9), (7.25, 1, 7.3),
])
def test_round_half_up(value: float, digits: int, expected: float) -> None:
    assert round_half_up(value, digits) == expected


def test_round_half_up_differs_from_builtin_round() -> None:
    # the cases where banker's rounding / binary floats would give the other answer
    assert round(6.5) == 6 and round_half_up(6.5) == 7
    assert round(14.95, 1) == 14.9 and round_half_up(14.95, 1) == 15.0


# --------------------------------------------------------------------------- Lung-RADS solid
@pytest.mark.parametrize(("size", "expected"), [
    (1.0, "2"), (5.9, "2"), (6.0, "3"), (7.9, "3"), (8.0, "4A"), (14.9, "4A"), (15.0, "4B"), (40.0, "4B"),
])
def test_solid_baseline_bands(size: float, expected: str) -> None:
    assert cat(size) == expected


@pytest.mark.parametrize(("size", "expected"), [
    (3.9, "2"), (4.0, "3"), (5.9, "3"), (6.0, "4A"), (7.9, "4A"), (8.0, "4B"),
])
def test_solid_new_bands(size: float, expected: str) -> None:
    assert cat(size, baseline=False, new=True) == expected
    assert cat(size, new=True) == expected  # new implies a follow-up screen


@pytest.mark.parametrize(("size", "expected"), [(3.0, "4A"), (7.9, "4A"), (8.0, "4B"), (20.0, "4B")])
def test_solid_growing_bands(size: float, expected: str) -> None:
    assert cat(size, baseline=False, growing=True) == expected


@pytest.mark.parametrize("texture", ["solid", "part-solid", "ground-glass"])
def test_stable_at_follow_up_is_2(texture: str) -> None:
    kw = {"solid_component_mm": 9.0} if texture == "part-solid" else {}
    assert cat(35.0, texture, baseline=False, **kw) == "2"
    assert "no growth" in lung_rads_v2022(35.0, texture, baseline=False, **kw).basis


def test_mean_diameter_wins_and_is_rounded_half_up() -> None:
    # largest 9 mm would be 4A; the mean decides
    assert cat(9.0, mean_diameter_mm=7.9) == "3"
    assert cat(9.0, mean_diameter_mm=5.95) == "3"   # -> 6.0 mm
    assert cat(9.0, mean_diameter_mm=5.94) == "2"   # -> 5.9 mm
    g = lung_rads_v2022(16.0, "solid", mean_diameter_mm=14.95)
    assert g.category == "4B" and "15.0 mm" in g.basis and "14.95" in g.basis
    assert "mean diameter" in g.basis and "largest diameter used" not in g.basis


def test_largest_diameter_fallback_is_stated() -> None:
    g = lung_rads_v2022(7.0, "solid")
    assert g.category == "3"
    assert "largest diameter used" in g.basis
    # the mean alone is enough
    assert cat(None, mean_diameter_mm=8.0) == "4A"


def test_texture_none_treated_as_solid() -> None:
    g = lung_rads_v2022(8.0, None)
    assert g.category == "4A" and "treated as solid" in g.basis


# --------------------------------------------------------------------------- part-solid
@pytest.mark.parametrize(("total", "solid", "expected"), [
    (5.9, 3.0, "2"), (5.9, None, "2"), (6.0, 3.0, "3"), (10.0, 5.9, "3"), (10.0, 6.0, "4A"), (10.0, 7.9, "4A"),
    (10.0, 8.0, "4B"), (20.0, 15.0, "4B"),
])
def test_part_solid_baseline(total: float, solid: float | None, expected: str) -> None:
    assert cat(total, "part-solid", solid_component_mm=solid) == expected


@pytest.mark.parametrize(("total", "solid", "kw", "expected"), [
    (5.9, 3.0, {"new": True}, "3"),
    (6.0, 3.9, {"new": True}, "4A"),
    (10.0, 4.0, {"new": True}, "4B"),
    (10.0, 3.9, {"growing": True}, "4A"),
    (10.0, 4.0, {"growing": True}, "4B"),
    (5.0, 4.5, {"growing": True}, "4B"),
])
def test_part_solid_new_or_growing(total: float, solid: float, kw: dict[str, bool], expected: str) -> None:
    assert cat(total, "part-solid", solid_component_mm=solid, baseline=False, **kw) == expected


def test_part_solid_without_solid_component_is_incomplete() -> None:
    g = lung_rads_v2022(12.0, "part-solid")
    assert g.category == "0" and "solid component" in g.basis


# --------------------------------------------------------------------------- ground glass
@pytest.mark.parametrize(("size", "kw", "expected"), [
    (29.9, {}, "2"), (30.0, {}, "3"), (29.9, {"new": True}, "2"), (30.0, {"new": True}, "3"),
    (29.9, {"growing": True}, "2"), (30.0, {"growing": True}, "3"), (45.0, {"baseline": False}, "2"),
])
def test_ground_glass(size: float, kw: dict[str, bool], expected: str) -> None:
    assert cat(size, "ground-glass", **kw) == expected
    assert cat(size, "non-solid", **kw) == expected  # Lung-RADS' own word


# --------------------------------------------------------------------------- benign features and special rules
@pytest.mark.parametrize("pattern", ["complete", "diffuse", "central", "popcorn", "laminated", "concentric"])
def test_benign_calcification_is_1(pattern: str) -> None:
    g = lung_rads_v2022(20.0, "solid", calcification_pattern=pattern, calcified=True)
    assert g.category == "1" and g.descriptor == "negative" and pattern in g.basis.lower()


@pytest.mark.parametrize(("kw", "expected"), [
    ({"calcification_pattern": "eccentric"}, "4A"),
    ({"calcification_pattern": "stippled/punctate"}, "4A"),
    ({"calcified": True}, "4A"),  # no pattern: not enough for category 1
])
def test_non_benign_or_unknown_calcification_uses_size(kw: dict[str, object], expected: str) -> None:
    g = lung_rads_v2022(10.0, "solid", **kw)  # type: ignore[arg-type]
    assert g.category == expected and "calcif" in g.basis


def test_fat_is_1_whatever_size_or_texture() -> None:
    assert cat(25.0, fat=True) == "1"
    assert cat(None, "part-solid", fat=True) == "1"


@pytest.mark.parametrize(("size", "kw", "expected"), [
    (9.9, {}, "2"), (9.9, {"new": True}, "2"), (10.0, {}, "4A"), (6.5, {"growing": True}, "4A"),
])
def test_perifissural_benign(size: float, kw: dict[str, bool], expected: str) -> None:
    assert cat(size, perifissural_benign=True, **kw) == expected


def test_perifissural_rule_needs_solid_texture() -> None:
    g = lung_rads_v2022(35.0, "ground-glass", perifissural_benign=True)
    assert g.category == "3" and "perifissural rule not applied" in g.basis


def test_endobronchial() -> None:
    assert cat(3.0, endobronchial=True) == "4A"
    assert cat(None, endobronchial=True) == "4A"
    assert cat(3.0, endobronchial=True, new=True) == "4A"
    assert cat(3.0, endobronchial=True, baseline=False) == "4B"  # persisting at follow-up


@pytest.mark.parametrize(("size", "kw", "plain", "upgraded"), [
    (7.0, {}, "3", "4X"), (10.0, {}, "4A", "4X"), (20.0, {}, "4B", "4X"),
    (5.0, {}, "2", "2"), (30.0, {"texture": "ground-glass"}, "3", "4X"),
])
def test_4x_upgrade_only_for_3_and_4(size: float, kw: dict[str, str], plain: str, upgraded: str) -> None:
    texture = kw.get("texture", "solid")
    assert cat(size, texture) == plain
    g = lung_rads_v2022(size, texture, suspicious_features=True)
    assert g.category == upgraded
    assert ("upgraded to 4X" in g.basis) == (upgraded == "4X")


def test_4x_management_matches_4b() -> None:
    assert lung_rads_v2022(10.0, "solid", suspicious_features=True).management == lung_rads_v2022(20.0, "solid").management


def test_unknown_size_is_0() -> None:
    g = lung_rads_v2022(None, "solid")
    assert (g.category, g.descriptor) == ("0", "incomplete")
    assert "size" in g.basis


def test_management_texts() -> None:
    assert lung_rads_v2022(7.0, "solid").management == "6-month LDCT"
    m4a = lung_rads_v2022(10.0, "solid").management
    assert m4a.startswith("3-month LDCT") and "PET/CT" in m4a and ">= 8 mm" in m4a
    assert lung_rads_v2022(5.0, "solid").management == "12-month screening LDCT"
    assert "tissue sampling" in lung_rads_v2022(20.0, "solid").management


def test_lung_rads_to_dict_and_frozen() -> None:
    g = lung_rads_v2022(7.0, "solid")
    assert g.to_dict() == {"category": "3", "descriptor": "probably benign", "management": "6-month LDCT",
                           "basis": g.basis, "version": "Lung-RADS v2022"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.category = "2"  # type: ignore[misc]


# --------------------------------------------------------------------------- Lung-RADS validation
@pytest.mark.parametrize(("args", "kw", "name"), [
    ((-1.0, "solid"), {}, "diameter_mm"),
    ((math.nan, "solid"), {}, "diameter_mm"),
    ((math.inf, "solid"), {}, "diameter_mm"),
    ((0.0, "solid"), {}, "diameter_mm"),
    (("7", "solid"), {}, "diameter_mm"),
    ((7.0, "cystic"), {}, "texture"),
    ((7.0, "solid"), {"mean_diameter_mm": math.nan}, "mean_diameter_mm"),
    ((7.0, "solid"), {"mean_diameter_mm": 8.0}, "mean_diameter_mm"),
    ((7.0, "part-solid"), {"solid_component_mm": -2.0}, "solid_component_mm"),
    ((7.0, "part-solid"), {"solid_component_mm": 9.0}, "solid_component_mm"),
    ((7.0, "solid"), {"solid_component_mm": 3.0}, "solid_component_mm"),
    ((7.0, "solid"), {"calcification_pattern": "zebra"}, "calcification_pattern"),
    ((7.0, "solid"), {"calcification_pattern": "central", "calcified": False}, "calcification_pattern"),
    ((7.0, "solid"), {"new": True, "growing": True}, "growing"),
    ((7.0, "solid"), {"fat": "yes"}, "fat"),
])
def test_lung_rads_invalid_inputs_name_the_argument(args: tuple[object, ...], kw: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        lung_rads_v2022(*args, **kw)  # type: ignore[arg-type]


def test_dataclasses_validate_fields() -> None:
    with pytest.raises(ValueError, match="category"):
        LungRadsGuidance("5", "x", "y", "z")
    with pytest.raises(ValueError, match="basis"):
        LungRadsGuidance("2", "benign", "12-month screening LDCT", " ")
    with pytest.raises(ValueError, match="version"):
        LungRadsGuidance("2", "benign", "12-month screening LDCT", "b", version="v1.1")
    with pytest.raises(ValueError, match="size_band"):
        FleischnerGuidance("No routine follow-up.", "5 mm", "b")
    with pytest.raises(ValueError, match="recommendation"):
        FleischnerGuidance("", "<6 mm", "b")


# --------------------------------------------------------------------------- Fleischner
@pytest.mark.parametrize(("size", "band", "low", "high"), [
    (5.0, "<6 mm", "No routine follow-up.", "Optional CT at 12 months."),
    (5.4, "<6 mm", "No routine follow-up.", "Optional CT at 12 months."),
    (5.5, "6-8 mm", "CT at 6-12 months, then consider CT at 18-24 months.", "CT at 6-12 months, then CT at 18-24 months."),
    (8.0, "6-8 mm", "CT at 6-12 months, then consider CT at 18-24 months.", "CT at 6-12 months, then CT at 18-24 months."),
    (8.4, "6-8 mm", "CT at 6-12 months, then consider CT at 18-24 months.", "CT at 6-12 months, then CT at 18-24 months."),
    (8.5, ">8 mm", "Consider CT at 3 months, PET/CT, or tissue sampling.",
     "Consider CT at 3 months, PET/CT, or tissue sampling."),
])
def test_fleischner_single_solid(size: float, band: str, low: str, high: str) -> None:
    lo, hi = fleischner_2017(size, "solid", risk="low"), fleischner_2017(size, "solid", risk="high")
    assert (lo.size_band, lo.recommendation) == (band, low)
    assert (hi.size_band, hi.recommendation) == (band, high)


@pytest.mark.parametrize(("size", "band", "low", "high"), [
    (5.0, "<6 mm", "No routine follow-up.", "Optional CT at 12 months."),
    (7.0, "6-8 mm", "CT at 3-6 months, then consider CT at 18-24 months.", "CT at 3-6 months, then at 18-24 months."),
    (12.0, ">8 mm", "CT at 3-6 months, then consider CT at 18-24 months.", "CT at 3-6 months, then at 18-24 months."),
])
def test_fleischner_multiple_solid(size: float, band: str, low: str, high: str) -> None:
    lo = fleischner_2017(size, "solid", multiple=True, risk="low")
    hi = fleischner_2017(size, "solid", multiple=True, risk="high")
    assert (lo.size_band, lo.recommendation) == (band, low)
    assert (hi.size_band, hi.recommendation) == (band, high)
    assert "multiple" in lo.basis.lower()


def test_fleischner_risk_none_gives_both() -> None:
    r = fleischner_2017(7.0, "solid").recommendation
    assert "Low risk: CT at 6-12 months, then consider CT at 18-24 months" in r
    assert "high risk: CT at 6-12 months, then CT at 18-24 months" in r
    r = fleischner_2017(4.0, None).recommendation
    assert "No routine follow-up" in r and "Optional CT at 12 months" in r
    assert "treated as solid" in fleischner_2017(4.0, None).basis


@pytest.mark.parametrize(("size", "texture", "multiple", "band", "needle"), [
    (5.4, "ground-glass", False, "<6 mm", "No routine follow-up"),
    (6.0, "ground-glass", False, ">=6 mm", "CT at 6-12 months to confirm persistence, then CT every 2 years until 5 years"),
    (5.0, "part-solid", False, "<6 mm", "No routine follow-up"),
    (7.0, "part-solid", False, ">=6 mm", "CT at 3-6 months to confirm persistence; if unchanged and the solid "
                                         "component remains < 6 mm, annual CT should be performed for 5 years"),
    (5.0, "ground-glass", True, "<6 mm", "CT at 3-6 months; if stable, consider CT at 2 and 4 years"),
    (5.0, "part-solid", True, "<6 mm", "CT at 3-6 months; if stable, consider CT at 2 and 4 years"),
    (9.0, "ground-glass", True, ">=6 mm", "subsequent management based on the most suspicious nodule"),
])
def test_fleischner_subsolid(size: float, texture: str, multiple: bool, band: str, needle: str) -> None:
    for risk in ("low", "high", None):
        g = fleischner_2017(size, texture, multiple=multiple, risk=risk)
        assert g.size_band == band and needle in g.recommendation


def test_fleischner_part_solid_solid_component_ge_6_flagged() -> None:
    assert "highly suspicious" in fleischner_2017(12.0, "part-solid", solid_component_mm=6.0).recommendation
    assert "highly suspicious" not in fleischner_2017(12.0, "part-solid", solid_component_mm=5.4).recommendation


def test_fleischner_unknown_size_and_dict() -> None:
    g = fleischner_2017(None, "solid", risk="high")
    assert g.size_band == "unknown" and "size needed" in g.recommendation.lower()
    d = fleischner_2017(7.0, "solid", risk="low").to_dict()
    assert set(d) == {"recommendation", "size_band", "basis", "applies_to", "version"}
    assert d["applies_to"] == FLEISCHNER_APPLIES_TO and d["version"] == "Fleischner Society 2017"


@pytest.mark.parametrize(("args", "kw", "name"), [
    ((-3.0, "solid"), {}, "diameter_mm"),
    ((math.nan, "solid"), {}, "diameter_mm"),
    ((5.0, "glass"), {}, "texture"),
    ((5.0, "solid"), {"risk": "medium"}, "risk"),
    ((5.0, "solid"), {"multiple": 2}, "multiple"),
    ((8.0, "part-solid"), {"solid_component_mm": math.inf}, "solid_component_mm"),
])
def test_fleischner_invalid_inputs_name_the_argument(args: tuple[object, ...], kw: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        fleischner_2017(*args, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- combined
def test_guidance_for_routes_keywords() -> None:
    out = guidance_for(9.0, "solid", mean_diameter_mm=6.5, new=True, risk="high", multiple=True)
    assert set(out) == {"lung_rads", "fleischner", "notice"}
    assert out["notice"] == GUIDANCE_NOTICE and "NOT FOR DIAGNOSTIC USE" in GUIDANCE_NOTICE
    assert out["lung_rads"]["category"] == "4A"            # new 6.5 mm solid
    assert out["fleischner"]["size_band"] == "6-8 mm"        # Fleischner used the mean (6.5 -> 7), not 9
    assert out["fleischner"]["recommendation"] == "CT at 3-6 months, then at 18-24 months."
    assert set(out["lung_rads"]) == {"category", "descriptor", "management", "basis", "version"}
    with pytest.raises(TypeError, match="bogus"):
        guidance_for(5.0, "solid", bogus=1)
