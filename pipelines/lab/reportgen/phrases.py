"""Wordings of the target nodule's descriptors, and the reading derived from the kept ones.

Research software, NOT for diagnostic use.

Small random-choice helpers; the ways to write each descriptor (size in mm or cm,
location, texture, margin, shape, calcification); the interpretation and the Lung-RADS
category, computed from the KEPT descriptors only; the recommendation sentences.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lungfuse.pipelines.analysis.guidance import lung_rads_v2022
from lungfuse.pipelines.lab.reportgen.spec import LOBE_NAME, LOBE_SIDE, ReportSpec, texture_category

# Segments by lobe (only anatomically compatible ones are ever written).
_SEGMENTS = {
    "RUL": ("apical", "posterior", "anterior"),
    "RML": ("lateral", "medial"),
    "RLL": ("superior", "medial basal", "anterior basal", "lateral basal", "posterior basal"),
    "LUL": ("apicoposterior", "anterior"),
    "LLL": ("superior", "anteromedial basal", "lateral basal", "posterior basal"),
    "lingula": ("superior lingular", "inferior lingular"),
}
# Lung zones that name a lobe unambiguously ("right apex" = RUL, "left base" = LLL).
_ZONE = {"RUL": ("right", "apex"), "LUL": ("left", "apex"), "RLL": ("right", "base"), "LLL": ("left", "base")}


# The benign LIDC calcification ratings and their Lung-RADS pattern names (analysis.guidance):
# 1 popcorn, 2 laminated, 3 solid (complete), 5 central.
_BENIGN_CALCIFICATION_PATTERN = {1: "popcorn", 2: "laminated", 3: "complete", 5: "central"}
_BENIGN_CALCIFICATION = tuple(_BENIGN_CALCIFICATION_PATTERN)


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
def pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def chance(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def article(next_text: str) -> str:
    """"a" or "an" by the sound of the next word ("an 8 mm", "an RUL", "a 1.2 cm")."""
    w = next_text.lstrip("(")
    if not w:
        return "a"
    if w[0].isdigit():
        num = re.match(r"\d+", w).group()  # type: ignore[union-attr]
        return "an" if num[0] == "8" or num in ("11", "18") else "a"
    head = re.match(r"[A-Za-z]+", w)
    word = head.group() if head else w
    if len(word) >= 2 and word.isupper():  # spelled-out acronym: "an RUL", "a GGN"
        return "an" if word[0] in "AEFHILMNORSX" else "a"
    if word.lower().startswith(("un", "ill")) or word[0].lower() in "aeio":
        return "an"
    return "a"


def cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text and text[0].islower() else text


def join_and(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def with_word(ab: bool, rng: np.random.Generator) -> str:
    return "w/" if ab and chance(rng, 0.5) else "with"


# ---------------------------------------------------------------------------
# Descriptor realisations
# ---------------------------------------------------------------------------
@dataclass
class _Forms:
    """Ways to write one descriptor: pre-noun adjectives, "with ..." objects, other
    post-noun phrases, predicative adjectives ("The nodule is ___") and whole
    follow-up sentences (with ``{N}`` for "The nodule")."""

    pre: list[str] = field(default_factory=list)
    with_obj: list[str] = field(default_factory=list)
    post: list[str] = field(default_factory=list)
    pred: list[str] = field(default_factory=list)
    own: list[str] = field(default_factory=list)


@dataclass
class _Size:
    pre: str
    post: str
    vague: bool = False  # no figure ("subcentimeter")


def _fmt_mm(value: float, rng: np.random.Generator, decimals: bool) -> str:
    if decimals and value < 10 and abs(value - round(value)) > 0.05:
        return f"{value:.1f}"
    return str(max(1, int(round(value))))


def size_forms(d: float, ab: bool, rng: np.random.Generator, allow_vague: bool) -> _Size:
    """Pre- and post-noun size phrases.  The largest figure is always the diameter
    rounded to the nearest mm (or 0.1 cm), so a reader recovers it within 0.5 mm."""
    if allow_vague and d < 10 and chance(rng, 0.1):
        # "subcentimeter" with no figure: a size statement, but not a number.
        return _Size(pick(rng, ["subcentimeter", "sub-centimeter"]),
                     pick(rng, ["measuring less than 1 cm", "measuring under 1 cm"]), vague=True)
    use_cm = d >= 5 and chance(rng, 0.35 if d >= 10 else 0.12)
    dims = chance(rng, 0.35)
    second = d * float(rng.uniform(0.55, 0.95))
    if use_cm:
        a, b = f"{d / 10:.1f}", f"{second / 10:.1f}"
        unit = "cm"
    else:
        decimals = chance(rng, 0.3)
        a = _fmt_mm(d, rng, decimals)
        b = _fmt_mm(min(second, float(a)), rng, decimals)
        unit = "mm"
    times = pick(rng, [" x ", " x ", "x", " \u00d7 "])
    value = f"{a}{times}{b} {unit}" if dims else f"{a} {unit}"
    approx = "approx." if ab else "approximately"
    pre_opts = [value, value, f"{approx} {value}"]
    if not dims and unit == "mm":
        pre_opts.append(f"{a}-mm")
    post_opts = [
        f"measuring {value}",
        f"measuring {approx} {value}",
        f"that measures {value}",
        f"({value})",
        f"measuring {value} in greatest dimension" if not dims else f"measuring {value} in axial dimensions",
    ]
    return _Size(pick(rng, pre_opts), pick(rng, post_opts))


def location_forms(spec: ReportSpec, ab: bool, rng: np.random.Generator) -> tuple[str, str, str, bool]:
    """(pre-noun adjective, post phrase "in the ...", label form, segment_used)."""
    lobe, side = spec.lobe, spec.effective_side
    if lobe is None:
        assert side is not None
        pre = pick(rng, [f"{side}-sided", f"{side} lung"])
        post = pick(rng, [f"in the {side} lung", f"within the {side} lung", f"in the {side} hemithorax"])
        return pre, post, f"{cap(side)} lung", False
    name = LOBE_NAME[lobe]
    short = lobe if ab and lobe != "lingula" and chance(rng, 0.7) else name
    segment_used = chance(rng, 0.15)
    if segment_used:
        seg = pick(rng, _SEGMENTS[lobe])
        if lobe == "lingula":
            post = f"in the {seg} segment"
            pre = "lingular"
        else:
            post = pick(rng, [f"in the {seg} segment of the {short}", f"in the {short}, {seg} segment",
                               f"in the {short} {seg} segment"])
            pre = short
        return pre, post, cap(short), True
    posts = [f"in the {short}", f"in the {short}", f"within the {short}"]
    pres = [short]
    if lobe == "lingula":
        pres = ["lingular"]
    elif not ab:
        level = name.split()[1]
        posts.append(f"in the {level} lobe of the {LOBE_SIDE[lobe]} lung")
    if lobe in _ZONE and chance(rng, 0.3):
        zside, zone = _ZONE[lobe]
        posts = [f"at the {zside} lung {zone}", f"in the {zside} {zone}"]
        pres = [f"{zside} {'apical' if zone == 'apex' else 'basilar'}"]
    return pick(rng, pres), pick(rng, posts), cap(short), False


def texture_forms(cat: str) -> _Forms:
    if cat == "solid":
        return _Forms(
            pre=["solid", "solid", "solid"],
            post=["of soft tissue attenuation"],
            with_obj=["soft tissue attenuation"],
            pred=["solid", "solid in attenuation", "of soft tissue attenuation"],
            own=["{N} is solid.", "{N} is of soft tissue attenuation.", "{N} is solid in attenuation."],
        )
    if cat == "part-solid":
        return _Forms(
            pre=["part-solid", "part-solid", "subsolid", "partly solid", "mixed attenuation", "semi-solid"],
            with_obj=["mixed ground-glass and solid components",
                      "a solid component and surrounding ground-glass attenuation"],
            pred=["part-solid", "subsolid", "of mixed solid and ground-glass attenuation"],
            own=["{N} is part-solid.", "{N} has both solid and ground-glass components.",
                 "{N} is subsolid, with a central solid component and ground-glass periphery."],
        )
    return _Forms(
        pre=["ground-glass", "pure ground-glass", "ground glass"],
        post=["of ground-glass attenuation"],
        with_obj=["ground-glass attenuation"],
        pred=["ground-glass in attenuation", "purely ground-glass"],
        own=["{N} is purely ground-glass in attenuation.", "{N} is non-solid (ground-glass).",
             "{N} is of ground-glass attenuation."],
    )


def margin_forms(r: dict[str, int], shape_kept: bool) -> _Forms:
    """Margin wording from margin, spiculation and lobulation.  Spiculation dominates;
    lobulation is written without the bare word "lobulated" when the shape is dropped
    (that word also names a shape)."""
    spic, lob, margin = r["spiculation"], r["lobulation"], r["margin"]
    lob_adj = ["lobulated", "microlobulated"] if shape_kept else ["microlobulated"]
    lob_with = (["lobulated margins", "lobulation"] if shape_kept else []) + ["lobular margins", "lobulation",
                                                                             "microlobulated margins"]
    if spic >= 3:
        adj = {3: ["mildly spiculated", "finely spiculated", "spiculated"], 4: ["spiculated"],
               5: ["markedly spiculated", "coarsely spiculated", "spiculated"]}[spic]
        obj = {3: ["fine spiculation", "a few fine spicules", "mildly spiculated margins"],
               4: ["spiculated margins", "spiculation", "spiculated, irregular margins"],
               5: ["marked spiculation", "coarse spiculation", "spiculated margins", "radiating spicules"]}[spic]
        if lob >= 3:
            adj = [f"{a}, {lob_adj[-1]}" for a in adj]
            obj = [f"{o} and lobulation" for o in obj] + (["spiculated and lobulated margins"] if shape_kept else [])
        own = ["{N} has " + o + "." for o in obj] + ["{N} demonstrates " + o + "." for o in obj]
        own += ["The margins of the nodule are " + a + "." for a in adj]
        return _Forms(pre=adj, with_obj=obj, pred=[a.replace(", ", " and ") for a in adj], own=own)
    if lob >= 3:
        if margin <= 2:
            adj = [f"ill-defined, {lob_adj[-1]}", f"poorly defined, {lob_adj[-1]}"]
            obj = ["lobular, indistinct margins", "lobulation and ill-defined margins"]
        else:
            adj, obj = lob_adj, lob_with
        own = ["{N} has " + o + "." for o in obj] + ["{N} is " + a + "." for a in adj]
        return _Forms(pre=adj, with_obj=obj, pred=[a.replace(", ", " and ") for a in adj], own=own)
    if margin <= 2:
        adj = ["ill-defined", "poorly defined", "poorly marginated"]
        obj = ["ill-defined margins", "indistinct margins", "irregular margins", "poorly defined borders"]
    elif margin == 3:
        adj = ["fairly well-defined", "moderately well-circumscribed"]
        obj = ["moderately well-defined margins", "slightly indistinct margins", "mildly irregular margins"]
    else:
        adj = ["well-circumscribed", "smooth", "smoothly marginated", "well-defined", "sharply marginated"]
        obj = ["smooth margins", "well-defined margins", "sharply defined margins", "well-circumscribed margins"]
    own = ["{N} has " + o + "." for o in obj] + ["The margins of the nodule are " + a + "." for a in adj[:2]]
    return _Forms(pre=adj, with_obj=obj, pred=[a.replace(", ", " and ") for a in adj], own=own)


def shape_forms(r: dict[str, int], rng: np.random.Generator) -> _Forms:
    s = r["sphericity"]
    if s <= 3 and (r["lobulation"] >= 4 or r["spiculation"] >= 4) and chance(rng, 0.4):
        return _Forms(pre=["irregularly shaped"], pred=["irregularly shaped"], own=["{N} is irregularly shaped."])
    words = {
        5: ["round", "spherical", "rounded"],
        4: ["round", "rounded", "roughly round", "nearly round"],
        3: ["oval", "ovoid", "elliptical"],
        2: ["oval", "elongated", "ovoid", "elliptical"],
        1: ["elongated", "markedly elongated"],
    }[s]
    w = pick(rng, words)
    return _Forms(
        pre=[w],
        with_obj=[f"{article(w)} {w} configuration", f"{article(w)} {w} contour"],
        pred=[w, f"{w} in shape"],
        own=["{N} is " + w + " in shape.", "{N} has " + article(w) + " " + w + " configuration.",
             "{N} is " + w + "."],
    )


def calc_forms(calc: int) -> _Forms:
    if calc == 6:
        return _Forms(
            pre=["non-calcified", "noncalcified", "uncalcified"],
            post=[", without calcification", ", without internal calcification"],
            pred=["not calcified", "non-calcified"],
            own=["No calcification is seen within the nodule.", "There is no calcification within the nodule.",
                 "{N} is not calcified.", "No internal calcification is identified within the nodule."],
        )
    pattern = {
        1: (["calcified"], ["popcorn calcification", "popcorn-type calcification", "chondroid (popcorn) calcification"]),
        2: (["calcified"], ["laminated calcification", "concentric laminated calcification",
                            "lamellated calcification"]),
        3: (["densely calcified", "diffusely calcified", "completely calcified"],
            ["dense calcification", "diffuse calcification"]),
        4: (["eccentrically calcified"], ["eccentric calcification", "an eccentric focus of calcification",
                                          "peripheral (eccentric) calcification"]),
        5: (["centrally calcified"], ["central calcification", "a central calcification"]),
    }[calc]
    adj, obj = pattern
    own = ["{N} contains " + o + "." for o in obj] + ["There is " + o + " within the nodule." for o in obj[:1]]
    if calc in (3, 4, 5):
        own += ["{N} is " + a + "." for a in adj]
    return _Forms(pre=adj, with_obj=obj, pred=adj if calc in (3, 4, 5) else [], own=own)


# ---------------------------------------------------------------------------
# Interpretation and Lung-RADS (from KEPT descriptors only)
# ---------------------------------------------------------------------------
def lung_rads_category(spec: ReportSpec, r: dict[str, int], kept: frozenset[str], fat_written: bool) -> str | None:
    """Lung-RADS v2022 baseline category (:func:`~lungfuse.pipelines.analysis.guidance.lung_rads_v2022`,
    the one implementation) from the KEPT descriptors, or None when they do not determine one.

    Benign calcification kept (LIDC calcification 1 popcorn, 2 laminated, 3 solid = complete,
    5 central) or fat written -> 1 whatever else is kept; otherwise size and texture must
    both be kept.  The size is the reader's diameter (mm) as the largest diameter: LIDC has
    no mean diameter.  A part-solid nodule's solid component, which LIDC does not measure,
    is approximated as 0.5 x diameter (texture 3) or 0.75 x diameter (texture 4).  A kept
    spiculated margin (spiculation >= 3) is a suspicious feature (3/4A/4B -> 4X)."""
    pattern = _BENIGN_CALCIFICATION_PATTERN.get(r["calcification"]) if "calcification" in kept else None
    if pattern is None and not fat_written and ("size" not in kept or "texture" not in kept):
        return None
    d = spec.diameter_mm if "size" in kept else None
    tex = texture_category(r["texture"]) if "texture" in kept else None
    solid = d * (0.5 if r["texture"] == 3 else 0.75) if d is not None and tex == "part-solid" else None
    return lung_rads_v2022(d, tex, solid_component_mm=solid, calcification_pattern=pattern, fat=fat_written,
                           suspicious_features="margin" in kept and r["spiculation"] >= 3).category


def interpretation(spec: ReportSpec, r: dict[str, int], kept: frozenset[str], fat_written: bool,
                    rng: np.random.Generator) -> tuple[str, str]:
    """(kind, phrase): the radiologist's reading of the kept descriptors.  kind is
    "benign", "hamartoma", "suspicious", "ground-glass", "part-solid", "small" or
    "indeterminate"."""
    d = spec.diameter_mm
    tex = texture_category(r["texture"]) if "texture" in kept else None
    calc_kept = "calcification" in kept
    if calc_kept and r["calcification"] == 1:
        return "hamartoma", pick(rng, ["likely a hamartoma", "compatible with a hamartoma", "benign-appearing"])
    if calc_kept and r["calcification"] in _BENIGN_CALCIFICATION:
        return "benign", pick(rng, ["benign-appearing", "with a benign pattern of calcification",
                                      "consistent with sequela of prior granulomatous disease", "benign"])
    if fat_written:
        return "hamartoma", pick(rng, ["compatible with a hamartoma", "likely a hamartoma"])
    spic = "margin" in kept and r["spiculation"] >= 3
    # a >= 3 cm pure ground-glass nodule is Lung-RADS 3, not "suspicious"
    big = "size" in kept and tex != "ground-glass" and (d >= 30 or (d >= 15 and tex is not None))
    if spic or big:
        strong = (spic and r["spiculation"] >= 4) or ("size" in kept and d >= 20)
        opts = ["suspicious for malignancy", "concerning for primary lung malignancy"]
        if strong:
            opts += ["highly suspicious for bronchogenic carcinoma", "highly suspicious for malignancy"]
        return "suspicious", pick(rng, opts)
    if tex == "ground-glass":
        return "ground-glass", pick(rng, ["which could represent atypical adenomatous hyperplasia or adenocarcinoma "
                                           "in situ", "indeterminate; adenocarcinoma spectrum disease is a "
                                           "consideration", "indeterminate"])
    if tex == "part-solid":
        return "part-solid", pick(rng, ["concerning for adenocarcinoma spectrum disease", "indeterminate",
                                         "for which adenocarcinoma should be considered"])
    if "size" in kept and d < 6:
        return "small", pick(rng, ["likely benign", "statistically likely benign", "probably benign",
                                    "of low suspicion"])
    return "indeterminate", pick(rng, ["indeterminate", "nonspecific", "of indeterminate significance"])


RECOMMENDATIONS = {
    "1": ["Continue annual screening with low-dose CT in 12 months.", "Annual low-dose CT screening is advised."],
    "2": ["Continue annual screening with low-dose CT in 12 months.", "Annual low-dose CT screening is advised."],
    "3": ["Follow-up low-dose CT in 6 months is recommended.", "Recommend 6-month follow-up low-dose CT."],
    "4A": ["Follow-up low-dose CT in 3 months is recommended; PET/CT may be considered.",
           "Recommend 3-month follow-up CT."],
    "4B": ["Recommend PET/CT and/or tissue sampling.", "Recommend chest CT with contrast, PET/CT and/or biopsy."],
    "4X": ["Recommend PET/CT and/or tissue sampling.", "Recommend multidisciplinary review and tissue sampling."],
    "benign": ["No specific follow-up is required.", "No further imaging follow-up is needed for this finding."],
    "suspicious": ["Recommend PET/CT and tissue sampling.", "Recommend multidisciplinary thoracic tumor board review."],
    "other": ["Follow-up chest CT in 3 to 6 months is recommended.", "Recommend follow-up CT per Fleischner Society "
              "guidelines.", "Consider short-interval follow-up CT."],
}
