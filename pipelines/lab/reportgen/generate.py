"""Rendering one report: the kept descriptors, the target's sentences, the whole report.

Research software, NOT for diagnostic use.

:func:`generate_report` and the training style distribution :func:`sample_style`; see
:mod:`..reportgen` for what the reports guarantee.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from lungfuse.pipelines.lab.reportgen.phrases import (
    RECOMMENDATIONS,
    article,
    calc_forms,
    cap,
    chance,
    interpretation,
    join_and,
    location_forms,
    lung_rads_category,
    margin_forms,
    pick,
    shape_forms,
    size_forms,
    texture_forms,
    with_word,
)
from lungfuse.pipelines.lab.reportgen.sections import (
    Para,
    Section,
    Sent,
    comparison_text,
    exam_text,
    history_text,
    layout,
    organ_findings,
    technique_text,
)
from lungfuse.pipelines.lab.reportgen.spec import (
    DESCRIPTORS,
    HEADER_STYLES,
    LOBE_NAME,
    RATING_RANGES,
    GeneratedReport,
    NoduleMention,
    ReportSpec,
    ReportStyle,
    texture_category,
)
from lungfuse.pipelines.lab.reportgen.typos import apply_typos

# Relative chance that a descriptor survives when some must be dropped: terse real
# reports nearly always keep size and location, and rarely the shape.
_KEEP_WEIGHTS = {
    "size": 3.0,
    "location": 3.0,
    "texture": 1.5,
    "margin": 1.0,
    "calcification": 0.8,
    "shape": 0.6,
    "impression": 2.0,
}


_NEG_CUE_RE = re.compile(r"\b(?:no|not|without|non)\b", re.IGNORECASE)


# ---------------------------------------------------------------------------
# The target nodule
# ---------------------------------------------------------------------------
@dataclass
class _Ctx:
    spec: ReportSpec
    r: dict[str, int]
    kept: frozenset[str]
    style: ReportStyle
    rng: np.random.Generator
    ab: bool
    extras: set[str]
    fat_written: bool = False
    vague_size: bool = False  # the FINDINGS gave no figure: the impression must not either


def _choose_kept(spec: ReportSpec, target: float, rng: np.random.Generator) -> frozenset[str]:
    available = [d for d in DESCRIPTORS if d != "location" or spec.has_location]
    # Stochastic rounding: E[k] = 7 t, so the expected kept fraction is the target.
    k = int(math.floor(target * len(DESCRIPTORS) + rng.random()))
    k = min(max(k, 0), len(available))
    if k >= len(available):
        return frozenset(available)
    # Weighted sampling without replacement (Efraimidis-Spirakis keys u^(1/w)).
    keys = [float(rng.random()) ** (1.0 / _KEEP_WEIGHTS[d]) for d in available]
    order = sorted(range(len(available)), key=lambda i: -keys[i])
    return frozenset(available[i] for i in order[:k])


def _noun(ctx: _Ctx) -> tuple[str, bool]:
    """(head noun, texture_in_noun).  Ground-glass nouns carry the texture; "mass" is
    only used for >= 3 cm with size and location written (a "mass" needs lung context
    to be read as pulmonary, and the word itself implies the size)."""
    rng, r, kept, ab = ctx.rng, ctx.r, ctx.kept, ctx.ab
    # no "calcified ground-glass opacity": contradictory, and "diffuse(ly calcified)" next
    # to a ground-glass opacity reads as diffuse ground glass rather than a nodule
    calcified = "calcification" in kept and r["calcification"] != 6
    if "texture" in kept and texture_category(r["texture"]) == "ground-glass" and not calcified and \
            chance(rng, 0.45):
        opts = ["ground-glass nodule", "focal ground-glass opacity"] + (["GGN", "focal GGO"] if ab else [])
        return pick(rng, opts), True
    if "size" in kept and "location" in kept and ctx.spec.diameter_mm >= 30 and chance(rng, 0.6):
        return "mass", False
    return pick(rng, ["nodule", "nodule", "pulmonary nodule", "pulmonary nodule", "nodular opacity", "lung nodule",
                       "nodular density"]), False


def _target_findings(ctx: _Ctx) -> list[str]:
    """The FINDINGS sentences about the target: one main sentence carrying size and
    location (a later sentence with either would read as another nodule), optionally
    followed by "The nodule ..." sentences with the other descriptors."""
    spec, r, kept, rng, ab = ctx.spec, ctx.r, ctx.kept, ctx.rng, ctx.ab
    noun, tex_in_noun = _noun(ctx)
    pre: dict[str, str] = {}
    with_objs: list[str] = []
    posts: list[str] = []  # non-"with" post phrases
    neg_tail: str | None = None  # a negated phrase must come last (its cue reaches 30 chars on)
    own: list[str] = []
    preds: list[str] = []  # predicative adjectives for one combined "The nodule is ..." sentence
    neg_pred: str | None = None

    # ---- size and location (main sentence only)
    size_post = None
    if "size" in kept:
        sz = size_forms(spec.diameter_mm, ab, rng, allow_vague=ctx.style.completeness_target < 1.0)
        ctx.vague_size = sz.vague
        if chance(rng, 0.6):
            pre["size"] = sz.pre
        else:
            size_post = sz.post
    elif spec.diameter_mm < 5 and chance(rng, 0.3):
        pre["size"] = pick(rng, ["small", "tiny"])  # vague words are not a size statement
    elif spec.diameter_mm < 10 and chance(rng, 0.2):
        pre["size"] = "small"
    loc_post = loc_label = None
    if "location" in kept:
        loc_pre, loc_post, loc_label, seg = location_forms(spec, ab, rng)
        if seg:
            ctx.extras.add("segment")
        if chance(rng, 0.3) and "segment" not in ctx.extras:
            pre["location"] = loc_pre
            loc_post = None

    # ---- the other descriptors: pre-noun, post-noun or a follow-up sentence
    def place(weights: tuple[float, float, float]) -> str:
        return ("pre", "post", "follow")[int(rng.choice(3, p=np.array(weights) / sum(weights)))]

    if "texture" in kept and not tex_in_noun:
        f = texture_forms(texture_category(r["texture"]))
        where = place((0.65, 0.15, 0.2))
        if where == "pre":
            pre["texture"] = pick(rng, f.pre)
        elif where == "post":
            opts = f.post + f.with_obj
            choice = pick(rng, opts)
            (posts if choice in f.post else with_objs).append(choice)
        else:
            (own.append(pick(rng, f.own)) if chance(rng, 0.4) else preds.append(pick(rng, f.pred)))
    if "shape" in kept:
        f = shape_forms(r, rng)
        where = place((0.45, 0.2, 0.35))
        if where == "pre":
            pre["shape"] = pick(rng, f.pre)
        elif where == "post" and f.with_obj:
            with_objs.append(pick(rng, f.with_obj))
        else:
            (own.append(pick(rng, f.own)) if chance(rng, 0.4) else preds.append(pick(rng, f.pred)))
    if "margin" in kept:
        f = margin_forms(r, "shape" in kept)
        where = place((0.35, 0.4, 0.25))
        if where == "pre":
            pre["margin"] = pick(rng, f.pre)
        elif where == "post":
            with_objs.append(pick(rng, f.with_obj))
        else:
            (own.append(pick(rng, f.own)) if chance(rng, 0.6) else preds.append(pick(rng, f.pred)))
    if "calcification" in kept:
        calc = r["calcification"]
        f = calc_forms(calc)
        where = place((0.35, 0.35, 0.3))
        if calc == 6:
            if where == "pre":
                pre["calcification"] = pick(rng, f.pre)
            elif where == "post":
                neg_tail = pick(rng, f.post)
            elif chance(rng, 0.6):
                own.append(pick(rng, f.own))
            else:
                neg_pred = pick(rng, f.pred)
        elif where == "pre":
            pre["calcification"] = pick(rng, f.pre)
        elif where == "post" or not (f.pred or f.own):
            with_objs.append(pick(rng, f.with_obj))
        elif f.pred and chance(rng, 0.4):
            preds.append(pick(rng, f.pred))
        else:
            own.append(pick(rng, f.own))

    # ---- extras: internal structure, subtlety, image reference
    internal = r["internalStructure"]
    # At most four "The nodule ..." sentences: a reader (and the claims parser) ties a
    # bare "The nodule ..." to the nodule introduced a few sentences earlier, not to one
    # introduced five sentences back; the internal structure yields first.
    n_follow = len(own) + bool(preds or neg_pred)
    if internal > 1 and chance(rng, 0.4 + 0.5 * ctx.style.completeness_target):
        written = True
        if internal == 2:
            written = n_follow < 4
            if written:
                own.append(pick(rng, ["{N} demonstrates internal fluid attenuation.", "{N} appears cystic."]))
        elif internal == 3:
            if chance(rng, 0.5) or n_follow >= 4:
                with_objs.append(pick(rng, ["internal fat attenuation", "macroscopic fat"]))
            else:
                own.append(pick(rng, ["{N} contains macroscopic fat.", "{N} contains internal fat attenuation."]))
            ctx.fat_written = True
        elif chance(rng, 0.5) or n_follow >= 4:
            pre["cavity"] = "cavitary"
        else:
            own.append(pick(rng, ["{N} is cavitary.", "There is internal cavitation within the nodule."]))
        if written:
            ctx.extras.add("internal_structure")
    if r["subtlety"] != 3 and chance(rng, 0.25):
        ctx.extras.add("subtlety")
        pre["subtlety"] = pick(rng, ["subtle", "faint"] if r["subtlety"] <= 2 else ["conspicuous"])
    image_ref = ""
    if spec.image_ref is not None and ctx.style.image_refs and chance(rng, 0.7):
        ctx.extras.add("image_ref")
        se, im = spec.image_ref
        image_ref = pick(rng, [f"(series {se}, image {im})", f"(se {se}, im {im})", f"(image {im})",
                                f"({se}:{im})", f"(series {se} image {im})"])

    # A pre-noun negated adjective ("non-calcified") would negate a descriptor written
    # after it within the same clause, so it is moved behind all of them.
    # The same holds for a noun that carries the texture ("non-calcified ground-glass nodule").
    if "calcification" in pre and _NEG_CUE_RE.search(pre["calcification"]) and (with_objs or posts or tex_in_noun):
        neg_tail = ", without calcification"
        del pre["calcification"]

    # ---- noun phrase
    order = ["subtlety", "size", "margin", "shape", "texture", "cavity", "calcification", "location"]
    if "margin" in pre and "size" in pre and chance(rng, 0.3):
        order = ["subtlety", "margin", "size", "shape", "texture", "cavity", "calcification", "location"]
    adjs = [pre[k] for k in order if k in pre]
    np_core = " ".join(adjs + [noun])
    post_parts: list[str] = []
    if size_post:
        post_parts.append(size_post)
    if loc_post:
        post_parts.append(loc_post)
    post_parts.extend(posts)
    if with_objs:
        post_parts.append(f"{with_word(ab, rng)} {join_and(with_objs)}")
    post = (" " + " ".join(post_parts)) if post_parts else ""
    if neg_tail:
        post += neg_tail if neg_tail.startswith(",") else " " + neg_tail
    if image_ref:
        post += " " + image_ref

    det_np = f"{article(np_core)} {np_core}"
    templates = ["there", "there", "tele", "seen", "noted"]
    if loc_post and not size_post:
        templates += ["loc_first", "loc_first"]
    if loc_label is not None:
        templates.append("label")
    tpl = pick(rng, templates)
    if tpl == "there":
        main = f"There is {det_np}{post}."
    elif tpl == "tele":
        main = f"{cap(np_core)}{post}."
    elif tpl == "seen":
        verb = pick(rng, ["is seen", "is noted", "is present", "is identified"])
        main = f"{cap(det_np)} {verb}{post}."
    elif tpl == "noted":
        main = f"{pick(rng, ['Noted is', 'Present is'])} {det_np}{post}."
    elif tpl == "loc_first":
        rest = post.replace(" " + loc_post, "", 1)  # type: ignore[operator]
        main = f"{cap(loc_post)}, there is {det_np}{rest}."  # type: ignore[arg-type]
    else:  # "RUL: 8 mm solid nodule ..." - location as a line label, written once
        rest = post.replace(" " + loc_post, "", 1) if loc_post else post
        core = np_core if "location" not in pre else " ".join([a for a in adjs if a != pre["location"]] + [noun])
        main = f"{loc_label}: {cap(core) if chance(rng, 0.5) else core}{rest}."
    sentences = [main]

    # ---- follow-up sentences ("The nodule ...": the subject must name the nodule, a
    # bare "It is solid." is not attributable)
    subject = pick(rng, ["The nodule", "This nodule", "The nodule"])
    if preds or neg_pred:
        items = list(preds) + ([neg_pred] if neg_pred else [])
        sentences.append(f"{subject} is {join_and(items)}.")
    for o in own:
        sentences.append(o.replace("{N}", pick(rng, ["The nodule", "This nodule"])))
    return sentences


def _target_impression(ctx: _Ctx) -> tuple[str, str | None, str]:
    """(impression sentence about the target, Lung-RADS category or None, interpretation
    kind).  It repeats only kept descriptors (size and location usually, texture,
    margin and calcification sometimes) so that it never states a dropped one."""
    spec, r, kept, rng, ab = ctx.spec, ctx.r, ctx.kept, ctx.rng, ctx.ab
    kind, interp = interpretation(spec, r, kept, ctx.fat_written, rng)
    adjs: list[str] = []
    if "size" in kept and chance(rng, 0.85):
        adjs.append("subcentimeter" if ctx.vague_size else size_forms(spec.diameter_mm, ab, rng, False).pre)
    if "margin" in kept and (r["spiculation"] >= 3 or chance(rng, 0.3)):
        adjs.append(pick(rng, margin_forms(r, "shape" in kept).pre))
    if "shape" in kept and chance(rng, 0.1):
        adjs.append(pick(rng, shape_forms(r, rng).pre))
    noun = "nodule"
    if "texture" in kept and chance(rng, 0.7):
        cat = texture_category(r["texture"])
        if cat == "ground-glass" and ab and chance(rng, 0.4):
            noun = "GGN"
        else:
            adjs.append({"solid": "solid", "part-solid": pick(rng, ["part-solid", "subsolid"]),
                         "ground-glass": pick(rng, ["ground-glass", "pure ground-glass"])}[cat])
    if "calcification" in kept:
        calc = r["calcification"]
        if calc in (2, 3, 5) and chance(rng, 0.6):
            noun = "granuloma"
            adjs.append(pick(rng, ["calcified", calc_forms(calc).pre[0]]))
        elif calc != 6 and chance(rng, 0.6):
            adjs.append(pick(rng, calc_forms(calc).pre))
        elif calc == 6 and noun == "nodule" and chance(rng, 0.3):
            adjs.append("non-calcified")  # last adjective, before a noun that states nothing
    if noun == "nodule" and "size" in kept and "location" in kept and spec.diameter_mm >= 30 and chance(rng, 0.5):
        noun = "mass"
    loc = ""
    if "location" in kept and chance(rng, 0.85):
        loc_pre, loc_post, _, _ = location_forms(spec, ab, rng)
        if "segment" in loc_post:  # keep the impression short
            loc_post = f"in the {spec.lobe if ab and spec.lobe else LOBE_NAME.get(spec.lobe or '', '')}".rstrip()
        if chance(rng, 0.5) and noun != "mass":
            adjs.append(loc_pre)
        else:
            loc = " " + loc_post
    if not adjs and not loc:
        noun = pick(rng, ["pulmonary nodule", "nodule"])
    np_text = " ".join(adjs + [noun])
    lr = lung_rads_category(spec, r, kept, ctx.fat_written) if ctx.style.lung_rads else None
    as_above = pick(rng, ["", "", " as described above", " as above"])
    if kind in ("suspicious", "indeterminate") and interp.split()[0] in ("suspicious", "indeterminate") and \
            chance(rng, 0.4):
        lead = "Suspicious" if kind == "suspicious" else "Indeterminate"
        text = f"{lead} {np_text}{loc}{as_above}."
    elif kind == "benign" and interp == "benign-appearing" and chance(rng, 0.6):
        text = f"Benign-appearing {np_text}{loc}{as_above}."
    else:
        det = article(np_text) if chance(rng, 0.3) else ""
        text = f"{cap(det + ' ' if det else '')}{np_text if det else cap(np_text)}{loc}{as_above}, {interp}."
    if lr is not None:
        ctx.extras.add("lung_rads")
        text = text[:-1] + pick(rng, [f". Lung-RADS {lr}.", f" (Lung-RADS {lr}).", f". Lung-RADS category {lr}.",
                                       f". Lung-RADS v2022 category {lr}."])
    rec_key = lr if lr is not None else ("benign" if kind in ("benign", "hamartoma") else
                                         "suspicious" if kind == "suspicious" else "other")
    return text, lr, rec_key


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------
def generate_report(spec: ReportSpec, style: ReportStyle, rng: np.random.Generator) -> GeneratedReport:
    """Render one chest-CT report for ``spec`` in ``style``.

    Deterministic for a given ``rng`` state.  The typo stream is seeded from the first
    draw, so the same seed with typos on or off gives the same report up to the typos.
    The malignancy rating is never an input (see the docstring of :mod:`lungfuse.pipelines.lab.reportgen`).
    """
    if not isinstance(spec, ReportSpec):
        raise TypeError(f"spec must be a ReportSpec, got {type(spec).__name__}")
    if not isinstance(style, ReportStyle):
        raise TypeError(f"style must be a ReportStyle, got {type(style).__name__}")
    typo_seed = int(rng.integers(2**63 - 1))
    r = {name: int(round(getattr(spec.ratings, name))) for name in RATING_RANGES}
    ab = style.abbreviations
    kept = _choose_kept(spec, style.completeness_target, rng)
    ctx = _Ctx(spec, r, kept, style, rng, ab, set())

    target_sents = _target_findings(ctx)
    impression_items: list[str] = []
    next_nodule = [1]
    organs = organ_findings(spec, style, rng, ab, impression_items, next_nodule)
    lungs = next(o for o in organs if o.key == "lungs")
    # target first in the lungs paragraph: follow-up "The nodule ..." sentences then
    # refer to it, and distractor nodules come after it
    lungs.sents[0:0] = [Sent(s, ("target", 0)) for s in target_sents]

    # ---- FINDINGS
    if chance(rng, 0.6) and not (style.header_style == "none" and chance(rng, 0.5)):
        if chance(rng, 0.3):  # mediastinum/heart first, then lungs
            organs.sort(key=lambda o: {"mediastinum": 0, "heart": 1}.get(o.key, 2))
        labels = chance(rng, 0.6)
        paras = [Para(o.sents, pick(rng, o.labels) if labels else None) for o in organs]
        if labels and style.header_style == "markdown" and not style.one_paragraph:
            for p in paras:
                p.label = "- " + p.label  # type: ignore[operator]
    else:  # lungs paragraph, then everything else
        rest = [s for o in organs if o.key != "lungs" for s in o.sents]
        paras = [Para(lungs.sents)] + ([Para(rest)] if rest else [])
    sections: list[Section] = []

    # ---- EXAM / HISTORY / TECHNIQUE / COMPARISON
    exam, contrast = exam_text(rng, ab)
    if style.header_style == "none":
        # prose without headers: the history must not name a nodule (it would be
        # read as a finding) and every sentence stays in the report body
        history = history_text(rng, False, False)
        intro = [exam, history if ". " in history else f"Indication is {history[0].lower()}{history[1:]}"]
        if chance(rng, 0.5):
            intro.append(technique_text(rng, contrast))
        intro.append(pick(rng, ["No prior studies are available for comparison.", "There are no prior studies."]))
        sections.append(Section("BODY", [Para([Sent(s) for s in intro])]))
    else:
        sections.append(Section("EXAM", [Para([Sent(exam)])]))
        sections.append(Section("HISTORY", [Para([Sent(history_text(rng, ab, True))])]))
        if chance(rng, 0.7):
            sections.append(Section("TECHNIQUE", [Para([Sent(technique_text(rng, contrast))])]))
        sections.append(Section("COMPARISON", [Para([Sent(comparison_text(rng))])]))
    sections.append(Section("FINDINGS", paras))

    # ---- IMPRESSION (only when kept: "impression" is a completeness descriptor)
    lung_rads = None
    if "impression" in kept:
        imp_text, lung_rads, rec_key = _target_impression(ctx)
        items: list[Sent] = [Sent(imp_text, ("target", 0))]
        if chance(rng, 0.5):
            items.append(Sent(pick(rng, RECOMMENDATIONS[rec_key])))
        seen: set[str] = set()
        for it in impression_items:
            if it not in seen and len(items) < 4:
                seen.add(it)
                items.append(Sent(it))
        if style.numbered_impression:
            imp_paras = [Para([s], f"{i + 1}.") for i, s in enumerate(items)]
        else:
            imp_paras = [Para(items)]
        sections.append(Section("IMPRESSION", imp_paras))

    writer = layout(sections, style, rng)
    text = writer.text
    tagged = writer.tagged

    if style.typo_rate > 0:
        text, mapping = apply_typos(text, style.typo_rate, np.random.default_rng(typo_seed), writer.protected)
        tagged = [(mapping[s], mapping[e], tag, sec) for s, e, tag, sec in tagged]

    mentions = tuple(NoduleMention((s, e), tag[0], tag[1], sec) for s, e, tag, sec in tagged)
    target = next(m for m in mentions if m.role == "target" and m.section == "FINDINGS")
    return GeneratedReport(
        text=text,
        kept_descriptors=kept,
        style=style,
        mentions=mentions,
        target_span=target.span,
        extras=frozenset(ctx.extras),
        lung_rads=lung_rads,
    )


def sample_style(rng: np.random.Generator, *, positive_distractor_rate: float = 0.0) -> ReportStyle:
    """Draw a training style: completeness target 1.0 with probability 0.25, else
    uniform on [0, 1]; typos in 15 % (rate 1-5 % of eligible words); one paragraph 30 %;
    abbreviations 40 %; distractors 40 %; headers caps 40 / title 25 / markdown 15 /
    bare 10 / none 10 %; numbered impression 60 %; Lung-RADS 35 %; image references
    60 %.  Positive (pulmonary) distractors only with ``positive_distractor_rate`` > 0
    (default 0: they change what the report claims)."""
    if not 0.0 <= positive_distractor_rate <= 1.0:
        raise ValueError(f"positive_distractor_rate must lie in [0, 1], got {positive_distractor_rate!r}")
    full = chance(rng, 0.25)
    target = 1.0 if full else float(rng.uniform(0.0, 1.0))
    typos = chance(rng, 0.15)
    typo_rate = float(rng.uniform(0.01, 0.05)) if typos else 0.0
    header_style = HEADER_STYLES[int(rng.choice(len(HEADER_STYLES), p=[0.4, 0.25, 0.15, 0.1, 0.1]))]
    return ReportStyle(
        completeness_target=target,
        typo_rate=typo_rate,
        distractors=chance(rng, 0.4),
        positive_distractors=chance(rng, positive_distractor_rate),
        one_paragraph=chance(rng, 0.3),
        abbreviations=chance(rng, 0.4),
        header_style=header_style,
        numbered_impression=chance(rng, 0.6),
        lung_rads=chance(rng, 0.35),
        image_refs=chance(rng, 0.6),
    )
