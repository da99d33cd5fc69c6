"""Preprocessing to the detector's grid (MONAI transforms): orientation, spacing, HU window.

``to_model_grid`` puts any CT on one canonical grid:

1. **orientation** — array axes flipped (MONAI ``Flip``) so that z points
   Superior, y Posterior and x Left (the DICOM default "SPL" stack); oblique
   volumes keep their obliquity (only flips, no rotation);
2. **spacing** — resampled to ``spacing`` mm isotropic with MONAI ``Spacing``
   (trilinear);
3. the HU window is applied by the consumer (:func:`crops.normalize_hu`), so
   the grid keeps real HU for measurements.

The returned :class:`ModelGrid` carries the exact voxel -> LPS affine of the
new grid, so every result maps back to patient coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Flip, Spacing

from .geometry import voxel_to_lps

__all__ = ["DETECTION_SPACING_MM", "ModelGrid", "to_model_grid"]

DETECTION_SPACING_MM = 1.5


@dataclass(frozen=True, eq=False)
class ModelGrid:
    """A CT on the model grid.

    Attributes:
        array: HU, float32, z-y-x, canonical orientation (z->S, y->P, x->L).
        spacing: voxel size (z, y, x), mm.
        affine: 4x4, model voxel (k, j, i) -> LPS (x, y, z) mm.
        to_source: 4x4, model voxel -> voxel of the source array (z-y-x).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    to_source: np.ndarray

    def lps(self, zyx: np.ndarray | tuple[float, float, float]) -> np.ndarray:
        return voxel_to_lps(self.affine, zyx)

    def source_voxel(self, zyx: np.ndarray | tuple[float, float, float]) -> np.ndarray:
        return voxel_to_lps(self.to_source, zyx)  # same linear map, different target frame

    def from_source_voxel(self, zyx: np.ndarray | tuple[float, float, float]) -> np.ndarray:
        inv = np.linalg.inv(self.to_source)
        return np.asarray(zyx, float) @ inv[:3, :3].T + inv[:3, 3]


def to_model_grid(
    hu: np.ndarray, spacing: tuple[float, float, float], affine: np.ndarray, target_mm: float = DETECTION_SPACING_MM
) -> ModelGrid:
    """Resample a HU volume (z-y-x, ``spacing`` mm, voxel->LPS ``affine``) to the model grid."""
    direction = affine[:3, :3] / np.asarray(spacing)[None, :]
    flips = [axis for axis in range(3) if direction[int(np.argmax(np.abs(direction[:, axis]))), axis] < 0]
    src = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32))[None]  # (1, z, y, x)
    to_src = np.eye(4)
    if flips:
        src = Flip(spatial_axis=flips)(src)
        for axis in flips:
            f = np.eye(4)
            f[axis, axis] = -1.0
            f[axis, 3] = hu.shape[axis] - 1
            to_src = to_src @ f
    # Spacing works in the array-index frame scaled by the voxel size: the
    # output affine then tells exactly which input point each output voxel sits on.
    in_aff = torch.as_tensor(np.diag([*spacing, 1.0]), dtype=torch.float64)
    mt = MetaTensor(src, affine=in_aff)
    out = Spacing(pixdim=(target_mm,) * 3, mode="bilinear", padding_mode="border", dtype=torch.float32)(mt)
    out_aff = np.asarray(out.affine, dtype=np.float64)
    model_to_flipped = np.linalg.inv(in_aff.numpy()) @ out_aff
    to_source = to_src @ model_to_flipped
    arr = np.ascontiguousarray(out.array[0] if hasattr(out, "array") else out[0].numpy(), dtype=np.float32)
    return ModelGrid(arr, (target_mm,) * 3, affine @ to_source, to_source)  # type: ignore[arg-type]
