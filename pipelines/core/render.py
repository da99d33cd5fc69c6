"""Slice rendering for the viewer and the key images: numpy only (no Qt, no matplotlib), fast and testable.

Shared by the GUI (``lungfuse.app.gui`` re-exports it as ``app.gui.render``) and the exports
(:mod:`lungfuse.pipelines.export.keyimages`); it lives in ``core`` because the GUI may import
neither ``imaging`` nor anything above it but the results.

Research software, NOT for diagnostic use.

Conventions: volumes are **z-y-x** (``CTVolume.hu`` indices); affines map voxel (k, j, i) to
DICOM **LPS** mm.  A *view* is one of ``axial`` (rows y, columns x), ``coronal`` (rows z, columns
x) and ``sagittal`` (rows z, columns y).  :func:`display_flips` says which displayed axes are
reversed so that every view follows the radiological convention whatever the slice order: the
patient's right on the screen's left, anterior at the top (axial) and superior at the top
(coronal, sagittal).

Overlays (masks, heatmaps) live on other grids (1.5 mm model grid, 1.25 mm crops).  They are
resampled once into the source CT's voxel grid (:func:`to_ct_grid`), over the CT box that
covers them only, so that drawing a slice is an array cut and no per-slice resampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "VIEWS",
    "VIEW_AXES",
    "PRESETS",
    "SubVolume",
    "display_flips",
    "plane",
    "slab",
    "window_u8",
    "to_ct_grid",
    "heat_lut",
    "blend_heat",
    "outline",
    "rgb_from_gray",
]

VIEWS = ("axial", "coronal", "sagittal")
#: per view: (the volume axis cut, the axis shown as rows, the axis shown as columns), z-y-x = 0-1-2
VIEW_AXES: dict[str, tuple[int, int, int]] = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}
#: window presets (width, level) in HU.  The lung window is W 1500 / L -600 (a width of 150, a
#: known wrong default of some viewers, would show the lung as noise).
PRESETS: dict[str, tuple[float, float]] = {"lung": (1500.0, -600.0), "mediastinum": (400.0, 40.0),
                                           "bone": (2000.0, 500.0)}


@dataclass(frozen=True)
class SubVolume:
    """A block of values on the source CT's voxel grid: ``data[z, y, x]`` is CT voxel ``lo + (z, y, x)``."""

    lo: tuple[int, int, int]
    data: np.ndarray

    def cut(self, view: str, index: int, shape2d: tuple[int, int]) -> tuple[tuple[int, int], np.ndarray] | None:
        """The block's part in slice ``index`` of ``view``: ``((row0, col0), 2-D array)``; None when
        the slice misses the block.  ``shape2d`` is the full plane's (rows, cols), used to clip."""
        ax, r_ax, c_ax = VIEW_AXES[view]
        k = index - self.lo[ax]
        if not 0 <= k < self.data.shape[ax]:
            return None
        # the other two axes stay in order, which is (rows, cols) for every view
        return (self.lo[r_ax], self.lo[c_ax]), self.data[(slice(None),) * ax + (k,)]


def display_flips(direction: np.ndarray) -> dict[str, tuple[bool, bool]]:
    """Per view, whether its rows and its columns are shown reversed.

    ``direction`` is ``CTVolume.direction`` (3x3, columns = LPS unit vectors of the z, y, x array
    axes).  Rows run anterior->posterior (axial) or superior->inferior (coronal, sagittal);
    columns run right->left (axial, coronal) or anterior->posterior (sagittal).
    """
    d = np.asarray(direction, float)

    def toward(axis: int, lps: int) -> bool:  # does increasing this array index move along +LPS[lps]?
        return bool(d[lps, axis] >= 0)

    return {
        "axial": (not toward(1, 1), not toward(2, 0)),     # rows +P, cols +L
        "coronal": (toward(0, 2), not toward(2, 0)),       # rows -S (superior on top), cols +L
        "sagittal": (toward(0, 2), not toward(1, 1)),      # rows -S, cols +P
    }


def plane(vol: np.ndarray, view: str, index: int) -> np.ndarray:
    """Slice ``index`` of ``view`` as (rows, cols), before the display flips (a view, no copy)."""
    ax = VIEW_AXES[view][0]
    return vol[(slice(None),) * ax + (int(index),)]


def slab(vol: np.ndarray, view: str, index: int, half: int, mode: str) -> np.ndarray:
    """``mode`` = ``mip`` (maximum) or ``minip`` (minimum) over slices ``index - half .. index + half``
    of ``view`` (clipped to the volume); ``half`` = 0 or mode ``none`` gives the plain slice."""
    if mode == "none" or half <= 0:
        return plane(vol, view, index)
    ax = VIEW_AXES[view][0]
    lo, hi = max(int(index) - half, 0), min(int(index) + half + 1, vol.shape[ax])
    block = vol[(slice(None),) * ax + (slice(lo, hi),)]
    return block.max(axis=ax) if mode == "mip" else block.min(axis=ax)


def window_u8(values: np.ndarray, width: float, level: float) -> np.ndarray:
    """HU -> uint8 grey through the window (``width``, ``level``) in HU, linear, clipped."""
    w = max(float(width), 1.0)
    lo = float(level) - w / 2.0
    # float32 arithmetic: half the time of float64 on a 512x512 slice, and exact enough for 256 levels
    out = (values.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / w)
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


def rgb_from_gray(gray: np.ndarray) -> np.ndarray:
    """(rows, cols) uint8 -> (rows, cols, 3) uint8, C-contiguous (what QImage.Format_RGB888 reads)."""
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def to_ct_grid(arr: np.ndarray, arr_affine: np.ndarray, ct_affine: np.ndarray, ct_shape: tuple[int, int, int],
               order: int = 1) -> SubVolume | None:
    """Resample ``arr`` (z-y-x, ``arr_affine`` voxel->LPS) onto the CT voxels it covers.

    ``order`` 0 (nearest: masks) or 1 (trilinear: heatmaps); zero outside ``arr``.  Only the CT
    box that covers ``arr``'s corners is computed; None when ``arr`` lies outside the CT.
    """
    from scipy import ndimage

    a_aff, c_aff = np.asarray(arr_affine, float), np.asarray(ct_affine, float)
    n = np.asarray(arr.shape, float)
    corners = np.array([[z, y, x] for z in (-0.5, n[0] - 0.5) for y in (-0.5, n[1] - 0.5) for x in (-0.5, n[2] - 0.5)])
    lps = corners @ a_aff[:3, :3].T + a_aff[:3, 3]
    c_inv = np.linalg.inv(c_aff)
    ct_vox = lps @ c_inv[:3, :3].T + c_inv[:3, 3]
    lo = np.maximum(np.floor(ct_vox.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(ct_vox.max(axis=0)).astype(int) + 1, np.asarray(ct_shape))
    if np.any(hi <= lo):
        return None
    zz, yy, xx = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij")
    vox = np.stack([zz, yy, xx], axis=-1).reshape(-1, 3).astype(float)
    m = np.linalg.inv(a_aff) @ c_aff  # CT voxel -> arr voxel
    src = vox @ m[:3, :3].T + m[:3, 3]
    data = arr.astype(np.float32) if order else arr
    out = ndimage.map_coordinates(data, src.T, order=order, mode="constant", cval=0)
    return SubVolume((int(lo[0]), int(lo[1]), int(lo[2])), out.reshape(zz.shape))


def heat_lut(name: str = "inferno") -> np.ndarray:
    """A 256x3 uint8 colour table from matplotlib's colormap ``name`` (read once; matplotlib is not
    used to draw: the GUI indexes this table with numpy)."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def blend_heat(rgb: np.ndarray, heat: np.ndarray, origin: tuple[int, int], lut: np.ndarray, opacity: float,
               floor: float = 0.05) -> None:
    """Blend ``heat`` (values 0..1) into ``rgb`` in place at (row, col) ``origin``, through ``lut``;
    values below ``floor`` stay transparent, so that the CT shows around the hot region."""
    r0, c0 = origin
    r1, c1 = min(r0 + heat.shape[0], rgb.shape[0]), min(c0 + heat.shape[1], rgb.shape[1])
    rs, cs = max(r0, 0), max(c0, 0)
    if r1 <= rs or c1 <= cs:
        return
    h = heat[rs - r0 : r1 - r0, cs - c0 : c1 - c0]
    on = h >= floor
    if not on.any():
        return
    idx = np.clip(h * 255.0, 0, 255).astype(np.uint8)
    colour = lut[idx].astype(np.float32)
    dst = rgb[rs:r1, cs:c1]
    mixed = dst.astype(np.float32) * (1.0 - opacity) + colour * opacity
    dst[on] = mixed[on].astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a 2-D boolean mask (4-neighbour erosion), same shape."""
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    inner[0, :] = inner[-1, :] = False
    inner[:, 0] = inner[:, -1] = False
    return m & ~inner
