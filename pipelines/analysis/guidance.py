"""Clinical-context guidance for one pulmonary nodule: Lung-RADS v2022 and Fleischner 2017.

Research software, NOT for diagnostic use.  Everything here is *guidance* computed from a
measured or reported size and texture; it is never a diagnosis.

All sizes are in millimetres (mm).

* :func:`lung_rads_v2022` - ACR Lung-RADS v2022 category for a nodule on a lung-cancer
  *screening* low-dose CT (American College of Radiology, Lung-RADS v2022, released
  November 2022).  Sizes are the *mean* diameter (average of long and short axes) reported
  to one decimal point, which is how v2022 states it; only v1.0 (2014) rounded to whole mm.
* :func:`fleischner_2017` - Fleischner Society 2017 recommendations for *incidental*
  nodules in adults >= 35 years (MacMahon H et al., Radiology 2017;284:228-243).  Its
  table note says sizes are the average of long and short axes rounded to the nearest mm.
* :func:`guidance_for` - both at once plus :data:`GUIDANCE_NOTICE`.

Rounding is explicit half-up on the decimal value (:func:`round_half_up`), so 6.5 mm is
7 mm here although Python's ``round(6.5)`` gives 6 (banker's rounding).

Not modelled: atypical pulmonary cysts, the "S" modifier, the "0" uses for findings
suggestive of infection or a prior CT being located, stepped management (a 4A nodule
stable at its 3-month CT is 3; a 3 stable at 6 months is 2) and the 4B rule for slow
growth over several screens: they need history that these arguments do not carry.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from decimal import ROUND_HALF_UP, Decimal
from numbers import Real
from typing import Any

GUIDANCE_NOTICE = (
    "Guidance only, computed from measured or reported size and texture: not a diagnosis; "
    "NOT FOR DIAGNOSTIC USE."
)
LUNG_RADS_VERSION = "Lung-RADS v2022"
FLEISCHNER_VERSION = "Fleischner Society 2017"
FLEISCHNER_APPLIES_TO = (
    "incidental pulmonary nodules in adults >= 35 years; not for lung-cancer screening, "
    "immunocompromised patients or patients with known cancer"
)
LUNG_RADS_CATEGORIES = ("0", "1", "2", "3", "4A", "4B", "4X")
TEXTURES = ("solid", "part-solid", "ground-glass")
# "diffuse" is the claims extractor's word for complete/dense calcification.
BENIGN_CALCIFICATION_PATTERNS = frozenset({"complete", "diffuse", "central", "popcorn", "laminated", "concentric"})
OTHER_CALCIFICATION_PATTERNS = frozenset({"eccentric", "stippled/punctate", "stippled", "punctate", "amorphous"})
FLEISCHNER_SIZE_BANDS = ("<6 mm", "6-8 mm", ">8 mm", ">=6 mm", "unknown")

_TEXTURE_ALIASES = {t: t for t in TEXTURES} | {
    "part solid": "part-solid", "partsolid": "part-solid", "subsolid": "part-solid",
    "ground glass": "ground-glass", "non-solid": "ground-glass", "nonsolid": "ground-glass",
}
_PET = "PET/CT may be considered if there is a >= 8 mm solid nodule or solid component"
_WORKUP = (f"Diagnostic chest CT with or without contrast; {_PET}; tissue sampling; and/or referral for further "
           "clinical evaluation; management depends on clinical evaluation, patient preference and risk of malignancy")
# category -> (descriptor, ACR management)
_LUNG_RADS_TEXT: dict[str, tuple[str, str]] = {
    "0": ("incomplete", "Comparison to prior chest CT and/or additional lung cancer screening CT imaging needed "
                        "(1-3-month LDCT when findings suggest an infectious or inflammatory process)"),
    "1": ("negative", "12-month screening LDCT"),
    "2": ("benign", "12-month screening LDCT"),
    "3": ("probably benign", "6-month LDCT"),
    "4A": ("suspicious", f"3-month LDCT; {_PET}"),
    "4B": ("very suspicious", _WORKUP),
    "4X": ("very suspicious", _WORKUP),
}
# Fleischner solid rows: (multiple, band) -> (low-risk text, high-risk text)
_FLEISCHNER_SOLID: dict[tuple[bool, str], tuple[str, str]] = {
    (False, "<6 mm"): ("No routine follow-up", "Optional CT at 12 months"),
    (False, "6-8 mm"): ("CT at 6-12 months, then consider CT at 18-24 months",
                        "CT at 6-12 months, then CT at 18-24 months"),
    (False, ">8 mm"): ("Consider CT at 3 months, PET/CT, or tissue sampling",
                       "Consider CT at 3 months, PET/CT, or tissue sampling"),
    (True, "<6 mm"): ("No routine follow-up", "Optional CT at 12 months"),
    (True, "6-8 mm"): ("CT at 3-6 months, then consider CT at 18-24 months", "CT at 3-6 months, then at 18-24 months"),
    # The 2017 table keeps "consider" for low risk only, also above 8 mm.
    (True, ">8 mm"): ("CT at 3-6 months, then consider CT at 18-24 months", "CT at 3-6 months, then at 18-24 months"),
}
# Fleischner subsolid rows (risk does not change them): (kind, band) -> text
_FLEISCHNER_SUBSOLID: dict[tuple[str, str], str] = {
    ("ground-glass", "<6 mm"): "No routine follow-up",
    ("ground-glass", ">=6 mm"): "CT at 6-12 months to confirm persistence, then CT every 2 years until 5 years",
    ("part-solid", "<6 mm"): "No routine follow-up",
    ("part-solid", ">=6 mm"): ("CT at 3-6 months to confirm persistence; if unchanged and the solid component "
                               "remains < 6 mm, annual CT should be performed for 5 years"),
    ("multiple", "<6 mm"): "CT at 3-6 months; if stable, consider CT at 2 and 4 years",
    ("multiple", ">=6 mm"): "CT at 3-6 months; subsequent management based on the most suspicious nodule(s)",
}


def _nonempty(cls: str, **fields: object) -> None:
    for name, value in fields.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{cls}.{name} must be a non-empty string, got {value!r}")


@dataclass(frozen=True)
class LungRadsGuidance:
    """A Lung-RADS v2022 category with ACR's descriptor and management, and the rule that fired."""

    category: str
    descriptor: str
    management: str
    basis: str
    version: str = LUNG_RADS_VERSION

    def __post_init__(self) -> None:
        if self.category not in LUNG_RADS_CATEGORIES:
            raise ValueError(f"category must be one of {LUNG_RADS_CATEGORIES}, got {self.category!r}")
        _nonempty("LungRadsGuidance", descriptor=self.descriptor, management=self.management, basis=self.basis)
        if self.version != LUNG_RADS_VERSION:
            raise ValueError(f"version must be {LUNG_RADS_VERSION!r}, got {self.version!r}")

    def to_dict(self) -> dict[str, str]:
        """Plain JSON-ready dict of the fields."""
        return asdict(self)


@dataclass(frozen=True)
class FleischnerGuidance:
    """A Fleischner 2017 recommendation for an incidental nodule, with its size band and basis."""

    recommendation: str
    size_band: str
    basis: str
    applies_to: str = FLEISCHNER_APPLIES_TO
    version: str = FLEISCHNER_VERSION

    def __post_init__(self) -> None:
        _nonempty("FleischnerGuidance", recommendation=self.recommendation, basis=self.basis,
                  applies_to=self.applies_to)
        if self.size_band not in FLEISCHNER_SIZE_BANDS:
            raise ValueError(f"size_band must be one of {FLEISCHNER_SIZE_BANDS}, got {self.size_band!r}")
        if self.version != FLEISCHNER_VERSION:
            raise ValueError(f"version must be {FLEISCHNER_VERSION!r}, got {self.version!r}")

    def to_dict(self) -> dict[str, str]:
        """Plain JSON-ready dict of the fields."""
        return asdict(self)


def round_half_up(value: float, digits: int = 0) -> float:
    """``value`` rounded half-up (away from zero on ties) to ``digits`` decimals.

    Works on the shortest decimal repr, so 14.95 -> 15.0 although the binary float is
    14.9499...; ``round()`` would give 14.9 (and 6 for 6.5)."""
    return float(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _size(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite size in mm or None, got {value!r}")
    return float(value)


def _texture(texture: str | None) -> str | None:
    if texture is None:
        return None
    tex = _TEXTURE_ALIASES.get(texture.strip().lower()) if isinstance(texture, str) else None
    if tex is None:
        raise ValueError(f"texture must be one of {TEXTURES} or None, got {texture!r}")
    return tex


def _solid_component(solid: float | None, tex: str | None, total: float | None) -> None:
    if solid is None:
        return
    if tex != "part-solid":
        raise ValueError(f"solid_component_mm applies only to part-solid nodules (texture={tex!r})")
    if total is not None and solid > total:
        raise ValueError(f"solid_component_mm ({solid:g}) cannot exceed the nodule size ({total:g} mm)")


def _flags(**flags: object) -> None:
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a bool, got {value!r}")


def _band(value: float, bands: tuple[tuple[float, str, str], ...]) -> tuple[str, str]:
    """(category, label) of the first band whose exclusive upper limit exceeds ``value``."""
    for upper, cat, label in bands:
        if value < upper:
            return cat, label
    raise AssertionError("bands must end with math.inf")


_INF = math.inf
_SOLID_BASELINE = ((6, "2", "< 6 mm"), (8, "3", ">= 6 to < 8 mm"), (15, "4A", ">= 8 to < 15 mm"), (_INF, "4B", ">= 15 mm"))
_SOLID_NEW = ((4, "2", "< 4 mm"), (6, "3", "4 to < 6 mm"), (8, "4A", "6 to < 8 mm"), (_INF, "4B", ">= 8 mm"))
_SOLID_GROWING = ((8, "4A", "< 8 mm"), (_INF, "4B", ">= 8 mm"))
_PS_BASELINE = ((6, "3", "solid component < 6 mm"), (8, "4A", "solid component 6 to < 8 mm"),
                (_INF, "4B", "solid component >= 8 mm"))
_PS_CHANGE = ((4, "4A", "solid component < 4 mm"), (_INF, "4B", "solid component >= 4 mm"))


def _parenchymal(tex: str, size: float, solid: float | None, exam: str) -> tuple[str, str]:
    """(category, rule text) for a solid, part-solid or ground-glass nodule."""
    if exam == "stable":
        # v2022 size thresholds apply at first detection and on growth; a nodule without
        # growth (> 1.5 mm in 12 months) at a screening follow-up shows indolent behaviour.
        return "2", "no growth at follow-up"
    if tex == "ground-glass":
        if size < 30:
            return "2", "< 30 mm (baseline, new or growing)"
        if exam == "growing":
            # v2022 gives 2 only to >= 30 mm GGNs that are stable or *slowly* growing; the
            # growth rate is not known here, so the conservative 3 is kept.
            return "3", ">= 30 mm and growing (rate not known, so not called slowly growing)"
        return "3", ">= 30 mm at baseline or new"
    if tex == "solid":
        table = {"baseline": _SOLID_BASELINE, "new": _SOLID_NEW, "growing": _SOLID_GROWING}[exam]
        return _band(size, table)
    # part-solid: the total size only matters below 6 mm (too small to call part-solid
    # reliably); above that the solid component drives the category.
    if exam == "baseline" and size < 6:
        return "2", "total < 6 mm at baseline"
    if exam == "new" and size < 6:
        return "3", "new, total < 6 mm"
    if solid is None:
        return "0", "solid component size needed to choose the category"
    cat, label = _band(solid, _PS_BASELINE if exam == "baseline" else _PS_CHANGE)
    return cat, f"{label} ({solid:g} mm)"


def _lr(category: str, basis: str) -> LungRadsGuidance:
    descriptor, management = _LUNG_RADS_TEXT[category]
    return LungRadsGuidance(category, descriptor, management, basis)


def lung_rads_v2022(diameter_mm: float | None, texture: str | None, *, solid_component_mm: float | None = None,
                    mean_diameter_mm: float | None = None, baseline: bool = True, new: bool = False,
                    growing: bool = False, calcification_pattern: str | None = None, calcified: bool | None = None,
                    fat: bool = False, perifissural_benign: bool = False, endobronchial: bool = False,
                    suspicious_features: bool = False) -> LungRadsGuidance:
    """Lung-RADS v2022 category for one nodule on a screening LDCT (guidance, not a diagnosis).

    ``diameter_mm`` is the largest diameter; ``mean_diameter_mm`` (long + short axis / 2)
    is what v2022 uses and wins when given (half-up to 0.1 mm).  ``texture``: "solid",
    "part-solid", "ground-glass" or None (treated as solid).  ``new``/``growing`` describe a
    follow-up screen and imply ``baseline=False``; ``baseline=False`` with neither means
    stable.  ``perifissural_benign``: solid juxtapleural/perifissural nodule with smooth
    margins and triangular/oval/lentiform shape.  ``endobronchial``: airway nodule,
    segmental or more proximal.  ``suspicious_features`` (e.g. spiculation) upgrades 3/4A/4B
    to 4X.  Order: benign features (1), airway (4A/4B), unknown size (0), perifissural (2),
    size rules.  Raises ValueError naming the bad argument."""
    largest = _size("diameter_mm", diameter_mm)
    mean = _size("mean_diameter_mm", mean_diameter_mm)
    solid = _size("solid_component_mm", solid_component_mm)
    tex = _texture(texture)
    if largest is not None and mean is not None and mean > largest:
        raise ValueError(f"mean_diameter_mm ({mean:g}) cannot exceed diameter_mm, the largest diameter ({largest:g})")
    _solid_component(solid, tex, max(largest or 0.0, mean or 0.0) or None)
    _flags(baseline=baseline, new=new, growing=growing, fat=fat, perifissural_benign=perifissural_benign,
           endobronchial=endobronchial, suspicious_features=suspicious_features)
    if new and growing:
        raise ValueError("growing cannot be True for a new nodule (growth needs a prior measurement)")
    pattern = calcification_pattern.strip().lower() if isinstance(calcification_pattern, str) else None
    if calcification_pattern is not None and pattern not in BENIGN_CALCIFICATION_PATTERNS | OTHER_CALCIFICATION_PATTERNS:
        raise ValueError(f"calcification_pattern {calcification_pattern!r} is not one of "
                         f"{sorted(BENIGN_CALCIFICATION_PATTERNS | OTHER_CALCIFICATION_PATTERNS)}")
    if calcified is not None and not isinstance(calcified, bool):
        raise ValueError(f"calcified must be a bool or None, got {calcified!r}")
    if calcified is False and pattern is not None:
        raise ValueError("calcification_pattern given but calcified=False")
    exam = "new" if new else "growing" if growing else "baseline" if baseline else "stable"

    if fat:
        return _lr("1", "Fat-containing nodule: a benign feature, category 1 whatever the size.")
    if pattern in BENIGN_CALCIFICATION_PATTERNS:
        return _lr("1", f"{pattern.capitalize()} calcification is a benign pattern: category 1 whatever the size.")
    notes: list[str] = []
    if pattern is not None:
        notes.append(f"{pattern} calcification is not a benign pattern")
    elif calcified:
        # Only complete, central, popcorn or laminated calcification makes a nodule benign.
        notes.append("calcified without a stated pattern, so the benign-calcification rule was not applied")

    if endobronchial:
        # v2022: a segmental or more proximal airway nodule is 4A; if it persists at the
        # follow-up CT it becomes 4B (work-up, e.g. bronchoscopy).
        cat, rule = ("4A", "at baseline or new") if exam in ("baseline", "new") else ("4B", "persisting at follow-up")
        return _finish(cat, f"Airway nodule, segmental or more proximal, {rule}", notes, suspicious_features)
    if largest is None and mean is None:
        return _lr("0", "Nodule size not given: Lung-RADS needs the mean diameter in mm, so category 0 (incomplete).")

    raw = mean if mean is not None else largest
    assert raw is not None
    size = round_half_up(raw, 1)
    size_text = f"{'mean' if mean is not None else 'largest'} diameter {size:.1f} mm"
    if size != raw:
        size_text += f" ({raw:g} rounded half-up to 0.1 mm)"
    if mean is None:
        notes.append("largest diameter used because the mean diameter was not given (v2022 uses the mean)")
    if tex is None:
        notes.append("texture not given, treated as solid")
    solid_tex = tex or "solid"
    if perifissural_benign and solid_tex == "solid" and exam != "growing" and size < 10:
        # v2022 extends the perifissural rule to all juxtapleural solid nodules with benign morphology.
        return _finish("2", f"Juxtapleural/perifissural solid nodule with benign morphology, {size_text}: < 10 mm",
                       notes, suspicious_features)
    if perifissural_benign:
        notes.append("perifissural rule not applied (needs a solid, non-growing nodule < 10 mm)")
    cat, rule = _parenchymal(solid_tex, size, solid, exam)
    return _finish(cat, f"{solid_tex.capitalize()} nodule, {exam}, {size_text}: {rule}", notes, suspicious_features)


def _finish(cat: str, basis: str, notes: list[str], suspicious: bool) -> LungRadsGuidance:
    basis += f" -> {cat}"
    if suspicious and cat in ("3", "4A", "4B"):
        basis += ", upgraded to 4X for additional features that increase suspicion of malignancy"
        cat = "4X"
    elif suspicious:
        notes.append("suspicious features noted, but 4X applies only to categories 3 and 4")
    return _lr(cat, basis + "".join(f"; {n}" for n in notes) + ".")


def fleischner_2017(diameter_mm: float | None, texture: str | None, *, multiple: bool = False,
                    risk: str | None = None, solid_component_mm: float | None = None) -> FleischnerGuidance:
    """Fleischner Society 2017 recommendation for an incidental nodule (guidance, not a diagnosis).

    ``diameter_mm``: average of long and short axes, rounded half-up to whole mm as the
    2017 table specifies.  ``texture`` as in :func:`lung_rads_v2022` (None: solid).
    ``risk``: "low", "high" or None (both solid-nodule recommendations are given).  For
    multiple nodules pass the most suspicious one.  Raises ValueError naming the argument."""
    size = _size("diameter_mm", diameter_mm)
    tex = _texture(texture)
    solid = _size("solid_component_mm", solid_component_mm)
    _solid_component(solid, tex, size)
    _flags(multiple=multiple)
    if risk not in ("low", "high", None):
        raise ValueError(f"risk must be 'low', 'high' or None, got {risk!r}")
    if size is None:
        return FleischnerGuidance(
            "Nodule size needed: measure the average of long and short axes in mm to apply the Fleischner 2017 table.",
            "unknown", "No size given, so no size band could be chosen.")
    mm = round_half_up(size)
    count = "multiple" if multiple else "single"
    size_text = f"{mm:g} mm" if mm == size else f"{size:g} mm rounded half-up to {mm:g} mm"
    note = "texture not given, treated as solid; " if tex is None else ""
    if tex in (None, "solid"):
        band = "<6 mm" if mm < 6 else "6-8 mm" if mm <= 8 else ">8 mm"
        low, high = _FLEISCHNER_SOLID[(multiple, band)]
        if risk is not None:
            text = low if risk == "low" else high
        else:
            text = f"Low risk: {low}; high risk: {high}" if low != high else f"{low} (low and high risk alike)"
        basis = f"{note}{count} solid nodule, {size_text}: {band} row, {risk or 'unstated'} risk."
        return FleischnerGuidance(text + ".", band, basis[0].upper() + basis[1:])
    band = "<6 mm" if mm < 6 else ">=6 mm"
    text = _FLEISCHNER_SUBSOLID[("multiple" if multiple else tex, band)] + "."
    # Table comment: a persistent part-solid nodule with a solid component >= 6 mm is highly suspicious.
    if tex == "part-solid" and solid is not None and round_half_up(solid) >= 6:
        text += " Persistent part-solid nodules with solid components >= 6 mm should be considered highly suspicious."
    basis = (f"{count.capitalize()} {tex} nodule, {size_text}: {band} subsolid row"
             f"{'; patient risk does not change subsolid rows' if risk else ''}.")
    return FleischnerGuidance(text, band, basis)


_LUNG_RADS_ONLY = frozenset({"mean_diameter_mm", "baseline", "new", "growing", "calcification_pattern", "calcified",
                             "fat", "perifissural_benign", "endobronchial", "suspicious_features"})
_FLEISCHNER_ONLY = frozenset({"multiple", "risk"})


def guidance_for(diameter_mm: float | None, texture: str | None, **kw: Any) -> dict[str, Any]:
    """``{"lung_rads": ..., "fleischner": ..., "notice": GUIDANCE_NOTICE}`` (each a ``to_dict()``).

    Keyword arguments go to the function that accepts them (``solid_component_mm`` to both);
    Fleischner gets ``mean_diameter_mm`` as its size when given.  Unknown keywords raise TypeError."""
    unknown = set(kw) - _LUNG_RADS_ONLY - _FLEISCHNER_ONLY - {"solid_component_mm"}
    if unknown:
        raise TypeError(f"guidance_for() got unexpected keyword arguments: {sorted(unknown)}")
    lr_kw = {k: v for k, v in kw.items() if k not in _FLEISCHNER_ONLY}
    fl_kw = {k: v for k, v in kw.items() if k not in _LUNG_RADS_ONLY}
    mean = kw.get("mean_diameter_mm")
    return {
        "lung_rads": lung_rads_v2022(diameter_mm, texture, **lr_kw).to_dict(),
        "fleischner": fleischner_2017(mean if mean is not None else diameter_mm, texture, **fl_kw).to_dict(),
        "notice": GUIDANCE_NOTICE,
    }
