"""What the analysis cannot judge: the ``not_assessable`` rules and their thresholds.

Research software, NOT for diagnostic use.

A verdict the image cannot support is not given.  A case is ``not_assessable`` (with coded
reasons) when:

* ``no_lung_in_view``: the lung segmentation finds less than :data:`MIN_LUNG_VOLUME_ML` (100 mL)
  of lung.  Adult lungs hold 4-6 L at inspiration; 100 mL is about 2 cm of one lung base, so
  below it the scan shows no lung to speak of (a neck, an abdomen, a scout) and any "finding" is
  outside the lungs.
* ``lung_coverage_short``: the lung spans less than :data:`MIN_LUNG_COVERAGE_MM` (50 mm)
  craniocaudally - a slab of a few slices, about a fifth of an adult lung's 250 mm height - or
  the report states there are no nodules while the lungs run off the top or bottom of the scan
  (lung in the first or last slice with more than :data:`TRUNCATED_AREA_FRACTION` of the
  largest slice's lung area): "no nodules" is then a statement about lung the scan does not hold.
* ``slices_too_thick``: a claimed nodule is smaller than the slice thickness (it can fall
  between slices, so neither its presence nor its size can be checked), or the report describes
  no nodule and the slices are thicker than :data:`SIZE_IN_QUESTION_MM` (6 mm, the floor of the
  missed-nodule rule: the smallest nodule the check must not miss).  A claim that cannot be
  assessed this way gives no discordance of its own; the case is ``not_assessable`` when nothing
  else makes it ``discordant``.

All lengths in mm, measured on the analysis's 1.5 mm grid (z -> superior).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lungfuse.pipelines.analysis.codes import ReasonCode

__all__ = ["LungCoverage", "MIN_LUNG_COVERAGE_MM", "MIN_LUNG_VOLUME_ML", "SIZE_IN_QUESTION_MM", "TRUNCATED_AREA_FRACTION",
           "claim_too_small", "scan_not_assessable"]

MIN_LUNG_VOLUME_ML = 100.0
MIN_LUNG_COVERAGE_MM = 50.0
TRUNCATED_AREA_FRACTION = 0.10
SIZE_IN_QUESTION_MM = 6.0


@dataclass(frozen=True)
class LungCoverage:
    """How much lung a scan holds.

    Attributes:
        volume_ml: lung volume (mL).
        extent_mm: craniocaudal extent of the lung mask (mm; 0 without lung).
        cut_superior, cut_inferior: the lung runs off the top / bottom slice of the scan.
    """

    volume_ml: float
    extent_mm: float
    cut_superior: bool
    cut_inferior: bool

    @classmethod
    def from_mask(cls, lungs: np.ndarray, spacing_mm: Sequence[float], z_superior_last: bool = True) -> LungCoverage:
        """From a boolean lung mask (z-y-x, ``spacing_mm`` z-y-x); ``z_superior_last``: the last
        z index is the most superior slice (the analysis grid's z -> S)."""
        sp = [float(v) for v in spacing_mm]
        area = lungs.reshape(lungs.shape[0], -1).sum(axis=1).astype(float)
        if not area.any():
            return cls(0.0, 0.0, False, False)
        rows = np.flatnonzero(area)
        extent = float((rows[-1] - rows[0] + 1) * sp[0])
        limit = TRUNCATED_AREA_FRACTION * area.max()
        first, last = area[0] > limit, area[-1] > limit
        vol = float(area.sum() * sp[0] * sp[1] * sp[2] / 1000.0)
        return cls(vol, extent, last if z_superior_last else first, first if z_superior_last else last)


def scan_not_assessable(cov: LungCoverage, *, report_negative: bool) -> list[tuple[ReasonCode, str]]:
    """The scan-level reasons (code, sentence) why nothing about the lungs can be judged.

    ``report_negative``: the report describes no nodule (a "no nodules" statement needs the whole lung).
    """
    out: list[tuple[ReasonCode, str]] = []
    if cov.volume_ml < MIN_LUNG_VOLUME_ML:
        out.append((ReasonCode.NO_LUNG_IN_VIEW,
                    f"not assessable: the scan holds {cov.volume_ml:.0f} mL of lung (less than {MIN_LUNG_VOLUME_ML:.0f} mL), "
                    f"no lung in the field of view"))
    if 0.0 < cov.extent_mm < MIN_LUNG_COVERAGE_MM:
        out.append((ReasonCode.LUNG_COVERAGE_SHORT,
                    f"not assessable: the scan covers {cov.extent_mm:.0f} mm of lung craniocaudally "
                    f"(less than {MIN_LUNG_COVERAGE_MM:.0f} mm)"))
    elif report_negative and (cov.cut_superior or cov.cut_inferior) and cov.volume_ml >= MIN_LUNG_VOLUME_ML:
        ends = " and ".join(e for e, cut in (("top", cov.cut_superior), ("bottom", cov.cut_inferior)) if cut)
        out.append((ReasonCode.LUNG_COVERAGE_SHORT,
                    f"not assessable: the lungs run off the {ends} of the scan, so a report of no nodules cannot be "
                    f"checked against the whole lung"))
    return out


def claim_too_small(size_mm: float | None, slice_thickness_mm: float) -> bool:
    """Whether a claimed nodule of ``size_mm`` is smaller than the slices are thick (None: no size
    stated, judged against :data:`SIZE_IN_QUESTION_MM`)."""
    size = SIZE_IN_QUESTION_MM if size_mm is None else float(size_mm)
    return slice_thickness_mm > size
