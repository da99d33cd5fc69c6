"""The summary's thumbnail of a case: the axial key image of its top finding, as a small PNG.

Research software, NOT for diagnostic use.
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


def thumbnail_png(result: CaseResult, volume: CTVolume, size_px: int = 192) -> bytes | None:
    """PNG bytes: the axial key image of the top finding (:func:`~lungfuse.pipelines.export.keyimages.render_finding_views`,
    the picture the PDF and the Secondary Capture show: lung window, mask outline, heatmap, scale
    bar), its CT crop scaled to at most ``size_px`` pixels a side.  None without findings."""
    f = top_finding(result)
    if f is None:
        return None
    from PIL import Image

    from lungfuse.pipelines.export.keyimages import render_finding_views

    (key,) = render_finding_views(volume.hu, volume.affine, volume.direction, f, result.arrays, views=("axial",))
    r0, c0, nr, nc = key.crop_box_px
    # the CT crop alone (its outline, heatmap, orientation letters and scale bar), without the
    # colour bar and caption around it, which a thumbnail cannot show legibly
    rgb = key.rgb[r0:r0 + nr, c0:c0 + nc] if nr > 0 and nc > 0 else key.rgb
    img = Image.fromarray(np.ascontiguousarray(rgb))
    img.thumbnail((size_px, size_px), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
