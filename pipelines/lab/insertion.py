"""Lesion insertion: real LIDC nodule shapes rendered into real lung parenchyma.

Only three real CTs are available here, so training and evaluation images are
made by inserting real nodule masks (their real, reader-drawn 3-D shapes) into
real lung.  The HU appearance is rendered ONLY from the ratings that have a
visual meaning — texture, calcification, margin sharpness, spiculation,
lobulation and internal structure — and never from the malignancy rating
(:func:`appearance_from_ratings` does not accept it).

Rendering model (all in mm; arrays z-y-x):

* ``alpha`` in [0, 1]: how much of a voxel the nodule fills.  The 1 mm
  consensus mask is blurred with a Gaussian whose width follows the margin
  rating (sharp margin 5 -> 0.35 mm, poorly defined 1 -> 1.6 mm), and thin
  spicules (random lines from the surface, number/length from the spiculation
  rating) are added.
* ``value``: the HU the nodule has where it fills the voxel: solid ~ +30 HU,
  ground-glass -700..-450 HU, part-solid = solid core inside a ground-glass
  rim; calcification patterns (popcorn, laminated, diffuse, eccentric,
  central) add dense foci; internal structure fluid/fat/air sets the interior.
* The patch is resampled onto the background grid with the background's
  slice profile (Gaussian along z with FWHM = slice thickness: partial volume
  as the scanner makes it), blended as ``bg * (1 - a) + value * a``, and noise
  with the background's sigma is added where the nodule replaced background
  (the blend removes the background's own noise there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from lungfuse.pipelines.lab.lidc import NoduleRatings

__all__ = [
    "NoduleAppearance",
    "appearance_from_ratings",
    "render_patch",
    "insert_into",
    "sample_location",
    "thicken_slices",
]

Texture = Literal["solid", "part-solid", "ground-glass"]
CALC_PATTERNS = {1: "popcorn", 2: "laminated", 3: "solid", 4: "non-central", 5: "central"}
INTERNAL = {1: "soft", 2: "fluid", 3: "fat", 4: "air"}


def texture_name(rating: float) -> Texture:
    """LIDC texture 1..5 -> name: <= 2 ground-glass (non-solid), < 5 part-solid, 5 solid."""
    if rating <= 2:
        return "ground-glass"
    if rating < 4.5:
        return "part-solid"
    return "solid"


@dataclass(frozen=True)
class NoduleAppearance:
    """How a nodule looks on CT (HU and edges), derived from visual ratings only."""

    texture: Texture
    solid_hu: float
    ggo_hu: float
    solid_fraction: float
    edge_sigma_mm: float
    spiculation: float  # 0 (none) .. 1 (marked)
    calcification: str | None
    internal: str

    def __post_init__(self) -> None:
        if not -1000 < self.ggo_hu < 0:
            raise ValueError(f"NoduleAppearance.ggo_hu must be in (-1000, 0) HU, got {self.ggo_hu}")
        if not 0 <= self.solid_fraction <= 1:
            raise ValueError(f"NoduleAppearance.solid_fraction must be in [0, 1], got {self.solid_fraction}")
        if not 0 < self.edge_sigma_mm < 5:
            raise ValueError(f"NoduleAppearance.edge_sigma_mm must be in (0, 5) mm, got {self.edge_sigma_mm}")
        if not 0 <= self.spiculation <= 1:
            raise ValueError(f"NoduleAppearance.spiculation must be in [0, 1], got {self.spiculation}")


def appearance_from_ratings(r: NoduleRatings, rng: np.random.Generator) -> NoduleAppearance:
    """Sample an appearance from one set of visual ratings (never malignancy)."""
    tex = texture_name(r.texture)
    calc_code = int(round(r.calcification))
    calc = CALC_PATTERNS.get(calc_code)
    internal = INTERNAL.get(int(round(r.internalStructure)), "soft")
    return NoduleAppearance(
        texture=tex,
        solid_hu=float(rng.normal(30.0, 15.0)),
        ggo_hu=float(rng.uniform(-700.0, -450.0)),
        # Part-solid: texture 3 has a small solid core, 4 a large one.
        solid_fraction=float(np.clip((r.texture - 2.0) / 3.0 + rng.normal(0, 0.08), 0.15, 0.85)),
        edge_sigma_mm=float(np.interp(r.margin, [1, 5], [1.6, 0.35]) * rng.uniform(0.85, 1.15)),
        spiculation=float(np.clip((r.spiculation - 1.0) / 4.0, 0, 1)),
        calcification=calc,
        internal=internal,
    )


def _spicules(mask: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Thin radiating lines from the nodule surface (1 mm grid); returns an alpha map."""
    out = np.zeros(mask.shape, np.float32)
    if strength <= 0:
        return out
    surf = mask & ~ndimage.binary_erosion(mask)
    pts = np.argwhere(surf)
    if len(pts) == 0:
        return out
    center = np.argwhere(mask).mean(axis=0)
    radius = max(2.0, (mask.sum() * 3 / (4 * np.pi)) ** (1 / 3))
    n = int(round(3 + 14 * strength))
    for p in pts[rng.choice(len(pts), size=min(n, len(pts)), replace=False)]:
        d = p - center
        d = d / (np.linalg.norm(d) + 1e-6) + rng.normal(0, 0.25, 3)
        d /= np.linalg.norm(d) + 1e-6
        length = radius * rng.uniform(0.4, 1.0) * (0.5 + strength)
        for t in np.arange(0, length, 0.5):
            q = np.round(p + d * t).astype(int)
            if np.all(q >= 0) and np.all(q < mask.shape):
                out[tuple(q)] = max(out[tuple(q)], 0.9 * (1 - t / (length + 1e-6)) + 0.1)
    return ndimage.gaussian_filter(out, 0.5) * 2.0


def render_patch(
    mask: np.ndarray, app: NoduleAppearance, rng: np.random.Generator, pad_mm: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Render a nodule on its 1 mm isotropic grid.

    Args:
        mask: boolean consensus mask, z-y-x, 1 mm voxels.
        app: the appearance.
        pad_mm: border added around the mask for blur and spicules.
    Returns:
        ``(alpha, value)`` float32 arrays of shape ``mask.shape + 2 * pad_mm``:
        fill fraction in [0, 1] and the nodule's HU where it fills.
    """
    m = np.pad(mask.astype(bool), pad_mm)
    dist_in = ndimage.distance_transform_edt(m)  # mm to the surface, inside
    dmax = float(dist_in.max()) or 1.0
    value = np.full(m.shape, app.solid_hu, np.float32)
    if app.texture == "ground-glass":
        value[:] = app.ggo_hu
    elif app.texture == "part-solid":
        core = dist_in >= (1.0 - app.solid_fraction) * dmax
        value = np.where(core, app.solid_hu, app.ggo_hu).astype(np.float32)
        value = ndimage.gaussian_filter(value, 0.8)
    # Mild internal heterogeneity (smooth, +/- ~8 HU).
    value += ndimage.gaussian_filter(rng.normal(0, 25, m.shape).astype(np.float32), 1.2)

    interior = dist_in >= max(1.5, 0.35 * dmax)
    if app.internal == "fluid":
        value[interior] = 10.0
    elif app.internal == "fat":
        value[interior] = -90.0
    elif app.internal == "air":
        value[dist_in >= max(2.0, 0.45 * dmax)] = -950.0

    if app.calcification:
        c = np.argwhere(m).mean(axis=0)
        zz, yy, xx = np.indices(m.shape)
        r_rel = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) / max(dmax, 1.0)
        calc_hu = float(rng.uniform(400, 900))
        if app.calcification == "solid":
            sel = m
        elif app.calcification == "central":
            sel = m & (r_rel < 0.45)
        elif app.calcification == "laminated":
            sel = m & ((r_rel * 3.0) % 1.0 < 0.3)
        elif app.calcification == "non-central":
            pts = np.argwhere(m & (dist_in < 0.6 * dmax))
            p = pts[rng.integers(len(pts))] if len(pts) else c
            sel = m & (((zz - p[0]) ** 2 + (yy - p[1]) ** 2 + (xx - p[2]) ** 2) < max(2.0, 0.3 * dmax) ** 2)
        else:  # popcorn: several small dense blobs
            sel = np.zeros_like(m)
            pts = np.argwhere(m)
            for p in pts[rng.choice(len(pts), size=min(len(pts), 6), replace=False)]:
                sel |= ((zz - p[0]) ** 2 + (yy - p[1]) ** 2 + (xx - p[2]) ** 2) < rng.uniform(1.0, 2.2) ** 2
            sel &= m
        value[sel] = calc_hu

    alpha = ndimage.gaussian_filter(m.astype(np.float32), app.edge_sigma_mm)
    spic = _spicules(m, app.spiculation, rng)
    alpha = np.clip(np.maximum(alpha, spic * 0.6), 0.0, 1.0)
    value = np.where(m, value, np.where(spic > 0, app.solid_hu if app.texture != "ground-glass" else app.ggo_hu, value))
    return alpha.astype(np.float32), value.astype(np.float32)


def insert_into(
    block: np.ndarray,
    spacing: tuple[float, float, float],
    center_zyx: tuple[float, float, float],
    alpha: np.ndarray,
    value: np.ndarray,
    noise_sigma_hu: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Blend a rendered 1 mm patch into ``block`` (HU, z-y-x, ``spacing`` mm) in place.

    The patch centre goes to the (continuous) voxel ``center_zyx`` of ``block``.
    ``block`` must be float32 (a working copy of the background region).
    Returns the nodule's fill fraction on the block grid (float32, z-y-x) —
    threshold it at 0.5 for a ground-truth mask.
    """
    if block.dtype != np.float32:
        raise TypeError("insert_into works on a float32 copy of the background")
    # Slice profile: the scanner integrates over the slice thickness (FWHM).
    sz = spacing[0]
    sig_z = max(0.0, sz / 2.355)
    a_src = ndimage.gaussian_filter1d(alpha, sig_z, axis=0) if sig_z > 0.5 else alpha
    av_src = ndimage.gaussian_filter1d(alpha * value, sig_z, axis=0) if sig_z > 0.5 else alpha * value

    half_mm = np.array(alpha.shape, float) / 2.0
    lo = np.floor(np.asarray(center_zyx) - half_mm / np.asarray(spacing)).astype(int)
    hi = np.ceil(np.asarray(center_zyx) + half_mm / np.asarray(spacing)).astype(int) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, block.shape)
    if np.any(hi <= lo):
        return np.zeros(block.shape, np.float32)
    grid = np.indices(tuple(hi - lo), dtype=np.float32)
    coords = [
        (grid[d] + lo[d] - center_zyx[d]) * spacing[d] + (alpha.shape[d] - 1) / 2.0 for d in range(3)
    ]
    a = ndimage.map_coordinates(a_src, coords, order=1, mode="constant", cval=0.0).astype(np.float32)
    av = ndimage.map_coordinates(av_src, coords, order=1, mode="constant", cval=0.0).astype(np.float32)
    v = np.where(a > 1e-4, av / np.maximum(a, 1e-4), 0.0).astype(np.float32)
    region = block[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    noise = ndimage.gaussian_filter(rng.normal(0, 1, region.shape).astype(np.float32), 0.6)
    noise *= noise_sigma_hu / max(float(noise.std()), 1e-6)
    region[...] = region * (1 - a) + v * a + noise * a
    full = np.zeros(block.shape, np.float32)
    full[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = a
    return full


def sample_location(
    lung_dist_mm: np.ndarray,
    radius_mm: float,
    rng: np.random.Generator,
    forbidden: np.ndarray | None = None,
    juxtapleural_p: float = 0.15,
) -> tuple[int, int, int] | None:
    """Pick a voxel for a nodule centre inside the lung.

    Args:
        lung_dist_mm: distance (mm) from each lung voxel to the lung boundary
            (0 outside the lung), e.g. ``distance_transform_edt(lung, sampling=spacing)``.
        radius_mm: the nodule's radius.
        forbidden: boolean mask of places to avoid (real nodules, earlier insertions).
        juxtapleural_p: probability of placing the nodule against the pleura
            (centre only ~0.6 radius deep) instead of fully inside.
    """
    depth = radius_mm * (0.6 if rng.random() < juxtapleural_p else 1.0) + 1.0
    ok = lung_dist_mm >= depth
    if forbidden is not None:
        ok &= ~forbidden
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return None
    return tuple(int(v) for v in np.unravel_index(int(idx[rng.integers(idx.size)]), ok.shape))  # type: ignore[return-value]


def thicken_slices(block: np.ndarray, spacing: tuple[float, float, float], thickness_mm: float
                   ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Simulate a thick-slice reconstruction: average over ``thickness_mm`` slabs, one slice per slab.

    Returns the thick block (z-y-x) and its spacing (z = thickness_mm).
    """
    factor = thickness_mm / spacing[0]
    if factor <= 1.0:
        return block, spacing
    sm = ndimage.uniform_filter1d(block.astype(np.float32), size=max(1, int(round(factor))), axis=0)
    zs = np.arange(0, block.shape[0], factor)
    out = ndimage.map_coordinates(sm, np.meshgrid(zs, np.arange(block.shape[1]), np.arange(block.shape[2]),
                                                  indexing="ij"), order=1, mode="nearest")
    return out.astype(np.float32), (thickness_mm, spacing[1], spacing[2])
