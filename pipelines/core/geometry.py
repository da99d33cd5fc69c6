"""Image geometry: the one home of voxel <-> patient (LPS) coordinate maths.

Conventions used throughout LungFuse
-------------------------------------
* Arrays are indexed **z-y-x** (slice, row, column): ``array[k, j, i]``.
* Patient coordinates are DICOM **LPS** millimetres, written **x-y-z**
  (x towards the patient's Left, y towards Posterior, z towards Superior/head).
* ``spacing`` is given in array order (z, y, x), in mm.
* ``origin`` is the LPS position (x, y, z) of the *centre* of voxel (0, 0, 0).
* ``direction`` is a 3x3 matrix whose **columns** are the LPS unit vectors along
  the array axes z, y and x, in that order.  For a plain axial series with
  ImageOrientationPatient ``[1,0,0, 0,1,0]`` whose slices are stored feet to head,
  the columns are ``[0,0,1]``, ``[0,1,0]``, ``[1,0,0]``.  With gantry tilt the z
  column is the real slice-stacking direction, so it is not orthogonal to the
  other two (the volume is sheared, as acquired).
* ``affine`` is the 4x4 matrix with ``affine @ [k, j, i, 1] = [x, y, z, 1]``.

SimpleITK/ITK and NIfTI use x-y-z array order instead; the conversion helpers
here are the only place where the orders are swapped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "affine_from",
    "voxel_to_lps",
    "lps_to_voxel",
    "direction_from_iop",
    "ras_affine_to_lps_zyx",
    "sitk_direction_to_zyx",
    "orientation_code",
]


def affine_from(
    origin: Sequence[float], spacing: Sequence[float], direction: np.ndarray
) -> np.ndarray:
    """Build the 4x4 voxel (k, j, i) -> LPS (x, y, z) affine.

    Args:
        origin: LPS position of voxel (0, 0, 0) centre, mm, x-y-z.
        spacing: voxel size along the array axes, mm, z-y-x.
        direction: 3x3, columns = LPS unit vectors of array axes z, y, x.
    """
    direction = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = direction * np.asarray(spacing, dtype=np.float64)[None, :]
    aff[:3, 3] = np.asarray(origin, dtype=np.float64)
    return aff


def voxel_to_lps(affine: np.ndarray, zyx: np.ndarray | Sequence[float]) -> np.ndarray:
    """Map voxel indices (..., 3) in z-y-x order to LPS mm (..., 3) in x-y-z order."""
    pts = np.asarray(zyx, dtype=np.float64)
    return pts @ affine[:3, :3].T + affine[:3, 3]


def lps_to_voxel(affine: np.ndarray, xyz: np.ndarray | Sequence[float]) -> np.ndarray:
    """Map LPS mm (..., 3) in x-y-z order to continuous voxel indices (..., 3), z-y-x."""
    pts = np.asarray(xyz, dtype=np.float64)
    inv = np.linalg.inv(affine)
    return pts @ inv[:3, :3].T + inv[:3, 3]


def direction_from_iop(iop: Sequence[float], stack: np.ndarray | None = None) -> np.ndarray:
    """Direction matrix (columns z, y, x) from DICOM ImageOrientationPatient.

    Args:
        iop: the six direction cosines: first the row direction (the LPS
            direction of increasing *column* index, i.e. array x), then the
            column direction (increasing *row* index, array y).
        stack: optional unit vector of the real slice-stacking direction (LPS).
            Defaults to the slice normal ``row x col``.  Passing the measured
            stacking vector keeps gantry-tilted series geometrically correct.
    """
    cosines = np.asarray(iop, dtype=np.float64)
    row, col = cosines[:3], cosines[3:6]
    normal = np.cross(row, col)
    z = normal if stack is None else np.asarray(stack, dtype=np.float64)
    return np.stack([z, col, row], axis=1)


def ras_affine_to_lps_zyx(affine_ras_ijk: np.ndarray) -> np.ndarray:
    """Convert a NIfTI affine ((i, j, k) -> RAS) into our z-y-x -> LPS affine.

    NIfTI stores arrays x-y-z (i fastest in the file) and maps them to RAS;
    we flip x and y to get LPS and swap the index order to (k, j, i).
    """
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps_ijk = flip @ np.asarray(affine_ras_ijk, dtype=np.float64)
    perm = np.zeros((4, 4))
    perm[0, 2] = perm[1, 1] = perm[2, 0] = perm[3, 3] = 1.0  # (k, j, i) -> (i, j, k)
    return lps_ijk @ perm


def sitk_direction_to_zyx(direction_xyz_rowmajor: Sequence[float]) -> np.ndarray:
    """SimpleITK's row-major 3x3 direction (columns = axes x, y, z) -> ours (columns z, y, x)."""
    d = np.asarray(direction_xyz_rowmajor, dtype=np.float64).reshape(3, 3)
    return d[:, ::-1]


def orientation_code(direction: np.ndarray) -> str:
    """Three-letter code of the patient direction each array axis (z, y, x) points to.

    E.g. ``"SPL"`` for an axial series stored feet-to-head with rows running
    anterior-to-posterior and columns right-to-left (the DICOM default).
    """
    letters = (("L", "R"), ("P", "A"), ("S", "I"))
    out = []
    for axis in range(3):
        v = np.asarray(direction)[:, axis]
        dom = int(np.argmax(np.abs(v)))
        out.append(letters[dom][0] if v[dom] > 0 else letters[dom][1])
    return "".join(out)
