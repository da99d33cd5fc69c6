"""Synthetic chest-CT report generator (lungfuse.pipelines.lab.reportgen).

The parser-dependent checks use ``lungfuse.pipelines.nlp.claims.extract_claims`` as an
independent reader of the generated text; they are skipped when it cannot be imported.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from lungfuse.pipelines.lab.lidc import NoduleRatings
from lungfuse.pipelines.lab.reportgen import (
    DESCRIPTORS,
    LOBES,
    MISSING_REPORT,
    GeneratedReport,
    ReportSpec,
    ReportStyle,
    generate_report,
    sample_style,
    texture_category,
)

try:
    from lungfuse.pipelines.nlp.claims import extract_claims
except ImportError:  # pragma: no cover - the parser is developed separately
    extract_claims = None

needs_parser = pytest.mark.skipif(extract_claims is None, reason="lungfuse.pipelines.nlp.claims is not available")

GROUND_GLASS_RE = re.compile(r"ground[\s-]*glass|\bGG[ON]\b|non[\s-]*solid", re.IGNORECASE)
SPICULATION_RE = re.compile(r"spicul|spiculat", re.IGNORECASE)
CALC_NEG_RE = re.compile(r"non-?calcified|uncalcified|not calcified|no (?:internal )?calcification|"
                         r"without (?:internal )?calcification", re.IGNORECASE)
# a number, with its unit when it has one: what typos must never change
NUMBER_UNIT_RE = re.compile(r"\d+(?:\.\d+)?(?:\s*-?\s*(?:mm|cm)\b)?")


def ratings(**overrides: int) -> NoduleRatings:
    base = dict(texture=5, calcification=6, margin=4, spiculation=1, lobulation=1, sphericity=4,
                internalStructure=1, subtlety=4)
    base.update(overrides)
    return NoduleRatings(**base)


def random_spec(rng: np.random.Generator, **overrides: int) -> ReportSpec:
    """A random but valid one-reader spec (ratings drawn over the full LIDC scales)."""
    r = dict(
        texture=int(rng.integers(1, 6)),
        calcification=int(rng.choice([1, 2, 3, 4, 5, 6, 6, 6, 6, 6])),
        margin=int(rng.integers(1, 6)),
        spiculation=int(rng.integers(1, 6)),
        lobulation=int(rng.integers(1, 6)),
        sphericity=int(rng.integers(1, 6)),
        internalStructure=int(rng.choice([1, 1, 1, 2, 3, 4])),
        subtlety=int(rng.integers(1, 6)),
    )
    r.update(overrides)
    return ReportSpec(
        ratings=NoduleRatings(**r),
        diameter_mm=float(rng.uniform(3.0, 45.0)),
        lobe=LOBES[int(rng.integers(len(LOBES)))],
        image_ref=(int(rng.integers(1, 9)), int(rng.integers(1, 300))),
    )


def styled(rng: np.random.Generator, **changes: object) -> ReportStyle:
    """A training style (sample_style) with some knobs fixed."""
    return dataclasses.replace(sample_style(rng), **changes)


def target_claim(report: GeneratedReport, claims: Any) -> Any:
    """The parser's positive claim that overlaps the report's target span."""
    s, e = report.target_span
    hits = [n for n in claims.nodules if not n.negated and n.span[0] < e and s < n.span[1]]
    assert len(hits) == 1, (report.text, [n.text for n in claims.nodules])
    return hits[0]


def target_text(report: GeneratedReport) -> str:
    return " ".join(report.mention_text(m) for m in report.mentions if m.role == "target")


# ---------------------------------------------------------------------------
# The label cannot leak
# ---------------------------------------------------------------------------
def test_malignancy_cannot_be_passed() -> None:
    assert "malignancy" not in {f.name for f in dataclasses.fields(ReportSpec)}
    assert "malignancy" not in {f.name for f in dataclasses.fields(NoduleRatings)}
    assert "malignancy" not in {f.name for f in dataclasses.fields(ReportStyle)}
    assert not any("malig" in p for p in inspect.signature(generate_report).parameters)
    with pytest.raises(TypeError):
        ReportSpec(ratings(), 8.0, lobe="RUL", malignancy=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        NoduleRatings(1, 6, 4, 1, 1, 4, 1, 4, 5)  # type: ignore[call-arg]  # no 9th (malignancy) field


def test_missing_report_constant() -> None:
    assert MISSING_REPORT is None


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(diameter_mm=0.0), "diameter_mm"),
        (dict(diameter_mm=-3.0), "diameter_mm"),
        (dict(diameter_mm=float("nan")), "diameter_mm"),
        (dict(side="middle"), "side"),
        (dict(lobe="RXL"), "lobe"),
        (dict(side="left", lobe="RUL"), "side"),
        (dict(image_ref=(3,)), "image_ref"),
        (dict(image_ref=(3, -1)), "image_ref"),
        (dict(ratings=ratings(texture=7)), "texture"),
        (dict(ratings=ratings(calcification=0)), "calcification"),
        (dict(ratings=ratings(sphericity=2.5)), "sphericity"),
        (dict(ratings={"texture": 5}), "ratings"),
    ],
)
def test_spec_validation_names_the_field(kwargs: dict, field: str) -> None:
    args = dict(ratings=ratings(), diameter_mm=8.0, side=None, lobe="RUL", image_ref=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=field):
        ReportSpec(**args)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(completeness_target=1.5), "completeness_target"),
        (dict(completeness_target=-0.1), "completeness_target"),
        (dict(typo_rate=-0.01), "typo_rate"),
        (dict(typo_rate=0.9), "typo_rate"),
        (dict(header_style="fancy"), "header_style"),
        (dict(distractors="yes"), "distractors"),
    ],
)
def test_style_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ReportStyle(**kwargs)


def test_spec_normalises_and_implies_side() -> None:
    spec = ReportSpec(ratings(texture=5.0), np.float32(8.0), lobe="lingula", image_ref=(np.int64(3), 45))
    assert spec.effective_side == "left" and spec.image_ref == (3, 45) and isinstance(spec.diameter_mm, float)


# ---------------------------------------------------------------------------
# Determinism and typos
# ---------------------------------------------------------------------------
def test_same_seed_same_report() -> None:
    spec = random_spec(np.random.default_rng(0))
    style = ReportStyle(completeness_target=0.6, typo_rate=0.05, distractors=True, positive_distractors=True)
    a = generate_report(spec, style, np.random.default_rng(42))
    b = generate_report(spec, style, np.random.default_rng(42))
    c = generate_report(spec, style, np.random.default_rng(43))
    assert a == b
    assert a.text != c.text


def test_typos_never_touch_digits_or_units() -> None:
    rng = np.random.default_rng(1)
    changed = 0
    for seed in range(40):
        spec = random_spec(rng)
        base = styled(rng, typo_rate=0.0)
        clean = generate_report(spec, base, np.random.default_rng(seed))
        noisy = generate_report(spec, dataclasses.replace(base, typo_rate=0.3), np.random.default_rng(seed))
        # the typo stream is separate: same report up to the typos
        assert NUMBER_UNIT_RE.findall(noisy.text) == NUMBER_UNIT_RE.findall(clean.text)
        assert noisy.kept_descriptors == clean.kept_descriptors
        assert re.findall(r"\b[A-Z]{2,}\b", noisy.text) == re.findall(r"\b[A-Z]{2,}\b", clean.text)
        changed += noisy.text != clean.text
        # spans still cover the same sentences
        for m_clean, m_noisy in zip(clean.mentions, noisy.mentions, strict=True):
            a, b = clean.mention_text(m_clean), noisy.mention_text(m_noisy)
            assert a[-1] == b[-1] and a[0] == b[0] and abs(len(a) - len(b)) <= max(3, len(a) // 5)
    assert changed >= 35


# ---------------------------------------------------------------------------
# Completeness
# ---------------------------------------------------------------------------
def test_full_completeness_keeps_every_descriptor() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        g = generate_report(random_spec(rng), styled(rng, completeness_target=1.0, typo_rate=0.0), rng)
        assert g.kept_descriptors == frozenset(DESCRIPTORS)
        assert "IMPRESSION" in {m.section for m in g.mentions}


def test_location_cannot_be_kept_without_one() -> None:
    rng = np.random.default_rng(3)
    spec = ReportSpec(ratings(), 9.0)
    for _ in range(20):
        g = generate_report(spec, ReportStyle(completeness_target=1.0), rng)
        assert g.kept_descriptors == frozenset(DESCRIPTORS) - {"location"}
        assert not re.search(r"\b(?:right|left)\b", target_text(g))


@needs_parser
def test_parser_reads_full_reports() -> None:
    """Target 1.0, no typos: the parser scores >= 0.85 and recovers size, lobe, texture."""
    rng = np.random.default_rng(4)
    scores = []
    for _ in range(50):
        spec = random_spec(rng)
        g = generate_report(spec, styled(rng, completeness_target=1.0, typo_rate=0.0), rng)
        claims = extract_claims(g.text)
        scores.append(claims.completeness)
        assert claims.completeness >= 0.85, g.text
        t = target_claim(g, claims)
        assert t.size_mm is not None and abs(t.size_mm - spec.diameter_mm) <= 1.0, (t.size_mm, spec.diameter_mm)
        assert t.lobe == spec.lobe
        assert t.texture == texture_category(spec.ratings.texture)
        # the technique's slice thickness and extrapulmonary nodules are no lung nodules
        assert len([n for n in claims.nodules if not n.negated]) == g.pulmonary_nodule_count == 1
    assert np.mean(scores) >= 0.95


@needs_parser
def test_low_completeness_reads_as_incomplete() -> None:
    rng = np.random.default_rng(5)
    scores = [
        extract_claims(generate_report(random_spec(rng), styled(rng, completeness_target=0.2, typo_rate=0.0),
                                       rng).text).completeness
        for _ in range(60)
    ]
    assert np.mean(scores) < 0.6
    assert np.mean(scores) < 0.35  # the target itself: 0.2 (+/- the stochastic rounding)


@needs_parser
def test_dropped_descriptors_leave_no_trace() -> None:
    """What the parser reads is exactly what was kept: each kept descriptor is found,
    each dropped one is absent (the impression does not re-introduce it)."""
    rng = np.random.default_rng(6)
    for _ in range(80):
        g = generate_report(random_spec(rng), styled(rng, completeness_target=float(rng.uniform(0.1, 0.9)),
                                                     typo_rate=0.0), rng)
        claims = extract_claims(g.text)
        t = target_claim(g, claims)
        found = {
            "size": t.size_mm is not None or t.size_qualifier is not None,
            "location": t.lobe is not None or t.side is not None,
            "texture": t.texture is not None,
            "margin": t.margin is not None,
            "calcification": t.calcification is not None,
            "shape": t.shape is not None,
            "impression": claims.impression is not None,
        }
        assert {d for d, ok in found.items() if ok} == set(g.kept_descriptors), g.text
        assert claims.completeness == pytest.approx(len(g.kept_descriptors) / 7, abs=0.01)


@needs_parser
def test_sampled_styles_span_the_completeness_range() -> None:
    rng = np.random.default_rng(7)
    scores = np.array([
        extract_claims(generate_report(random_spec(rng), sample_style(rng), rng).text).completeness
        for _ in range(300)
    ])
    assert scores.min() <= 0.3
    assert scores.max() == 1.0
    assert 0.4 < scores.mean() < 0.85


def test_sample_style_distribution() -> None:
    rng = np.random.default_rng(8)
    styles = [sample_style(rng) for _ in range(2000)]

    def frac(pred: Callable[[ReportStyle], bool]) -> float:
        return float(np.mean([pred(s) for s in styles]))

    assert 0.2 < frac(lambda s: s.completeness_target == 1.0) < 0.32
    assert frac(lambda s: s.completeness_target < 0.3) > 0.15
    assert 0.11 < frac(lambda s: s.typo_rate > 0) < 0.19
    assert 0.25 < frac(lambda s: s.one_paragraph) < 0.35
    assert 0.35 < frac(lambda s: s.abbreviations) < 0.45
    assert 0.35 < frac(lambda s: s.distractors) < 0.45
    assert frac(lambda s: s.positive_distractors) == 0.0  # off unless asked for
    assert {s.header_style for s in styles} == {"caps", "title", "markdown", "bare", "none"}
    with_pos = [sample_style(rng, positive_distractor_rate=0.5) for _ in range(200)]
    assert 0.35 < np.mean([s.positive_distractors for s in with_pos]) < 0.65


# ---------------------------------------------------------------------------
# Descriptor wording
# ---------------------------------------------------------------------------
def _reports(overrides: dict[str, int], n: int = 60, seed: int = 9) -> list[GeneratedReport]:
    rng = np.random.default_rng(seed)
    return [
        generate_report(random_spec(rng, **overrides), styled(rng, typo_rate=0.0, completeness_target=float(t)), rng)
        for t in np.linspace(0.0, 1.0, n)
    ]


def test_ground_glass_wording() -> None:
    reports = _reports({"texture": 1})
    assert any("texture" in g.kept_descriptors for g in reports)
    assert any("texture" not in g.kept_descriptors for g in reports)
    for g in reports:
        if "texture" in g.kept_descriptors:
            assert GROUND_GLASS_RE.search(g.mention_text(g.mentions[0]) + target_text(g)), g.text
        else:
            assert not GROUND_GLASS_RE.search(g.text), g.text
            assert not re.search(r"\bsolid\b", target_text(g)), g.text


def test_spiculation_wording() -> None:
    for g in _reports({"spiculation": 5}):
        if "margin" in g.kept_descriptors:
            assert SPICULATION_RE.search(target_text(g)), g.text
        else:
            assert not SPICULATION_RE.search(g.text), g.text


def test_smooth_margin_wording() -> None:
    for g in _reports({"spiculation": 1, "lobulation": 1, "margin": 5}):
        if "margin" in g.kept_descriptors:
            assert re.search(r"smooth|well-(?:circumscribed|defined)|sharply", target_text(g)), g.text
            assert not SPICULATION_RE.search(g.text)


@pytest.mark.parametrize(
    ("calcification", "word"),
    [(1, r"popcorn|calcified"), (2, r"laminated|lamellated|calcified"), (3, r"dense|diffuse|completely|calcified"),
     (4, r"eccentric"), (5, r"central")],
)
def test_calcification_wording(calcification: int, word: str) -> None:
    for g in _reports({"calcification": calcification}, n=30):
        text = target_text(g)
        if "calcification" in g.kept_descriptors:
            assert re.search(r"calcif|popcorn", text) and re.search(word, text), g.text
            assert not CALC_NEG_RE.search(text), g.text
        else:
            assert not re.search(r"calcif|popcorn|granuloma", text), g.text


def test_absent_calcification_wording() -> None:
    for g in _reports({"calcification": 6}, n=30):
        if "calcification" in g.kept_descriptors:
            assert CALC_NEG_RE.search(target_text(g)), g.text
        else:
            assert not re.search(r"calcif", target_text(g)), g.text


# ---------------------------------------------------------------------------
# Mentions, distractors, impression
# ---------------------------------------------------------------------------
def test_mentions_and_target_span() -> None:
    rng = np.random.default_rng(10)
    for _ in range(30):
        g = generate_report(random_spec(rng), styled(rng, typo_rate=0.0), rng)
        first = g.mentions[0]
        assert first.role == "target" and first.section == "FINDINGS" and first.span == g.target_span
        s, e = g.target_span
        assert 0 <= s < e <= len(g.text)
        assert re.search(r"nodul|GG[ON]|ground-glass opacity|mass", g.text[s:e], re.IGNORECASE)
        assert g.pulmonary_nodule_count == 1


@needs_parser
def test_positive_distractor_is_marked() -> None:
    rng = np.random.default_rng(11)
    assert ReportStyle().positive_distractors is False
    for _ in range(20):
        g = generate_report(random_spec(rng), styled(rng, positive_distractors=True, typo_rate=0.0), rng)
        assert g.pulmonary_nodule_count == 2
        distractor = [m for m in g.mentions if m.role == "distractor"]
        assert len(distractor) == 1
        positives = [n for n in extract_claims(g.text).nodules if not n.negated]
        assert len(positives) == 2, g.text
        ds, de = distractor[0].span
        assert any(ds <= n.span[0] and n.span[1] <= de for n in positives)


@needs_parser
def test_lung_rads_is_v2022() -> None:
    """The stated category is analysis.guidance's Lung-RADS v2022: sizes rounded half-up to 0.1 mm
    (5.96 mm is 6.0 mm, category 3), spiculation upgrades 4B as well as 3/4A to 4X."""
    rng = np.random.default_rng(13)
    full = ReportStyle(completeness_target=1.0, lung_rads=True)
    cases = [(5.94, {}, "2"), (5.96, {}, "3"), (7.96, {}, "4A"), (14.96, {}, "4B"), (20.0, {"spiculation": 4}, "4X"),
             (7.0, {"spiculation": 3}, "4X"), (4.0, {"spiculation": 5}, "2")]
    for diameter, overrides, category in cases:
        for _ in range(3):
            g = generate_report(ReportSpec(ratings(**overrides), diameter, lobe="RUL"), full, rng)
            assert g.lung_rads == category, (diameter, overrides, g.lung_rads)
            assert extract_claims(g.text).lung_rads == category, g.text


@needs_parser
def test_impression_reasons_from_descriptors() -> None:
    rng = np.random.default_rng(12)
    full = ReportStyle(completeness_target=1.0, lung_rads=True)
    spiculated = ReportSpec(ratings(texture=5, spiculation=5, margin=2, calcification=6), 25.0, lobe="RUL")
    granuloma = ReportSpec(ratings(texture=5, calcification=3, spiculation=1), 5.0, lobe="LLL")
    for _ in range(10):
        g = generate_report(spiculated, full, rng)
        assert g.lung_rads == "4X"  # Lung-RADS v2022: a 25 mm solid nodule is 4B, upgraded to 4X for spiculation
        claims = extract_claims(g.text)
        assert claims.lung_rads == "4X"
        assert re.search(r"suspicious|concerning", claims.impression, re.IGNORECASE)
        g = generate_report(granuloma, full, rng)
        assert g.lung_rads == "1"
        assert re.search(r"benign|granulom", extract_claims(g.text).impression, re.IGNORECASE)
