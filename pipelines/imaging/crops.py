"""Nodule-centred crops: the one definition shared by training, evaluation and analysis.

A crop is ``CROP_SIZE``^3 voxels at ``CROP_SPACING_MM`` isotropic (z-y-x),
sampled by trilinear interpolation from a HU volume of any spacing, centred on
a (continuous) voxel position.  Outside the volume it reads -1000 HU (air).
Optional rotation and flips are the training augmentation; inference uses
neither.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import ScaleIntensityRange
from scipy import ndimage

__all__ = ["CROP_SIZE", "CROP_SPACING_MM", "HU_WINDOW", "extract_crop", "normalize_hu", "random_rotation"]

CROP_SIZE = 32
CROP_SPACING_MM = 1.25  # 40 mm field of view: holds all but the largest (> 35 mm) nodules
HU_WINDOW = (-1000.0, 400.0)


# MONAI's windowing transform (array version), the one HU window of every model input.
_WINDOW = ScaleIntensityRange(a_min=HU_WINDOW[0], a_max=HU_WINDOW[1], b_min=0.0, b_max=1.0, clip=True, dtype=np.float32)


def normalize_hu(x: np.ndarray) -> np.ndarray:
    """HU -> [0, 1] over the lung/soft-tissue window ``HU_WINDOW`` (clipped), float32 (MONAI
    ``ScaleIntensityRange``; numerically identical to ``clip((x - lo) / (hi - lo), 0, 1)``)."""
    return np.asarray(_WINDOW(np.asarray(x, np.float32)))


def random_rotation(rng: np.random.Generator, max_deg: float = 180.0) -> np.ndarray:
    """A random 3x3 rotation (z-y-x frame): uniform axis, angle up to ``max_deg``."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    ang = np.radians(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(ang) * k + (1 - np.cos(ang)) * (k @ k)


def extract_crop(
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    center_zyx: Sequence[float] | np.ndarray,
    size: int = CROP_SIZE,
    crop_spacing: float = CROP_SPACING_MM,
    rotation: np.ndarray | None = None,
    flips: tuple[bool, bool, bool] = (False, False, False),
) -> np.ndarray:
    """Sample a ``size``^3 crop at ``crop_spacing`` mm around ``center_zyx`` (voxels of ``hu``).

    Args:
        hu: HU volume z-y-x (int16 or float32).
        spacing: its voxel size (z, y, x), mm.
        center_zyx: crop centre in voxel coordinates of ``hu``.
        rotation: optional 3x3 rotation applied to the sampling grid (mm frame).
        flips: flip the crop along z, y, x.
    Returns:
        float32 HU crop, shape (size, size, size).
    """
    offs = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) * crop_spacing  # mm
    g = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), axis=0).reshape(3, -1)
    if rotation is not None:
        g = rotation.astype(np.float32) @ g
    sp = np.asarray(spacing, np.float32)[:, None]
    coords = g / sp + np.asarray(center_zyx, np.float32)[:, None]
    # Only the bounding region is converted to float (the volume may be large).
    lo = np.maximum(np.floor(coords.min(axis=1)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(coords.max(axis=1)).astype(int) + 2, hu.shape)
    if np.any(hi <= lo):
        return np.full((size,) * 3, HU_WINDOW[0], np.float32)
    sub = hu[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float32)
    out = ndimage.map_coordinates(sub, coords - lo[:, None], order=1, mode="constant", cval=-1000.0)
    out = out.reshape((size,) * 3).astype(np.float32)
    for axis, f in enumerate(flips):
        if f:
            out = np.flip(out, axis=axis)
    return np.ascontiguousarray(out)
