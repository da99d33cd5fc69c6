"""The summary's thumbnail of a case: an axial crop of its top finding, as a small PNG.

Research software, NOT for diagnostic use.

One function (:func:`thumbnail_png`) so that the export's key images
(``lungfuse.pipelines.export.keyimages``) can replace it when they land.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from lungfuse.pipelines.analysis.codes import Severity

if TYPE_CHECKING:
    from lungfuse.pipelines.analysis.result import CaseResult, Finding
    from lungfuse.pipelines.core.volume import CTVolume

__all__ = ["THUMB_NAME", "thumbnail_png", "top_finding"]

THUMB_NAME = "thumb.png"
#: the crop's half width (mm) beyond the finding's radius, and the lung window (HU)
_MARGIN_MM, _WINDOW = 25.0, (-1350.0, 150.0)


def top_finding(result: CaseResult) -> Finding | None:
    """The finding an auditor should look at first: the one named by the most severe reason,
    else the most probably malignant, else the largest; None without findings."""
    if not result.findings:
        return None
    by_id = {f.id: f for f in result.findings}
    named = [(Severity(str(r.severity)).rank, by_id[c]) for r in result.reasons for c in r.concerns if c in by_id]
    if named:
        best = max(rank for rank, _ in named)
        return max((f for rank, f in named if rank == best), key=lambda f: f.diameter_mm)
    return max(result.findings, key=lambda f: (f.malignancy_probability or 0.0, f.diameter_mm))


def thumbnail_png(result: CaseResult, volume: CTVolume, size_px: int = 160) -> bytes | None:
    """PNG bytes: the axial slice through the top finding's centre (source voxels, z-y-x), cropped
    to the finding plus :data:`_MARGIN_MM` and shown in a lung window, the finding circled at its
    long-axis diameter (mm, through the in-plane pixel spacing).  None without findings."""
    f = top_finding(result)
    if f is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    hu = volume.hu
    z, y, x = (int(round(c)) for c in f.center_voxel)
    z = min(max(z, 0), hu.shape[0] - 1)
    sy, sx = float(volume.spacing[1]), float(volume.spacing[2])
    half_mm = f.diameter_mm / 2 + _MARGIN_MM
    hy, hx = int(np.ceil(half_mm / sy)), int(np.ceil(half_mm / sx))
    y0, y1 = max(0, y - hy), min(hu.shape[1], y + hy + 1)
    x0, x1 = max(0, x - hx), min(hu.shape[2], x + hx + 1)
    crop = np.asarray(hu[z, y0:y1, x0:x1], dtype=np.float32)
    dpi = 100
    fig = Figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(crop, cmap="gray", vmin=_WINDOW[0], vmax=_WINDOW[1], interpolation="bilinear",
              extent=(x0 * sx, x1 * sx, y1 * sy, y0 * sy))  # mm: square pixels whatever the spacing
    ax.add_patch(Circle((x * sx, y * sy), f.diameter_mm / 2 + 2.0, fill=False, color="#ffb000", lw=1.4))
    ax.text(0.03, 0.04, f"{f.id} {f.diameter_mm:.0f} mm", transform=ax.transAxes, color="#ffb000", fontsize=8)
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
