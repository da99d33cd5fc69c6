"""What the three slice views show: the CT, the cursor, the window and the overlays (no Qt).

Research software, NOT for diagnostic use.

A :class:`Scene` holds the loaded CT (z-y-x HU), the cursor voxel (z, y, x), the window, the
MIP/MinIP slab and the overlays of a :class:`CaseResult`, and composes the RGB picture of a view
(:meth:`Scene.compose`) with numpy.  The Qt widgets only turn that array into a QImage and draw
the text on top (ids, crosshair), so rendering can be benchmarked and tested without a screen.
Every overlay is taken from the result as saved: each finding's mask and heatmaps come from
the NPZ with their voxel->LPS affines and are mapped into the source CT's voxel grid here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lungfuse.app.gui.render import (
    PRESETS,
    VIEW_AXES,
    SubVolume,
    blend_heat,
    display_flips,
    heat_lut,
    outline,
    rgb_from_gray,
    slab,
    to_ct_grid,
    window_u8,
)

__all__ = ["FindingOverlay", "Scene", "build_overlays", "HEATMAP_KINDS", "MASK_RGB", "BOX_RGB", "SELECTED_RGB", "READER_RGB"]

#: heatmap kinds a finding may carry (``Finding.heatmaps`` keys) and how the legend names them
HEATMAP_KINDS: dict[str, str] = {"detection": "detector attribution (gradient x input)",
                                 "gradcam": "malignancy Grad-CAM"}
MASK_RGB = (0, 230, 255)       # cyan: far from the heatmap's colours and from grey
BOX_RGB = (80, 255, 80)        # green boxes for the machine's findings
SELECTED_RGB = (255, 210, 0)   # the selected finding in amber
READER_RGB = (255, 90, 255)    # findings the reader added, magenta


@dataclass
class FindingOverlay:
    """One finding's overlays on the CT grid: its box (source voxels, [lo, hi) z-y-x), its mask
    and its heatmaps (each a :class:`SubVolume`; heatmaps scaled to 0..1 by their maximum)."""

    id: str
    center_voxel: tuple[float, float, float]
    box_lo: tuple[int, int, int]
    box_hi: tuple[int, int, int]
    mask: SubVolume | None = None
    heat: dict[str, SubVolume] = field(default_factory=dict)
    reader: bool = False


def build_overlays(findings: list[Any], arrays: dict[str, np.ndarray], ct_affine: np.ndarray,
                   ct_shape: tuple[int, int, int]) -> list[FindingOverlay]:
    """The overlays of a result's findings (``CaseResult.findings`` and ``.arrays``) on the CT grid.

    About 0.5 s for three findings of a 512x512x133 CT: the GUI runs it in its worker thread.
    Heatmaps are shown as their magnitude relative to their own maximum (0..1), per finding.
    """
    out = []
    for f in findings:
        lo, hi = f.bbox_voxel
        ov = FindingOverlay(f.id, (float(f.center_voxel[0]), float(f.center_voxel[1]), float(f.center_voxel[2])),
                            (int(lo[0]), int(lo[1]), int(lo[2])), (int(hi[0]), int(hi[1]), int(hi[2])))
        if f.mask and f.mask.get("array") in arrays:
            ov.mask = to_ct_grid(arrays[f.mask["array"]].astype(np.uint8), np.asarray(f.mask["affine_lps"]),
                                 ct_affine, ct_shape, order=0)
        for kind, h in (f.heatmaps or {}).items():
            if h.get("array") not in arrays:
                continue
            sub = to_ct_grid(arrays[h["array"]], np.asarray(h["affine_lps"]), ct_affine, ct_shape, order=1)
            if sub is not None:
                mag = np.abs(sub.data)
                top = float(mag.max()) or 1.0
                ov.heat[kind] = SubVolume(sub.lo, (mag / top).astype(np.float32))
        out.append(ov)
    return out


class Scene:
    """The state the views render (see the module docstring).

    Attributes:
        hu: the CT, z-y-x HU (``CTVolume.hu``).
        spacing: voxel size (z, y, x) mm.
        affine: voxel (z, y, x) -> LPS mm.
        cursor: the crosshair voxel (z, y, x), integers.
        window: (width, level) HU.
        slab_mm: slab thickness (mm) of the MIP/MinIP; ``slab_mode`` ``none``, ``mip`` or ``minip``.
        show: overlay toggles ``findings``, ``mask``, ``heatmap``.
        heat_kind: which heatmap is shown (:data:`HEATMAP_KINDS`); ``opacity`` 0..1.
        selected: the selected finding's id.
    """

    def __init__(self, hu: np.ndarray, spacing: tuple[float, float, float], affine: np.ndarray,
                 direction: np.ndarray) -> None:
        self.hu = hu
        self.spacing = tuple(float(s) for s in spacing)
        self.affine = np.asarray(affine, float)
        self.flips = display_flips(direction)
        self.cursor = [s // 2 for s in hu.shape]
        self.window: tuple[float, float] = PRESETS["lung"]
        self.slab_mm = 10.0
        self.slab_mode = "none"
        self.show = {"findings": True, "mask": True, "heatmap": False}
        self.heat_kind = "detection"
        self.opacity = 0.45
        self.selected: str | None = None
        self.ai_visible = True  # second-reader mode hides the machine's marks until asked
        self.findings: list[FindingOverlay] = []
        self._lut = heat_lut()

    @property
    def shape(self) -> tuple[int, int, int]:
        return (int(self.hu.shape[0]), int(self.hu.shape[1]), int(self.hu.shape[2]))

    # -- overlays --------------------------------------------------------------------------------
    def set_overlays(self, overlays: list[FindingOverlay]) -> None:
        """Show these findings' overlays (:func:`build_overlays`; the reader's marks are kept)."""
        self.findings = [*overlays, *(f for f in self.findings if f.reader)]

    def set_reader_findings(self, marks: list[tuple[str, tuple[float, float, float], float]]) -> None:
        """The reader's own marks: ``(id, centre voxel z-y-x, diameter mm)``, drawn as boxes."""
        keep = [f for f in self.findings if not f.reader]
        for rid, c, d in marks:
            half = [max(d / 2.0 / s, 1.0) for s in self.spacing]
            lo = tuple(int(np.floor(c[i] - half[i])) for i in range(3))
            hi = tuple(int(np.ceil(c[i] + half[i])) + 1 for i in range(3))
            keep.append(FindingOverlay(rid, c, lo, hi, reader=True))  # type: ignore[arg-type]
        self.findings = keep

    def clear_result(self) -> None:
        self.findings = []
        self.selected = None

    # -- geometry --------------------------------------------------------------------------------
    def slab_half(self, view: str) -> int:
        """Half the slab, in slices of ``view``'s cut axis (0: the plain slice)."""
        if self.slab_mode == "none":
            return 0
        ax = VIEW_AXES[view][0]
        return max(int(round(self.slab_mm / 2.0 / self.spacing[ax])), 0)

    def plane_shape(self, view: str) -> tuple[int, int]:
        _, r, c = VIEW_AXES[view]
        return self.shape[r], self.shape[c]

    def pixel_mm(self, view: str) -> tuple[float, float]:
        """The (row, column) pixel size of ``view`` in mm: the aspect ratio it is drawn with."""
        _, r, c = VIEW_AXES[view]
        return self.spacing[r], self.spacing[c]

    def to_display(self, view: str, row: float, col: float) -> tuple[float, float]:
        """Plane (row, col) -> displayed (row, col), applying the view's flips (an involution)."""
        fr, fc = self.flips[view]
        nr, nc = self.plane_shape(view)
        return (nr - 1 - row if fr else row), (nc - 1 - col if fc else col)

    def voxel_at(self, view: str, drow: float, dcol: float) -> tuple[float, float, float]:
        """The voxel (z, y, x) under displayed (row, col) of ``view``, at the cursor's slice."""
        row, col = self.to_display(view, drow, dcol)
        ax, r, c = VIEW_AXES[view]
        v = [0.0, 0.0, 0.0]
        v[ax], v[r], v[c] = float(self.cursor[ax]), row, col
        return v[0], v[1], v[2]

    def lps(self, voxel: tuple[float, float, float]) -> np.ndarray:
        return self.affine[:3, :3] @ np.asarray(voxel, float) + self.affine[:3, 3]

    def hu_at(self, voxel: tuple[float, float, float]) -> float | None:
        idx = tuple(int(round(v)) for v in voxel)
        if all(0 <= i < n for i, n in zip(idx, self.shape, strict=True)):
            return float(self.hu[idx])
        return None

    def move_to(self, voxel: tuple[float, float, float]) -> None:
        self.cursor = [int(min(max(round(v), 0), n - 1)) for v, n in zip(voxel, self.shape, strict=True)]

    # -- drawing ---------------------------------------------------------------------------------
    def compose(self, view: str) -> np.ndarray:
        """The displayed RGB (rows, cols, 3) uint8 of ``view`` at the cursor: the windowed slice or
        slab, the heatmap blended in, the mask outlines; flipped for display."""
        ax = VIEW_AXES[view][0]
        index = self.cursor[ax]
        rgb = rgb_from_gray(window_u8(slab(self.hu, view, index, self.slab_half(view), self.slab_mode), *self.window))
        shape2d = rgb.shape[:2]
        if self.ai_visible:
            if self.show["heatmap"]:
                for f in self.findings:
                    sub = f.heat.get(self.heat_kind)
                    cut = sub.cut(view, index, shape2d) if sub is not None else None
                    if cut is not None:
                        blend_heat(rgb, cut[1], cut[0], self._lut, self.opacity)
            if self.show["mask"]:
                for f in self.findings:
                    cut = f.mask.cut(view, index, shape2d) if f.mask is not None else None
                    if cut is None:
                        continue
                    (r0, c0), m = cut
                    edge = outline(m > 0)
                    rr, cc = np.nonzero(edge)
                    rr, cc = rr + r0, cc + c0
                    ok = (rr >= 0) & (rr < shape2d[0]) & (cc >= 0) & (cc < shape2d[1])
                    rgb[rr[ok], cc[ok]] = MASK_RGB
        fr, fc = self.flips[view]
        if fr:
            rgb = rgb[::-1]
        if fc:
            rgb = rgb[:, ::-1]
        return np.ascontiguousarray(rgb)

    def boxes(self, view: str) -> list[tuple[str, tuple[float, float, float, float], bool, bool]]:
        """The findings whose box the cursor's slice of ``view`` crosses: ``(id, (row0, col0, row1,
        col1) displayed, selected, reader's)``; box edges at voxel borders (±0.5)."""
        if not self.show["findings"]:
            return []
        ax, r, c = VIEW_AXES[view]
        index = self.cursor[ax]
        out = []
        for f in self.findings:
            if not (f.reader or self.ai_visible):
                continue
            if not f.box_lo[ax] <= index < f.box_hi[ax]:
                continue
            a = self.to_display(view, f.box_lo[r] - 0.5, f.box_lo[c] - 0.5)
            b = self.to_display(view, f.box_hi[r] - 0.5, f.box_hi[c] - 0.5)
            out.append((f.id, (min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1])),
                        f.id == self.selected, f.reader))
        return out
