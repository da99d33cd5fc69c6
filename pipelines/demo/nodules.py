"""The demo's nodules: real LIDC shapes resampled, placed inside a lung, rendered and measured.

SYNTHETIC DATA, NOT FOR DIAGNOSTIC USE.  Shapes come from :mod:`.shapes` (1 mm isotropic
masks) and keep their true physical size; arrays are z-y-x, sizes in mm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lungfuse.pipelines.demo.phantom import HU_NODULE, Grid, Phantom
from lungfuse.pipelines.demo.shapes import DemoNoduleShape


@dataclass(frozen=True)
class _PlacedNodule:
    source_patient_id: str
    source_nodule_index: int
    mask: np.ndarray  # bool, cropped, demo voxel grid
    weight: np.ndarray  # float32 soft occupancy, same crop
    corner: tuple[int, int, int]  # voxel index of mask[0,0,0] in the volume (z, y, x)
    side: str
    ratings: dict[str, float]


def _resample_shape(iso_mask: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """1 mm isotropic mask -> (bool mask, float soft weight) on the demo grid (z-y-x mm).

    Linear interpolation of the float mask with ``grid_mode=True`` (voxel boxes keep their
    physical extent), threshold 0.5 for the mask. The soft weight is the interpolated
    fraction, lightly smoothed (sigma 0.5 voxel) to give the nodule a soft edge.
    """
    padded = np.pad(iso_mask.astype(np.float32), 2)
    frac = ndimage.zoom(padded, [1.0 / s for s in spacing], order=1, mode="grid-constant", grid_mode=True)
    frac = np.pad(frac, 2)
    mask = frac >= 0.5
    weight = np.clip(ndimage.gaussian_filter(frac, 0.5), 0.0, 1.0)
    weight = np.maximum(weight, mask * 0.9)  # keep the interior solid after smoothing
    return mask, weight.astype(np.float32)


def place_nodules(
    rng: np.random.Generator, ph: Phantom, g: Grid, spacing: Sequence[float], shapes: list[DemoNoduleShape]
) -> list[_PlacedNodule]:
    """Choose positions fully inside a lung, >= 6 mm from the pleura/mediastinum, not
    touching each other; the two nodules go to different lungs when there are two."""
    placed: list[_PlacedNodule] = []
    taken = np.zeros(g.shape, dtype=bool)
    sides = ["right", "left"]
    rng.shuffle(sides)
    margin_mm = 6.0
    for n, shape in enumerate(shapes):
        mask, weight = _resample_shape(shape.mask, spacing)
        # Margin ball on the demo grid (anisotropic voxels).
        rad = [max(1, math.ceil(margin_mm / s)) for s in spacing]
        zz, yy, xx = np.ogrid[-rad[0] : rad[0] + 1, -rad[1] : rad[1] + 1, -rad[2] : rad[2] + 1]
        ball = (zz * spacing[0]) ** 2 + (yy * spacing[1]) ** 2 + (xx * spacing[2]) ** 2 <= margin_mm**2
        grown = ndimage.binary_dilation(np.pad(mask, [(r, r) for r in rad]), structure=ball)
        side = sides[n % 2]
        lung = ph.lung_right if side == "right" else ph.lung_left
        # Candidate centres: lung voxels far from its border (cheap coarse distance map).
        cands = np.argwhere(lung[:, ::2, ::2]) * np.array([1, 2, 2])
        if len(cands) == 0:
            raise RuntimeError(f"the phantom has no {side} lung on this grid")
        half = np.array(grown.shape) // 2
        ok = None
        for _ in range(400):
            c = cands[rng.integers(len(cands))]
            lo = c - half
            hi = lo + np.array(grown.shape)
            if np.any(lo < 0) or np.any(hi > np.array(g.shape)):
                continue
            sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
            if np.all(lung[sl][grown]) and not np.any(taken[sl][grown]):
                ok = lo + np.array(rad)
                taken[sl] |= grown
                break
        if ok is None:
            raise RuntimeError(f"could not place nodule {n} ({shape.patient_id}) fully inside the {side} lung")
        placed.append(
            _PlacedNodule(
                source_patient_id=shape.patient_id,
                source_nodule_index=shape.nodule_index,
                mask=mask,
                weight=weight,
                corner=(int(ok[0]), int(ok[1]), int(ok[2])),
                side=side,
                ratings=dict(shape.ratings),
            )
        )
    return placed


def render_nodules(hu: np.ndarray, placed: list[_PlacedNodule]) -> None:
    for nod in placed:
        sl = tuple(slice(c, c + s) for c, s in zip(nod.corner, nod.mask.shape, strict=True))
        w = nod.weight
        # Solid nodule: uniform +30 HU with a little internal heterogeneity from the
        # underlying texture; the soft edge blends into the parenchyma.
        hu[sl] = hu[sl] * (1 - w) + HU_NODULE * w


def axial_diameters(mask2d: np.ndarray, sy: float, sx: float) -> tuple[float, float]:
    """Longest in-plane diameter and the perpendicular extent (mm) of a 2D mask.

    Long axis = max distance between foreground pixel centres + one pixel (pixel extent);
    short axis = extent of the pixel centres projected on the perpendicular + one pixel.
    """
    pts = np.argwhere(mask2d) * np.array([sy, sx])
    if len(pts) == 0:
        return 0.0, 0.0
    if len(pts) == 1:
        return float(sx), float(sx)
    if len(pts) > 4000:  # keep pdist small: only the border pixels matter
        border = mask2d & ~ndimage.binary_erosion(mask2d)
        pts = np.argwhere(border) * np.array([sy, sx])
    diff = pts[:, None, :] - pts[None, :, :]
    d2 = (diff**2).sum(-1)
    i, j = np.unravel_index(int(d2.argmax()), d2.shape)
    long_vec = pts[j] - pts[i]
    long_len = float(np.sqrt(d2[i, j]))
    u = long_vec / max(long_len, 1e-9)
    perp = np.array([-u[1], u[0]])
    proj = pts @ perp
    pix = float(min(sx, sy))
    return long_len + pix, float(proj.max() - proj.min()) + pix


def lobe_of(side: str, center_ref: np.ndarray, lung: np.ndarray, g: Grid) -> str:
    """Simple, documented lobe rule on the phantom lung of the nodule's side.

    t = relative height of the nodule centre within the lung's z-extent (0 = lowest lung
    voxel, 1 = apex). Right lung: t >= 2/3 -> RUL; t < 1/3 -> RLL; in the middle third,
    anterior to the lung's mean y at that slice -> RML, else RLL. Left lung: t >= 1/2 ->
    LUL (with the lingula), else LLL.
    """
    ks = np.nonzero(lung.any(axis=(1, 2)))[0]
    zlo, zhi = g.to_ref(np.array([ks[0], 0, 0]))[0], g.to_ref(np.array([ks[-1], 0, 0]))[0]
    t = (center_ref[0] - zlo) / max(zhi - zlo, 1e-6)
    if side == "left":
        return "LUL" if t >= 0.5 else "LLL"
    if t >= 2.0 / 3.0:
        return "RUL"
    if t < 1.0 / 3.0:
        return "RLL"
    k = int(np.rint(g.to_index(center_ref)[0]))
    jj = np.nonzero(lung[k])[0]
    y_mean = g.to_ref(np.array([0, float(jj.mean()), 0]))[1]
    return "RML" if center_ref[1] < y_mean else "RLL"


def margin_phrase(r: dict[str, float]) -> str:
    """Margin wording from the median reader ratings (LIDC scales, see NoduleRatings)."""
    if r["spiculation"] >= 3:
        return "spiculated margins"
    if r["margin"] <= 2:
        return "ill-defined margins"
    if r["lobulation"] >= 3:
        return "lobulated margins"
    if r["margin"] >= 4:
        return "smooth, well-circumscribed margins"
    return "mildly irregular margins"
