"""The demo's free-text radiology report, describing its nodules.  NOT FOR DIAGNOSTIC USE."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lungfuse.pipelines.analysis.guidance import lung_rads_v2022
from lungfuse.pipelines.demo.dicom_writer import SERIES_NUMBER

LOBE_NAMES = {
    "RUL": "right upper lobe",
    "RML": "right middle lobe",
    "RLL": "right lower lobe",
    "LUL": "left upper lobe",
    "LLL": "left lower lobe",
}


def lung_rads_statement(long_mm: float, short_mm: float, spiculated: bool) -> tuple[str, str]:
    """Lung-RADS v2022 category and the IMPRESSION sentence for one of the demo's SOLID,
    non-calcified nodules, from :func:`~lungfuse.pipelines.analysis.guidance.lung_rads_v2022`
    (the one implementation), as a baseline screening exam.

    ``long_mm``/``short_mm``: the longest axial diameter and its perpendicular (mm); v2022
    uses their mean.  ``spiculated``: the report describes spiculated margins, a feature
    that increases suspicion (3/4A/4B -> 4X)."""
    g = lung_rads_v2022(long_mm, "solid", mean_diameter_mm=(long_mm + short_mm) / 2, suspicious_features=spiculated)
    # The recommendation is worded as a radiologist writes it, not as guidance's full management text:
    # that text names hypothetical findings ("if there is a >= 8 mm solid nodule"), which a report
    # parser rightly reads as a nodule claim, and the demo report must describe only its nodules.
    return g.category, f"Lung-RADS {g.category} ({g.descriptor}): {_RECOMMENDATION[g.category]}."


#: How the demo's IMPRESSION words the follow-up of each Lung-RADS category (report style only:
#: the category itself comes from ``lung_rads_v2022``).
_RECOMMENDATION = {
    "1": "continue annual screening with low-dose CT in 12 months",
    "2": "continue annual screening with low-dose CT in 12 months",
    "3": "low-dose CT in 6 months is recommended",
    "4A": "low-dose CT in 3 months is recommended; PET/CT may be considered",
    "4B": "diagnostic chest CT with or without contrast, PET/CT and/or tissue sampling is recommended",
    "4X": "diagnostic chest CT with or without contrast, PET/CT and/or tissue sampling is recommended",
}


def write_report(path: Path, nodules: list[dict[str, Any]], spacing: Sequence[float]) -> str:
    sz, sy, _sx = spacing
    lines = [
        "SYNTHETIC DEMO REPORT — NOT FOR DIAGNOSTIC USE",
        "",
        "EXAMINATION: CT chest without contrast (low-dose).",
        "",
        "CLINICAL INDICATION: Lung cancer screening. 64-year-old former smoker, 35 pack-years.",
        "",
        f"TECHNIQUE: Low-dose helical CT of the chest without intravenous contrast, acquired at "
        f"120 kVp. Axial images reconstructed at {sz:g} mm slice thickness with a "
        f"{sy:g} mm in-plane pixel size; coronal and sagittal reformats reviewed.",
        "",
        "COMPARISON: None available.",
        "",
        "FINDINGS:",
    ]
    if nodules:
        lines.append("Lungs and airways:")
        for i, n in enumerate(nodules):
            lead = "There is a" if i == 0 else "A second"
            sentence = (
                f"{lead} {n['diameter_mm_rounded']} x {n['short_axis_mm_rounded']} mm solid nodule with "
                f"{n['margin']} in the {LOBE_NAMES[n['lobe']]} (series {SERIES_NUMBER}, image "
                f"{n['instance_number']})"
            )
            sentence += ", without calcification." if i == 0 else ", also without calcification."
            lines.append(sentence)
        lines.append(
            "No other pulmonary nodules. No consolidation. The central airways are patent. "
            "No bronchiectasis."
        )
    else:
        lines.append("Lungs and airways: No pulmonary nodules. No consolidation. The central airways are patent.")
    lines += [
        "Pleura: No pleural effusion or pneumothorax.",
        "Heart and mediastinum: Normal heart size. No pericardial effusion. No mediastinal or hilar "
        "lymphadenopathy by size criteria. Normal caliber thoracic aorta.",
        "Upper abdomen: Unremarkable within the limits of a non-contrast study.",
        "Bones and soft tissues: No suspicious osseous lesion.",
        "",
        "IMPRESSION:",
    ]
    if nodules:
        worst = max(nodules, key=lambda n: n["diameter_mm"])
        for i, n in enumerate(nodules, start=1):
            lines.append(
                f"{i}. {n['diameter_mm_rounded']} mm solid nodule with {n['margin']} in the "
                f"{LOBE_NAMES[n['lobe']]} (series {SERIES_NUMBER}, image {n['instance_number']})."
            )
        lines.append(f"{len(nodules) + 1}. {worst['lung_rads_sentence']}")
    else:
        lines.append(
            "1. No pulmonary nodules. Lung-RADS 1 (negative): continue annual screening with "
            "low-dose chest CT in 12 months."
        )
    text = "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return text
