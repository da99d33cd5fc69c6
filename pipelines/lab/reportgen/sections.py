"""The report skeleton: sections, paragraphs, the non-target findings, headers and layout.

Research software, NOT for diagnostic use.

EXAM / HISTORY / TECHNIQUE / COMPARISON texts, the other organs' findings (normal
statements, distractors, extrapulmonary nodules, an optional second pulmonary nodule),
the header styles and :func:`layout`, which writes the sections and records the
character spans of tagged (nodule) sentences and of headers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungfuse.pipelines.lab.reportgen.phrases import article, cap, chance, pick
from lungfuse.pipelines.lab.reportgen.spec import LOBE_NAME, LOBE_SIDE, LOBES, ReportSpec, ReportStyle


# ---------------------------------------------------------------------------
# Report skeleton
# ---------------------------------------------------------------------------
@dataclass
class Sent:
    text: str
    tag: tuple[str, int] | None = None  # (role, nodule index) for positive nodule mentions


@dataclass
class Para:
    sents: list[Sent]
    label: str | None = None  # organ sub-header ("Lungs:") or enumerator ("1.")


@dataclass
class Section:
    key: str  # EXAM, HISTORY, TECHNIQUE, COMPARISON, FINDINGS, IMPRESSION
    paras: list[Para]


_HEADER_WORDS = {
    "EXAM": ["EXAMINATION", "EXAM", "PROCEDURE"],
    "HISTORY": ["CLINICAL HISTORY", "INDICATION", "HISTORY", "CLINICAL INDICATION", "REASON FOR EXAM"],
    "TECHNIQUE": ["TECHNIQUE"],
    "COMPARISON": ["COMPARISON", "COMPARISON STUDIES"],
    "FINDINGS": ["FINDINGS"],
    "IMPRESSION": ["IMPRESSION", "CONCLUSION", "IMPRESSION AND RECOMMENDATIONS"],
}
# Names that the report splitter recognises as ALL-CAPS headers without a colon inside
# a line; the one-paragraph "bare" style uses only these.
_BARE_INLINE_OK = {"CLINICAL HISTORY", "INDICATION", "HISTORY", "TECHNIQUE", "COMPARISON", "FINDINGS", "IMPRESSION"}
_SHORT_SECTIONS = {"EXAM", "HISTORY", "TECHNIQUE", "COMPARISON"}


def exam_text(rng: np.random.Generator, ab: bool) -> tuple[str, bool]:
    contrast = chance(rng, 0.35)
    if contrast:
        opts = ["CT chest with contrast.", "CT of the chest with intravenous contrast.", "CT thorax with IV contrast."]
        if ab:
            opts.append("CT chest w/ contrast.")
    else:
        opts = ["CT chest without contrast.", "CT of the chest without intravenous contrast.",
                "Low-dose CT chest for lung cancer screening.", "Non-contrast CT of the chest."]
        if ab:
            opts += ["CT chest w/o contrast.", "LDCT chest (lung cancer screening)."]
    return pick(rng, opts), contrast


def history_text(rng: np.random.Generator, ab: bool, nodule_words_ok: bool) -> str:
    opts = ["Cough.", "Shortness of breath.", "Chronic cough and dyspnea.", "Hemoptysis.", "Weight loss.",
            "Lung cancer screening. Former smoker, 30 pack-years.", "Current smoker, 40 pack-years.",
            "Abnormal chest radiograph.", "Chest pain.", "Staging of known extrathoracic malignancy."]
    if nodule_words_ok:
        opts += ["Pulmonary nodule seen on chest radiograph.", "Evaluate lung nodule."]
    if ab:
        opts += ["Pt w/ chronic cough.", "Hx of smoking, 35 pack-years.", "SOB."]
    return pick(rng, opts)


def technique_text(rng: np.random.Generator, contrast: bool) -> str:
    thick = pick(rng, ["0.625", "1", "1.25", "2", "2.5", "3", "5"])
    acq = pick(rng, [
        "Helical CT images of the chest were obtained {c}.",
        "Axial CT images were acquired from the lung apices through the upper abdomen {c}.",
        "Low-dose helical CT of the chest was performed {c}.",
    ]).format(c="following intravenous contrast" if contrast else "without intravenous contrast")
    recon = pick(rng, [
        f"Images were reconstructed at {thick} mm slice thickness.",
        f"Contiguous {thick} mm axial sections were reviewed in lung and soft tissue windows.",
        f"Reconstructions at {thick} mm slice thickness with coronal and sagittal reformats.",
    ])
    return f"{acq} {recon}"


def comparison_text(rng: np.random.Generator) -> str:
    return pick(rng, ["None.", "None available.", "No prior studies.", "No prior imaging available for comparison.",
                       "Chest radiograph from 03/14/2009.", "None."])


def _other_lobe(spec: ReportSpec, rng: np.random.Generator) -> str:
    options = [lb for lb in LOBES if lb != spec.lobe and lb != "lingula"]
    if spec.lobe is None and spec.effective_side is not None:
        options = [lb for lb in options if LOBE_SIDE[lb] != spec.effective_side]
    return pick(rng, options)


@dataclass
class _Organ:
    key: str
    labels: list[str]
    sents: list[Sent]


def organ_findings(spec: ReportSpec, style: ReportStyle, rng: np.random.Generator, ab: bool,
            impression_items: list[str], next_nodule: list[int]) -> list[_Organ]:
    """Non-target FINDINGS content: normal statements for each organ system, plus (when
    ``style.distractors``) abnormal other findings, negated nodule statements and
    extrapulmonary nodules, plus (when ``style.positive_distractors``) a second
    pulmonary nodule.  Abnormal findings may be echoed in ``impression_items``."""
    lungs: list[Sent] = []
    if chance(rng, 0.5):
        lungs.append(Sent(pick(rng, ["The central airways are patent.", "No focal consolidation.",
                                       "No consolidation or pneumothorax.", "No pneumothorax."])))
    pleura = [Sent(pick(rng, ["No pleural effusion or pneumothorax.", "No pleural effusion.",
                                "The pleural spaces are clear."]))]
    mediastinum = [Sent(pick(rng, ["No mediastinal, hilar, or axillary lymphadenopathy.",
                                     "No enlarged mediastinal or hilar lymph nodes.",
                                     "No thoracic lymphadenopathy."]))]
    heart = [Sent(pick(rng, ["Heart size is normal. No pericardial effusion.",
                               "The heart and great vessels are unremarkable.", "Normal heart size."]))]
    abdomen = [Sent(pick(rng, ["The visualized upper abdomen is unremarkable.",
                                 "Limited images of the upper abdomen are unremarkable."]))]
    bones = [Sent(pick(rng, ["No suspicious osseous lesions.", "No acute osseous abnormality."]))]
    thyroid: list[Sent] = []
    if style.distractors:
        pool_lung = [
            ("Mild centrilobular emphysema.", "Mild emphysema."),
            ("Mild paraseptal emphysema in the upper lobes.", "Mild emphysema."),
            ("Minimal dependent atelectasis at the lung bases.", None),
            ("Mild bronchial wall thickening.", None),
            ("No other suspicious pulmonary nodules.", None),
            ("No additional pulmonary nodules are identified.", None),
            ("No other nodules or masses.", None),
        ]
        for k in rng.permutation(len(pool_lung))[: int(rng.integers(1, 3))]:
            text, echo = pool_lung[int(k)]
            lungs.append(Sent(text))
            if echo:
                impression_items.append(echo)
        node, thy, adr = int(rng.integers(11, 16)), int(rng.integers(6, 16)), int(rng.integers(10, 25))
        # (organ, text, impression echo, is an extrapulmonary nodule)
        extras = [
            ("pleura", "Small right pleural effusion.", "Small right pleural effusion.", False),
            ("mediastinum", f"{cap(article(str(node)))} {node} mm short-axis subcarinal lymph node is mildly enlarged.",
             "Mildly enlarged subcarinal lymph node.", False),
            ("mediastinum", "Scattered subcentimeter mediastinal lymph nodes, not enlarged by size criteria.", None,
             False),
            ("heart", "Moderate coronary artery calcifications.", "Coronary artery calcifications.", False),
            ("heart", "Atherosclerotic calcification of the thoracic aorta.", None, False),
            ("abdomen", "Small hiatal hernia.", "Small hiatal hernia.", False),
            ("abdomen", "Cholelithiasis.", None, False),
            ("bones", "Degenerative changes of the thoracic spine.", None, False),
            ("thyroid", "No thyroid nodules.", None, False),
            ("thyroid", f"{cap(article(str(thy)))} {thy} mm hypodense nodule in the {pick(rng, ['right', 'left'])} "
                        "thyroid lobe.", "Thyroid nodule; nonemergent thyroid ultrasound may be considered.", True),
            ("abdomen", f"{cap(article(str(adr)))} {adr} mm left adrenal nodule, likely an adenoma.", None, True),
        ]
        target = {"pleura": pleura, "mediastinum": mediastinum, "heart": heart, "abdomen": abdomen,
                  "bones": bones, "thyroid": thyroid}
        for k in rng.permutation(len(extras))[: int(rng.integers(1, 4))]:
            organ, text, echo, extrapulmonary = extras[int(k)]
            tag = None
            if extrapulmonary:
                tag = ("extrapulmonary", next_nodule[0])
                next_nodule[0] += 1
            sent = Sent(text, tag)
            if organ == "thyroid" or chance(rng, 0.5):
                target[organ].append(sent)
            else:
                target[organ][0] = sent  # an abnormal finding replaces the normal statement
            if echo and chance(rng, 0.6):
                impression_items.append(echo)
    if style.positive_distractors:
        lobe = _other_lobe(spec, rng)
        where = lobe if ab else LOBE_NAME[lobe]
        size = int(rng.integers(2, 6))
        text = pick(rng, [
            f"{cap(article(str(size)))} {size} mm calcified granuloma in the {where} is unchanged.",
            f"Stable {size} mm densely calcified granuloma in the {where}.",
            f"Punctate calcified granuloma in the {where}.",
        ])
        lungs.append(Sent(text, ("distractor", next_nodule[0])))
        next_nodule[0] += 1
    organs = [
        _Organ("lungs", ["Lungs:", "Lungs and airways:", "Lung parenchyma:", "Lungs/airways:"], lungs),
        _Organ("pleura", ["Pleura:", "Pleural spaces:"], pleura),
        _Organ("mediastinum", ["Mediastinum:", "Mediastinum and hila:", "Lymph nodes:"], mediastinum),
        _Organ("heart", ["Heart:", "Heart and vessels:", "Cardiovascular:"], heart),
        _Organ("thyroid", ["Thyroid:", "Lower neck:"], thyroid),
        _Organ("abdomen", ["Upper abdomen:", "Abdomen:"], abdomen),
        _Organ("bones", ["Bones:", "Musculoskeletal:", "Osseous structures:"], bones),
    ]
    return [o for o in organs if o.sents or o.key == "lungs"]


# ---------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------
class _Writer:
    """Accumulates text; records the spans of tagged sentences and of headers."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.n = 0
        self.tagged: list[tuple[int, int, tuple[str, int], str]] = []
        self.protected: list[tuple[int, int]] = []

    def write(self, text: str, tag: tuple[str, int] | None = None, section: str = "", protect: bool = False) -> None:
        start = self.n
        self.parts.append(text)
        self.n += len(text)
        if tag is not None:
            self.tagged.append((start, self.n, tag, section))
        if protect:
            self.protected.append((start, self.n))

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _header(key: str, style: ReportStyle, rng: np.random.Generator, inline: bool) -> str | None:
    """The header as written (with its delimiter), or None for no header."""
    hs = style.header_style
    if key == "BODY":  # headerless prose (header style "none")
        return None
    if hs == "none":
        return pick(rng, ["Impression:", "IMPRESSION:", "Conclusion:"]) if key == "IMPRESSION" else None
    words = _HEADER_WORDS[key]
    if hs == "bare" and inline:
        words = [w for w in words if w in _BARE_INLINE_OK] or words
    word = pick(rng, words)
    if hs == "caps":
        return f"{word}:"
    if hs == "title":
        return f"{word.capitalize()}:"
    if hs == "markdown":
        if inline or key in _SHORT_SECTIONS:
            return f"**{word.title()}:**"
        return f"## {word.title()}"
    return word  # bare


def layout(sections: list[Section], style: ReportStyle, rng: np.random.Generator) -> _Writer:
    w = _Writer()
    inline = style.one_paragraph
    blank = "\n\n" if chance(rng, 0.6) else "\n"
    first = True
    for sec in sections:
        header = _header(sec.key, style, rng, inline)
        if not first:
            w.write(" " if inline else (blank if header is not None or sec.key == "FINDINGS" else " "))
        first = False
        if header is not None:
            w.write(header, protect=True)
            same_line = inline or (sec.key in _SHORT_SECTIONS and style.header_style != "bare")
            w.write(" " if same_line else "\n")
        for j, para in enumerate(sec.paras):
            if j:
                w.write(" " if inline else "\n")
            if para.label:
                w.write(para.label + " ", protect=True)  # sub-headers and enumerators: never typo them
            for k, sent in enumerate(para.sents):
                if k:
                    w.write(" ")
                w.write(sent.text, sent.tag, sec.key)
    w.write("\n")
    return w
