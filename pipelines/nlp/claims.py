"""Rule-based extraction of pulmonary-nodule claims from chest-CT reports.

Research software, NOT for diagnostic use.

``extract_claims(report)`` returns a :class:`ReportClaims` holding one
:class:`NoduleClaim` per nodule *mention* (negated mentions included, with
``negated=True``).  Sizes are in millimetres throughout (``"1.2 cm"`` -> ``12.0``).

Pipeline (each step is a small function below):

1. **Masking** - image references ("(series 3, image 45)", "(7:340)", "image 123"),
   dates, years and Lung-RADS statements are overwritten (same length, so offsets are
   kept) in a working copy, so that their numbers can never be read as sizes.
2. **Sentences** - each parsed section is split into sentences without breaking on
   decimals ("1.2 cm"), enumerators ("1.") or abbreviations ("approx.").  Organ
   sub-headers ("Lungs:", "Thyroid:", "Upper abdomen:") set the organ context.
3. **Heads** - nodule anchors (nodule incl. typos such as "nodlue"/"ndoule",
   micronodule, nodular opacity/density, GGO/GGN, focal ground-glass opacity, mass,
   granuloma, lesion) and *other* finding heads (lymph node, cyst, effusion, slices...).
   Other heads matter because each sentence is partitioned between all heads, so that
   "a 4 mm RUL nodule and a 1.2 cm subcarinal lymph node" gives the 12 mm to the node.
4. **Attributes** of each nodule head are read from its scope: size (largest
   dimension, ranges -> upper figure, prior sizes "(previously 5 mm)" kept apart),
   lobe/side/segment, texture, margin, shape, calcification, cavitation, stability,
   count, Lung-RADS, negation and uncertainty.
5. **Filtering** - non-pulmonary nodules (thyroid, adrenal, liver, breast, ...),
   masses/lesions without lung context, diffuse ground-glass, indication-like mentions
   ("history of", "follow-up of", "wedge resection of a ... nodule", "lung nodule
   follow-up"), anything after "recommend"/"Fleischner"/"guidelines" in a sentence, and
   the CLINICAL HISTORY, TECHNIQUE, COMPARISON, EXAM and RECOMMENDATION sections give
   no claim.
6. **Merging** - plural mentions listing several sizes/lobes are split into one claim
   per nodule ("two nodules measuring 4 and 6 mm in the RUL and LLL, respectively");
   anaphoric mentions ("The nodule is solid.", "The 1.1 cm nodule is new.") are merged
   into the nodule they refer to; plural summaries followed by the itemised nodules
   ("Two nodules: a 4 mm ... and a 6 mm ...") are dropped; IMPRESSION mentions that
   repeat a nodule described elsewhere (same lobe, size within 1 mm or 20 %) are merged
   into it (the FINDINGS span is kept, missing attributes are filled in).  Items of a
   "Lung nodules: 1. RUL 4 mm. 2. LLL 6 mm." list are nodules even without the word.

Documented decisions
--------------------
* ``margin``: "smooth" (also well-circumscribed / well-defined / sharply marginated),
  "lobulated", "spiculated" and a fourth value "irregular" (irregular, ill-defined,
  poorly defined) - as in the ACR Lung-RADS margin lexicon; "irregular" is not folded
  into "spiculated" because that would overstate spiculation.  Precedence when several
  are stated: spiculated > irregular > lobulated > smooth.
* ``texture``: "subsolid" and "semi-solid" map to "part-solid" (subsolid strictly also
  covers pure ground glass; the three-value scale has no better bin); "non-solid" and
  GGO/GGN map to "ground-glass"; ground glass plus a solid component -> "part-solid".
* ``uncertain`` is about the *existence* of the nodule: "possible", "questionable",
  "? nodule", "probable/likely nodule", "cannot exclude", "may represent a nodule",
  "nodule versus vessel/atelectasis", "may represent atelectasis/scar".  Words about its
  *nature* ("likely benign", "suspicious for malignancy", "probably a granuloma",
  "indeterminate") do not make it uncertain.
* ``negated``: "no", "without", "negative for", "no evidence of", "free of",
  "absence of", "resolved"/"resolution of", "no longer seen", "not identified" ...;
  "no change/no growth/no interval change" are *not* negations (they mean stable).
  Resolved nodules are reported as negated (not present now).
* ``count``: 1 for a singular mention, the stated number for "two nodules", ``None``
  with ``multiple=True`` for "multiple/several/few/scattered" or bare plurals, 0 for a
  negated mention.
* ``lobe`` for lung zones: "right lung base" -> RLL, "left apex" -> LUL, "right upper
  lung (zone)" -> RUL (a conventional approximation); "mid lung" gives the side only;
  "bibasilar"/"both lungs" -> side "bilateral", lobe None; "left upper lobe lingula"
  -> "lingula".
* ``negative_statement`` is True when at least one negated nodule mention exists and
  *no* positive (non-negated, uncertain included) nodule is described: "No new
  nodules" next to a described stable nodule is therefore not a negative statement,
  "No pulmonary nodules." alone is.  "Lungs are clear" without the word nodule is not.
* ``kind``: a lung mass (> 30 mm by definition) is a nodule mention with
  ``kind="mass"`` - its ``size_mm`` stays None unless measured; a granuloma is a nodule
  mention (``kind="granuloma"``; "calcified granuloma" -> ``calcification=True``).
* ``stable``: True for stable / unchanged / no (interval) change / no growth / similar
  in size; False for new / enlarging / increased / grown / decreased; otherwise derived
  from a quoted prior size (within 1 mm -> True).
* ``completeness`` (see :func:`completeness_score`): the best-described positive
  nodule, six descriptors plus "the report has an impression", over seven.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from lungfuse.pipelines.io.report import BODY, Report, load_report

__all__ = [
    "LOBES",
    "NODULE_DICT_KEYS",
    "NoduleClaim",
    "ReportClaims",
    "completeness_score",
    "extract_claims",
    "find_lung_rads",
]

LOBES = ("RUL", "RML", "RLL", "LUL", "LLL", "lingula")
SIDES = ("right", "left", "bilateral")
TEXTURES = ("solid", "part-solid", "ground-glass")
MARGINS = ("smooth", "lobulated", "spiculated", "irregular")
CALCIFICATION_PATTERNS = ("central", "diffuse", "popcorn", "laminated", "stippled/punctate", "eccentric")
LUNG_RADS_CATEGORIES = ("0", "1", "2", "3", "4A", "4B", "4X")

_LOBE_SIDE = {"RUL": "right", "RML": "right", "RLL": "right", "LUL": "left", "LLL": "left", "lingula": "left"}

#: keys of each nodule dict in ReportClaims.to_dict(), in order
NODULE_DICT_KEYS = (
    "size_mm", "side", "lobe", "segment", "texture", "margin", "calcification", "calcification_pattern",
    "cavitation", "shape", "lung_rads", "negated", "uncertain", "stable", "count", "span", "text", "section",
)

# Sections whose nodule mentions are not findings of this exam (history, technique,
# comparison, recommendations).  Their Lung-RADS statements are still read except for
# history/comparison (a *prior* category).
_SKIP_SECTIONS = frozenset({"CLINICAL HISTORY", "EXAM", "TECHNIQUE", "DOSE", "COMPARISON", "RECOMMENDATION"})
_NO_LUNG_RADS_SECTIONS = frozenset({"CLINICAL HISTORY", "COMPARISON", "EXAM", "TECHNIQUE", "DOSE"})
_IMPRESSION = "IMPRESSION"
_FLAGS = re.IGNORECASE

# ---------------------------------------------------------------------------
# Masking tables: spans overwritten in the working copy (same length).
# ---------------------------------------------------------------------------
_IMAGE_REF_RES: tuple[re.Pattern[str], ...] = (
    # "(series 3, image 45)", "(se 4 im 56)", "(image 123)", "(axial 45 of 200)", "(#45)"
    re.compile(
        r"[(\[]\s*(?:series|ser|se|images?|img|ims?|slices?|sl|axial|coronal|sagittal|cor|sag|ax|#)\b\.?"
        r"[^()\[\]\n]{0,60}[)\]]",
        _FLAGS,
    ),
    # "(7:340)", "(4/56)", "[3:45, 3:60]" - bracketed number pairs are image coordinates
    re.compile(r"[(\[]\s*\d{1,4}\s*[:/]\s*\d{1,4}(?:\s*[,;]\s*\d{1,4}\s*[:/]\s*\d{1,4})*\s*[)\]]"),
    # bare "series 3 image 45", "se 3, im 45"
    re.compile(
        r"\b(?:series|ser\.?|se)\s*#?\s*\d+(?:\s*[,/;]?\s*(?:image|img|im)\.?\s*(?:#|no\.?|number)?\s*\d+)?", _FLAGS
    ),
    # bare "image 45", "image #45", "images 40-45", "slice 120 of 300"; a continuation
    # number followed by a unit is a size ("image 45, 5 mm") and is left alone
    re.compile(
        r"\b(?:images?|img|ims?|slices?|sl)\.?\s*(?:#|no\.?|number)?\s*\d+"
        r"(?:\s*(?:-|to|and|,|/|of)\s*\d+(?![\d.]*\s*-?\s*(?:mm|cm|millimet|centimet)))*",
        _FLAGS,
    ),
    # "3:45" anywhere (image coordinates, clock times) - never a size
    re.compile(r"\b\d{1,3}\s*:\s*\d{1,4}\b"),
)
_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE_RES: tuple[re.Pattern[str], ...] = (
    re.compile(r"\b\d{1,2}[/.-]\d{1,2}[/.-](?:19|20)?\d{2}\b"),
    re.compile(r"\b(?:19|20)\d{2}[/.-]\d{1,2}[/.-]\d{1,2}\b"),
    re.compile(rf"\b{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:19|20)\d{{2}}\b", _FLAGS),
    re.compile(rf"\b\d{{1,2}}\s+{_MONTHS}\s+(?:19|20)\d{{2}}\b", _FLAGS),
    re.compile(rf"\b{_MONTHS}\s+(?:19|20)\d{{2}}\b", _FLAGS),
    re.compile(r"\b\d{1,2}/(?:19|20)\d{2}\b"),
    # a bare year (not "2019 mm")
    re.compile(r"\b(?:19[89]\d|20[0-4]\d)\b(?!\s*(?:mm|cm)\b)"),
)
# "a four millimeter nodule": number words before a unit are rewritten as digits
# (left-aligned, space padded, so offsets are unchanged).
_NUMBER_WORD_VALUES = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
}
_NUMBER_WORD_UNIT_RE = re.compile(
    rf"\b(?P<word>{'|'.join(_NUMBER_WORD_VALUES)})(?=[\s-]+(?:mm|millimet|cm|centimet))", _FLAGS
)
_REF_MASK = "#"
_DATE_MASK = "@"

# ---------------------------------------------------------------------------
# Lung-RADS
# ---------------------------------------------------------------------------
# Name, then optional filler (version "v1.1"/"1.1"/"2022", "category", "assessment",
# "score", ":"), then the category.  "Lung-RADS 1.1" alone is a version, not category 1:
# a digit followed by ".digit" is refused.  "LR" needs a digit right after ("LR-3").
_LUNG_RADS_RE = re.compile(
    r"(?:\b(?:ACR\s+)?lung[\s-]*rads\b|\bLR\b(?=[\s-]*[0-4]))"
    r"(?:\s*(?:\u00ae|\(r\)|\u2122))?"
    r"(?:[\s,:=\-\u2013(]*(?:v(?:ersion)?\s*(?:20\d\d|\d(?:\.\d)?)|\d\.\d|20\d\d|assessment|categor(?:y|ies)|"
    r"cat\b\.?|score|classification|is|of|final|overall)){0,4}"
    r"[\s,:=\-\u2013(]*"
    r"(?P<cat>4\s?[ABXabx](?![a-z])|[0-4](?![\d]|\.\d|[A-RT-Za-rt-z]))"
    r"(?:\s?S\b)?",
    _FLAGS,
)
_LR_ORDER = {c: i for i, c in enumerate(LUNG_RADS_CATEGORIES)}
_PRIOR_LR_RE = re.compile(r"\b(?:previous(?:ly)?|prior|formerly|was|from)\b[^.;]{0,20}$", _FLAGS)

# ---------------------------------------------------------------------------
# Sentence splitting
# ---------------------------------------------------------------------------
# Sentence ends: ".!?" before whitespace, blank lines, a newline after a line ending in
# ":" (a sub-header line), and a newline before an enumerator, bullet or "Label:" line.
_SENT_CANDIDATE_RE = re.compile(
    r"[.!?]+(?=\s)|\n[ \t]*\n|(?<=:)[ \t]*\n|"
    r"\n(?=[ \t]*(?:\(?\d{1,2}[.)][ \t]|[-*\u2022][ \t]|[A-Z][A-Za-z0-9/&,' #-]{1,40}:))"
)
# Tokens whose trailing period does not end a sentence.
_ABBREVIATIONS = frozenset(
    "approx approx. e.g i.e eg ie vs dr mr mrs ms st no nos fig figs ser se im img ims sl prev cf incl est ca "
    "resp lt rt ant post sup inf lat med max min apprx appx b/l pt pts yo y/o hx h/o s/p".split()
)
_ENUM_PREFIX_RE = re.compile(r"[ \t]*(?:\(?\d{1,2}[.)]|[-*\u2022]|#+)[ \t]+")
_LABEL_RE = re.compile(r"[ \t]*(?P<label>[A-Za-z][A-Za-z/&,' -]{1,40}?)[ \t]*:(?!\d)[ \t]*")
_LUNG_LABEL_RE = re.compile(r"\b(?:lungs?|pleura|pleural|airways?|parenchyma|pulmonary|nodules?)\b", _FLAGS)
_OTHER_LABEL_RE = re.compile(
    r"\b(?:thyroid|neck|abdomen|abdominal|liver|hepat\w*|adrenals?|kidneys?|renal|bones?|osseous|"
    r"musculoskeletal|soft\s+tissues?|chest\s+wall|breasts?|mediastin\w*|heart|cardiac|cardiovascular|vascul\w*|"
    r"vessels?|aorta|lymph|nodes?|esophag\w*|spleen|pancreas|hila|hilar|axilla\w*|skeleton|spine|tubes?|lines?)\b",
    _FLAGS,
)

# ---------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------
_NODULE_TOKEN_RE = re.compile(r"\b(?:micro-?)?n[a-z]{3,9}\b", _FLAGS)
_NODULE_TYPOS = frozenset(
    "nodual noduals nodul noduls nodulle nodulles nodlue nodlues noduel noduels ndoule ndoules nodue nodues "
    "nodle nodles noudle noudles nodoule nodoules nodulr nodyle nodules nodule nodiule nodiules nodulae".split()
)
_NOT_NODULE = frozenset({"module", "modules", "nodes", "noduli", "nodular", "nodularity", "noodle", "noodles"})

# (kind, pattern) for the other nodule-like anchors.
_ANCHOR_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ggo", re.compile(
        r"\b(?:(?:focal|nodular|rounded|round)\s+)?ground[\s-]*glass(?:\s+attenuation)?\s+"
        r"(?:opacit(?:y|ies)|densit(?:y|ies)|foc(?:us|i)|lesions?)\b", _FLAGS)),
    ("ggo", re.compile(r"\bGG[ON]s?\b", _FLAGS)),
    ("opacity", re.compile(
        r"\b(?:micro)?(?:rounded|round|nodular|nodule[\s-]*like|spiculated)(?:[\s-]+appearing)?\s+"
        r"(?:soft[\s-]*tissue\s+)?(?:opacit(?:y|ies)|densit(?:y|ies)|foc(?:us|i))\b", _FLAGS)),
    # "mass effect", "body mass", "mass-like consolidation" are not masses
    ("mass", re.compile(r"(?<!body\s)(?<!muscle\s)(?<!bone\s)\bmass(?:es)?\b(?![\s-]*(?:effect|like|index))", _FLAGS)),
    ("granuloma", re.compile(r"\bgranulomas?\b", _FLAGS)),
    ("lesion", re.compile(r"\blesions?\b", _FLAGS)),
)
# Non-nodule finding heads: they only partition sentences (their sizes stay theirs).
_OTHER_HEAD_RE = re.compile(
    r"\b(?:(?:lymph\s+)?nodes?|lymphadenopathy|adenopathy|cysts?|effusions?|pneumothora(?:x|ces)|"
    r"consolidations?|atelectasis|scar(?:s|ring)?|emphysema|bullae?|blebs?|bronchiectasis|aneurysms?|hernias?|"
    r"thickening|plaques?|(?:coronary|aortic|vascular|valvular|atherosclerotic|arterial|annular|mitral)\s+"
    r"(?:artery\s+|arteries\s+|valve\s+|annulus\s+)?calcifications?|hypodensit(?:y|ies)|hyperdensit(?:y|ies)|"
    r"hemangiomas?|fractures?|opacit(?:y|ies)|densit(?:y|ies)|infiltrates?|nodularity|fibrosis|honeycombing|"
    r"collimation|slices?|sections|reconstructions?|goiter|stents?|tubes?|catheters?|fluid|hiatal)\b",
    _FLAGS,
)
# Conjoined nodule heads with nothing but a conjunction between them are one mention:
# "nodules or masses", "nodule/mass", "nodules, masses".
_CONJOINED_GAP_RE = re.compile(
    r"^[\s,/]*(?:(?:and/or|and|or|nor|&)\s+)?(?:(?:other|suspicious|pulmonary|lung|discrete|focal|definite|new|"
    r"enlarging|growing|dominant|large|concerning|worrisome)\s+)*$",
    _FLAGS,
)

# Separators used to cut the gap between two consecutive heads.
_STRONG_SEP_RE = re.compile(
    r";|,|:|\b(?:and|or|nor|as\s+well\s+as|while|whereas|but|also|plus|in\s+addition(?:\s+to)?|additionally)\b",
    _FLAGS,
)
_WEAK_SEP_RE = re.compile(
    r"\b(?:with(?:out)?|adjacent\s+to|near|next\s+to|abutting|along|containing|associated\s+with|"
    r"compatible\s+with|consistent\s+with)\b",
    _FLAGS,
)
# Fallback cut when a gap has no separator: just after the last function word, so that
# pre-modifiers ("lung" in "slices for lung nodule") stay with the second head.
_FUNCTION_WORD_RE = re.compile(
    r"\b(?:for|of|in|within|at|on|to|from|by|is|are|was|were|shows?|demonstrates?|there|versus|vs)\b\.?", _FLAGS
)
_LEADING_JUNK_RE = re.compile(
    r"(?:[\s,;:]|\b(?:and|or|nor|as\s+well\s+as|while|whereas|but|also|plus|additionally)\b)+", _FLAGS
)
_TRAILING_JUNK_RE = re.compile(r"(?:[\s,;:.]|\b(?:and|or)\b)+$", _FLAGS)

# ---------------------------------------------------------------------------
# Location
# ---------------------------------------------------------------------------
_SIDE = r"(?P<side>right|rt|r|left|lt|l)\.?"
_LEVEL = r"(?:upper|uppper|uper|middle|midle|middel|mid|lower|lowe|lowr|loer|lwr)"
# "lobr", "lobw", "loeb", "lboe" are dictation typos; "lob(?![a-z])" keeps "lobular" out.
_LOBEWORD = r"(?:lobes?|lobe's|lobr|lobw|loeb|lboe|lob)(?![a-z])"
_LOBE_RES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("sided", re.compile(
        rf"\b{_SIDE}[\s-]*(?P<levels>{_LEVEL}(?:\s*(?:,|and|&|/|or)\s*{_LEVEL})*)[\s-]*(?:lung[\s-]+)?{_LOBEWORD}",
        _FLAGS)),
    ("sided", re.compile(
        rf"\b(?P<levels>{_LEVEL}(?:\s*(?:and|&|/|or)\s*{_LEVEL})*)[\s-]*{_LOBEWORD}\s*(?:,\s*|of\s+the\s+|on\s+the\s+)"
        r"(?P<side>right|left)\b(?:\s+lung)?", _FLAGS)),
    ("sided", re.compile(
        rf"\b(?P<side>right|rt|left|lt)\.?\s+lung\s*,?\s*(?P<levels>{_LEVEL})[\s-]*{_LOBEWORD}", _FLAGS)),
    ("abbr", re.compile(r"\b(?P<abbr>[RL](?:UL|ML|LL))s?\b", _FLAGS)),
    ("both", re.compile(rf"\b(?:both|bilateral|the)\s+(?P<levels>upper|lower)[\s-]*{_LOBEWORD}", _FLAGS)),
    ("lingula", re.compile(r"\blingul(?:a|ar)\b", _FLAGS)),
    ("zone", re.compile(
        r"\b(?P<side>right|rt|r|left|lt|l)\.?[\s-]+(?:lung[\s-]+)?"
        r"(?P<zone>apex|apical|apices|bases?|basilar|basal|(?:upper|lower)\s+lung(?:\s+zone)?(?![\s-]*lob))\b",
        _FLAGS)),
    ("zone", re.compile(r"\b(?P<zone>apex|base)\s+of\s+the\s+(?P<side>right|left)\s+lung\b", _FLAGS)),
    ("sideless", re.compile(rf"\b(?P<levels>{_LEVEL})[\s-]*{_LOBEWORD}", _FLAGS)),
)
_BILATERAL_RE = re.compile(
    r"\b(?:bilateral(?:ly)?|bibasilar|bibasal|bi-?apical|both\s+lungs|both\s+(?:upper|lower)\s+lobes|"
    r"throughout\s+(?:both|the)\s+lungs|b/l)\b",
    _FLAGS,
)
_SIDE_WORD_RE = re.compile(r"\b(?P<side>right|rt|left|lt)\b(?:[\s-]+sided)?|\b(?P<letter>[RL])\.?(?=\s+(?:lung|hemithorax))")
_SEGMENT_RE = re.compile(
    r"\b(?P<seg>apico[\s-]?posterior|apical[\s-]+posterior|anteromedial(?:\s+(?:basal|basilar))?|"
    r"(?:anterior|posterior|lateral|medial)\s+(?:basal|basilar)|(?:superior|inferior)\s+lingular|"
    r"apical|anterior|posterior|lateral|medial|superior)\s+(?:sub)?segment(?:s|al)?\b",
    _FLAGS,
)
_POSITION_RES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("perifissural", re.compile(r"\b(?:peri|juxta|intra)?-?fissural\b", _FLAGS)),
    ("subpleural", re.compile(r"\bsub-?pleural\b", _FLAGS)),
    ("juxtapleural", re.compile(r"\bjuxta-?pleural\b", _FLAGS)),
    ("pleural-based", re.compile(r"\bpleural[\s-]+based\b", _FLAGS)),
    ("endobronchial", re.compile(r"\bendobronchial\b", _FLAGS)),
    ("centrilobular", re.compile(r"\bcentrilobular\b", _FLAGS)),
    ("peribronchovascular", re.compile(r"\bperibronchovascular\b", _FLAGS)),
)
# Lung context (for masses/lesions and for the organ test).
_LUNG_TOKEN_RE = re.compile(
    r"\b(?:lungs?|pulmonary|intrapulmonary|parenchym\w*|lingul\w*|fissur\w*|perifissural|subpleural|"
    r"juxtapleural|pleural[\s-]+based|apex|apices|apical|bases?|basilar|bibasilar|perihilar|bronch\w*|"
    r"airways?|hemithorax|GG[ON]s?|ground[\s-]*glass|[RL](?:UL|ML|LL)|(?:upper|middle|lower)\s+lobes?)\b",
    _FLAGS,
)
# Non-lung organs: a nodule closer to one of these than to a lung word is not pulmonary.
_ORGAN_RE = re.compile(
    r"\b(?:thyroid\w*|liver|hepatic|adrenals?|renal|kidneys?|spleen|splenic|pancrea\w*|breasts?|gallbladder|"
    r"esophag\w*|gastric|stomach|bowel|colon\w*|peritone\w*|omental|omentum|mesenter\w*|subcutaneous|cutaneous|"
    r"skin|axilla\w*|osseous|bones?|bony|vertebra\w*|ribs?|stern\w*|parotid|neck|mediastin\w*|pericardi\w*|"
    r"cardiac|chest\s+wall|muscles?|intramuscular|paraspinal|abdomen|abdominal|pelvi\w*|uter\w*|ovar\w*|"
    r"prostat\w*|supraclavicular|paratracheal|subcarinal|pleural\s+fluid)\b",
    _FLAGS,
)
_BONE_LESION_RE = re.compile(r"\b(?:lytic|sclerotic|blastic|osteo\w*|enchondroma|bone\s+island)\b", _FLAGS)

# ---------------------------------------------------------------------------
# Size
# ---------------------------------------------------------------------------
_NUM = r"(?:\d+(?:\.\d+)?|\.\d+)"
# Units must not be followed by "3"/"2"/"^" (volumes "mm3", areas) or letters ("mmHg").
_UNIT = r"(?:mm|millimet(?:er|re)s?|cm|centimet(?:er|re)s?)(?![A-Za-z0-9\u00b2\u00b3^])"
_SEP = r"(?:x|\u00d7|\*|by|-|\u2013|\u2014|to|through|,|and|or|&)"
# A chain of numbers joined by dimension ("x", "by"), range ("-", "to") or list
# (",", "and") separators, ending with a unit: "8x6mm", "0.8 x 0.6 cm", "2-3 mm",
# "3, 4 and 5 mm", "5-mm".  Bounded repetition keeps long number lists linear.
_SIZE_CHUNK_RE = re.compile(
    rf"(?<![\d.]){_NUM}(?:\s*-?\s*{_UNIT})?(?:\s*{_SEP}\s*{_NUM}(?:\s*-?\s*{_UNIT})?){{0,6}}\s*-?\s*{_UNIT}", _FLAGS
)
_SIZE_TOKEN_RE = re.compile(
    rf"(?P<num>{_NUM})(?:\s*-?\s*(?P<unit>{_UNIT}))?|(?P<sep>x|\u00d7|\*|by|-|\u2013|\u2014|to|through|,|and|or|&)",
    _FLAGS,
)
_DIM_SEPS = {"x", "\u00d7", "*", "by"}
_RANGE_SEPS = {"-", "\u2013", "\u2014", "to", "through"}
_SUBCM_RE = re.compile(r"\bsub[\s-]*(?:centimet\w*|cm)\b", _FLAGS)
# qualifier words immediately before a size
_QUALIFIER_RES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("<=", re.compile(r"(?:\b(?:up\s+to|at\s+most|no\s+(?:larger|greater|bigger)\s+than|not\s+exceeding|as\s+large\s+as|"
                      r"largest(?:\s+(?:one|nodule))?(?:\s+(?:measuring|measures|is|of))?)|\u2264|<=)\s*-?\s*$", _FLAGS)),
    ("<", re.compile(r"(?:\b(?:sub|less\s+than|smaller\s+than|under|below)|<)\s*-?\s*$", _FLAGS)),
    (">=", re.compile(r"(?:\bat\s+least|\u2265|>=)\s*$", _FLAGS)),
    (">", re.compile(r"(?:\b(?:greater\s+than|larger\s+than|more\s+than|over|exceeding)|>)\s*$", _FLAGS)),
    ("~", re.compile(r"(?:\b(?:approximately|approx|apprx|about|roughly|nearly|almost|around|circa|ca)\.?|~|\u2248)\s*$",
                     _FLAGS)),
)
_BETWEEN_RE = re.compile(r"\bbetween\s*$", _FLAGS)
_CHANGE_VERB_RE = re.compile(
    r"\b(?:increas\w*|decreas\w*|grow\w*|grew|enlarg\w*|chang\w*|progress\w*|shrunk|shrink\w*|reduc\w*|"
    r"previously|prior)\b[^.;]{0,40}\bfrom\s*$",
    _FLAGS,
)
_PRIOR_BEFORE_RE = re.compile(
    r"\b(?:previous(?:ly)?|prior(?:ly)?|was|were|formerly|earlier|originally|initially|before|baseline|then|"
    r"compared\s+(?:to|with)|from|vs\.?|versus)\b(?:\s+(?:measur\w*|at|of|being|approximately|about|only|"
    r"exam|study|ct|scan|imaging|on|in|the|it|this))*\s*[:\-]?\s*$",
    _FLAGS,
)
_PRIOR_AFTER_RE = re.compile(
    r"^\s*\)?\s*(?:(?:on|in|at|from)\s+(?:the\s+)?(?:prior|previous|preceding|last|earlier|comparison|baseline|"
    r"outside|old|@)|previously|prior\b)",
    _FLAGS,
)
# "a 5 mm solid component" - but "10 mm part-solid nodule" is the whole nodule
_COMPONENT_AFTER_RE = re.compile(
    r"^\s*(?:solid|ground[\s-]*glass|soft[\s-]*tissue|cystic)?\s*(?:component|portion|part(?![\s-]*solid)|core)\b", _FLAGS
)
_COMPONENT_BEFORE_RE = re.compile(
    r"\b(?:component|portion|part|core)\s*(?:which\s+)?(?:measuring|measures|measured|of|is|=)?\s*"
    r"(?:approximately\s+|about\s+|up\s+to\s+)?$",
    _FLAGS,
)
# sizes that describe something else: slice thickness, distances, short-axis (nodes), walls
_EXCLUDED_AFTER_RE = re.compile(
    r"^\s*(?:thick\s+|thin\s+|axial\s+|contiguous\s+)*(?:slices?|sections?|collimation|intervals?|increments?|"
    r"images?|reconstructions?|cuts|thickness|kernel|from|away|deep\s+to|below|above|distal|proximal|beneath|"
    r"short[\s-]*axis|in\s+short[\s-]*axis|of\s+(?:the\s+)?(?:pleura|pleural\s+surface|fissure|chest\s+wall))\b",
    _FLAGS,
)
_EXCLUDED_BEFORE_RE = re.compile(
    r"\b(?:thickness|collimation|reconstructed\s+at|intervals?\s+of|increments?\s+of|wall\s+(?:thickness|measuring)|"
    r"short[\s-]*axis|within|distance\s+of)\s*(?:of\s*)?[:=]?\s*$",
    _FLAGS,
)

# ---------------------------------------------------------------------------
# Descriptors
# ---------------------------------------------------------------------------
_PART_SOLID_RE = re.compile(
    r"\b(?:part(?:ly|ially)?[\s-]*solid|semi[\s-]*solid|sub[\s-]*solid|mixed[\s-]+(?:attenuation|density|solid))\b",
    _FLAGS,
)
_GROUND_GLASS_RE = re.compile(r"\b(?:ground[\s-]*glass|GG[ON]s?|non[\s-]*solid|hazy)\b", _FLAGS)
_SOLID_RE = re.compile(r"(?<![\w-])(?<!non-)(?<!non )solid\b|\bsoft[\s-]*tissue\s+(?:density|attenuation)\b", _FLAGS)
_SOLID_COMPONENT_RE = re.compile(r"\bsolid\s+(?:component|portion|part|core|focus|center|centre)\b", _FLAGS)
_MARGIN_RES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("spiculated", re.compile(r"\b(?:spic?ulat\w*|specul\w*|spicul\w*|stellate)\b", _FLAGS)),
    ("irregular", re.compile(
        r"\b(?:irregular(?!ly\s+shaped)(?:ly)?|ill[\s-]*defined|poorly[\s-]*(?:defined|marginated|circumscribed)|"
        r"indistinct|fuzzy|blurred)\b", _FLAGS)),
    ("lobulated", re.compile(r"\b(?:micro)?lobulat\w*\b|\blobular\s+(?:margins?|contours?|borders?)\b", _FLAGS)),
    ("smooth", re.compile(
        r"\b(?:smooth(?:ly)?|well[\s-]*(?:circumscribed|defined|marginated|demarcated|delineated|marginated)|"
        r"sharp(?:ly)?[\s-]*(?:defined|marginated|circumscribed|demarcated)|circumscribed)\b", _FLAGS)),
)
_SHAPE_RES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("round", re.compile(r"\b(?:round(?:ed)?|spherical)\b", _FLAGS)),
    ("oval", re.compile(r"\b(?:oval|ovoid|elliptical|elongated)\b", _FLAGS)),
    ("triangular", re.compile(r"\btriangular\b", _FLAGS)),
    ("lentiform", re.compile(r"\b(?:lentiform|lenticular)\b", _FLAGS)),
    ("polygonal", re.compile(r"\bpolygonal\b", _FLAGS)),
    ("irregular", re.compile(r"\birregular(?:ly)?(?!\s+(?:margins?|borders?|edges?|contours?|margination))\b", _FLAGS)),
    ("lobulated", re.compile(r"\blobulated\b", _FLAGS)),
)
_CALC_POS_RE = re.compile(r"\bcalcifi\w*|\bcalcific\b|\bpopcorn\b", _FLAGS)
_CALC_NEG_RE = re.compile(r"\b(?:non[\s-]*calcifi\w*|uncalcifi\w*|not\s+calcified)\b", _FLAGS)
_CALC_PATTERN_RES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("popcorn", re.compile(r"\b(?:popcorn|chondroid)\b", _FLAGS)),
    ("laminated", re.compile(r"\b(?:laminat\w*|lamellat\w*|concentric(?:ally)?)\b", _FLAGS)),
    ("stippled/punctate", re.compile(
        r"\b(?:stippled|speckled|punctate\s+(?:calcifi\w*|foci\s+of\s+calcifi\w*|focus\s+of\s+calcifi\w*))\b", _FLAGS)),
    ("eccentric", re.compile(r"\beccentric(?:ally)?\b", _FLAGS)),
    ("central", re.compile(r"\bcentral(?:ly)?\s+(?:\w+\s+)?calcifi\w*|\bcalcifi\w*\s+(?:center|centre)", _FLAGS)),
    ("diffuse", re.compile(
        r"\b(?:diffuse(?:ly)?|dense(?:ly)?|complete(?:ly)?|entire(?:ly)?|uniform(?:ly)?|homogeneous(?:ly)?|"
        r"total(?:ly)?|fully)\s+calcifi\w*", _FLAGS)),
)
_CAVITY_POS_RE = re.compile(r"\bcavit(?:ary|ation|ating|ated|y|ies)\b", _FLAGS)
_CAVITY_NEG_RE = re.compile(r"\bnon[\s-]*cavit\w*", _FLAGS)
_ATTR_NEG_BEFORE_RE = re.compile(
    r"\b(?P<neg>no|not|without|non|absent|absence\s+of|negative\s+for|free\s+of|lacks?|lacking)\b"
    r"(?P<rest>[^.;,]{0,30})$",
    _FLAGS,
)
_PSEUDO_AFTER_NEG_RE = re.compile(r"^\s*(?:significant\s+|interval\s+|appreciable\s+)*(?:change|growth|increase|new)\b",
                                  _FLAGS)

_STABLE_TRUE_RE = re.compile(
    r"\b(?:stable|stability|unchanged|no\s+(?:significant\s+|interval\s+|appreciable\s+|definite\s+|measurable\s+)*"
    r"(?:change|growth|increase|enlargement)|not\s+(?:significantly\s+)?changed|without\s+(?:significant\s+|interval\s+)*"
    r"(?:change|growth)|similar\s+(?:in\s+)?(?:size|appearance)|not\s+(?:significantly\s+)?(?:grown|enlarged|increased))\b",
    _FLAGS,
)
_STABLE_FALSE_RE = re.compile(
    r"\b(?:new(?:ly)?(?!\s+york)|enlarg(?:ing|ed|ement)|increas(?:ed|ing|e)|grow(?:ing|n|th)|grew|larger|"
    r"decreas(?:ed|ing|e)|smaller|shrink\w*|shrunk|progress(?:ed|ion|ing)|developing|developed)\b",
    _FLAGS,
)

# ---------------------------------------------------------------------------
# Negation / uncertainty / context
# ---------------------------------------------------------------------------
_PRE_NEG_RE = re.compile(
    r"\b(?:no|without|negative\s+for|free\s+of|absen(?:ce|t)(?:\s+of)?|nor|resolution\s+of|resolved|"
    r"no\s+longer|disappearance\s+of|ruled\s+out|none\s+of)\b",
    _FLAGS,
)
# "no change in", "no growth of", "without interval change": not a negation of the nodule
_PSEUDO_NEG_RE = re.compile(
    r"^(?:no|without)\s+(?:(?:significant|interval|appreciable|definite|measurable|suspicious|new)\s+)*"
    r"(?:change|growth|increase|enlargement|progression|evidence\s+of\s+(?:growth|change|progression))\b",
    _FLAGS,
)
# "no calcification is seen within the nodule": the negation is about an attribute
_ATTRIBUTE_NEG_RE = re.compile(
    r"^(?:no|without|absence\s+of)\s+(?:\w+\s+){0,2}?(?:calcifi\w*|cavit\w*|spicul\w*|fat|enhancement|"
    r"solid\s+component|features?|change|growth)\b.*\b(?:in|within|of|to|involving|for)\s+(?:the|this|these|a)?\s*$",
    _FLAGS,
)
_NEG_TERMINATOR_RE = re.compile(
    r";|\b(?:but|however|except|aside\s+from|apart\s+from|other\s+than|besides|although|though|whereas|while|which|"
    r"there\s+(?:is|are|was|were)|(?:is|are)\s+(?:again\s+)?(?:seen|noted|present|identified|demonstrated|visualized)|"
    r"and\s+(?:a|an|another|one|the|two|three|several|multiple|stable|new)|with\s+(?:a|an|the))\b|,\s*(?:a|an|another)\b",
    _FLAGS,
)
_POST_NEG_RE = re.compile(
    r"\b(?:(?:is|are|was|were|has\s+been|have\s+been)\s+)?(?:no\s+longer|not)\s+(?:\w+\s+)?"
    r"(?:seen|identified|visuali[sz]ed|appreciated|present|demonstrated|evident|detected|apparent|visible|"
    r"definitely\s+seen|re-?demonstrated)\b|\b(?:has|have)\s+(?:since\s+|completely\s+|now\s+)?"
    r"(?:resolved|disappeared|cleared)\b|\bresolved\b|\b(?:is|are)\s+absent\b|^\s*[:\-]?\s*(?:none|absent|negative|no)\b",
    _FLAGS,
)
_POST_TERMINATOR_RE = re.compile(r";|\b(?:but|however|whereas|while|although)\b", _FLAGS)
_HEDGE_PRE_RE = re.compile(
    r"(?:\b(?:possible|possibly|questionable|question(?:ed)?\s+of|probable|probably|likely|suspected|equivocal|"
    r"cannot\s+(?:be\s+)?(?:exclude[ds]?|ruled?\s+out)|can\s*not\s+(?:be\s+)?(?:exclude[ds]?|ruled?\s+out)|"
    r"could\s+(?:represent|be)|may\s+(?:represent|be|reflect)|might\s+(?:represent|be)|rule\s+out|r/o|presumed|"
    r"suggestion\s+of|suspicious\s+for|concern(?:ing)?\s+for|not\s+(?:entirely\s+)?excluded)\b|\?)"
    r"(?P<between>[^.;]{0,60})$",
    _FLAGS,
)
# words between a hedge and the anchor that show the hedge is about the nodule's nature
_NATURE_WORDS_RE = re.compile(
    r"\b(?:benign|malignan\w*|infectious|infection|inflammatory|post-?inflammatory|granulomatous|neoplastic|"
    r"metasta\w*|reactive|related|represent(?:ing|s)?|due|sequela\w*|secondary|lymph)\b",
    _FLAGS,
)
_NON_NODULE_ALTERNATIVE = (
    r"(?:atelectasis|atelectatic|scar(?:ring)?|vessels?|vascular|artifact|pseudonodule|mucus|mucoid|fissur\w*|"
    r"fibrosis|pleural\s+thickening|bronch\w*|confluence|end[\s-]*on|summation|partial\s+volume)"
)
_HEDGE_POST_RE = re.compile(
    rf"\b(?:(?:may|might|could)\s+(?:represent|reflect|be)(?:\s+due\s+to)?|(?:vs\.?|versus)|or\s+possibly|"
    rf"possibly|likely|probably)\s+(?:\w+\s+){{0,2}}?{_NON_NODULE_ALTERNATIVE}",
    _FLAGS,
)
# "a small nodule in the lingula cannot be excluded" (same clause, no comma: after a
# comma "..., metastasis not excluded" is about the nature, not the existence)
_HEDGE_EXCLUDED_POST_RE = re.compile(
    r"^[^,;]{0,40}?\b(?:(?:cannot|can\s*not|could\s+not)\s+be\s+(?:excluded|ruled\s+out)|(?:is|are)\s+not\s+"
    r"(?:entirely\s+)?excluded|(?:is|are)\s+(?:questioned|suspected|questionable|possible))\b",
    _FLAGS,
)
_HEDGE_VERSUS_PRE_RE = re.compile(rf"{_NON_NODULE_ALTERNATIVE}\s+(?:vs\.?|versus|or)\s+(?:\w+\s+){{0,2}}$", _FLAGS)
# Indication-like context right before the anchor ("history of 8 mm RUL nodule",
# "follow-up CT for known pulmonary nodules", "for evaluation of lung nodule", "wedge
# resection of a 9 mm nodule").  At most
# four words may sit between the phrase and the anchor, so "limited evaluation of the
# lung bases on this CT demonstrates a 4 mm nodule" is still a finding.
_NON_FINDING_CONTEXT_RE = re.compile(
    r"\b(?:history\s+of|h/o|hx\s+of|"
    r"(?:follow[\s-]?up|f/u|surveillance|evaluation|assessment|evaluate|assess|screening|work[\s-]?up|resect\w*|"
    r"lobectomy|segmentectomy|excision|excised|biops\w*|ablat\w*|treated|irradiated|sbrt|radiotherapy)\b"
    r"(?:\s+[\w/-]+){0,3}?\s+(?:of|for)|to\s+(?:evaluate|assess|follow))"
    r"(?:\s+[\w/.-]+){0,4}?\s*$",
    _FLAGS,
)
# "for lung nodule follow-up", "nodule clinic": the word names the indication
_NON_FINDING_AFTER_RE = re.compile(
    r"[\s-]*(?:follow[\s-]?up|f/u|surveillance|screening|evaluation|protocol|clinic|program)\b", _FLAGS
)
# Guideline boilerplate and recommendation sentences give no claims.
_GUIDELINE_RE = re.compile(
    r"\b(?:fleischner|guidelines?|macmahon|no\s+routine\s+follow|(?:low|high)[\s-]risk\s+patients?|"
    r"per\s+(?:acr|lung[\s-]*rads)|benign\s+appearance\s+or\s+behavior)\b",
    _FLAGS,
)
_RECOMMEND_START_RE = re.compile(
    r"^\W*(?:recommend\w*|suggest\w*|consider|advise\w*|continue[ds]?\s+(?:annual|routine)|annual\s+(?:screening|"
    r"low[\s-]*dose|ldct|ct)|repeat\s+(?:ct|ldct|imaging)|(?:a\s+)?follow[\s-]?up\s+(?:chest\s+)?(?:ct|ldct|imaging|exam|"
    r"low[\s-]*dose|in|is|at))\b",
    _FLAGS,
)
_RECOMMEND_INNER_RE = re.compile(r"\b(?:recommend\w*|suggest(?:ed|s)?|advised|consider)\b", _FLAGS)

_DEFINITE_RE = re.compile(
    r"\b(?:the|this|that|these|those|said|aforementioned|above[\s-]*(?:mentioned|described)|index|"
    r"previously\s+(?:described|noted|seen|mentioned|identified|reported))\b",
    _FLAGS,
)
_INDEFINITE_RE = re.compile(
    r"\b(?:a|an|another|additional|second|third|separate|new|other|one|two|three|four|five|six|several|multiple|few|"
    r"scattered|numerous|innumerable)\b",
    _FLAGS,
)

# words in the noun phrase that introduce a *new* nodule ("another", "additional")
_NEW_ITEM_RE = re.compile(r"\b(?:another|additional|second|separate|other|new)\b", _FLAGS)

_NUMBER_WORDS = {
    "one": 1, "single": 1, "solitary": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "couple": 2, "pair": 2, "both": 2,
}
_MULTI_WORDS = frozenset(
    {"few", "several", "multiple", "numerous", "innumerable", "countless", "many", "scattered", "various", "some",
     "multifocal", "diffuse", "additional", "other", "bilateral"}
)
_COUNT_TOKEN_RE = re.compile(r"[A-Za-z]+|\d{1,2}(?![\d.:/x])(?!\s*(?:mm|cm|x|\.|:|%))", _FLAGS)


# ---------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------
def _check_choice(name: str, value: Any, allowed: Iterable[str]) -> None:
    if value is not None and value not in tuple(allowed):
        raise ValueError(f"NoduleClaim.{name}={value!r} not in {tuple(allowed)}")


@dataclass(frozen=True)
class NoduleClaim:
    """One nodule mention in a report.

    ``size_mm`` is the largest stated dimension of the current exam in millimetres
    (ranges and "up to" give the upper figure, see ``size_qualifier``: ``"<"``, ``"<="``,
    ``">"``, ``">="``, ``"~"``, ``"range"`` or ``"subcentimeter"`` with no number).
    ``prior_size_mm`` is a size quoted for a prior exam ("previously 5 mm").
    ``span`` are character offsets into ``Report.text``; ``text`` is that slice.
    ``kind`` is the anchor ("nodule", "micronodule", "mass", "granuloma", "ggo",
    "opacity", "lesion"); ``position`` a pleural/fissural relation ("perifissural",
    "subpleural", ...).
    """

    size_mm: float | None = None
    size_qualifier: str | None = None
    side: str | None = None
    lobe: str | None = None
    segment: str | None = None
    texture: str | None = None
    margin: str | None = None
    calcification: bool | None = None
    calcification_pattern: str | None = None
    cavitation: bool | None = None
    shape: str | None = None
    lung_rads: str | None = None
    negated: bool = False
    uncertain: bool = False
    stable: bool | None = None
    count: int | None = 1
    multiple: bool = False
    kind: str = "nodule"
    position: str | None = None
    prior_size_mm: float | None = None
    span: tuple[int, int] = (0, 0)
    text: str = ""
    section: str = BODY

    def __post_init__(self) -> None:
        _check_choice("side", self.side, SIDES)
        _check_choice("lobe", self.lobe, LOBES)
        _check_choice("texture", self.texture, TEXTURES)
        _check_choice("margin", self.margin, MARGINS)
        _check_choice("calcification_pattern", self.calcification_pattern, CALCIFICATION_PATTERNS)
        _check_choice("lung_rads", self.lung_rads, LUNG_RADS_CATEGORIES)
        for name in ("size_mm", "prior_size_mm"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or not math.isfinite(value) or value < 0):
                raise ValueError(f"NoduleClaim.{name} must be a finite non-negative number of mm, got {value!r}")
        if self.count is not None and (not isinstance(self.count, int) or self.count < 0):
            raise ValueError(f"NoduleClaim.count must be a non-negative int or None, got {self.count!r}")
        span = tuple(self.span)
        if len(span) != 2 or not all(isinstance(v, int) for v in span) or not 0 <= span[0] <= span[1]:
            raise ValueError(f"NoduleClaim.span must be (start, end) with 0 <= start <= end, got {self.span!r}")
        object.__setattr__(self, "span", (int(span[0]), int(span[1])))

    @property
    def location_known(self) -> bool:
        return self.lobe is not None or self.segment is not None

    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON-ready values (span as a list)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["span"] = list(self.span)
        return out


@dataclass(frozen=True)
class ReportClaims:
    """Claims extracted from one report.

    ``nodules``: every nodule mention (negated ones included), in text order.
    ``negative_statement``: the report states there are no nodules and describes none.
    ``completeness``: descriptor coverage in [0, 1], see :func:`completeness_score`.
    ``lung_rads``: report-level stated Lung-RADS category; ``impression``: the
    IMPRESSION/CONCLUSION text or None.
    """

    nodules: tuple[NoduleClaim, ...] = ()
    negative_statement: bool = False
    completeness: float = 0.0
    lung_rads: str | None = None
    impression: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodules", tuple(self.nodules))
        if not all(isinstance(n, NoduleClaim) for n in self.nodules):
            raise TypeError("ReportClaims.nodules must hold NoduleClaim objects")
        if not 0.0 <= float(self.completeness) <= 1.0:
            raise ValueError(f"completeness must lie in [0, 1], got {self.completeness!r}")
        _check_choice("lung_rads", self.lung_rads, LUNG_RADS_CATEGORIES)

    @property
    def positive_nodules(self) -> tuple[NoduleClaim, ...]:
        """Non-negated nodule claims (uncertain ones included)."""
        return tuple(n for n in self.nodules if not n.negated)

    def to_dict(self) -> dict[str, Any]:
        """``{"completeness", "negative_statement", "lung_rads", "nodules": [...]}`` where each
        nodule dict has exactly the keys of :data:`NODULE_DICT_KEYS`."""
        nodules = []
        for n in self.nodules:
            full = n.to_dict()
            nodules.append({k: full[k] for k in NODULE_DICT_KEYS})
        return {
            "completeness": float(self.completeness),
            "negative_statement": bool(self.negative_statement),
            "lung_rads": self.lung_rads,
            "nodules": nodules,
        }


# ---------------------------------------------------------------------------
# Internal structures
# ---------------------------------------------------------------------------
@dataclass
class _Sentence:
    start: int
    end: int
    section: str
    context: str | None  # "lung", "other" or None (organ sub-header in force)
    index: int
    label_nodule: bool = False  # the sentence started with a "Nodules:" style label
    list_item: bool = False  # an item of a "Lung nodules: 1. RUL 4 mm. 2. LLL 6 mm." list


@dataclass
class _Head:
    start: int
    end: int
    kind: str  # nodule kinds or "other"
    plural: bool
    micro: bool = False

    @property
    def is_nodule(self) -> bool:
        return self.kind != "other"


@dataclass
class _Size:
    start: int
    end: int
    value: float  # mm; largest dimension / upper bound
    qualifier: str | None
    prior: bool = False
    component: bool = False
    excluded: bool = False
    listed: bool = False  # member of a list "3, 4 and 5 mm"
    change_from: float | None = None  # "increased from 5 to 7 mm": 5


@dataclass
class _Location:
    lobes: list[tuple[int, str]] = field(default_factory=list)
    lobe_ends: dict[int, int] = field(default_factory=dict)
    sides: list[tuple[int, str]] = field(default_factory=list)
    bilateral: bool = False
    segment: str | None = None
    position: str | None = None


@dataclass
class _Draft:
    """Mutable claim under construction."""

    start: int
    end: int
    anchor: int
    section: str
    sentence: int
    kind: str = "nodule"
    size_mm: float | None = None
    size_qualifier: str | None = None
    prior_size_mm: float | None = None
    side: str | None = None
    lobe: str | None = None
    segment: str | None = None
    texture: str | None = None
    margin: str | None = None
    calcification: bool | None = None
    calcification_pattern: str | None = None
    cavitation: bool | None = None
    shape: str | None = None
    lung_rads: str | None = None
    negated: bool = False
    uncertain: bool = False
    stable: bool | None = None
    count: int | None = 1
    multiple: bool = False
    position: str | None = None
    definite: bool = False
    indefinite: bool = False

    _FILLABLE = (
        "prior_size_mm", "side", "lobe", "segment", "texture", "margin", "calcification",
        "calcification_pattern", "cavitation", "shape", "lung_rads", "stable", "position",
    )

    @property
    def plural(self) -> bool:
        return self.multiple or (self.count is not None and self.count > 1)

    @property
    def has_location(self) -> bool:
        return self.lobe is not None or self.side is not None or self.segment is not None

    def fill_from(self, other: _Draft) -> None:
        """Copy the attributes this draft lacks from ``other`` (a repeat of the same nodule)."""
        if self.size_mm is None and self.size_qualifier is None:
            self.size_mm, self.size_qualifier = other.size_mm, other.size_qualifier
        for name in self._FILLABLE:
            if getattr(self, name) is None and getattr(other, name) is not None:
                setattr(self, name, getattr(other, name))
        if self.lobe is not None and self.side is None:
            self.side = _LOBE_SIDE[self.lobe]


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
def _mask(work: list[str], start: int, end: int, char: str) -> None:
    for i in range(start, end):
        if work[i] != "\n":
            work[i] = char


def _masked_text(text: str, lung_rads_spans: Iterable[tuple[int, int]]) -> str:
    """Working copy of ``text`` with image references, dates and Lung-RADS statements
    overwritten (same length, newlines kept) so their numbers never become sizes, and
    spelled-out sizes ("four millimeter") turned into digits."""
    work = list(text)
    for pattern in _IMAGE_REF_RES:
        for m in pattern.finditer(text):
            _mask(work, m.start(), m.end(), _REF_MASK)
    masked = "".join(work)
    for pattern in _DATE_RES:
        for m in pattern.finditer(masked):
            _mask(work, m.start(), m.end(), _DATE_MASK)
    for s, e in lung_rads_spans:
        _mask(work, s, e, _REF_MASK)
    for m in _NUMBER_WORD_UNIT_RE.finditer(text):
        digits = str(_NUMBER_WORD_VALUES[m.group("word").lower()])
        work[m.start() : m.end()] = list(digits.ljust(m.end() - m.start()))
    return "".join(work)


def _damerau1(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` differ by at most one edit (insert, delete, substitute
    or swap of adjacent letters)."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    i = 0
    while i < min(la, lb) and a[i] == b[i]:
        i += 1
    if la == lb:
        if a[i + 1 :] == b[i + 1 :]:
            return True
        return i + 1 < la and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :]
    if la > lb:
        return a[i + 1 :] == b[i:]
    return a[i:] == b[i + 1 :]


def _nodule_word(token: str) -> tuple[bool, bool] | None:
    """Classify a token as a nodule word, tolerating one typo ("nodlue", "ndoule").
    Returns (plural, micro) or None."""
    t = token.lower()
    micro = False
    if t.startswith("micro"):
        t = t[5:].lstrip("-")
        micro = True
    if t in _NOT_NODULE:
        return None
    if t in _NODULE_TYPOS or (len(t) >= 5 and (_damerau1(t, "nodule") or _damerau1(t, "nodules"))):
        return t.endswith(("s", "ae")), micro
    return None


def _is_plural_word(word: str) -> bool:
    w = word.lower().rstrip()
    return w.endswith(("s", "ies", "foci", "bullae", "ae")) and not w.endswith(("ss", "sis", "us", "thorax"))


def _nearest(positions: Iterable[int], anchor: int) -> int | None:
    best = None
    for p in positions:
        d = abs(p - anchor)
        if best is None or d < best:
            best = d
    return best


def _attr_negated(text: str, pos: int) -> bool:
    """Is the attribute word at ``pos`` negated ("without calcification", "non-calcified")?"""
    m = _ATTR_NEG_BEFORE_RE.search(text[max(0, pos - 45) : pos])
    if not m:
        return False
    return not _PSEUDO_AFTER_NEG_RE.match(m.group("rest"))


# ---------------------------------------------------------------------------
# Lung-RADS
# ---------------------------------------------------------------------------
def _normalise_lr(cat: str) -> str:
    return re.sub(r"\s", "", cat).upper()


def find_lung_rads(text: str) -> list[tuple[int, int, str]]:
    """All Lung-RADS statements in ``text``: ``(start, end, category)`` with category in
    ``LUNG_RADS_CATEGORIES`` ("Lung-RADS 4A", "Lung RADS category 2", "LR-3",
    "Lung-RADS v1.1 category 3").  The S modifier is dropped."""
    out = []
    for m in _LUNG_RADS_RE.finditer(text):
        cat = _normalise_lr(m.group("cat"))
        if cat in _LR_ORDER:
            out.append((m.start(), m.end(), cat))
    return out


def _max_lr(cats: Iterable[str]) -> str | None:
    cats = list(cats)
    return max(cats, key=lambda c: _LR_ORDER[c]) if cats else None


def _report_lung_rads(report: Report, found: list[tuple[int, int, str]]) -> str | None:
    """Report-level category: the highest category stated in the IMPRESSION, else the
    highest anywhere outside history/comparison/technique; prior categories ("previously
    Lung-RADS 3") are ignored."""
    by_section: dict[str, list[str]] = {}
    for s, _e, cat in found:
        sec = report.section_at(s)
        name = sec.name if sec else BODY
        if name in _NO_LUNG_RADS_SECTIONS or _PRIOR_LR_RE.search(report.text[max(0, s - 30) : s]):
            continue
        by_section.setdefault(name, []).append(cat)
    if _IMPRESSION in by_section:
        return _max_lr(by_section[_IMPRESSION])
    return _max_lr(c for cats in by_section.values() for c in cats)


# ---------------------------------------------------------------------------
# Sentences
# ---------------------------------------------------------------------------
def _split_sentences(work: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentence spans in ``work[start:end]``; no split on decimals, enumerators or
    abbreviations."""
    spans: list[tuple[int, int]] = []
    cur = start
    for m in _SENT_CANDIDATE_RE.finditer(work, start, end):
        if m.group().startswith((".", "!", "?")):
            before = work[cur : m.start()]
            tok_m = re.search(r"([\w/]+(?:\.[\w/]+)*)$", before)
            token = tok_m.group(1).lower() if tok_m else ""
            if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                continue
            prefix = before[: len(before) - len(token)]
            if token.isdigit() and len(token) <= 2 and (
                not prefix.strip(" \t\n-*(\u2022") or prefix.rstrip().endswith(":")
            ):
                continue  # enumerator "1." at the start of the sentence or after "Nodules:"
            cut, nxt = m.end(), m.end()
        else:
            cut, nxt = m.start(), m.end()
        if work[cur:cut].strip():
            spans.append((cur, cut))
        cur = nxt
    if work[cur:end].strip():
        spans.append((cur, end))
    trimmed = []
    for s, e in spans:
        while s < e and work[s].isspace():
            s += 1
        while e > s and work[e - 1].isspace():
            e -= 1
        if e > s:
            trimmed.append((s, e))
    return trimmed


def _has_nodule_word(text: str) -> bool:
    return any(_nodule_word(t.group()) for t in _NODULE_TOKEN_RE.finditer(text))


def _classify_label(label: str) -> str | None:
    if _LUNG_LABEL_RE.search(label):
        return "lung"
    if _OTHER_LABEL_RE.search(label):
        return "other"
    return None


def _sentences(report: Report, work: str) -> list[_Sentence]:
    """Sentences of the parsed sections, with enumerators and organ labels stripped and
    the organ context carried from label to label."""
    out: list[_Sentence] = []
    for sec in report.sections:
        if sec.name in _SKIP_SECTIONS or sec.end <= sec.start:
            continue
        context: str | None = None
        list_mode = False  # after a "Lung nodules:" label, anchor-less items are nodules
        for s, e in _split_sentences(work, sec.start, sec.end):
            m = _ENUM_PREFIX_RE.match(work, s, e)
            if m:
                s = m.end()
            label_nodule = False
            m = _LABEL_RE.match(work, s, e)
            if m:
                kind = _classify_label(m.group("label"))
                label_has_nodule = _has_nodule_word(m.group("label"))
                if kind is not None:
                    context = kind
                    list_mode = label_has_nodule
                    if not work[m.end() : e].strip():
                        continue  # a sub-header line on its own ("NODULES:")
                    if label_has_nodule and not _has_nodule_word(work[m.end() : e]):
                        label_nodule = True  # "Nodules: RUL 4 mm" - the label is the anchor
                    else:
                        s = m.end()  # "Lungs: 4 mm nodule", "Two nodules: a 4 mm nodule ..."
            list_item = list_mode and not label_nodule and not _has_nodule_word(work[s:e])
            if e > s:
                out.append(_Sentence(s, e, sec.name, context, len(out), label_nodule, list_item))
    return out


# ---------------------------------------------------------------------------
# Heads and scopes
# ---------------------------------------------------------------------------
def _find_heads(work: str, s: int, e: int) -> list[_Head]:
    """Nodule anchors and other finding heads in ``work[s:e]``, non-overlapping, sorted."""
    cands: list[_Head] = []
    for m in _NODULE_TOKEN_RE.finditer(work, s, e):
        kind = _nodule_word(m.group())
        if kind is not None:
            plural, micro = kind
            cands.append(_Head(m.start(), m.end(), "micronodule" if micro else "nodule", plural, micro))
    for kind_name, pattern in _ANCHOR_PATTERNS:
        for m in pattern.finditer(work, s, e):
            cands.append(_Head(m.start(), m.end(), kind_name, _is_plural_word(m.group())))
    for m in _OTHER_HEAD_RE.finditer(work, s, e):
        cands.append(_Head(m.start(), m.end(), "other", _is_plural_word(m.group())))
    # longest first at equal start; nodule anchors win over "other" on overlap
    cands.sort(key=lambda h: (h.start, -(h.end - h.start), h.kind == "other"))
    kept: list[_Head] = []
    for h in cands:
        # kept is sorted by start and heads are short: only its tail can overlap h
        clash = [k for k in kept[-8:] if h.start < k.end and k.start < h.end]
        if not clash:
            kept.append(h)
        elif h.kind != "other" and all(k.kind == "other" for k in clash):
            for k in clash:
                kept.remove(k)
            kept.append(h)
    kept.sort(key=lambda h: h.start)
    # merge conjoined nodule heads ("nodules or masses")
    merged: list[_Head] = []
    for h in kept:
        if merged and merged[-1].is_nodule and h.is_nodule and _CONJOINED_GAP_RE.match(work[merged[-1].end : h.start]):
            prev = merged[-1]
            kind = prev.kind if prev.kind in ("nodule", "micronodule") else h.kind
            merged[-1] = _Head(prev.start, h.end, kind, prev.plural or h.plural, prev.micro or h.micro)
        else:
            merged.append(h)
    return merged


def _boundary(work: str, a: int, b: int) -> int:
    """Where to cut the gap ``work[a:b]`` between two heads: at the last strong
    separator (comma, "and", ";", ":"), else the last weak one ("with", "adjacent to"),
    else just after the last function word ("for", "of", "is"), else at the second head."""
    gap = work[a:b]
    last = None
    for m in _STRONG_SEP_RE.finditer(gap):
        last = m
    if last is None:
        for m in _WEAK_SEP_RE.finditer(gap):
            last = m
    if last is not None:
        return a + last.start()
    for m in _FUNCTION_WORD_RE.finditer(gap):
        last = m
    return a + last.end() if last is not None else b


def _scopes(work: str, sent: _Sentence, heads: list[_Head]) -> list[tuple[int, int]]:
    bounds = [sent.start]
    for h1, h2 in zip(heads, heads[1:], strict=False):
        bounds.append(_boundary(work, h1.end, h2.start))
    bounds.append(sent.end)
    return [(bounds[i], bounds[i + 1]) for i in range(len(heads))]


# ---------------------------------------------------------------------------
# Attribute extraction (positions are absolute offsets into the working text)
# ---------------------------------------------------------------------------
def _unit_factor(unit: str | None) -> float:
    return 10.0 if unit and unit.lower().startswith("c") else 1.0


def _parse_chunk(chunk: str) -> list[tuple[int, int, str, list[float]]]:
    """Parse one size chunk into groups: ``(rel_start, rel_end, kind, values_mm)`` with
    kind "single", "dims" or "range"; list separators start a new group."""
    tokens = list(_SIZE_TOKEN_RE.finditer(chunk))
    # unit of each number: its own or the next one to the right
    units: list[str | None] = []
    pending: list[int] = []
    nums = [t for t in tokens if t.group("num")]
    for i, t in enumerate(nums):
        units.append(t.group("unit"))
        if t.group("unit"):
            for j in pending:
                units[j] = t.group("unit")
            pending = []
        else:
            pending.append(i)
    groups: list[tuple[int, int, str, list[float]]] = []
    cur_vals: list[float] = []
    cur_kind = "single"
    cur_start = cur_end = 0
    num_i = 0
    for t in tokens:
        if t.group("num"):
            value = float(t.group("num")) * _unit_factor(units[num_i])
            num_i += 1
            if not cur_vals:
                cur_start = t.start()
            cur_vals.append(value)
            cur_end = t.end()
        else:
            sep = t.group("sep").lower()
            if sep in _DIM_SEPS:
                cur_kind = "dims"
            elif sep in _RANGE_SEPS:
                cur_kind = "range" if cur_kind == "single" else cur_kind
            elif cur_vals:  # list separator
                groups.append((cur_start, cur_end, cur_kind, cur_vals))
                cur_vals, cur_kind = [], "single"
    if cur_vals:
        groups.append((cur_start, cur_end, cur_kind, cur_vals))
    return groups


def _qualifier_before(work: str, pos: int) -> str | None:
    before = work[max(0, pos - 40) : pos]
    for name, pattern in _QUALIFIER_RES:
        if pattern.search(before):
            return name
    return None


def _find_sizes(work: str, a: int, b: int) -> list[_Size]:
    """Sizes (mm) in ``work[a:b]`` with prior/component/excluded flags."""
    out: list[_Size] = []
    for m in _SIZE_CHUNK_RE.finditer(work, a, b):
        groups = _parse_chunk(m.group())
        before = work[max(a, m.start() - 60) : m.start()]
        listed = len(groups) > 1
        # "between 3 and 5 mm" is a range, not a list
        if len(groups) == 2 and all(g[2] == "single" for g in groups) and _BETWEEN_RE.search(before):
            groups = [(groups[0][0], groups[1][1], "range", groups[0][3] + groups[1][3])]
            listed = False
        for gs, ge, kind, values in groups:
            s, e = m.start() + gs, m.start() + ge
            if kind == "range" and len(values) == 2 and _CHANGE_VERB_RE.search(work[max(a, s - 80) : s]):
                # "increased from 5 to 7 mm": current 7, prior 5
                size = _Size(s, e, values[1], None, change_from=values[0])
            else:
                qual = "range" if kind == "range" else None
                q = _qualifier_before(work, s) if gs == 0 or listed else None
                if gs == 0 and q is not None:
                    qual = q
                size = _Size(s, e, max(values), qual, listed=listed)
            ctx_before = work[max(a, s - 60) : s]
            ctx_after = work[m.end() : min(b, m.end() + 60)]
            if _PRIOR_BEFORE_RE.search(ctx_before) or _PRIOR_AFTER_RE.match(ctx_after):
                # a "from" that is part of "ranging from" is not a prior size
                if not re.search(r"\brang\w*\s+(?:in\s+size\s+)?from\s*$", ctx_before, _FLAGS):
                    size.prior = True
            if _COMPONENT_AFTER_RE.match(ctx_after) or _COMPONENT_BEFORE_RE.search(ctx_before):
                size.component = True
            if _EXCLUDED_AFTER_RE.match(ctx_after) or _EXCLUDED_BEFORE_RE.search(ctx_before):
                size.excluded = True
            if not 0 < size.value <= 300:
                size.excluded = True
            out.append(size)
    return out


def _levels(levels: str) -> list[str]:
    out = []
    for lv in re.findall(r"[a-z]+", levels.lower()):
        if lv.startswith("u"):
            out.append("upper")
        elif lv.startswith("mid"):
            out.append("middle")
        elif lv.startswith("l"):
            out.append("lower")
    return out


def _lobe_name(side: str, level: str) -> str | None:
    if level == "middle":
        return "RML" if side == "right" else None
    return {"right": {"upper": "RUL", "lower": "RLL"}, "left": {"upper": "LUL", "lower": "LLL"}}[side].get(level)


def _side_of(token: str | None) -> str | None:
    if not token:
        return None
    return "right" if token.lower().startswith("r") else "left"


def _find_location(work: str, a: int, b: int) -> _Location:
    loc = _Location()
    taken: list[tuple[int, int]] = []
    sideless: list[tuple[int, str]] = []

    def free(s: int, e: int) -> bool:
        return all(e <= ts or s >= te for ts, te in taken)

    for kind, pattern in _LOBE_RES:
        for m in pattern.finditer(work, a, b):
            if not free(m.start(), m.end()):
                continue
            found: list[str] = []
            if kind == "sided":
                side = _side_of(m.group("side"))
                found = [lb for lv in _levels(m.group("levels")) if (lb := _lobe_name(side, lv))]
            elif kind == "abbr":
                found = [m.group("abbr").upper()]
            elif kind == "both":
                lv = _levels(m.group("levels"))[0]
                if m.group().lower().startswith("the"):
                    sideless.append((m.start(), lv))
                    taken.append((m.start(), m.end()))
                    continue
                found = [_lobe_name("right", lv), _lobe_name("left", lv)]  # type: ignore[list-item]
                loc.bilateral = True
            elif kind == "lingula":
                found = ["lingula"]
            elif kind == "zone":
                side = _side_of(m.group("side"))
                zone = m.group("zone").lower()
                level = "upper" if zone.startswith(("ap", "upper")) else "lower"
                found = [_lobe_name(side, level)]  # type: ignore[list-item]
            elif kind == "sideless":
                levels = _levels(m.group("levels"))
                if levels == ["middle"]:
                    found = ["RML"]
                elif levels:
                    sideless.append((m.start(), levels[0]))
                    taken.append((m.start(), m.end()))
                    loc.lobe_ends[m.start()] = m.end()
                    continue
            if found:
                taken.append((m.start(), m.end()))
                loc.lobes.extend((m.start(), lb) for lb in found if lb)
                loc.lobe_ends[m.start()] = m.end()
    for m in _SIDE_WORD_RE.finditer(work, a, b):
        if free(m.start(), m.end()):
            loc.sides.append((m.start(), _side_of(m.group("side") or m.group("letter"))))  # type: ignore[arg-type]
    if _BILATERAL_RE.search(work, a, b):
        loc.bilateral = True
    # "upper lobe" without a side takes the side stated elsewhere in the scope
    side_set = {s for _, s in loc.sides}
    if sideless and len(side_set) == 1:
        side = next(iter(side_set))
        for pos, lv in sideless:
            lobe = _lobe_name(side, lv)
            if lobe:
                loc.lobes.append((pos, lobe))
    loc.lobes.sort()
    m = _SEGMENT_RE.search(work, a, b)
    if m:
        seg = re.sub(r"\s+", " ", m.group("seg").lower().replace("-", " "))
        seg = seg.replace("apicoposterior", "apical posterior").replace("apico posterior", "apical posterior")
        seg = seg.replace("basilar", "basal")
        if seg in ("superior lingular", "inferior lingular"):
            seg = seg.split()[0]
            if not loc.lobes:
                loc.lobes.append((m.start(), "lingula"))
        elif seg == "apical posterior" and not loc.lobes:
            loc.lobes.append((m.start(), "LUL"))
        loc.segment = seg
    for name, pattern in _POSITION_RES:
        if pattern.search(work, a, b):
            loc.position = name
            break
    return loc


def _first_match(patterns: Iterable[tuple[str, re.Pattern[str]]], text: str) -> str | None:
    for name, pattern in patterns:
        for m in pattern.finditer(text):
            if not _attr_negated(text, m.start()):
                return name
    return None


def _texture(text: str) -> str | None:
    if _PART_SOLID_RE.search(text):
        return "part-solid"
    gg = any(not _attr_negated(text, m.start()) for m in _GROUND_GLASS_RE.finditer(text))
    solid = [m for m in _SOLID_RE.finditer(text) if not _attr_negated(text, m.start())]
    if gg and (solid or _SOLID_COMPONENT_RE.search(text)):
        comp = _SOLID_COMPONENT_RE.search(text)
        if comp and _attr_negated(text, comp.start()):
            return "ground-glass"  # "without a solid component"
        return "part-solid"
    if gg:
        return "ground-glass"
    if solid:
        return "solid"
    return None


def _nearest_flag(text: str, rel_anchor: int, pos_re: re.Pattern[str], neg_re: re.Pattern[str]) -> bool | None:
    """Boolean attribute (calcification, cavitation) from the mention nearest the anchor."""
    hits: list[tuple[int, bool]] = []
    neg_spans = []
    for m in neg_re.finditer(text):
        hits.append((m.start(), False))
        neg_spans.append((m.start(), m.end()))
    for m in pos_re.finditer(text):
        if any(s <= m.start() < e for s, e in neg_spans):
            continue
        hits.append((m.start(), not _attr_negated(text, m.start())))
    if not hits:
        return None
    return min(hits, key=lambda h: abs(h[0] - rel_anchor))[1]


def _calc_pattern(text: str) -> str | None:
    for name, pattern in _CALC_PATTERN_RES:
        for m in pattern.finditer(text):
            if _attr_negated(text, m.start()):
                continue
            if name in ("popcorn", "laminated", "eccentric") and not re.search(r"calcif|popcorn", text, _FLAGS):
                continue
            return name
    return None


def _stable(text: str, rel_anchor: int) -> bool | None:
    true_spans = [(m.start(), m.end()) for m in _STABLE_TRUE_RE.finditer(text)]
    hits = [(s, True) for s, _ in true_spans]
    for m in _STABLE_FALSE_RE.finditer(text):
        if any(s <= m.start() < e for s, e in true_spans):
            continue
        hits.append((m.start(), False))
    if not hits:
        return None
    values = {v for _, v in hits}
    if len(values) == 1:
        return values.pop()
    return min(hits, key=lambda h: abs(h[0] - rel_anchor))[1]


def _count(pre: str, plural: bool) -> tuple[int | None, bool]:
    """(count, multiple) from the words before the anchor."""
    # only the noun phrase: stop at the last clause punctuation / verb-ish boundary
    cut = max(pre.rfind(","), pre.rfind(";"), pre.rfind(":"), pre.rfind("("), pre.rfind(")"))
    phrase = pre[cut + 1 :][-60:]
    tokens = [t.group().lower() for t in _COUNT_TOKEN_RE.finditer(phrase)]
    for tok in reversed(tokens):
        if tok.isdigit():
            n = int(tok)
            if 0 < n <= 50:
                return n, n > 1
        if tok in _NUMBER_WORDS and tok != "both":
            n = _NUMBER_WORDS[tok]
            return n, n > 1
        if tok in _MULTI_WORDS and (plural or tok not in ("additional", "other", "bilateral", "diffuse")):
            if plural or tok in ("multiple", "several", "numerous", "few"):
                return None, True
    if plural:
        return None, True
    return 1, False


# ---------------------------------------------------------------------------
# Negation and uncertainty of one anchor
# ---------------------------------------------------------------------------
_NEG_WINDOW = 250  # chars before the anchor searched for a negation trigger (keeps long lines linear)


def _pre_negated(work: str, sent_start: int, anchor: int) -> bool:
    region = work[max(sent_start, anchor - _NEG_WINDOW) : anchor]
    for m in reversed(list(_PRE_NEG_RE.finditer(region))):
        tail = region[m.start() :]
        if _PSEUDO_NEG_RE.match(tail):
            continue
        if _ATTRIBUTE_NEG_RE.match(tail):
            return False
        if _NEG_TERMINATOR_RE.search(region, m.end()):
            return False
        return True
    return False


def _post_negated(work: str, anchor_end: int, scope_end: int) -> bool:
    region = work[anchor_end:scope_end]
    stop = _POST_TERMINATOR_RE.search(region)
    if stop:
        region = region[: stop.start()]
    return bool(_POST_NEG_RE.search(region))


def _uncertain(work: str, pre_start: int, anchor: int, anchor_end: int, post_end: int) -> bool:
    """Existence hedges.  The regions reach past the anchor's own scope (to the previous
    and next *nodule* anchors) because the alternatives ("atelectasis", "vessel") are
    other heads that the partition gives a scope of their own."""
    pre = work[max(pre_start, anchor - 120) : anchor]
    m = _HEDGE_PRE_RE.search(pre)
    if m and not _NATURE_WORDS_RE.search(m.group("between")) and len(m.group("between").split()) <= 7:
        return True
    if _HEDGE_VERSUS_PRE_RE.search(pre):
        return True
    post = work[anchor_end:post_end]
    return bool(_HEDGE_POST_RE.search(post) or _HEDGE_EXCLUDED_POST_RE.search(post))


# ---------------------------------------------------------------------------
# Building drafts
# ---------------------------------------------------------------------------
def _lung_context_ok(work: str, head: _Head, a: int, b: int, sent: _Sentence) -> bool:
    """Is this anchor a pulmonary nodule mention (not thyroid/adrenal/liver/...)?"""
    anchor = head.start
    organ = _nearest((m.start() for m in _ORGAN_RE.finditer(work, a, b)), anchor)
    lung = _nearest((m.start() for m in _LUNG_TOKEN_RE.finditer(work, a, b)), anchor)
    if head.kind in ("mass", "lesion"):
        if _BONE_LESION_RE.search(work, a, b):
            return False
        if lung is None and sent.context != "lung":
            return False
    if organ is not None and (lung is None or organ < lung):
        return False
    return not (sent.context == "other" and lung is None)


def _ggo_is_focal(work: str, head: _Head, a: int, b: int, sizes: list[_Size]) -> bool:
    word = work[head.start : head.end]
    if re.search(r"GGN", word, _FLAGS) or re.match(r"(?:focal|nodular|round)", word, _FLAGS):
        return True
    scope = work[a:b]
    if re.search(r"\b(?:patchy|diffuse|extensive|multifocal|widespread|mosaic|interstitial|confluent|geographic|"
                 r"dependent|peribronchial|infectious|inflammatory|edema|pneumonia|airspace)\b", scope, _FLAGS):
        return False
    if any(not s.prior and not s.excluded and s.value <= 30 for s in sizes):
        return True
    return bool(re.search(r"\b(?:focal|nodular|round(?:ed)?|small|tiny|subcentimeter|solitary|single)\b",
                          work[max(a, head.start - 40) : head.start], _FLAGS))


def _pick_size(sizes: list[_Size], plural: bool) -> tuple[float | None, str | None]:
    """Current size of a mention (mm) and its qualifier: the first current size of a
    singular mention, the largest of a plural one (qualifier "<=" when several)."""
    current = [s for s in sizes if not (s.prior or s.component or s.excluded)]
    if not current:
        return None, None
    if plural:
        best = max(current, key=lambda s: s.value)
        if len(current) > 1 or best.listed:
            return best.value, "<="
        return best.value, best.qualifier
    first = current[0]
    if first.listed:
        group = [s for s in current if s.listed and abs(s.start - first.start) < 40]
        best = max(group, key=lambda s: s.value)
        return best.value, best.qualifier
    return first.value, first.qualifier


def _resolve_location(d: _Draft, loc: _Location) -> None:
    lobes: list[str] = []
    for _, lb in loc.lobes:
        if lb not in lobes:
            lobes.append(lb)
    if "lingula" in lobes and "LUL" in lobes:
        lobes.remove("LUL")  # "left upper lobe lingula" -> lingula
    if lobes:
        if d.plural and len(lobes) > 1:
            d.lobe = None
        else:
            d.lobe = lobes[0]
        sides = {_LOBE_SIDE[lb] for lb in (lobes if d.plural else lobes[:1])}
        d.side = sides.pop() if len(sides) == 1 else "bilateral"
    else:
        sides = {s for _, s in loc.sides}
        if len(sides) == 1:
            d.side = sides.pop()
        elif len(sides) > 1:
            d.side = "bilateral"
    if loc.bilateral and (d.plural or d.lobe is None):
        d.side = "bilateral"
    d.segment = loc.segment
    d.position = loc.position


def _mention_span(work: str, head: _Head, a: int, b: int) -> tuple[int, int]:
    """The scope without leading conjunctions/punctuation and trailing punctuation."""
    s, e = a, b
    lead = _LEADING_JUNK_RE.match(work, s, e)
    if lead:
        s = lead.end()
    tail = _TRAILING_JUNK_RE.search(work[s:e])
    if tail:
        e = s + tail.start()
    return (s, e) if e > s else (head.start, head.end)


def _is_nodule_mention(work: str, sent: _Sentence, head: _Head, a: int, b: int, sizes: list[_Size]) -> bool:
    """Pulmonary (not thyroid/adrenal/...), focal (for ground glass) and a finding (not an
    indication such as "history of RUL nodule" or "lung nodule follow-up")."""
    if not _lung_context_ok(work, head, a, b, sent):
        return False
    if head.kind == "ggo" and not _ggo_is_focal(work, head, a, b, sizes):
        return False
    if _NON_FINDING_CONTEXT_RE.search(work[max(sent.start, head.start - 80) : head.start]):
        return False
    return not _NON_FINDING_AFTER_RE.match(work, head.end, b)


def _set_size(d: _Draft, sizes: list[_Size], scope_text: str) -> None:
    d.size_mm, d.size_qualifier = _pick_size(sizes, d.plural)
    if d.size_mm is None and _SUBCM_RE.search(scope_text):
        d.size_qualifier = "subcentimeter"
    changes = [z for z in sizes if z.change_from is not None]
    priors = [z for z in sizes if z.prior and not z.component and not z.excluded]
    if changes:
        d.prior_size_mm = changes[0].change_from
    elif priors:
        d.prior_size_mm = priors[0].value


def _set_descriptors(d: _Draft, head: _Head, scope_text: str, rel_anchor: int) -> None:
    """Texture, margin, shape, calcification, cavitation and stability from the scope."""
    d.texture = _texture(scope_text)
    if d.texture is None and head.kind == "ggo":
        d.texture = "ground-glass"
    d.margin = _first_match(_MARGIN_RES, scope_text)
    d.shape = _first_match(_SHAPE_RES, scope_text)
    if d.shape is None and head.kind == "opacity" and "round" in scope_text[rel_anchor : rel_anchor + 8].lower():
        d.shape = "round"  # "rounded opacity"
    d.calcification = _nearest_flag(scope_text, rel_anchor, _CALC_POS_RE, _CALC_NEG_RE)
    d.calcification_pattern = _calc_pattern(scope_text) if d.calcification else None
    d.cavitation = _nearest_flag(scope_text, rel_anchor, _CAVITY_POS_RE, _CAVITY_NEG_RE)
    d.stable = _stable(scope_text, rel_anchor)
    if d.stable is None and d.size_mm is not None and d.prior_size_mm is not None:
        d.stable = abs(d.size_mm - d.prior_size_mm) <= 1.0


def _draft_for(
    work: str,
    sent: _Sentence,
    head: _Head,
    scope: tuple[int, int],
    hedge_region: tuple[int, int],
    lung_rads: list[tuple[int, int, str]],
) -> _Draft | None:
    """Build the draft claim for one nodule head with scope ``[a, b)``; None when the
    head is not a pulmonary nodule mention.  ``hedge_region`` spans from the previous to
    the next nodule anchor of the sentence (see :func:`_uncertain`)."""
    a, b = scope
    sizes = _find_sizes(work, a, b)
    if not _is_nodule_mention(work, sent, head, a, b, sizes):
        return None
    s, e = _mention_span(work, head, a, b)
    d = _Draft(start=s, end=e, anchor=head.start, section=sent.section, sentence=sent.index, kind=head.kind)
    scope_text = work[a:b]
    pre = work[a : head.start]
    d.negated = _pre_negated(work, sent.start, head.start) or _post_negated(work, head.end, b)
    d.count, d.multiple = _count(pre, head.plural)
    if sent.label_nodule and head.start < sent.start + 40:
        # "Nodules: RUL 4 mm" - the label names the category, the content the count
        current = [z for z in sizes if not (z.prior or z.component or z.excluded)]
        d.count, d.multiple = (1, False) if len(current) <= 1 else (None, True)
    _set_size(d, sizes, scope_text)
    _resolve_location(d, _find_location(work, a, b))
    _set_descriptors(d, head, scope_text, head.start - a)
    d.uncertain = _uncertain(work, hedge_region[0], head.start, head.end, hedge_region[1])
    for ls, le, cat in lung_rads:
        if ls < b and a < le:
            d.lung_rads = cat
    lead_junk = _LEADING_JUNK_RE.match(pre)
    first_word = pre[lead_junk.end() if lead_junk else 0 :].strip()
    d.definite = bool(_DEFINITE_RE.match(first_word))
    d.indefinite = bool(_INDEFINITE_RE.match(first_word) or _NEW_ITEM_RE.search(pre))
    if d.negated:
        d.count, d.multiple = 0, False
    return d


def _split_plural(work: str, d: _Draft, a: int, b: int) -> list[_Draft]:
    """Split a plural mention that lists one size per nodule ("two nodules measuring 4
    and 6 mm in the RUL and LLL, respectively") into one draft per nodule."""
    if d.negated or not d.plural:
        return [d]
    sizes = [z for z in _find_sizes(work, a, b) if not (z.prior or z.component or z.excluded)]
    if len(sizes) < 2 or any(z.qualifier in ("<=", "<", "range") for z in sizes):
        return [d]
    loc = _find_location(work, a, b)
    lobes = []
    for pos, lb in loc.lobes:
        if not lobes or lobes[-1][1] != lb:
            lobes.append((pos, lb))
    if d.count is not None and d.count != len(sizes):
        return [d]
    if len(lobes) not in (0, 1, len(sizes)):
        return [d]
    out = []
    for i, z in enumerate(sizes):
        part = _Draft(**{f.name: getattr(d, f.name) for f in fields(_Draft)})
        part.size_mm, part.size_qualifier = z.value, z.qualifier if z.qualifier not in ("range",) else None
        part.count, part.multiple = 1, False
        if len(lobes) == len(sizes):
            part.lobe = lobes[i][1]
            lpos = lobes[i][0]
            lo, hi = min(z.start, lpos), max(z.end, loc.lobe_ends.get(lpos, lpos + 3))
        else:
            if len(lobes) == 1:
                part.lobe = lobes[0][1]
            lo, hi = z.start, z.end
        if part.lobe is not None:
            part.side = _LOBE_SIDE[part.lobe]
        if i == 0:
            lo = d.start  # the first item keeps the anchor phrase ("Two nodules measuring 4 ...")
        if hi < len(work) and work[hi] == ")":
            hi += 1  # "(8 mm)"
        part.start = max(lo, d.start)
        part.end = max(part.start + 1, min(hi, max(d.end, hi)))
        part.anchor = max(part.start, min(d.anchor, part.end))
        out.append(part)
    return out


def _implicit_list_head(work: str, sent: _Sentence, heads: list[_Head]) -> list[_Head]:
    """"Lung nodules: 1. RUL 4 mm. 2. LLL 6 mm." - an item with a lobe and a size but no
    nodule word gets a zero-width nodule anchor at its lobe."""
    loc = _find_location(work, sent.start, sent.end)
    sizes = [z for z in _find_sizes(work, sent.start, sent.end) if not (z.prior or z.excluded)]
    if not loc.lobes or not sizes:
        return heads
    pos = loc.lobes[0][0]
    return sorted([*heads, _Head(pos, pos, "nodule", False)], key=lambda h: h.start)


def _drafts_for_sentence(work: str, sent: _Sentence, lung_rads: list[tuple[int, int, str]]) -> list[_Draft]:
    text = work[sent.start : sent.end]
    if _RECOMMEND_START_RE.match(text):
        return []
    heads = _find_heads(work, sent.start, sent.end)
    if sent.list_item and not any(h.is_nodule for h in heads):
        heads = _implicit_list_head(work, sent, heads)
    if not any(h.is_nodule for h in heads):
        return []
    # anchors after a recommendation / guideline phrase are references, not findings:
    # "4 mm RUL nodule; in a low-risk patient no follow-up is needed" keeps the nodule,
    # "Fleischner: solid nodules <6 mm need no follow-up" gives none.
    markers = [m.start() for m in (_RECOMMEND_INNER_RE.search(text), _GUIDELINE_RE.search(text)) if m]
    rec_at = sent.start + min(markers) if markers else sent.end
    drafts: list[_Draft] = []
    nodule_heads = [h for h in heads if h.is_nodule]
    rank = {id(h): k for k, h in enumerate(nodule_heads)}
    for head, (a, b) in zip(heads, _scopes(work, sent, heads), strict=True):
        if not head.is_nodule or head.start >= rec_at:
            continue
        k = rank[id(head)]
        hedge = (
            nodule_heads[k - 1].end if k > 0 else sent.start,
            nodule_heads[k + 1].start if k + 1 < len(nodule_heads) else sent.end,
        )
        d = _draft_for(work, sent, head, (a, b), hedge, lung_rads)
        if d is not None:
            drafts.extend(_split_plural(work, d, a, b))
    _share_sentence_location(work, sent, drafts)
    return drafts


def _share_sentence_location(work: str, sent: _Sentence, drafts: list[_Draft]) -> None:
    """Sentence-level location sharing: a leading "In the right lower lobe, ..." applies
    to every nodule of the sentence; "..., respectively" distributes lobes in order."""
    if len(drafts) < 2:
        return
    text = work[sent.start : sent.end]
    lead = re.match(r"^\W*(?:in|within|at)\s+the\s+[^,]{3,60},", text, _FLAGS)
    if lead:
        loc = _find_location(work, sent.start, sent.start + lead.end())
        if loc.lobes:
            for d in drafts:
                if not d.has_location:
                    d.lobe = loc.lobes[0][1]
                    d.side = _LOBE_SIDE[d.lobe]
    if re.search(r"\brespectively\b", text, _FLAGS):
        last = drafts[-1]
        loc = _find_location(work, last.anchor, sent.end)
        lobes = [lb for _, lb in loc.lobes]
        if len(lobes) == len(drafts):
            for d, lb in zip(drafts, lobes, strict=True):
                d.lobe, d.side = lb, _LOBE_SIDE[lb]


def _attach_lung_rads(sentences: list[_Sentence], drafts: list[_Draft], found: list[tuple[int, int, str]]) -> None:
    """A Lung-RADS statement in a sentence of its own ("1. 6 mm RUL nodule. Lung-RADS 3.")
    belongs to the single positive nodule of the previous sentence of the same section."""
    for start, _end, cat in found:
        sent = next((x for x in sentences if x.start <= start < x.end), None)
        if sent is None or sent.index == 0 or any(d.sentence == sent.index for d in drafts):
            continue
        prev = sentences[sent.index - 1]
        if prev.section != sent.section:
            continue
        cands = [d for d in drafts if d.sentence == prev.index and not d.negated]
        if len(cands) == 1 and cands[0].lung_rads is None:
            cands[0].lung_rads = cat


# ---------------------------------------------------------------------------
# Merging
# ---------------------------------------------------------------------------
def _sizes_compatible(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return True
    return abs(a - b) <= max(1.0, 0.2 * max(a, b))


def _compatible(x: _Draft, y: _Draft) -> bool:
    if x.negated != y.negated:
        return False
    if x.lobe and y.lobe and x.lobe != y.lobe:
        return False
    if x.side and y.side and "bilateral" not in (x.side, y.side) and x.side != y.side:
        return False
    return _sizes_compatible(x.size_mm, y.size_mm)


def _match_score(x: _Draft, y: _Draft) -> int:
    score = 0
    if x.lobe and x.lobe == y.lobe:
        score += 4
    if x.side and x.side == y.side:
        score += 1
    if x.size_mm is not None and y.size_mm is not None:
        score += 3 if abs(x.size_mm - y.size_mm) < 0.51 else 1
    if x.texture and x.texture == y.texture:
        score += 1
    return score


def _merge_coreferent(drafts: list[_Draft]) -> list[_Draft]:
    """Within a section: "The nodule is solid." / "This nodule ..." after a described
    nodule refers to it; plural summaries ("Two nodules are present.") followed by the
    individual nodules are dropped."""
    out: list[_Draft] = []
    positives: dict[str, list[_Draft]] = {}
    for d in drafts:
        same = positives.get(d.section, [])[-20:]  # recent positives of the section
        target = None
        if not d.negated and same and not d.indefinite and not d.plural:
            bare = d.size_mm is None and not d.has_location and d.count in (1, None)
            if bare and d.sentence - same[-1].sentence <= 4:
                target = same[-1]
            elif d.definite and d.lobe is not None:
                cands = [p for p in same if _compatible(p, d) and p.lobe == d.lobe and not p.plural]
                if cands:
                    target = cands[-1]
            elif d.definite and not d.has_location and d.size_mm is not None:
                # "The 1.1 cm nodule is new." refers to the nodule of that size
                cands = [p for p in same if not p.plural and p.size_mm is not None
                         and abs(p.size_mm - d.size_mm) <= max(0.5, 0.1 * d.size_mm)]
                if cands:
                    target = cands[-1]
        if target is not None:
            target.fill_from(d)
            continue
        out.append(d)
        if not d.negated:
            positives.setdefault(d.section, []).append(d)
    # plural summaries followed by the individual nodules
    final: list[_Draft] = []
    for i, d in enumerate(out):
        if d.plural and not d.negated and d.size_mm is None and d.lobe is None:
            following = [
                q for q in out[i + 1 : i + 30]
                if q.section == d.section and not q.negated and not q.plural and q.sentence - d.sentence <= 3
                and (q.size_mm is not None or q.lobe is not None)
            ]
            needed = d.count if d.count is not None else 2
            if len(following) >= needed:
                continue
        final.append(d)
    return final


def _merge_impression(drafts: list[_Draft]) -> list[_Draft]:
    """IMPRESSION mentions repeating a nodule described elsewhere are merged into it
    (its span kept, missing attributes filled from the impression)."""
    primary = [d for d in drafts if d.section != _IMPRESSION]
    if not primary:
        return drafts
    kept = list(primary)
    for d in (d for d in drafts if d.section == _IMPRESSION):
        cands = [p for p in primary if _compatible(p, d)]
        if d.plural and not d.negated:
            cands = [p for p in cands if p.plural] or cands
        if d.indefinite and d.has_location and d.lobe is not None:
            # "additional 5 mm LLL nodule" must match on lobe
            cands = [p for p in cands if p.lobe == d.lobe]
        if d.lobe is not None and not d.plural:
            same_lobe = [p for p in cands if p.lobe == d.lobe]
            cands = same_lobe or [p for p in cands if p.lobe is None]
        if cands:
            best = max(cands, key=lambda p: _match_score(p, d))
            best.fill_from(d)
            if d.lung_rads and best.lung_rads is None:
                best.lung_rads = d.lung_rads
            continue
        kept.append(d)
    kept.sort(key=lambda d: d.start)
    return kept


def _finalise(report: Report, d: _Draft) -> NoduleClaim:
    start, end = max(0, d.start), min(len(report.text), max(d.end, d.start))
    return NoduleClaim(
        size_mm=round(d.size_mm, 3) if d.size_mm is not None else None,
        size_qualifier=d.size_qualifier,
        side=d.side,
        lobe=d.lobe,
        segment=d.segment,
        texture=d.texture,
        margin=d.margin,
        calcification=d.calcification,
        calcification_pattern=d.calcification_pattern,
        cavitation=d.cavitation,
        shape=d.shape,
        lung_rads=d.lung_rads,
        negated=d.negated,
        uncertain=d.uncertain,
        stable=d.stable,
        count=d.count,
        multiple=d.multiple,
        kind=d.kind,
        position=d.position,
        prior_size_mm=round(d.prior_size_mm, 3) if d.prior_size_mm is not None else None,
        span=(start, end),
        text=report.text[start:end],
        section=d.section,
    )


# ---------------------------------------------------------------------------
# Completeness
# ---------------------------------------------------------------------------
def _nodule_descriptor_score(n: NoduleClaim) -> float:
    size = 1.0 if n.size_mm is not None or n.size_qualifier is not None else 0.0
    if n.lobe is not None or n.segment is not None:
        location = 1.0
    elif n.side is not None:
        location = 0.5
    else:
        location = 0.0
    others = sum(v is not None for v in (n.texture, n.margin, n.calcification, n.shape))
    return size + location + others


def completeness_score(nodules: Iterable[NoduleClaim], negative_statement: bool, has_impression: bool) -> float:
    """Report completeness in [0, 1] over seven descriptors: size, location, texture,
    margin, calcification, shape and impression.

    * With positive nodule claims: the *best-described* positive claim is scored (a
      report that fully characterises its index nodule is complete even if it also lists
      tiny ones).  size counts when a number or a qualifier ("subcentimeter") is given;
      location is 1 for a lobe or segment and 0.5 for a side only; calcification counts
      when stated either way ("calcified" or "non-calcified").
    * Without positive claims: an explicit negative statement ("No pulmonary nodules")
      covers the six nodule descriptors (score 6/7, 1.0 with an impression); a report
      that says nothing about nodules gets only the impression point (1/7 or 0).
    * impression = the report has a non-empty IMPRESSION/CONCLUSION section.
    """
    positive = [n for n in nodules if not n.negated]
    impression = 1.0 if has_impression else 0.0
    if positive:
        best = max(_nodule_descriptor_score(n) for n in positive)
    else:
        best = 6.0 if negative_statement else 0.0
    return round((best + impression) / 7.0, 4)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------
def extract_claims(report: Report | str | os.PathLike[str]) -> ReportClaims:
    """Extract nodule claims from a report (a :class:`Report`, or anything
    :func:`~lungfuse.pipelines.io.report.load_report` accepts: text or a path).

    Returns a :class:`ReportClaims`; sizes are in millimetres.  Never raises on odd
    text (any string that makes a valid Report).
    """
    rep = report if isinstance(report, Report) else load_report(report)
    lung_rads = find_lung_rads(rep.text)
    work = _masked_text(rep.text, [(s, e) for s, e, _ in lung_rads])
    drafts: list[_Draft] = []
    sentences = _sentences(rep, work)
    for sent in sentences:
        drafts.extend(_drafts_for_sentence(work, sent, lung_rads))
    _attach_lung_rads(sentences, drafts, lung_rads)
    drafts = _merge_coreferent(drafts)
    drafts = _merge_impression(drafts)
    nodules = tuple(_finalise(rep, d) for d in sorted(drafts, key=lambda d: d.start))
    positive = [n for n in nodules if not n.negated]
    negative_statement = bool(nodules) and not positive
    impression = rep.section(_IMPRESSION)
    return ReportClaims(
        nodules=nodules,
        negative_statement=negative_statement,
        completeness=completeness_score(nodules, negative_statement, impression is not None),
        lung_rads=_report_lung_rads(rep, lung_rads),
        impression=impression,
    )
