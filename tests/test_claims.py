"""Nodule-claim extraction on realistic chest-CT report phrasings."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from lungfuse.pipelines.io.report import load_report
from lungfuse.pipelines.nlp.claims import (
    NODULE_DICT_KEYS,
    NoduleClaim,
    ReportClaims,
    extract_claims,
    find_lung_rads,
)

REPO = Path(__file__).resolve().parents[1]
DEV_SET = REPO / "tests" / "data" / "reports_dev.jsonl"


def only(claims: ReportClaims) -> NoduleClaim:
    assert len(claims.nodules) == 1, [n.text for n in claims.nodules]
    return claims.nodules[0]


def check(claim: NoduleClaim, expected: dict[str, Any]) -> None:
    got = {k: getattr(claim, k) for k in expected}
    assert got == expected, f"{claim.text!r}: {got} != {expected}"


# ---------------------------------------------------------------------------
# One nodule per text: (text, expected attributes of that single claim)
# ---------------------------------------------------------------------------
SINGLE: list[tuple[str, dict[str, Any]]] = [
    # sizes and units
    ("FINDINGS: Lungs: There is a 6 mm solid nodule in the right upper lobe (series 4, image 56). No pleural effusion.",
     {"size_mm": 6.0, "lobe": "RUL", "side": "right", "texture": "solid", "count": 1, "section": "FINDINGS"}),
    ("There is an 8mm nodule in the RLL (image 45).", {"size_mm": 8.0, "lobe": "RLL", "side": "right"}),
    ("1.2cm nodule in the left upper lobe.", {"size_mm": 12.0, "lobe": "LUL", "side": "left"}),
    ("A 0.9 x 0.7 cm nodule is seen in the right middle lobe (7:340).", {"size_mm": 9.0, "lobe": "RML"}),
    ("Left lower lobe nodule measuring 8x6mm (se 3 im 101).", {"size_mm": 8.0, "lobe": "LLL"}),
    ("Nodule in the right lower lobe measuring 7 by 5 mm.", {"size_mm": 7.0, "lobe": "RLL"}),
    ("Nodule measuring 5 mm in diameter in the lingula.", {"size_mm": 5.0, "lobe": "lingula", "side": "left"}),
    ("There is a 7 mm RUL nodule (previously 5 mm).", {"size_mm": 7.0, "prior_size_mm": 5.0, "stable": False}),
    ("Right upper lobe nodule now measures 11 mm, previously measuring 11 mm on 3/2/2021.",
     {"size_mm": 11.0, "prior_size_mm": 11.0, "stable": True}),
    ("A sub-5 mm nodule is present in the left upper lobe.", {"size_mm": 5.0, "size_qualifier": "<", "lobe": "LUL"}),
    ("A 2-3 mm nodule in the LUL.", {"size_mm": 3.0, "size_qualifier": "range"}),
    ("Subcentimeter left lower lobe nodule, too small to characterize.",
     {"size_mm": None, "size_qualifier": "subcentimeter", "lobe": "LLL"}),
    ("The right lower lobe nodule measures approximately 6 mm.", {"size_mm": 6.0, "size_qualifier": "~"}),
    ("Several 2 to 3 mm nodules in the right middle lobe.",
     {"size_mm": 3.0, "size_qualifier": "range", "multiple": True, "lobe": "RML"}),
    ("Nodule measuring up to 4 mm in the RLL.", {"size_mm": 4.0, "size_qualifier": "<="}),
    ("A four millimeter nodule is present in the right lower lobe.", {"size_mm": 4.0, "lobe": "RLL"}),
    ("Slightly enlarging RLL nodule, 9 mm today compared to 6 mm in 2020.", {"size_mm": 9.0, "stable": False}),
    ("5-mm nodule in the anterior segment of the right upper lobe (image 12/240).",
     {"size_mm": 5.0, "lobe": "RUL", "segment": "anterior"}),
    # locations
    ("Nodule in the superior segment of the right lower lobe measuring 4 mm.",
     {"lobe": "RLL", "segment": "superior", "size_mm": 4.0}),
    ("4 mm nodule in the lateral basal segment, left lower lobe.", {"lobe": "LLL", "segment": "lateral basal"}),
    ("R upper lobe 3 mm nodule.", {"lobe": "RUL", "side": "right", "size_mm": 3.0}),
    ("Small nodule in the rt lower lobe.", {"lobe": "RLL", "size_mm": None}),
    ("5 mm nodule at the L lung base (im 210).", {"lobe": "LLL", "side": "left", "size_mm": 5.0}),
    ("Nodule in the left upper lobe lingula measuring 4 mm.", {"lobe": "lingula", "side": "left"}),
    ("Lingular 6 mm nodule, stable.", {"lobe": "lingula", "stable": True}),
    ("Right middle lobe 3 mm nodule.", {"lobe": "RML", "side": "right"}),
    ("4 mm nodule in the upper lobe of the left lung.", {"lobe": "LUL"}),
    ("Perifissural nodule along the left major fissure, 4 mm.",
     {"position": "perifissural", "side": "left", "lobe": None, "size_mm": 4.0}),
    ("5 mm subpleural nodule in the right lower lobe.", {"position": "subpleural", "lobe": "RLL"}),
    ("Nodule in the apicoposterior segment of the left upper lobe, 9 mm.",
     {"lobe": "LUL", "segment": "apical posterior", "size_mm": 9.0}),
    ("Tiny nodule in the right lung apex.", {"lobe": "RUL", "side": "right"}),
    ("Bibasilar 2 mm nodules.", {"side": "bilateral", "lobe": None, "multiple": True, "count": None}),
    # texture
    ("6 mm ground glass nodule RUL.", {"texture": "ground-glass", "lobe": "RUL"}),
    ("7 mm groundglass opacity in the LLL.", {"texture": "ground-glass", "kind": "ggo", "size_mm": 7.0}),
    ("GGO in the RML measuring 9 mm.", {"texture": "ground-glass", "lobe": "RML", "size_mm": 9.0}),
    ("GGN RUL 12 mm, unchanged.", {"texture": "ground-glass", "size_mm": 12.0, "stable": True}),
    ("Part solid nodule in the LUL measuring 15 mm with 6 mm solid component.",
     {"texture": "part-solid", "size_mm": 15.0}),
    ("Subsolid nodule 8 mm RLL.", {"texture": "part-solid", "size_mm": 8.0}),
    ("Semi-solid 10 mm LUL nodule.", {"texture": "part-solid"}),
    ("Non-solid nodule, 6 mm, left lower lobe.", {"texture": "ground-glass", "lobe": "LLL"}),
    ("8 mm ground-glass nodule in the RUL without a solid component.", {"texture": "ground-glass"}),
    # margin, shape, calcification, cavitation
    ("Spiculated 14 mm nodule in the RUL.", {"margin": "spiculated", "size_mm": 14.0}),
    ("Speculated 2 cm nodule in the left upper lobe.", {"margin": "spiculated", "size_mm": 20.0}),
    ("Well-circumscribed 5 mm nodule in the LLL.", {"margin": "smooth"}),
    ("Lobulated 11 mm nodule, LUL.", {"margin": "lobulated", "shape": "lobulated"}),
    ("Irregular 13 mm nodule in the RLL.", {"margin": "irregular", "shape": "irregular"}),
    ("Round 6 mm nodule in the RML with smooth margins.", {"shape": "round", "margin": "smooth"}),
    ("Oval 4 mm perifissural nodule along the right minor fissure.", {"shape": "oval", "side": "right"}),
    ("8 mm nodule with popcorn calcification in the LLL, consistent with hamartoma.",
     {"calcification": True, "calcification_pattern": "popcorn"}),
    ("Centrally calcified 7 mm nodule RUL.", {"calcification": True, "calcification_pattern": "central"}),
    ("Densely calcified granuloma in the right lower lobe.",
     {"calcification": True, "calcification_pattern": "diffuse", "kind": "granuloma", "lobe": "RLL"}),
    ("Noncalcified 6 mm LLL nodule.", {"calcification": False}),
    ("Cavitary nodule in the right upper lobe measuring 2.2 cm.", {"cavitation": True, "size_mm": 22.0}),
    ("5 mm RUL nodule without calcification or cavitation.", {"calcification": False, "cavitation": False}),
    ("No calcification is seen within the 9 mm LUL nodule.", {"negated": False, "calcification": False}),
    # negation-looking but positive
    ("No change in the 5 mm right upper lobe nodule.", {"negated": False, "stable": True, "size_mm": 5.0}),
    ("There is no pleural effusion and there is a 5 mm LLL nodule.", {"negated": False, "lobe": "LLL"}),
    ("No pneumothorax. Unchanged 3 mm nodule in the RML.", {"negated": False, "stable": True}),
    # uncertainty
    ("Possible 3 mm nodule in the right upper lobe.", {"uncertain": True, "negated": False}),
    ("Questionable tiny nodule in the LLL.", {"uncertain": True}),
    ("4 mm RUL nodule, likely benign.", {"uncertain": False}),
    ("Likely benign 4 mm RUL nodule.", {"uncertain": False}),
    ("Small nodular opacity in the RLL which may represent atelectasis.", {"uncertain": True, "kind": "opacity"}),
    ("A small nodule in the lingula cannot be excluded.", {"uncertain": True, "lobe": "lingula"}),
    ("Nodular density in the LUL, possibly a vessel seen end-on.", {"uncertain": True}),
    ("4 mm RUL nodule, suspicious for malignancy.", {"uncertain": False}),
    # typos, abbreviations, case
    ("5 mm nodlue in the RUL.", {"size_mm": 5.0, "lobe": "RUL"}),
    ("3 mm ndoule in the right lower lobr.", {"size_mm": 3.0, "lobe": "RLL"}),
    ("6 mm noduel LLL.", {"size_mm": 6.0, "lobe": "LLL"}),
    ("FINDINGS: 5 MM NODULE IN THE RIGHT LOWER LOBE.", {"size_mm": 5.0, "lobe": "RLL"}),
    # masses, granulomas, micronodules
    ("3.5 cm spiculated mass in the left upper lobe.", {"kind": "mass", "size_mm": 35.0, "margin": "spiculated"}),
    ("Right hilar mass measuring 4 x 3 cm encasing the bronchus intermedius.", {"kind": "mass", "size_mm": 40.0}),
    ("Calcified granuloma in the left lower lobe.", {"kind": "granuloma", "calcification": True, "lobe": "LLL"}),
    ("Few scattered micronodules up to 2 mm in both lungs.",
     {"kind": "micronodule", "size_mm": 2.0, "size_qualifier": "<=", "multiple": True, "side": "bilateral"}),
    ("Multiple bilateral pulmonary nodules.", {"multiple": True, "side": "bilateral", "count": None}),
    ("Three small nodules in the left lung.", {"count": 3, "side": "left", "lobe": None}),
    # Lung-RADS on the nodule
    ("6 mm solid RUL nodule, Lung-RADS 3.", {"lung_rads": "3"}),
]


@pytest.mark.parametrize(("text", "expected"), SINGLE, ids=[t[:40] for t, _ in SINGLE])
def test_single_nodule(text: str, expected: dict[str, Any]) -> None:
    claims = extract_claims(text)
    check(only(claims), expected)
    assert claims.negative_statement is False
    n = claims.nodules[0]
    assert load_report(text).text[n.span[0] : n.span[1]] == n.text


# ---------------------------------------------------------------------------
# Negated mentions and negative statements
# ---------------------------------------------------------------------------
NEGATIVE: list[str] = [
    "No suspicious pulmonary nodules.",
    "Lungs are clear without nodules or masses.",
    "Negative for pulmonary nodules.",
    "No evidence of pulmonary nodule or mass.",
    "The lungs are free of nodules.",
    "No pleural effusion or pulmonary nodules.",
    "Lung nodules: none.",
    "FINDINGS: The previously seen RUL nodule has resolved.",
    "The left lower lobe nodule is no longer visualized.",
    "No new nodules.",
    "IMPRESSION: No discrete pulmonary nodule is identified.",
    "No pneumothorax, consolidation, or suspicious nodule.",
]


@pytest.mark.parametrize("text", NEGATIVE)
def test_negative_statements(text: str) -> None:
    claims = extract_claims(text)
    assert claims.nodules, "the negated mention itself must be kept"
    assert all(n.negated for n in claims.nodules)
    assert all(n.count == 0 for n in claims.nodules)
    assert claims.positive_nodules == ()
    assert claims.negative_statement is True


def test_negated_list_with_masses_is_one_mention() -> None:
    claims = extract_claims("Lungs are clear without nodules or masses.")
    assert len(claims.nodules) == 1
    assert claims.nodules[0].text == "Lungs are clear without nodules or masses"


def test_no_new_nodules_next_to_a_stable_nodule() -> None:
    claims = extract_claims(
        "FINDINGS: Stable 4 mm RLL nodule (series 3, image 80). No new nodules.\n"
        "IMPRESSION: Stable 4 mm right lower lobe nodule. No new nodules."
    )
    assert claims.negative_statement is False
    (pos,) = claims.positive_nodules
    check(pos, {"size_mm": 4.0, "lobe": "RLL", "stable": True, "section": "FINDINGS"})
    assert [n.negated for n in claims.nodules].count(True) >= 1


def test_mentions_that_are_not_lung_nodules() -> None:
    texts = [
        "1.5 cm left thyroid nodule.",
        "Thyroid: 2.1 cm nodule in the right lobe.",
        "Hypodense 8 mm lesion in the liver.",
        "1.2 cm right adrenal nodule, likely adenoma.",
        "1.2 cm lymph node in the right hilum.",
        "Subcarinal node measures 11 mm.",
        "Mass effect on the trachea from a large goiter.",
        "Left breast nodule measuring 9 mm.",
        "Calcified splenic granulomas.",
        "Upper abdomen: 1 cm nodule in the left adrenal gland.",
        "Lytic lesion in the T7 vertebral body.",
        "Patchy ground-glass opacities in both lungs, likely infectious.",
    ]
    for text in texts:
        assert extract_claims(text).nodules == (), text


def test_lymph_node_size_does_not_leak_into_nodule() -> None:
    claims = extract_claims("There is a 5 mm RUL nodule and a 1.2 cm subcarinal lymph node.")
    check(only(claims), {"size_mm": 5.0, "lobe": "RUL"})


def test_thyroid_and_lung_nodule_in_one_sentence() -> None:
    claims = extract_claims("A 4 mm nodule in the right lower lobe and a 1.5 cm left thyroid nodule.")
    check(only(claims), {"size_mm": 4.0, "lobe": "RLL"})


def test_slice_thickness_and_dates_are_not_sizes() -> None:
    text = (
        "CT chest on 12/14/2023 was performed with 5 mm collimation and 1.25 mm slices for lung nodule "
        "follow-up. There is a nodule in the right upper lobe (series 2, image 45), not measured."
    )
    claims = extract_claims(text)
    check(only(claims), {"size_mm": None, "lobe": "RUL"})
    claims = extract_claims(
        "TECHNIQUE: Axial 2.5 mm images.\nFINDINGS: No pulmonary nodules.\nIMPRESSION: Negative."
    )
    assert claims.negative_statement and all(n.size_mm is None for n in claims.nodules)


def test_image_references_are_not_sizes() -> None:
    for ref in ["(series 3 image 45)", "(7:340)", "(image 123)", "(se 5, im 67)", "(4/56)", "on image 12"]:
        claims = extract_claims(f"Small nodule in the left upper lobe {ref}.")
        check(only(claims), {"size_mm": None, "lobe": "LUL"})
    # "45, 5 mm" would otherwise read as a list of sizes (45 and 5 mm)
    for text in ["Right upper lobe nodule, series 3 image 45, 5 mm.", "Nodule in the LLL (7:340, 6 mm).",
                 "RML nodule on image 112, 3 mm, stable."]:
        claims = extract_claims(text)
        assert only(claims).size_mm in (5.0, 6.0, 3.0), text
        assert claims.nodules[0].size_mm < 10


def test_history_and_guideline_sentences_give_no_claims() -> None:
    text = (
        "INDICATION: History of 8 mm RUL nodule.\n"
        "FINDINGS: Lungs are clear. No nodules.\n"
        "IMPRESSION: Negative. Fleischner guidelines: for solid nodules <6 mm no routine follow-up is recommended."
    )
    claims = extract_claims(text)
    assert claims.positive_nodules == ()
    assert claims.negative_statement is True
    for text in [
        "Status post right lower lobe wedge resection for a nodule. No evidence of recurrence.",
        "Postoperative changes from RUL wedge resection of a 9 mm adenocarcinoma nodule.",
        "CT chest for evaluation of pulmonary nodule.",
        "Recommend follow-up CT in 6 months for the right upper lobe nodule.",
    ]:
        assert extract_claims(text).nodules == (), text


# ---------------------------------------------------------------------------
# Several nodules
# ---------------------------------------------------------------------------
MULTI: list[tuple[str, list[dict[str, Any]]]] = [
    ("4 mm RUL nodule and 6 mm LLL nodule.",
     [{"size_mm": 4.0, "lobe": "RUL"}, {"size_mm": 6.0, "lobe": "LLL"}]),
    ("There are two nodules in the right upper lobe measuring 3 and 5 mm.",
     [{"size_mm": 3.0, "lobe": "RUL"}, {"size_mm": 5.0, "lobe": "RUL"}]),
    ("A 5 mm nodule in the right upper lobe (image 20), a 4 mm nodule in the right lower lobe (image 80), "
     "and a 3 mm nodule in the lingula (image 95).",
     [{"size_mm": 5.0, "lobe": "RUL"}, {"size_mm": 4.0, "lobe": "RLL"}, {"size_mm": 3.0, "lobe": "lingula"}]),
    ("Stable 4 mm RLL nodule and new 6 mm RUL nodule.",
     [{"size_mm": 4.0, "stable": True}, {"size_mm": 6.0, "stable": False}]),
    ("Nodules measuring 4 and 7 mm are seen in the RML and LUL, respectively.",
     [{"size_mm": 4.0, "lobe": "RML"}, {"size_mm": 7.0, "lobe": "LUL"}]),
    ("Lungs: 5 mm solid nodule in the RUL. Separate 3 mm ground-glass nodule in the left lower lobe.",
     [{"size_mm": 5.0, "texture": "solid"}, {"size_mm": 3.0, "texture": "ground-glass", "lobe": "LLL"}]),
    ("RUL: 3 mm nodule (3:40).\nLLL: 6 mm nodule (3:201), new.",
     [{"size_mm": 3.0, "lobe": "RUL"}, {"size_mm": 6.0, "lobe": "LLL", "stable": False}]),
    ("Lung nodules: 1. RUL 4 mm (3:45). 2. LLL 6 mm (3:120). Mild emphysema.",
     [{"size_mm": 4.0, "lobe": "RUL", "count": 1}, {"size_mm": 6.0, "lobe": "LLL", "count": 1}]),
    ("FINDINGS:\nNODULES:\n- RUL 4 mm, solid (3:45)\n- LLL 6 mm, part-solid (3:120)\nMEDIASTINUM: 1.2 cm node.",
     [{"size_mm": 4.0, "texture": "solid"}, {"size_mm": 6.0, "texture": "part-solid"}]),
    ("Two nodules: a 4 mm nodule in the RUL and a 6 mm nodule in the LLL.",
     [{"size_mm": 4.0, "lobe": "RUL", "count": 1}, {"size_mm": 6.0, "lobe": "LLL", "count": 1}]),
    ("Ground-glass nodules in the RUL (8 mm) and LLL (6 mm).",
     [{"size_mm": 8.0, "lobe": "RUL", "texture": "ground-glass", "text": "Ground-glass nodules in the RUL (8 mm)"},
      {"size_mm": 6.0, "lobe": "LLL", "texture": "ground-glass", "text": "LLL (6 mm)"}]),
]


@pytest.mark.parametrize(("text", "expected"), MULTI, ids=[t[:40] for t, _ in MULTI])
def test_several_nodules(text: str, expected: list[dict[str, Any]]) -> None:
    claims = extract_claims(text)
    pos = claims.positive_nodules
    assert len(pos) == len(expected), [n.text for n in pos]
    for claim, exp in zip(pos, expected, strict=True):
        check(claim, exp)


def test_abbreviation_period_does_not_split_sentence() -> None:
    claims = extract_claims("There is a nodule in the RUL measuring approx. 6 mm (image 40). No other nodules.")
    check(claims.positive_nodules[0], {"size_mm": 6.0, "size_qualifier": "~", "lobe": "RUL"})
    assert [n.negated for n in claims.nodules] == [False, True]
    assert claims.negative_statement is False


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8-sig", "cp1252"])
def test_claims_from_encoded_files(tmp_path: Path, encoding: str) -> None:
    text = "FINDINGS:\r\nLungs: 7\u00a0mm solid nodule in the left lower lobe (image 88).\r\nIMPRESSION: Nodule.\r\n"
    path = tmp_path / f"report-{encoding}.txt"
    path.write_bytes(text.encode(encoding))
    claims = extract_claims(path)  # type: ignore[arg-type]
    n = only(claims)
    check(n, {"size_mm": 7.0, "lobe": "LLL", "section": "FINDINGS"})
    assert load_report(path).text[n.span[0] : n.span[1]] == n.text


def test_impression_repeat_is_merged_into_findings() -> None:
    text = (
        "FINDINGS: There is a 6 mm nodule in the right upper lobe (series 3, image 40).\n"
        "IMPRESSION: 1. 6 mm solid right upper lobe nodule. Lung-RADS 3."
    )
    claims = extract_claims(text)
    n = only(claims)
    check(n, {"size_mm": 6.0, "lobe": "RUL", "section": "FINDINGS", "texture": "solid", "lung_rads": "3"})
    assert n.text.startswith("There is a 6 mm nodule")
    assert claims.lung_rads == "3"


def test_impression_with_a_different_nodule_is_kept() -> None:
    claims = extract_claims("FINDINGS: 5 mm RUL nodule.\nIMPRESSION: 5 mm RUL nodule. Additional new 8 mm LLL nodule.")
    assert [(n.lobe, n.section) for n in claims.positive_nodules] == [("RUL", "FINDINGS"), ("LLL", "IMPRESSION")]


def test_anaphora_is_merged() -> None:
    claims = extract_claims("FINDINGS: 7 mm nodule in the left lower lobe (image 77). The nodule is spiculated.")
    check(only(claims), {"size_mm": 7.0, "lobe": "LLL", "margin": "spiculated"})


def test_one_paragraph_messy_report() -> None:
    text = (
        "CT CHEST W/O CONTRAST. HISTORY: 70 yo smoker. TECHNIQUE: 1.25mm axial images. COMPARISON: 1/4/2022. "
        "FINDINGS: lungs: 9mm spiculated nodlue rt upper lobe (se 3 im 45), previously 6mm. "
        "additional 3 mm nodule LLL, unchanged. no effusion. mild emphysema. thyroid: 1.3cm nodule left lobe. "
        "IMPRESSION: enlarging 9 mm spiculated RUL nodule, Lung-RADS 4B. stable 3mm LLL nodule."
    )
    claims = extract_claims(text)
    assert [(n.size_mm, n.lobe) for n in claims.positive_nodules] == [(9.0, "RUL"), (3.0, "LLL")]
    check(claims.positive_nodules[0], {"margin": "spiculated", "stable": False, "prior_size_mm": 6.0,
                                       "lung_rads": "4B", "section": "FINDINGS"})
    assert claims.lung_rads == "4B"
    assert claims.negative_statement is False


# ---------------------------------------------------------------------------
# Lung-RADS
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Lung-RADS 4A", "4A"),
        ("Lung RADS category 2", "2"),
        ("LR-3", "3"),
        ("Lung-RADS v1.1 Category 4B.", "4B"),
        ("Lung-RADS version 2022: 3", "3"),
        ("LUNG-RADS CATEGORY: 4X", "4X"),
        ("ACR Lung-RADS assessment: category 1 - negative", "1"),
        ("Lung-RADS 2S", "2"),
        ("LungRADS 4b", "4B"),
        ("Lung-RADS 1.1 criteria were applied.", None),
        ("Follow-up in 12 months.", None),
    ],
)
def test_lung_rads(text: str, category: str | None) -> None:
    found = [c for _, _, c in find_lung_rads(text)]
    assert (found[0] if found else None) == category
    assert extract_claims(text).lung_rads == category


def test_report_level_lung_rads_prefers_impression_and_ignores_prior() -> None:
    text = (
        "COMPARISON: Prior LDCT, Lung-RADS 3.\nFINDINGS: 5 mm RUL nodule, previously Lung-RADS 3.\n"
        "IMPRESSION: Lung-RADS 2. Stable RUL nodule."
    )
    assert extract_claims(text).lung_rads == "2"


# ---------------------------------------------------------------------------
# Completeness and serialisation
# ---------------------------------------------------------------------------
def test_completeness() -> None:
    full = extract_claims(
        "FINDINGS: 8 mm solid, smooth, round, noncalcified nodule in the right upper lobe.\nIMPRESSION: RUL nodule."
    )
    assert full.completeness == pytest.approx(1.0)
    partial = extract_claims("FINDINGS: 8 mm nodule in the right upper lobe.\nIMPRESSION: RUL nodule.")
    assert partial.completeness == pytest.approx(3 / 7, abs=1e-3)
    side_only = extract_claims("FINDINGS: 8 mm nodule in the right lung.")
    assert side_only.completeness == pytest.approx(1.5 / 7, abs=1e-3)
    neg = extract_claims("FINDINGS: No pulmonary nodules.\nIMPRESSION: Negative chest CT.")
    assert neg.completeness == pytest.approx(1.0)
    neg_no_imp = extract_claims("FINDINGS: No pulmonary nodules.")
    assert neg_no_imp.completeness == pytest.approx(6 / 7, abs=1e-3)
    silent = extract_claims("FINDINGS: Mild emphysema.")
    assert silent.completeness == 0.0 and silent.nodules == ()


def test_to_dict_shape_and_json() -> None:
    claims = extract_claims(
        "FINDINGS: Stable 4 mm RLL nodule (image 80). No new nodules.\nIMPRESSION: Lung-RADS 2."
    )
    d = claims.to_dict()
    assert set(d) == {"completeness", "negative_statement", "lung_rads", "nodules"}
    assert d["lung_rads"] == "2"
    for nd in d["nodules"]:
        assert tuple(nd) == NODULE_DICT_KEYS
        assert isinstance(nd["span"], list) and len(nd["span"]) == 2
    json.dumps(d)
    full = claims.nodules[0].to_dict()
    assert full["size_qualifier"] is None and full["kind"] == "nodule"


def test_claim_validation() -> None:
    with pytest.raises(ValueError):
        NoduleClaim(lobe="RXL")
    with pytest.raises(ValueError):
        NoduleClaim(size_mm=-1.0)
    with pytest.raises(ValueError):
        NoduleClaim(span=(5, 2))
    with pytest.raises(ValueError):
        ReportClaims(completeness=1.5)


def test_accepts_report_objects_and_paths(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_bytes("FINDINGS: 5 mm nodule in the right upper lobe \u2013 stable.\n".encode("cp1252"))
    by_path = extract_claims(str(path))
    by_report = extract_claims(load_report(path))
    assert by_path == by_report
    check(only(by_path), {"size_mm": 5.0, "lobe": "RUL", "stable": True})


# ---------------------------------------------------------------------------
# Robustness
# ---------------------------------------------------------------------------
def test_never_crashes_on_odd_text() -> None:
    rng = random.Random(1234)
    alphabet = "nodule mm cm 0123456789 .,;:()/-x RUL LLL lobe right left no not \n\t\u00e9\u2013\u201c\u00d7<>~?"
    samples = [
        "\u00a0", "FINDINGS:", "IMPRESSION:\n\n", "nodule", "No", "1." * 50, "mm mm mm 5", "(((((", "\x00nodule\x00",
        "Lung-RADS", "LR-", "5 x x x mm nodule", "..........", "nodule " * 300,
    ]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300))) for _ in range(150)]
    for text in samples:
        if not text.strip():
            continue
        claims = extract_claims(text)
        assert 0.0 <= claims.completeness <= 1.0
        json.dumps(claims.to_dict())


def test_long_report_is_parsed() -> None:
    """A 400-sentence report parses; its speed is timed by bench/bench_claims.py, not here."""
    block = (
        "FINDINGS: There is a 6 mm solid nodule in the right upper lobe (series 4, image 56). "
        "No pleural effusion. 1.2 cm subcarinal lymph node. Thyroid nodule 1 cm. "
    )
    text = block * 400 + "\nIMPRESSION: Nodules as above."
    claims = extract_claims(text)
    assert len(claims.positive_nodules) >= 1


# ---------------------------------------------------------------------------
# Development set: parser vs baseline
# ---------------------------------------------------------------------------
def _load_eval():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("eval_claims", REPO / "bench" / "eval_claims.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def test_dev_set_scores(tmp_path: Path) -> None:
    ev = _load_eval()
    records = ev.load_jsonl(DEV_SET)
    assert len(records) >= 40
    assert ev.main([str(DEV_SET), "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    parser, baseline = scores["parser"], scores["baseline"]
    assert parser["presence_accuracy"] >= 0.95
    assert parser["recall"] >= 0.9
    assert parser["precision"] >= 0.9
    assert parser["size_accuracy"] >= 0.9
    assert parser["lobe_accuracy"] >= 0.9
    assert parser["f1"] > baseline["f1"]


@pytest.mark.parametrize("text, benign", [
    ("8 mm calcified granuloma in the right lower lobe.", True),
    ("A 6 mm nodule in the right upper lobe, likely benign.", True),
    ("A 6 mm benign-appearing nodule in the right upper lobe.", True),
    ("A 12 mm nodule in the left upper lobe with popcorn calcification.", True),
    ("A 12 mm nodule in the left upper lobe, compatible with a hamartoma.", True),
    ("A 5 mm solid nodule in the right upper lobe. Lung-RADS 2.", True),
    ("A 6 mm nodule in the right upper lobe. It is likely benign.", True),
    ("A 5 mm nodule in the lingula, not clearly benign.", False),
    ("A 9 mm nodule in the right lower lobe, benign versus malignant.", None),
    ("A 15 mm spiculated nodule in the right upper lobe, suspicious for malignancy.", None),
    ("A 7 mm nodule with eccentric calcification in the left lower lobe.", None),
    ("A 6 mm solid nodule in the right upper lobe.", None),
])
def test_benign_wording(text: str, benign: bool | None) -> None:
    (claim,) = extract_claims(text).positive_nodules
    assert claim.benign is benign


def test_benign_wording_on_the_dev_set() -> None:
    """Every dev nodule annotated with "benign" (dev-148 to dev-157, committed before the parser read
    the wording) gets it: True when the report calls it benign, not True otherwise."""
    ev = _load_eval()
    checked = 0
    for rec in ev.load_jsonl(DEV_SET):
        gold = [n["benign"] for n in rec["nodules"] if "benign" in n]
        if not gold:
            continue
        got = [n.benign is True for n in extract_claims(rec["text"]).positive_nodules]
        assert got == gold, rec["id"]
        checked += len(gold)
    assert checked >= 10


def test_scorer_matching_rules() -> None:
    ev = _load_eval()
    m = ev.Mention
    gold = [m(4.0, "RUL", "right"), m(6.0, "LLL", "left")]
    assert ev.match_mentions([m(6.5, "LLL", "left"), m(4.0, "RUL", "right")], gold) == [(1, 0), (0, 1)]
    assert ev.match_mentions([m(9.0, "RUL", "right")], gold) == []  # size too far
    assert ev.match_mentions([m(4.0, "RML", "right")], gold) == []  # wrong lobe
    assert ev.match_mentions([m(4.0, None, "bilateral")], gold) == [(0, 0)]


# ---------------------------------------------------------------------------
# Issue 21, sections 4 and 5: group phrases, "the largest", lobes from labels and pronouns
# ---------------------------------------------------------------------------
def _positive(text: str) -> list[NoduleClaim]:
    return list(extract_claims(text).positive_nodules)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Multiple bilateral pulmonary nodules.", {"multiple": True, "count": None, "side": "bilateral"}),
        ("Several small nodules in the left lung, up to 4 mm.",
         {"multiple": True, "size_mm": 4.0, "size_qualifier": "<=", "side": "left"}),
        ("Scattered micronodules in both lungs.", {"multiple": True, "side": "bilateral"}),
        ("A few nodules in the left upper lobe, up to 5 mm.", {"multiple": True, "lobe": "LUL", "size_mm": 5.0}),
        ("Numerous nodules throughout both lungs.", {"multiple": True, "side": "bilateral"}),
        ("Three nodules are present in the right lung measuring up to 4 mm.",
         {"multiple": True, "count": 3, "size_mm": 4.0, "size_qualifier": "<=", "side": "right"}),
        ("Tiny nodules in the right upper and left lower lobes measuring up to 3 mm.",
         {"multiple": True, "lobe": None, "side": "bilateral", "size_mm": 3.0}),
    ],
)
def test_group_phrase_is_one_group_claim(text: str, expected: dict[str, Any]) -> None:
    (claim,) = _positive(text)
    check(claim, {**expected, "largest": False})


def test_largest_of_a_group_is_a_claim_of_its_own() -> None:
    text = "Multiple bilateral pulmonary nodules, the largest a 3.1 cm mass in the left lower lobe."
    group, big = _positive(text)
    check(group, {"multiple": True, "side": "bilateral", "lobe": None, "largest": False,
                  "size_mm": 31.0, "size_qualifier": "<="})
    check(big, {"multiple": False, "count": 1, "largest": True, "size_mm": 31.0, "lobe": "LLL", "side": "left"})


@pytest.mark.parametrize(
    ("text", "big_lobe", "big_size"),
    [
        ("Innumerable bilateral pulmonary nodules, the largest measuring 1.4 cm in the left lower lobe.", "LLL", 14.0),
        ("A few nodules in the right lung are unchanged, the largest in the right middle lobe measuring 7 mm.",
         "RML", 7.0),
        ("Scattered bilateral nodules measuring up to 6 mm, the largest in the right lower lobe.", "RLL", 6.0),
    ],
)
def test_largest_member_in_the_same_head(text: str, big_lobe: str, big_size: float) -> None:
    group, big = _positive(text)
    assert group.multiple and group.lobe is None and not group.largest
    assert group.size_mm == big_size
    check(big, {"largest": True, "lobe": big_lobe, "size_mm": big_size, "count": 1})
    assert "largest" not in group.text


def test_largest_and_multiple_are_in_the_dict_keys() -> None:
    nodules = extract_claims("Multiple nodules, the largest 5 mm in the RUL.").to_dict()["nodules"]
    assert [(n["multiple"], n["largest"]) for n in nodules] == [(True, False), (False, True)]


@pytest.mark.parametrize(
    ("text", "lobes"),
    [
        ("FINDINGS:\nLeft lung: A 5 mm nodule in the lower lobe and a 3 mm nodule in the upper lobe.\nRight lung: Clear.",
         ["LLL", "LUL"]),
        ("FINDINGS:\nRIGHT LOWER LOBE: Stable 6 mm nodule.\nLEFT LUNG: Clear.", ["RLL"]),
        ("FINDINGS:\nLungs: Small nodule in the left lower lobe. It measures 4 mm.", ["LLL"]),
        ("Two nodules in the right upper and left lower lobes measuring 4 and 6 mm, respectively.", ["RUL", "LLL"]),
        ("In the left upper lobe, there is a 10 mm nodule. A second 4 mm nodule is present in the same lobe.",
         ["LUL", "LUL"]),
        ("A nodule with a diameter of 4 mm is seen in the upper lobe of the right lung.", ["RUL"]),
        ("Nodular density measuring 5 mm in the lingula.", ["lingula"]),
    ],
)
def test_lobe_from_label_pair_pronoun_and_word_order(text: str, lobes: list[str]) -> None:
    assert [n.lobe for n in _positive(text)] == lobes


def test_pronoun_fills_the_size_of_the_nodule_before() -> None:
    (n,) = _positive("Lungs: There is a nodule in the anterior segment of the left upper lobe. It measures 9 mm.")
    check(n, {"size_mm": 9.0, "lobe": "LUL"})


def test_pronoun_after_a_lymph_node_is_not_a_nodule() -> None:
    claims = _positive("A 4 mm RUL nodule and an enlarged right hilar lymph node. It measures 14 mm.")
    assert [(n.size_mm, n.lobe) for n in claims] == [(4.0, "RUL")]


def test_lobe_after_the_nodule_in_another_finding_is_not_taken() -> None:
    (n,) = _positive("FINDINGS:\nRight lung: There is a 4.5 cm mass in the right hilum with atelectasis of the "
                     "right middle lobe.")
    assert n.lobe is None and n.side == "right"


@pytest.mark.parametrize(
    "text",
    [
        "No pulmonary nodules.",
        "No mass or nodule was detected in either lung.",
        "No obvious mass or nodular shadow was found in both lungs.",
        "There are no pulmonary nodules identified in either lung.",
    ],
)
def test_negations_in_both_styles(text: str) -> None:
    claims = extract_claims(text)
    assert claims.negative_statement and not claims.positive_nodules
