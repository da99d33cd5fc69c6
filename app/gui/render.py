"""Slice rendering for the viewer: re-exported from :mod:`lungfuse.pipelines.core.render`.

Research software, NOT for diagnostic use.

The Qt-free helpers moved down to ``pipelines.core`` so that the key images of the exports
(:mod:`lungfuse.pipelines.export.keyimages`) draw overlays the same way as the viewer; this
module keeps the GUI's imports unchanged.
"""

from __future__ import annotations

from lungfuse.pipelines.core.render import (
    PRESETS,
    VIEW_AXES,
    VIEWS,
    SubVolume,
    blend_heat,
    display_flips,
    heat_lut,
    outline,
    plane,
    rgb_from_gray,
    slab,
    to_ct_grid,
    window_u8,
)

__all__ = ["VIEWS", "VIEW_AXES", "PRESETS", "SubVolume", "display_flips", "plane", "slab", "window_u8", "to_ct_grid",
           "heat_lut", "blend_heat", "outline", "rgb_from_gray"]
