"""NIfTI (``.nii`` / ``.nii.gz``) -> :class:`CTVolume`, through nibabel (RAS on disk, LPS z-y-x here)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np

from lungfuse.pipelines.core.errors import IngestError
from lungfuse.pipelines.core.geometry import ras_affine_to_lps_zyx
from lungfuse.pipelines.core.volume import CTVolume, QualityRecord
from lungfuse.pipelines.io.noise import estimate_noise_sigma
from lungfuse.pipelines.io.stack import is_integral

__all__ = ["load_nifti"]


def load_nifti(path: Path, estimate_noise: bool) -> CTVolume:
    """NIfTI through nibabel; values are taken as HU (scl_slope/inter applied by nibabel)."""
    import nibabel as nib

    try:
        # a .nii / .nii.gz name: nibabel gives a Nifti1Image (or its subclass Nifti2Image)
        img = cast("nib.nifti1.Nifti1Image", nib.load(str(path)))
    except Exception as exc:  # noqa: BLE001 - nibabel raises ImageFileError, EOFError, gzip/zlib errors...
        raise IngestError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})", path) from exc
    if len(img.shape) < 3:
        raise IngestError(f"{path}: NIfTI image has {len(img.shape)} dimensions, expected 3")
    dataobj = img.dataobj
    slope = getattr(dataobj, "slope", 1.0)
    inter = getattr(dataobj, "inter", 0.0)
    try:
        raw = np.asanyarray(dataobj.get_unscaled() if hasattr(dataobj, "get_unscaled") else dataobj)
    except (OSError, EOFError, ValueError) as exc:  # truncated data: the header promised more voxels
        raise IngestError(f"{path}: NIfTI voxel data unreadable ({type(exc).__name__}: {exc})", path) from exc
    if raw.ndim > 3:
        raw = raw[..., 0]
    arr_ijk = raw
    dtype: type[np.int16] | type[np.float32]
    hu_ijk: np.ndarray
    if np.issubdtype(raw.dtype, np.integer) and slope == 1.0 and is_integral(inter or 0):
        hu_ijk = arr_ijk.astype(np.int16, copy=False)
        if inter:
            hu_ijk = hu_ijk + np.int16(inter)
        dtype = np.int16
    else:
        hu_ijk = arr_ijk.astype(np.float32) * np.float32(slope) + np.float32(inter or 0)
        dtype = np.float32
    hu = np.ascontiguousarray(np.transpose(hu_ijk, (2, 1, 0))).astype(dtype, copy=False)
    aff = ras_affine_to_lps_zyx(img.affine)
    spacing = tuple(float(np.linalg.norm(aff[:3, c])) for c in range(3))
    direction = aff[:3, :3] / np.array(spacing)[None, :]
    origin = tuple(float(v) for v in aff[:3, 3])
    positions = origin + np.outer(np.arange(hu.shape[0]) * spacing[0], direction[:, 0])
    zooms = img.header.get_zooms()
    noise = estimate_noise_sigma(hu) if estimate_noise else None
    quality = QualityRecord(noise, float(zooms[2]), spacing[0])
    return CTVolume(
        hu=hu, spacing=spacing, origin=origin, direction=direction, slice_positions=positions,  # type: ignore[arg-type]
        sop_instance_uids=tuple("" for _ in range(hu.shape[0])), quality=quality, source=str(path),
        meta={"format": "nifti", "descrip": str(img.header.get("descrip", b""))},
    )
