"""Key images of a result: an axial and a coronal crop of the source CT around each finding.

Research software, NOT for diagnostic use.

:func:`render_key_images` draws, for every machine finding and every reader-added finding, two
annotated crops of the *source* CT (``ctx.source.volume.hu``, z-y-x): the axial slice through the
finding's centre and the coronal row through it.  Each crop is resampled to square pixels (the
voxel spacing, e.g. 0.7 x 0.7 x 2.5 mm, gives the aspect), shown in the lung window
(W 1500 / L -600 HU) in the radiological convention (patient's right on the image's left,
anterior / superior at the top), with

* the nodule mask's outline (the mask lives on the 1.5 mm model grid: mapped through its
  voxel->LPS affine, never assumed to share the CT's grid),
* the malignancy Grad-CAM (else the detector attribution) as a colour overlay, mapped the same
  way, with a colour bar that says what the colours mean,
* a scale bar in mm, orientation letters, the finding's label and "NOT FOR DIAGNOSTIC USE".

The images carry no patient identity (the finding id only), so the same pictures serve the PDF
and the de-identified DICOM Secondary Capture.  The list is computed once per export and cached
in ``ctx.shared["key_images"]``.  matplotlib draws off-screen (Agg canvas, no pyplot state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from lungfuse.pipelines.analysis.review import ReaderFinding
from lungfuse.pipelines.core.render import PRESETS, display_flips, window_u8
from lungfuse.pipelines.export.source import ExportError

if TYPE_CHECKING:
    from lungfuse.pipelines.analysis.result import Finding
    from lungfuse.pipelines.export.api import ExportContext

__all__ = ["KeyImage", "KEY_VIEWS", "HEATMAP_LEGENDS", "render_key_images", "render_finding_views"]

KEY_VIEWS = ("axial", "coronal")
#: the heatmap drawn on a key image, in order of preference, and what its colour bar says
HEATMAP_LEGENDS: dict[str, str] = {
    "gradcam": "colour: malignancy\nGrad-CAM, the regions\nthat drive the\nmalignancy estimate\n(relative, 0 to 1)",
    "detection": "colour: detector\nattribution, the\nregions that drive\nthe detection score\n(relative, 0 to 1)",
}
_CMAP = "inferno"
_HEAT_FLOOR = 0.1   # heat below this stays transparent, so that the CT shows around the hot region
_HEAT_ALPHA = 0.45
_CROP_PX = 288      # the CT crop's side in pixels of the rendered image
_DPI = 100
_NOTICE = "LungFuse - NOT FOR DIAGNOSTIC USE"


@dataclass(frozen=True, eq=False)
class KeyImage:
    """One rendered key image (overlays burned in).

    Attributes:
        finding_id: ``F1``... (a machine finding) or ``R1``... (reader-added).
        view: ``axial`` or ``coronal``.
        rgb: the picture, uint8 (rows, cols, 3), annotations included.
        pixel_spacing_mm: (row, col) size in mm of one pixel of ``rgb`` at the CT (the CT crop
            is resampled to square pixels, so both are equal).
        slice_index: the source slice shown: the z index for ``axial``, the y row for
            ``coronal`` (``CTVolume.hu`` indices).
        reader_added: the finding was added by the reader (not the machine).
        heatmap: the heatmap drawn (``gradcam`` / ``detection``), None when there is none.
        fov_mm: side of the CT crop in mm.
        crop_box_px: (row0, col0, rows, cols) of the CT crop inside ``rgb`` (pixels).
        caption: one line describing the image (finding, view, slice, size).
    """

    finding_id: str
    view: str
    rgb: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    slice_index: int
    reader_added: bool = False
    heatmap: str | None = None
    fov_mm: float = 0.0
    crop_box_px: tuple[int, int, int, int] = (0, 0, 0, 0)
    caption: str = ""


def render_key_images(ctx: ExportContext) -> list[KeyImage]:
    """Every finding's axial and coronal key image (machine findings first, then the reader's).

    Cached in ``ctx.shared["key_images"]``: the PDF and the DICOM Secondary Capture of one
    export share one rendering.

    Raises:
        ExportError: a finding's centre lies outside the CT (a reader-added point placed off
            the scan, or a result that does not belong to this CT).
    """
    cached = ctx.shared.get("key_images")
    if cached is not None:
        return list(cached)
    result = ctx.result
    vol = ctx.source.volume
    images: list[KeyImage] = []
    for f in result.findings:
        images.extend(render_finding_views(vol.hu, vol.affine, vol.direction, f, result.arrays))
    rv = result.review
    for r in rv.added_findings if rv is not None else []:
        images.extend(render_finding_views(vol.hu, vol.affine, vol.direction, r, result.arrays))
    ctx.shared["key_images"] = images
    return list(images)


def render_finding_views(hu: np.ndarray, ct_affine: np.ndarray, direction: np.ndarray,
                         finding: Finding | ReaderFinding, arrays: dict[str, np.ndarray],
                         views: tuple[str, ...] = KEY_VIEWS) -> list[KeyImage]:
    """The key images of one finding on a CT (``hu`` z-y-x, ``ct_affine`` voxel (z, y, x) -> LPS mm).

    ``finding`` a machine :class:`Finding` (mask and heatmaps from ``arrays``) or a reader's
    :class:`ReaderFinding` (a dashed circle of its diameter, no overlay).  Overlays are mapped
    through ``ct_affine``, which is exact for evenly spaced slices (``CTVolume.quality.uniform``);
    across a gap the overlay's slice position is off by the gap's share (the GUI's
    :func:`~lungfuse.pipelines.core.render.to_ct_grid` does the same).
    """
    aff = np.asarray(ct_affine, float)
    reader = isinstance(finding, ReaderFinding)
    lps = np.asarray(finding.center_lps_mm, float)
    if reader:
        centre = (np.linalg.inv(aff) @ np.append(lps, 1.0))[:3]
    else:
        centre = np.asarray(finding.center_voxel, float)  # type: ignore[union-attr]
    if np.any(centre < -0.5) or np.any(centre > np.asarray(hu.shape) - 0.5):
        raise ExportError(f"finding {finding.id}: centre {np.round(lps, 1).tolist()} LPS mm (voxel z-y-x "
                          f"{np.round(centre, 1).tolist()}) lies outside the CT of shape {list(hu.shape)}")
    diameter = float(finding.diameter_mm or 0.0)
    # at least 50 mm of context, 2.5 diameters around a large mass, never more than 120 mm
    fov = float(np.clip(2.5 * diameter, 50.0, 120.0))
    flips = display_flips(direction)
    out = []
    for view in views:
        coords, index = _crop_grid(aff, centre, fov, view, flips[view])
        out.append(_render(hu, aff, coords, index, fov, view, finding, arrays, reader))
    return out


def _crop_grid(aff: np.ndarray, centre: np.ndarray, fov: float, view: str,
               flip: tuple[bool, bool]) -> tuple[np.ndarray, int]:
    """CT voxel coordinates (3, N, N), z-y-x, of the crop's pixel centres, and the slice index.

    The crop is ``fov`` mm square, :data:`_CROP_PX` pixels a side, centred on ``centre``; the
    cut axis stays on the source slice through the centre (no interpolation across slices).
    """
    spacing = np.linalg.norm(aff[:3, :3], axis=0)  # mm per voxel along z, y, x
    n = _CROP_PX
    step = fov / n
    offs = (np.arange(n) - (n - 1) / 2.0) * step  # mm from the centre, pixel centres
    cut, rows_ax, cols_ax = (0, 1, 2) if view == "axial" else (1, 0, 2)
    index = int(np.clip(round(float(centre[cut])), 0, None))
    r = centre[rows_ax] + (-offs if flip[0] else offs) / spacing[rows_ax]
    c = centre[cols_ax] + (-offs if flip[1] else offs) / spacing[cols_ax]
    coords = np.empty((3, n, n))
    coords[cut] = index
    coords[rows_ax] = r[:, None]
    coords[cols_ax] = c[None, :]
    return coords, index


def _sample(arr: np.ndarray, arr_affine: Any, ct_affine: np.ndarray, coords: np.ndarray, cval: float,
            order: int = 1) -> np.ndarray:
    """``arr`` (z-y-x, ``arr_affine`` voxel->LPS) at CT voxel ``coords`` (3, N, N), mapped through LPS."""
    m = np.linalg.inv(np.asarray(arr_affine, float)) @ ct_affine  # CT voxel -> arr voxel
    pts = np.tensordot(m[:3, :3], coords, axes=1) + m[:3, 3][:, None, None]
    return ndimage.map_coordinates(arr.astype(np.float32), pts, order=order, mode="constant", cval=cval)


def _scale_bar_mm(fov: float) -> float:
    """A round length about a fifth of the field of view (5, 10, 20 mm...)."""
    for mm in (50.0, 20.0, 10.0, 5.0):
        if mm <= fov / 3.5:
            return mm
    return 5.0


def _label(finding: Finding | ReaderFinding, reader: bool) -> str:
    if reader:
        parts = [f"{finding.diameter_mm:.0f} mm" if finding.diameter_mm else "",
                 f"Lung-RADS {finding.category}" if finding.category else ""]  # type: ignore[union-attr]
        return f"{finding.id} (reader-added): " + (", ".join(p for p in parts if p) or "no size")
    f: Any = finding
    where = f.lobe or f.side or "chest"
    return f"{f.id}: {f.diameter_mm:.0f} mm {f.texture}, {where}, Lung-RADS {f.lung_rads or '-'}"


def _render(hu: np.ndarray, aff: np.ndarray, coords: np.ndarray, index: int, fov: float, view: str,
            finding: Finding | ReaderFinding, arrays: dict[str, np.ndarray], reader: bool) -> KeyImage:
    from matplotlib import colormaps, patheffects
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    n = _CROP_PX
    step = fov / n
    # -1024 HU outside the scan: air, black in the lung window
    ct = ndimage.map_coordinates(hu, coords, order=1, mode="constant", cval=-1024.0)
    gray = window_u8(ct, *PRESETS["lung"])

    heat_name = None
    heat = None
    contour = None
    if not reader:
        f: Any = finding
        for name in HEATMAP_LEGENDS:
            h = f.heatmaps.get(name)
            if h and h.get("array") in arrays:
                heat_name = name
                heat = _sample(arrays[h["array"]], h["affine_lps"], aff, coords, 0.0)
                break
        if f.mask and f.mask.get("array") in arrays:
            contour = _sample(arrays[f.mask["array"]], f.mask["affine_lps"], aff, coords, 0.0)
            if contour.max() < 0.5:  # the mask misses this plane (a thin nodule off the centre row)
                contour = None

    # layout in pixels: title band on top, notice band below, colour bar (with legend) right
    # the right band is kept without a heatmap too: every key image has the same size and scale
    top, bottom, left, right = 40, 26, 8, 130
    width, height = left + n + right, top + n + bottom
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="black")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((left / width, bottom / height, n / width, n / height))
    ax.set_axis_off()
    ax.imshow(gray, cmap="gray", vmin=0, vmax=255, interpolation="nearest", extent=(0, n, n, 0))
    cmap = colormaps[_CMAP]
    if heat is not None:
        ax.imshow(np.ma.masked_less(heat, _HEAT_FLOOR), cmap=cmap, vmin=0.0, vmax=1.0, alpha=_HEAT_ALPHA,
                  interpolation="bilinear", extent=(0, n, n, 0))
    if contour is not None:
        ax.contour(np.arange(n) + 0.5, np.arange(n) + 0.5, contour, levels=[0.5], colors=["#39ff14"],
                   linewidths=1.3)
    if reader:
        rad = max(float(finding.diameter_mm or 6.0), 3.0) / 2.0 / step
        ax.add_patch(Circle((n / 2, n / 2), rad, fill=False, edgecolor="cyan", linewidth=1.4, linestyle="--"))
    ax.set_xlim(0, n)
    ax.set_ylim(n, 0)

    # scale bar, bottom left, and the orientation letters (radiological convention)
    bar_mm = _scale_bar_mm(fov)
    bar_px = bar_mm / step
    halo = [patheffects.withStroke(linewidth=2.5, foreground="black")]  # legible on white bone and black air
    ax.plot([12, 12 + bar_px], [n - 14, n - 14], color="white", linewidth=3, solid_capstyle="butt",
            path_effects=[patheffects.withStroke(linewidth=5, foreground="black")])
    ax.text(12 + bar_px / 2, n - 20, f"{bar_mm:g} mm", color="white", ha="center", va="bottom", fontsize=8,
            path_effects=halo)
    top_letter, bottom_letter = ("A", "P") if view == "axial" else ("S", "I")
    for x, y, s, ha, va in ((4, n / 2, "R", "left", "center"), (n - 4, n / 2, "L", "right", "center"),
                            (n / 2, 4, top_letter, "center", "top"), (n / 2, n - 4, bottom_letter, "center", "bottom")):
        ax.text(x, y, s, color="yellow", ha=ha, va=va, fontsize=9, fontweight="bold", path_effects=halo)

    total = hu.shape[0] if view == "axial" else hu.shape[1]
    what = "slice" if view == "axial" else "row"
    caption = f"{_label(finding, reader)} - {view}, {what} {index + 1}/{total}"
    fig.text(left / width, 1 - 4 / height, _label(finding, reader), color="white", fontsize=9, fontweight="bold",
             ha="left", va="top")
    legend = "outline: nodule mask" if contour is not None else ("dashed: reader's mark" if reader else "")
    fig.text(left / width, 1 - 22 / height, f"{view}, {what} {index + 1}/{total}, W1500/L-600"
             + (f"; {legend}" if legend else ""), color="#dddddd", fontsize=7.5, ha="left", va="top")
    fig.text(0.5, 6 / height, _NOTICE, color="#ffcc00", fontsize=8, fontweight="bold", ha="center", va="bottom")
    if heat is None:
        note = ("dashed circle:\nthe reader's mark,\nits diameter as\nmeasured" if reader
                else "no heatmap\ncomputed")
        fig.text((left + n + 8) / width, (bottom + n / 2) / height, note, color="white", fontsize=7, ha="left",
                 va="center", linespacing=1.3)
    if heat is not None and heat_name is not None:
        # the bar on the upper part of the right band, what the colours mean written below it
        cax = fig.add_axes(((left + n + 14) / width, (bottom + 120) / height, 12 / width, (n - 130) / height))
        cb = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap), cax=cax, ticks=[0.0, 0.5, 1.0])
        cb.ax.set_yticklabels(["0 low", "0.5", "1 high"], color="white", fontsize=7)
        cb.ax.tick_params(colors="white", length=2)
        cb.outline.set_edgecolor("white")
        fig.text((left + n + 8) / width, (bottom + 110) / height, HEATMAP_LEGENDS[heat_name], color="white",
                 fontsize=7, ha="left", va="top", linespacing=1.3)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # type: ignore[attr-defined]
    return KeyImage(finding_id=finding.id, view=view, rgb=rgb, pixel_spacing_mm=(step, step), slice_index=index,
                    reader_added=reader, heatmap=heat_name, fov_mm=fov, crop_box_px=(top, left, n, n), caption=caption)
