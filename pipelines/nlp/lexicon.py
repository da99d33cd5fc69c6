"""The claims extractor's vocabulary: coded values, section names and every compiled pattern.

Research software, NOT for diagnostic use.

Internal to :mod:`lungfuse.pipelines.nlp` (the public API is :mod:`.claims`).  Grouped as the
extractor uses them: masking (image references, dates, number words), Lung-RADS statements,
sentence splitting and labels, nodule heads (with the one-typo nodule word test) and the
separators that partition a sentence between heads, location (lobes, zones, sides,
segments, pleural/fissural positions, lung and other-organ context), size (numbers, units,
qualifiers, prior/component/excluded contexts), descriptors (texture, margin, shape,
calcification, cavitation, stability) and negation/uncertainty/indication context.
"""

from __future__ import annotations

import re

LOBES = ("RUL", "RML", "RLL", "LUL", "LLL", "lingula")
SIDES = ("right", "left", "bilateral")
TEXTURES = ("solid", "part-solid", "ground-glass")
MARGINS = ("smooth", "lobulated", "spiculated", "irregular")
CALCIFICATION_PATTERNS = ("central", "diffuse", "popcorn", "laminated", "stippled/punctate", "eccentric")
LUNG_RADS_CATEGORIES = ("0", "1", "2", "3", "4A", "4B", "4X")

LOBE_SIDE = {"RUL": "right", "RML": "right", "RLL": "right", "LUL": "left", "LLL": "left", "lingula": "left"}


# Sections whose nodule mentions are not findings of this exam (history, technique,
# comparison, recommendations).  Their Lung-RADS statements are still read except for
# history/comparison (a *prior* category).
SKIP_SECTIONS = frozenset({"CLINICAL HISTORY", "EXAM", "TECHNIQUE", "DOSE", "COMPARISON", "RECOMMENDATION"})
NO_LUNG_RADS_SECTIONS = frozenset({"CLINICAL HISTORY", "COMPARISON", "EXAM", "TECHNIQUE", "DOSE"})
IMPRESSION = "IMPRESSION"
FLAGS = re.IGNORECASE

# ---------------------------------------------------------------------------
# Masking tables: spans overwritten in the working copy (same length).
# ---------------------------------------------------------------------------
IMAGE_REF_RES: tuple[re.Pattern[str], ...] = (
    # "(series 3, image 45)", "(se 4 im 56)", "(image 123)", "(axial 45 of 200)", "(#45)"
    re.compile(
        r"[(\[]\s*(?:series|ser|se|images?|img|ims?|slices?|sl|axial|coronal|sagittal|cor|sag|ax|#)\b\.?"
        r"[^()\[\]\n]{0,60}[)\]]",
        FLAGS,
    ),
    # "(7:340)", "(4/56)", "[3:45, 3:60]" - bracketed number pairs are image coordinates
    re.compile(r"[(\[]\s*\d{1,4}\s*[:/]\s*\d{1,4}(?:\s*[,;]\s*\d{1,4}\s*[:/]\s*\d{1,4})*\s*[)\]]"),
    # bare "series 3 image 45", "se 3, im 45"
    re.compile(
        r"\b(?:series|ser\.?|se)\s*+#?\s*+\d+(?:\s*+[,/;]?\s*+(?:image|img|im)\.?\s*+(?:#|no\.?|number)?\s*+\d+)?", FLAGS
    ),
    # bare "image 45", "image #45", "images 40-45", "slice 120 of 300"; a continuation
    # number followed by a unit is a size ("image 45, 5 mm") and is left alone
    re.compile(
        r"\b(?:images?|img|ims?|slices?|sl)\.?\s*+(?:#|no\.?|number)?\s*+\d+"
        r"(?:\s*+(?:-|to|and|,|/|of)\s*+\d+(?![\d.]*+\s*+-?\s*+(?:mm|cm|millimet|centimet)))*",
        FLAGS,
    ),
    # "3:45" anywhere (image coordinates, clock times) - never a size
    re.compile(r"\b\d{1,3}\s*:\s*\d{1,4}\b"),
)
_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
DATE_RES: tuple[re.Pattern[str], ...] = (
    re.compile(r"\b\d{1,2}[/.-]\d{1,2}[/.-](?:19|20)?\d{2}\b"),
    re.compile(r"\b(?:19|20)\d{2}[/.-]\d{1,2}[/.-]\d{1,2}\b"),
    re.compile(rf"\b{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:19|20)\d{{2}}\b", FLAGS),
    re.compile(rf"\b\d{{1,2}}\s+{_MONTHS}\s+(?:19|20)\d{{2}}\b", FLAGS),
    re.compile(rf"\b{_MONTHS}\s+(?:19|20)\d{{2}}\b", FLAGS),
    re.compile(r"\b\d{1,2}/(?:19|20)\d{2}\b"),
    # a bare year (not "2019 mm")
    re.compile(r"\b(?:19[89]\d|20[0-4]\d)\b(?!\s*(?:mm|cm)\b)"),
)
# "a four millimeter nodule": number words before a unit are rewritten as digits
# (left-aligned, space padded, so offsets are unchanged).
NUMBER_WORD_VALUES = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
}
NUMBER_WORD_UNIT_RE = re.compile(
    rf"\b(?=[otfsen])(?P<word>{'|'.join(NUMBER_WORD_VALUES)})(?=[\s-]++(?:mm|millimet|cm|centimet))", FLAGS
)
# What each masking pattern cannot match without (same order as IMAGE_REF_RES / DATE_RES): a
# cheap search for it skips a pattern whose scan of a 1 MB report costs a tenth of a second and
# would find nothing.  None: the pattern always runs.
IMAGE_REF_NEEDS: tuple[re.Pattern[str] | None, ...] = (
    re.compile(r"[(\[]"), re.compile(r"[(\[]"), re.compile(r"se", FLAGS), re.compile(r"im|sl", FLAGS), re.compile(":"),
)
_YEAR_NEEDED = re.compile(r"(?:19|20)\d\d")
DATE_NEEDS: tuple[re.Pattern[str] | None, ...] = (
    re.compile(r"\d[/.-]\d"), _YEAR_NEEDED, _YEAR_NEEDED, _YEAR_NEEDED, _YEAR_NEEDED, _YEAR_NEEDED, _YEAR_NEEDED,
)
NUMBER_WORD_UNIT_NEEDS = re.compile(r"mm|millimet|cm|centimet", FLAGS)
REF_MASK = "#"
DATE_MASK = "@"

# ---------------------------------------------------------------------------
# Lung-RADS
# ---------------------------------------------------------------------------
# Name, then optional filler (version "v1.1"/"1.1"/"2022", "category", "assessment",
# "score", ":"), then the category.  "Lung-RADS 1.1" alone is a version, not category 1:
# a digit followed by ".digit" is refused.  "LR" needs a digit right after ("LR-3").
LUNG_RADS_RE = re.compile(
    r"(?:\b(?:ACR\s+)?lung[\s-]*rads\b|\bLR\b(?=[\s-]*[0-4]))"
    r"(?:\s*+(?:\u00ae|\(r\)|\u2122))?"
    r"(?:[\s,:=\-\u2013(]*+(?:v(?:ersion)?\s*(?:20\d\d|\d(?:\.\d)?)|\d\.\d|20\d\d|assessment|categor(?:y|ies)|"
    r"cat\b\.?|score|classification|is|of|final|overall)){0,4}"
    r"[\s,:=\-\u2013(]*+"
    r"(?P<cat>4\s?[ABXabx](?![a-z])|[0-4](?![\d]|\.\d|[A-RT-Za-rt-z]))"
    r"(?:\s?S\b)?",
    FLAGS,
)
LR_ORDER = {c: i for i, c in enumerate(LUNG_RADS_CATEGORIES)}
PRIOR_LR_RE = re.compile(r"\b(?:previous(?:ly)?|prior|formerly|was|from)\b[^.;]{0,20}$", FLAGS)

# ---------------------------------------------------------------------------
# Sentence splitting
# ---------------------------------------------------------------------------
# Sentence ends: ".!?" before whitespace, blank lines (a run of them is one candidate: 1 MB of
# newlines was 500,000 empty sentences), a newline after a line ending in
# ":" (a sub-header line), and a newline before an enumerator, bullet or "Label:" line.
SENT_CANDIDATE_RE = re.compile(
    r"(?<![.!?])[.!?]++(?=\s)|\n(?:[ \t]*+\n)++|(?<=:)[ \t]*+\n|"
    r"\n(?=[ \t]*(?:\(?\d{1,2}[.)][ \t]|[-*\u2022][ \t]|[A-Z][A-Za-z0-9/&,' #-]{1,40}:))"
)
# Tokens whose trailing period does not end a sentence.
ABBREVIATIONS = frozenset(
    "approx approx. e.g i.e eg ie vs dr mr mrs ms st no nos fig figs ser se im img ims sl prev cf incl est ca "
    "resp lt rt ant post sup inf lat med max min apprx appx b/l pt pts yo y/o hx h/o s/p".split()
)
ENUM_PREFIX_RE = re.compile(r"[ \t]*(?:\(?\d{1,2}[.)]|[-*\u2022]|#+)[ \t]+")
LABEL_RE = re.compile(r"[ \t]*(?P<label>[A-Za-z][A-Za-z/&,' -]{1,40}?)[ \t]*:(?!\d)[ \t]*")
LUNG_LABEL_RE = re.compile(r"\b(?:lungs?|pleura|pleural|airways?|parenchyma|pulmonary|nodules?)\b", FLAGS)
OTHER_LABEL_RE = re.compile(
    r"\b(?:thyroid|neck|abdomen|abdominal|liver|hepat\w*|adrenals?|kidneys?|renal|bones?|osseous|"
    r"musculoskeletal|soft\s+tissues?|chest\s+wall|breasts?|mediastin\w*|heart|cardiac|cardiovascular|vascul\w*|"
    r"vessels?|aorta|lymph|nodes?|esophag\w*|spleen|pancreas|hila|hilar|axilla\w*|skeleton|spine|tubes?|lines?)\b",
    FLAGS,
)

# ---------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------
NODULE_TOKEN_RE = re.compile(r"\b(?:micro-?)?n[a-z]{3,9}\b", FLAGS)
_NODULE_TYPOS = frozenset(
    "nodual noduals nodul noduls nodulle nodulles nodlue nodlues noduel noduels ndoule ndoules nodue nodues "
    "nodle nodles noudle noudles nodoule nodoules nodulr nodyle nodules nodule nodiule nodiules nodulae".split()
)
_NOT_NODULE = frozenset({"module", "modules", "nodes", "noduli", "nodular", "nodularity", "noodle", "noodles"})

# (kind, pattern) for the other nodule-like anchors.
ANCHOR_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ggo", re.compile(
        r"\b(?:(?:focal|nodular|rounded|round)\s+)?ground[\s-]*glass(?:\s+attenuation)?\s+"
        r"(?:opacit(?:y|ies)|densit(?:y|ies)|foc(?:us|i)|lesions?)\b", FLAGS)),
    ("ggo", re.compile(r"\bGG[ON]s?\b", FLAGS)),
    ("opacity", re.compile(
        r"\b(?:micro)?(?:rounded|round|nodular|nodule[\s-]*like|spiculated)(?:[\s-]+appearing)?\s+"
        r"(?:soft[\s-]*tissue\s+)?(?:opacit(?:y|ies)|densit(?:y|ies)|foc(?:us|i))\b", FLAGS)),
    # "mass effect", "body mass", "mass-like consolidation" are not masses
    ("mass", re.compile(r"(?<!body\s)(?<!muscle\s)(?<!bone\s)\bmass(?:es)?\b(?![\s-]*(?:effect|like|index))", FLAGS)),
    ("granuloma", re.compile(r"\bgranulomas?\b", FLAGS)),
    ("lesion", re.compile(r"\blesions?\b", FLAGS)),
)
# The words one of ANCHOR_PATTERNS needs: a sentence without any of them is not searched for them.
ANCHOR_NEEDS = re.compile(r"ground|gg|opacit|densit|foc|mass|granulom|lesion", FLAGS)
# Non-nodule finding heads: they only partition sentences (their sizes stay theirs).
OTHER_HEAD_RE = re.compile(
    # the lookahead holds the first letters of the alternatives: it changes no match, but a position
    # that cannot start one is left after one character test instead of forty (1 MB of "x. ")
    r"\b(?=[lnacepsbthfodirgvm])(?:(?:lymph\s+)?nodes?|lymphadenopathy|adenopathy|cysts?|effusions?|pneumothora(?:x|ces)|"
    r"consolidations?|atelectasis|scar(?:s|ring)?|emphysema|bullae?|blebs?|bronchiectasis|aneurysms?|hernias?|"
    r"thickening|plaques?|(?:coronary|aortic|vascular|valvular|atherosclerotic|arterial|annular|mitral)\s+"
    r"(?:artery\s+|arteries\s+|valve\s+|annulus\s+)?calcifications?|hypodensit(?:y|ies)|hyperdensit(?:y|ies)|"
    r"hemangiomas?|fractures?|opacit(?:y|ies)|densit(?:y|ies)|infiltrates?|nodularity|fibrosis|honeycombing|"
    r"collimation|slices?|sections|reconstructions?|goiter|stents?|tubes?|catheters?|fluid|hiatal)\b",
    FLAGS,
)
# Conjoined nodule heads with nothing but a conjunction between them are one mention:
# "nodules or masses", "nodule/mass", "nodules, masses".
CONJOINED_GAP_RE = re.compile(
    r"^[\s,/]*(?:(?:and/or|and|or|nor|&)\s+)?(?:(?:other|suspicious|pulmonary|lung|discrete|focal|definite|new|"
    r"enlarging|growing|dominant|large|concerning|worrisome)\s+)*$",
    FLAGS,
)

# Separators used to cut the gap between two consecutive heads.
STRONG_SEP_RE = re.compile(
    r";|,|:|\b(?:and|or|nor|as\s+well\s+as|while|whereas|but|also|plus|in\s+addition(?:\s+to)?|additionally)\b",
    FLAGS,
)
WEAK_SEP_RE = re.compile(
    r"\b(?:with(?:out)?|adjacent\s+to|near|next\s+to|abutting|along|containing|associated\s+with|"
    r"compatible\s+with|consistent\s+with)\b",
    FLAGS,
)
# Fallback cut when a gap has no separator: just after the last function word, so that
# pre-modifiers ("lung" in "slices for lung nodule") stay with the second head.
FUNCTION_WORD_RE = re.compile(
    r"\b(?:for|of|in|within|at|on|to|from|by|is|are|was|were|shows?|demonstrates?|there|versus|vs)\b\.?", FLAGS
)
LEADING_JUNK_RE = re.compile(
    r"(?:[\s,;:]|\b(?:and|or|nor|as\s+well\s+as|while|whereas|but|also|plus|additionally)\b)+", FLAGS
)
TRAILING_JUNK_RE = re.compile(r"(?<![\s,;:.])(?<!\band)(?<!\bor)(?:[\s,;:.]|\b(?:and|or)\b)++$", FLAGS)

# ---------------------------------------------------------------------------
# Location
# ---------------------------------------------------------------------------
_SIDE = r"(?P<side>right|rt|r|left|lt|l)\.?"
_LEVEL = r"(?:upper|uppper|uper|middle|midle|middel|mid|lower|lowe|lowr|loer|lwr)"
# "lobr", "lobw", "loeb", "lboe" are dictation typos; "lob(?![a-z])" keeps "lobular" out.
_LOBEWORD = r"(?:lobes?|lobe's|lobr|lobw|loeb|lboe|lob)(?![a-z])"
_SIDE_WORD = r"(?:right|rt|left|lt)\.?"
LOBE_RES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # "right upper and left lower lobes": two sided levels sharing one lobe word (tried
    # first, so that "left lower lobes" alone does not take the phrase and lose "right upper")
    ("pairs", re.compile(
        rf"\b{_SIDE_WORD}[\s-]*{_LEVEL}(?:\s*(?:,|and|&|/|or)\s*(?:the\s+)?{_SIDE_WORD}[\s-]*{_LEVEL})+[\s-]*{_LOBEWORD}",
        FLAGS)),
    ("sided", re.compile(
        rf"\b{_SIDE}[\s-]*(?P<levels>{_LEVEL}(?:\s*(?:,|and|&|/|or)\s*{_LEVEL})*)[\s-]*(?:lung[\s-]+)?{_LOBEWORD}",
        FLAGS)),
    ("sided", re.compile(
        rf"\b(?P<levels>{_LEVEL}(?:\s*(?:and|&|/|or)\s*{_LEVEL})*)[\s-]*{_LOBEWORD}\s*(?:,\s*|of\s+the\s+|on\s+the\s+)"
        r"(?P<side>right|left)\b(?:\s+lung)?", FLAGS)),
    ("sided", re.compile(
        rf"\b(?P<side>right|rt|left|lt)\.?\s+lung\s*,?\s*(?P<levels>{_LEVEL})[\s-]*{_LOBEWORD}", FLAGS)),
    ("abbr", re.compile(r"\b(?P<abbr>[RL](?:UL|ML|LL))s?\b", FLAGS)),
    ("both", re.compile(rf"\b(?:both|bilateral|the)\s+(?P<levels>upper|lower)[\s-]*{_LOBEWORD}", FLAGS)),
    ("lingula", re.compile(r"\blingul(?:a|ar)\b", FLAGS)),
    ("zone", re.compile(
        r"\b(?P<side>right|rt|r|left|lt|l)\.?[\s-]+(?:lung[\s-]+)?"
        r"(?P<zone>apex|apical|apices|bases?|basilar|basal|(?:upper|lower)\s+lung(?:\s+zone)?(?![\s-]*lob))\b",
        FLAGS)),
    ("zone", re.compile(r"\b(?P<zone>apex|base)\s+of\s+the\s+(?P<side>right|left)\s+lung\b", FLAGS)),
    ("sideless", re.compile(rf"\b(?P<levels>{_LEVEL})[\s-]*{_LOBEWORD}", FLAGS)),
)
# What the zone and lingula patterns of LOBE_RES need ("apex", "apical", "bases", "basilar", "upper
# lung", "lingula"), and the segment pattern ("segment"): scopes without them are not searched.
ZONE_NEEDS = re.compile(r"ap|bas|lung|lingul", FLAGS)
SEGMENT_NEEDS = re.compile(r"segment", FLAGS)
# Which LOBE_RES patterns need a lobe word ("lobe", "lobr", "loeb", "lboe"): a scope without
# one is not searched for them (see find_location).
LOBE_WORD_NEEDS = re.compile(r"lob|loeb|lboe", FLAGS)
LOBE_RES_NEED_LOBE_WORD = tuple(kind in ("pairs", "sided", "both", "sideless") for kind, _ in LOBE_RES)
LOBE_RES_NEED_ZONE_WORD = tuple(kind in ("zone", "lingula") for kind, _ in LOBE_RES)
BILATERAL_RE = re.compile(
    r"\b(?:bilateral(?:ly)?|bibasilar|bibasal|bi-?apical|both\s+lungs|both\s+(?:upper|lower)\s+lobes|"
    r"throughout\s+(?:both|the)\s+lungs|b/l)\b",
    FLAGS,
)
# one "<side> <level>" pair of a "pairs" match
SIDE_LEVEL_RE = re.compile(rf"\b(?P<side>right|rt|left|lt)\.?[\s-]*(?P<level>{_LEVEL})", FLAGS)
# "It measures 6 mm." / "This is solid.": a sentence about the nodule of the sentence before
PRONOUN_START_RE = re.compile(
    r"\W*+(?P<pron>it|this|which)\s+(?:now\s+|currently\s+|again\s+|also\s+)?"
    r"(?=(?:measures?|measured|measuring|is|was|has|shows|demonstrates|contains|appears|lies|abuts)\b)",
    FLAGS,
)
# "multiple nodules, the largest 9 mm in the RLL": the largest member of a group
LARGEST_RE = re.compile(r"\b(?:the\s+)?(?:largest|biggest)\b", FLAGS)
# "a second 4 mm nodule in the same lobe": the lobe of the nodule described just before
SAME_LOBE_RE = re.compile(r"\b(?:in|within|of)\s+the\s+same\s+lobe\b", FLAGS)
SIDE_WORD_RE = re.compile(r"\b(?P<side>right|rt|left|lt)\b(?:[\s-]+sided)?|\b(?P<letter>[RL])\.?(?=\s+(?:lung|hemithorax))")
SEGMENT_RE = re.compile(
    r"\b(?P<seg>apico[\s-]?posterior|apical[\s-]+posterior|anteromedial(?:\s+(?:basal|basilar))?|"
    r"(?:anterior|posterior|lateral|medial)\s+(?:basal|basilar)|(?:superior|inferior)\s+lingular|"
    r"apical|anterior|posterior|lateral|medial|superior)\s+(?:sub)?segment(?:s|al)?\b",
    FLAGS,
)
POSITION_RES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("perifissural", re.compile(r"\b(?:peri|juxta|intra)?-?fissural\b", FLAGS)),
    ("subpleural", re.compile(r"\bsub-?pleural\b", FLAGS)),
    ("juxtapleural", re.compile(r"\bjuxta-?pleural\b", FLAGS)),
    ("pleural-based", re.compile(r"\bpleural[\s-]+based\b", FLAGS)),
    ("endobronchial", re.compile(r"\bendobronchial\b", FLAGS)),
    ("centrilobular", re.compile(r"\bcentrilobular\b", FLAGS)),
    ("peribronchovascular", re.compile(r"\bperibronchovascular\b", FLAGS)),
)
# What every POSITION_RES pattern needs: a scope without it has no pleural/fissural position.
POSITION_NEEDS = re.compile(r"fissur|pleur|endobronch|centrilob|peribronchovasc", FLAGS)
# Lung context (for masses/lesions and for the organ test).
LUNG_TOKEN_RE = re.compile(
    r"\b(?:lungs?|pulmonary|intrapulmonary|parenchym\w*|lingul\w*|fissur\w*|perifissural|subpleural|"
    r"juxtapleural|pleural[\s-]+based|apex|apices|apical|bases?|basilar|bibasilar|perihilar|bronch\w*|"
    r"airways?|hemithorax|GG[ON]s?|ground[\s-]*glass|[RL](?:UL|ML|LL)|(?:upper|middle|lower)\s+lobes?)\b",
    FLAGS,
)
# Non-lung organs: a nodule closer to one of these than to a lung word is not pulmonary.
ORGAN_RE = re.compile(
    r"\b(?:thyroid\w*|liver|hepatic|adrenals?|renal|kidneys?|spleen|splenic|pancrea\w*|breasts?|gallbladder|"
    r"esophag\w*|gastric|stomach|bowel|colon\w*|peritone\w*|omental|omentum|mesenter\w*|subcutaneous|cutaneous|"
    r"skin|axilla\w*|osseous|bones?|bony|vertebra\w*|ribs?|stern\w*|parotid|neck|mediastin\w*|pericardi\w*|"
    r"cardiac|chest\s+wall|muscles?|intramuscular|paraspinal|abdomen|abdominal|pelvi\w*|uter\w*|ovar\w*|"
    r"prostat\w*|supraclavicular|paratracheal|subcarinal|pleural\s+fluid)\b",
    FLAGS,
)
BONE_LESION_RE = re.compile(r"\b(?:lytic|sclerotic|blastic|osteo\w*|enchondroma|bone\s+island)\b", FLAGS)

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
SIZE_CHUNK_RE = re.compile(
    rf"(?<![\d.]){_NUM}(?:\s*+-?\s*+{_UNIT})?(?:\s*+{_SEP}\s*+{_NUM}(?:\s*+-?\s*+{_UNIT})?){{0,6}}\s*+-?\s*+{_UNIT}", FLAGS
)
SIZE_TOKEN_RE = re.compile(
    rf"(?P<num>{_NUM})(?:\s*+-?\s*+(?P<unit>{_UNIT}))?|(?P<sep>x|\u00d7|\*|by|-|\u2013|\u2014|to|through|,|and|or|&)",
    FLAGS,
)
DIM_SEPS = {"x", "\u00d7", "*", "by"}
RANGE_SEPS = {"-", "\u2013", "\u2014", "to", "through"}
SUBCM_RE = re.compile(r"\bsub[\s-]*(?:centimet\w*|cm)\b", FLAGS)
# qualifier words immediately before a size
QUALIFIER_RES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("<=", re.compile(r"(?:\b(?:up\s+to|at\s+most|no\s+(?:larger|greater|bigger)\s+than|not\s+exceeding|as\s+large\s+as|"
                      r"largest(?:\s+(?:one|nodule))?(?:\s+(?:measuring|measures|is|of))?)|\u2264|<=)\s*-?\s*$", FLAGS)),
    ("<", re.compile(r"(?:\b(?:sub|less\s+than|smaller\s+than|under|below)|<)\s*-?\s*$", FLAGS)),
    (">=", re.compile(r"(?:\bat\s+least|\u2265|>=)\s*$", FLAGS)),
    (">", re.compile(r"(?:\b(?:greater\s+than|larger\s+than|more\s+than|over|exceeding)|>)\s*$", FLAGS)),
    ("~", re.compile(r"(?:\b(?:approximately|approx|apprx|about|roughly|nearly|almost|around|circa|ca)\.?|~|\u2248)\s*$",
                     FLAGS)),
)
BETWEEN_RE = re.compile(r"\bbetween\s*$", FLAGS)
CHANGE_VERB_RE = re.compile(
    r"\b(?:increas\w*|decreas\w*|grow\w*|grew|enlarg\w*|chang\w*|progress\w*|shrunk|shrink\w*|reduc\w*|"
    r"previously|prior)\b[^.;]{0,40}\bfrom\s*$",
    FLAGS,
)
PRIOR_BEFORE_RE = re.compile(
    r"\b(?:previous(?:ly)?|prior(?:ly)?|was|were|formerly|earlier|originally|initially|before|baseline|then|"
    r"compared\s+(?:to|with)|from|vs\.?|versus)\b(?:\s+(?:measur\w*|at|of|being|approximately|about|only|"
    r"exam|study|ct|scan|imaging|on|in|the|it|this))*\s*[:\-]?\s*$",
    FLAGS,
)
PRIOR_AFTER_RE = re.compile(
    r"^\s*\)?\s*(?:(?:on|in|at|from)\s+(?:the\s+)?(?:prior|previous|preceding|last|earlier|comparison|baseline|"
    r"outside|old|@)|previously|prior\b)",
    FLAGS,
)
# "a 5 mm solid component" - but "10 mm part-solid nodule" is the whole nodule
COMPONENT_AFTER_RE = re.compile(
    r"^\s*(?:solid|ground[\s-]*glass|soft[\s-]*tissue|cystic)?\s*(?:component|portion|part(?![\s-]*solid)|core)\b", FLAGS
)
COMPONENT_BEFORE_RE = re.compile(
    r"\b(?:component|portion|part|core)\s*(?:which\s+)?(?:measuring|measures|measured|of|is|=)?\s*"
    r"(?:approximately\s+|about\s+|up\s+to\s+)?$",
    FLAGS,
)
# sizes that describe something else: slice thickness, distances, short-axis (nodes), walls
EXCLUDED_AFTER_RE = re.compile(
    r"^\s*(?:thick\s+|thin\s+|axial\s+|contiguous\s+)*(?:slices?|sections?|collimation|intervals?|increments?|"
    r"images?|reconstructions?|cuts|thickness|kernel|from|away|deep\s+to|below|above|distal|proximal|beneath|"
    r"short[\s-]*axis|in\s+short[\s-]*axis|of\s+(?:the\s+)?(?:pleura|pleural\s+surface|fissure|chest\s+wall))\b",
    FLAGS,
)
EXCLUDED_BEFORE_RE = re.compile(
    r"\b(?:thickness|collimation|reconstructed\s+at|intervals?\s+of|increments?\s+of|wall\s+(?:thickness|measuring)|"
    r"short[\s-]*axis|within|distance\s+of)\s*(?:of\s*)?[:=]?\s*$",
    FLAGS,
)

# ---------------------------------------------------------------------------
# Descriptors
# ---------------------------------------------------------------------------
PART_SOLID_RE = re.compile(
    r"\b(?:part(?:ly|ially)?[\s-]*solid|semi[\s-]*solid|sub[\s-]*solid|mixed[\s-]+(?:attenuation|density|solid))\b",
    FLAGS,
)
GROUND_GLASS_RE = re.compile(r"\b(?:ground[\s-]*glass|GG[ON]s?|non[\s-]*solid|hazy)\b", FLAGS)
SOLID_RE = re.compile(r"(?<![\w-])(?<!non-)(?<!non )solid\b|\bsoft[\s-]*tissue\s+(?:density|attenuation)\b", FLAGS)
SOLID_COMPONENT_RE = re.compile(r"\bsolid\s+(?:component|portion|part|core|focus|center|centre)\b", FLAGS)
MARGIN_RES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("spiculated", re.compile(r"\b(?:spic?ulat\w*|specul\w*|spicul\w*|stellate)\b", FLAGS)),
    ("irregular", re.compile(
        r"\b(?:irregular(?!ly\s+shaped)(?:ly)?|ill[\s-]*defined|poorly[\s-]*(?:defined|marginated|circumscribed)|"
        r"indistinct|fuzzy|blurred)\b", FLAGS)),
    ("lobulated", re.compile(r"\b(?:micro)?lobulat\w*\b|\blobular\s+(?:margins?|contours?|borders?)\b", FLAGS)),
    ("smooth", re.compile(
        r"\b(?:smooth(?:ly)?|well[\s-]*(?:circumscribed|defined|marginated|demarcated|delineated|marginated)|"
        r"sharp(?:ly)?[\s-]*(?:defined|marginated|circumscribed|demarcated)|circumscribed)\b", FLAGS)),
)
# What every MARGIN_RES pattern needs: a scope without any of these words has no margin.
MARGIN_NEEDS = re.compile(
    r"spi|specul|stellate|irregular|ill|poorly|indistinct|fuzzy|blurred|lobulat|lobular|smooth|well|sharp|circumscribed",
    FLAGS,
)
SHAPE_RES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("round", re.compile(r"\b(?:round(?:ed)?|spherical)\b", FLAGS)),
    ("oval", re.compile(r"\b(?:oval|ovoid|elliptical|elongated)\b", FLAGS)),
    ("triangular", re.compile(r"\btriangular\b", FLAGS)),
    ("lentiform", re.compile(r"\b(?:lentiform|lenticular)\b", FLAGS)),
    ("polygonal", re.compile(r"\bpolygonal\b", FLAGS)),
    ("irregular", re.compile(r"\birregular(?:ly)?(?!\s+(?:margins?|borders?|edges?|contours?|margination))\b", FLAGS)),
    ("lobulated", re.compile(r"\blobulated\b", FLAGS)),
)
# What every SHAPE_RES pattern needs.
SHAPE_NEEDS = re.compile(r"round|spherical|oval|ovoid|elliptical|elongated|triangular|lentiform|lenticular|polygonal|"
                         r"irregular|lobulated", FLAGS)
CALC_POS_RE = re.compile(r"\bcalcifi\w*|\bcalcific\b|\bpopcorn\b", FLAGS)
CALC_NEG_RE = re.compile(r"\b(?:non[\s-]*calcifi\w*|uncalcifi\w*|not\s+calcified)\b", FLAGS)
CALC_PATTERN_RES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("popcorn", re.compile(r"\b(?:popcorn|chondroid)\b", FLAGS)),
    ("laminated", re.compile(r"\b(?:laminat\w*|lamellat\w*|concentric(?:ally)?)\b", FLAGS)),
    ("stippled/punctate", re.compile(
        r"\b(?:stippled|speckled|punctate\s+(?:calcifi\w*|foci\s+of\s+calcifi\w*|focus\s+of\s+calcifi\w*))\b", FLAGS)),
    ("eccentric", re.compile(r"\beccentric(?:ally)?\b", FLAGS)),
    ("central", re.compile(r"\bcentral(?:ly)?\s+(?:\w+\s+)?calcifi\w*|\bcalcifi\w*\s+(?:center|centre)", FLAGS)),
    ("diffuse", re.compile(
        r"\b(?:diffuse(?:ly)?|dense(?:ly)?|complete(?:ly)?|entire(?:ly)?|uniform(?:ly)?|homogeneous(?:ly)?|"
        r"total(?:ly)?|fully)\s+calcifi\w*", FLAGS)),
)
# Words calling a nodule benign ("benign", "benign-appearing", "hamartoma", "granuloma",
# "granulomatous"); CALC_PATTERN_RES' benign patterns and a stated Lung-RADS 2 count too (see
# attributes.find_benign).  "Benign versus malignant" weighs both and calls it neither benign nor not.
BENIGN_RE = re.compile(r"\b(?:benign\w*|hamartoma\w*|granulom\w*)", FLAGS)
BENIGN_OPEN_RE = re.compile(
    r"\bbenign\w*\s+(?:versus|vs\.?|or|and)\s+(?:\w+\s+)?malignan|\bmalignan\w*\s+(?:versus|vs\.?|or|and)\s+benign",
    FLAGS,
)
BENIGN_CALC_PATTERNS = frozenset({"popcorn", "laminated", "central", "diffuse"})
CAVITY_POS_RE = re.compile(r"\bcavit(?:ary|ation|ating|ated|y|ies)\b", FLAGS)
CAVITY_NEG_RE = re.compile(r"\bnon[\s-]*cavit\w*", FLAGS)
ATTR_NEG_BEFORE_RE = re.compile(
    r"\b(?P<neg>no|not|without|non|absent|absence\s+of|negative\s+for|free\s+of|lacks?|lacking)\b"
    r"(?P<rest>[^.;,]{0,30})$",
    FLAGS,
)
PSEUDO_AFTER_NEG_RE = re.compile(r"^\s*(?:significant\s+|interval\s+|appreciable\s+)*(?:change|growth|increase|new)\b",
                                  FLAGS)

STABLE_TRUE_RE = re.compile(
    r"\b(?:stable|stability|unchanged|no\s+(?:significant\s+|interval\s+|appreciable\s+|definite\s+|measurable\s+)*"
    r"(?:change|growth|increase|enlargement)|not\s+(?:significantly\s+)?changed|without\s+(?:significant\s+|interval\s+)*"
    r"(?:change|growth)|similar\s+(?:in\s+)?(?:size|appearance)|not\s+(?:significantly\s+)?(?:grown|enlarged|increased))\b",
    FLAGS,
)
STABLE_FALSE_RE = re.compile(
    r"\b(?:new(?:ly)?(?!\s+york)|enlarg(?:ing|ed|ement)|increas(?:ed|ing|e)|grow(?:ing|n|th)|grew|larger|"
    r"decreas(?:ed|ing|e)|smaller|shrink\w*|shrunk|progress(?:ed|ion|ing)|developing|developed)\b",
    FLAGS,
)

# ---------------------------------------------------------------------------
# Negation / uncertainty / context
# ---------------------------------------------------------------------------
PRE_NEG_RE = re.compile(
    r"\b(?:no|without|negative\s+for|free\s+of|absen(?:ce|t)(?:\s+of)?|nor|resolution\s+of|resolved|"
    r"no\s+longer|disappearance\s+of|ruled\s+out|none\s+of)\b",
    FLAGS,
)
# "no change in", "no growth of", "without interval change": not a negation of the nodule
PSEUDO_NEG_RE = re.compile(
    r"^(?:no|without)\s+(?:(?:significant|interval|appreciable|definite|measurable|suspicious|new)\s+)*"
    r"(?:change|growth|increase|enlargement|progression|evidence\s+of\s+(?:growth|change|progression))\b",
    FLAGS,
)
# "no calcification is seen within the nodule": the negation is about an attribute
ATTRIBUTE_NEG_RE = re.compile(
    r"^(?:no|without|absence\s+of)\s+(?:\w+\s+){0,2}?(?:calcifi\w*|cavit\w*|spicul\w*|fat|enhancement|"
    r"solid\s+component|features?|change|growth)\b.*\b(?:in|within|of|to|involving|for)\s+(?:the|this|these|a)?\s*$",
    FLAGS,
)
NEG_TERMINATOR_RE = re.compile(
    r";|\b(?:but|however|except|aside\s+from|apart\s+from|other\s+than|besides|although|though|whereas|while|which|"
    r"there\s+(?:is|are|was|were)|(?:is|are)\s+(?:again\s+)?(?:seen|noted|present|identified|demonstrated|visualized)|"
    r"and\s+(?:a|an|another|one|the|two|three|several|multiple|stable|new)|with\s+(?:a|an|the))\b|,\s*(?:a|an|another)\b",
    FLAGS,
)
POST_NEG_RE = re.compile(
    r"\b(?:(?:is|are|was|were|has\s+been|have\s+been)\s+)?(?:no\s+longer|not)\s+(?:\w+\s+)?"
    r"(?:seen|identified|visuali[sz]ed|appreciated|present|demonstrated|evident|detected|apparent|visible|"
    r"definitely\s+seen|re-?demonstrated)\b|\b(?:has|have)\s+(?:since\s+|completely\s+|now\s+)?"
    r"(?:resolved|disappeared|cleared)\b|\bresolved\b|\b(?:is|are)\s+absent\b|^\s*+[:\-]?\s*+(?:none|absent|negative|no)\b",
    FLAGS,
)
POST_TERMINATOR_RE = re.compile(r";|\b(?:but|however|whereas|while|although)\b", FLAGS)
HEDGE_PRE_RE = re.compile(
    r"(?:\b(?:possible|possibly|questionable|question(?:ed)?\s+of|probable|probably|likely|suspected|equivocal|"
    r"cannot\s+(?:be\s+)?(?:exclude[ds]?|ruled?\s+out)|can\s*not\s+(?:be\s+)?(?:exclude[ds]?|ruled?\s+out)|"
    r"could\s+(?:represent|be)|may\s+(?:represent|be|reflect)|might\s+(?:represent|be)|rule\s+out|r/o|presumed|"
    r"suggestion\s+of|suspicious\s+for|concern(?:ing)?\s+for|not\s+(?:entirely\s+)?excluded)\b|\?)"
    r"(?P<between>[^.;]{0,60})$",
    FLAGS,
)
# words between a hedge and the anchor that show the hedge is about the nodule's nature
NATURE_WORDS_RE = re.compile(
    r"\b(?:benign|malignan\w*|infectious|infection|inflammatory|post-?inflammatory|granulomatous|neoplastic|"
    r"metasta\w*|reactive|related|represent(?:ing|s)?|due|sequela\w*|secondary|lymph)\b",
    FLAGS,
)
_NON_NODULE_ALTERNATIVE = (
    r"(?:atelectasis|atelectatic|scar(?:ring)?|vessels?|vascular|artifact|pseudonodule|mucus|mucoid|fissur\w*|"
    r"fibrosis|pleural\s+thickening|bronch\w*|confluence|end[\s-]*on|summation|partial\s+volume)"
)
HEDGE_POST_RE = re.compile(
    rf"\b(?:(?:may|might|could)\s+(?:represent|reflect|be)(?:\s+due\s+to)?|(?:vs\.?|versus)|or\s+possibly|"
    rf"possibly|likely|probably)\s+(?:\w+\s+){{0,2}}?{_NON_NODULE_ALTERNATIVE}",
    FLAGS,
)
# "a small nodule in the lingula cannot be excluded" (same clause, no comma: after a
# comma "..., metastasis not excluded" is about the nature, not the existence)
HEDGE_EXCLUDED_POST_RE = re.compile(
    r"^[^,;]{0,40}?\b(?:(?:cannot|can\s*not|could\s+not)\s+be\s+(?:excluded|ruled\s+out)|(?:is|are)\s+not\s+"
    r"(?:entirely\s+)?excluded|(?:is|are)\s+(?:questioned|suspected|questionable|possible))\b",
    FLAGS,
)
HEDGE_VERSUS_PRE_RE = re.compile(rf"{_NON_NODULE_ALTERNATIVE}\s+(?:vs\.?|versus|or)\s+(?:\w+\s+){{0,2}}$", FLAGS)
# Indication-like context right before the anchor ("history of 8 mm RUL nodule",
# "follow-up CT for known pulmonary nodules", "for evaluation of lung nodule", "wedge
# resection of a 9 mm nodule").  At most
# four words may sit between the phrase and the anchor, so "limited evaluation of the
# lung bases on this CT demonstrates a 4 mm nodule" is still a finding.
NON_FINDING_CONTEXT_RE = re.compile(
    r"\b(?:history\s+of|h/o|hx\s+of|"
    r"(?:follow[\s-]?up|f/u|surveillance|evaluation|assessment|evaluate|assess|screening|work[\s-]?up|resect\w*|"
    r"lobectomy|segmentectomy|excision|excised|biops\w*|ablat\w*|treated|irradiated|sbrt|radiotherapy)\b"
    r"(?:\s+[\w/-]+){0,3}?\s+(?:of|for)|to\s+(?:evaluate|assess|follow))"
    r"(?:\s+[\w/.-]+){0,4}?\s*$",
    FLAGS,
)
# "for lung nodule follow-up", "nodule clinic": the word names the indication
NON_FINDING_AFTER_RE = re.compile(
    r"[\s-]*(?:follow[\s-]?up|f/u|surveillance|screening|evaluation|protocol|clinic|program)\b", FLAGS
)
# Guideline boilerplate and recommendation sentences give no claims.
GUIDELINE_RE = re.compile(
    r"\b(?:fleischner|guidelines?|macmahon|no\s+routine\s+follow|(?:low|high)[\s-]risk\s+patients?|"
    r"per\s+(?:acr|lung[\s-]*rads)|benign\s+appearance\s+or\s+behavior)\b",
    FLAGS,
)
RECOMMEND_START_RE = re.compile(
    r"^\W*+(?:recommend\w*|suggest\w*|consider|advise\w*|continue[ds]?\s+(?:annual|routine)|annual\s+(?:screening|"
    r"low[\s-]*dose|ldct|ct)|repeat\s+(?:ct|ldct|imaging)|(?:a\s+)?follow[\s-]?up\s+(?:chest\s+)?(?:ct|ldct|imaging|exam|"
    r"low[\s-]*dose|in|is|at))\b",
    FLAGS,
)
RECOMMEND_INNER_RE = re.compile(r"\b(?:recommend\w*|suggest(?:ed|s)?|advised|consider)\b", FLAGS)

DEFINITE_RE = re.compile(
    r"\b(?:the|this|that|these|those|said|aforementioned|above[\s-]*(?:mentioned|described)|index|"
    r"previously\s+(?:described|noted|seen|mentioned|identified|reported))\b",
    FLAGS,
)
INDEFINITE_RE = re.compile(
    r"\b(?:a|an|another|additional|second|third|separate|new|other|one|two|three|four|five|six|several|multiple|few|"
    r"scattered|numerous|innumerable)\b",
    FLAGS,
)

# words in the noun phrase that introduce a *new* nodule ("another", "additional")
NEW_ITEM_RE = re.compile(r"\b(?:another|additional|second|separate|other|new)\b", FLAGS)

NUMBER_WORDS = {
    "one": 1, "single": 1, "solitary": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "couple": 2, "pair": 2, "both": 2,
}
MULTI_WORDS = frozenset(
    {"few", "several", "multiple", "numerous", "innumerable", "countless", "many", "scattered", "various", "some",
     "multifocal", "diffuse", "additional", "other", "bilateral"}
)
COUNT_TOKEN_RE = re.compile(r"[A-Za-z]+|\d{1,2}(?![\d.:/x])(?!\s*(?:mm|cm|x|\.|:|%))", FLAGS)


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


def nodule_word(token: str) -> tuple[bool, bool] | None:
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


def is_plural_word(word: str) -> bool:
    w = word.lower().rstrip()
    return w.endswith(("s", "ies", "foci", "bullae", "ae")) and not w.endswith(("ss", "sis", "us", "thorax"))
