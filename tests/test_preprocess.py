"""Preprocessing to the model grid, checked against SimpleITK as an independent resampler."""

from __future__ import annotations

import numpy as np
import pytest

from lungfuse.pipelines.core.geometry import affine_from
from lungfuse.pipelines.imaging.preprocess import to_model_grid

sitk = pytest.importorskip("SimpleITK")


def _to_sitk(arr: np.ndarray, affine: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.float32))  # numpy z-y-x -> ITK x-y-z
    sp = np.linalg.norm(affine[:3, :3], axis=0)  # per array axis z, y, x
    direction_zyx = affine[:3, :3] / sp
    img.SetSpacing(tuple(float(v) for v in sp[::-1]))
    img.SetOrigin(tuple(float(v) for v in affine[:3, 3]))
    img.SetDirection(tuple(float(v) for v in direction_zyx[:, ::-1].ravel()))
    return img


@pytest.mark.parametrize("flip_y", [False, True])
def test_model_grid_matches_simpleitk(flip_y: bool) -> None:
    rng = np.random.default_rng(0)
    # smooth random volume (linear interpolation of smooth data is comparable across libraries)
    from scipy import ndimage

    hu = ndimage.gaussian_filter(rng.normal(0, 300, (30, 64, 72)), 2.0).astype(np.float32)
    spacing = (2.5, 0.7, 0.8)
    direction = np.stack([[0, 0, 1.0], [0, -1.0 if flip_y else 1.0, 0], [1.0, 0, 0]], axis=1)
    aff = affine_from((-20.0, 15.0, -100.0), spacing, direction)
    g = to_model_grid(hu, spacing, aff)
    assert np.allclose(g.spacing, 1.5, rtol=0.02)
    # canonical orientation: +y of the grid points Posterior (+y LPS)
    assert g.affine[1, 1] > 0 and g.affine[2, 0] > 0 and g.affine[0, 2] > 0
    ref = sitk.Resample(_to_sitk(hu, aff), _to_sitk(g.array, g.affine), sitk.Transform(), sitk.sitkLinear, 0.0,
                        sitk.sitkFloat32)
    r = sitk.GetArrayFromImage(ref)
    inner = (slice(1, -1),) * 3  # the border is where the two libraries' edge handling differs
    np.testing.assert_allclose(g.array[inner], r[inner], atol=1e-2 * float(np.abs(hu).max()))
    # to_source maps a grid voxel to the source voxel at the same LPS point
    k = np.array([5.0, 10.0, 20.0])
    src = g.source_voxel(k)
    np.testing.assert_allclose(aff[:3, :3] @ src + aff[:3, 3], g.lps(k), atol=1e-6)
