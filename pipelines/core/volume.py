"""The CT volume and its acquisition-quality record: the domain types every loader returns.

:class:`CTVolume` is what :func:`lungfuse.pipelines.io.dicom.load_ct` gives back
for any input (DICOM series, enhanced multi-frame CT, NIfTI); the imaging,
inference and analysis layers consume it.  Arrays are z-y-x, positions LPS mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lungfuse.pipelines.core.geometry import affine_from, orientation_code

__all__ = ["CTVolume", "QualityRecord", "VolumeWarning"]


@dataclass(frozen=True)
class VolumeWarning:
    """A problem found while loading, attached to the volume.

    ``code`` is a stable machine-readable key (``gap``, ``uneven_spacing``,
    ``gantry_tilt``, ``oblique``, ``duplicate_position``, ``mixed_size``,
    ``skipped_file``, ``scout_excluded``, ``other_series``, ``padding``...).
    """

    code: str
    message: str
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "files": list(self.files)}


@dataclass(frozen=True)
class QualityRecord:
    """Acquisition-quality facts measured on the volume (EAF consumes these).

    Attributes:
        noise_sigma_hu: image noise, HU; the median local standard deviation in
            homogeneous soft-tissue patches (see :func:`lungfuse.pipelines.io.noise.estimate_noise_sigma`).
        slice_thickness_mm: nominal reconstructed thickness (DICOM SliceThickness),
            or the slice spacing when the tag is absent.
        slice_spacing_mm: median distance between adjacent slice positions.
        gaps: ``(after_slice_index, missing_mm)`` for each gap in the stack.
        tilt_deg: gantry tilt, the angle between the slice normal and the
            stacking direction (0 for a normal axial series).
        oblique: True when the image plane is not aligned with the patient axes.
        uniform: True when slices are evenly spaced (the affine is then exact for
            every slice; otherwise use :meth:`CTVolume.resample_uniform`).
        warnings: every :class:`VolumeWarning` raised while loading.
    """

    noise_sigma_hu: float | None
    slice_thickness_mm: float
    slice_spacing_mm: float
    gaps: tuple[tuple[int, float], ...] = ()
    tilt_deg: float = 0.0
    oblique: bool = False
    uniform: bool = True
    warnings: tuple[VolumeWarning, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "noise_sigma_hu": self.noise_sigma_hu,
            "slice_thickness_mm": self.slice_thickness_mm,
            "slice_spacing_mm": self.slice_spacing_mm,
            "gaps": [list(g) for g in self.gaps],
            "tilt_deg": self.tilt_deg,
            "oblique": self.oblique,
            "uniform": self.uniform,
            "warnings": [w.to_dict() for w in self.warnings],
        }


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT volume in Hounsfield units with its patient geometry.

    Attributes:
        hu: HU values, axis order **z-y-x** (slice, row, column), slices ordered
            along the stacking direction (increasing index = +direction[:, 0]).
            dtype ``int16`` when every slice has RescaleSlope 1 and an integer
            intercept (the usual case; no float copy is ever made), else ``float32``.
        spacing: voxel size (z, y, x) in mm; z from the slice positions.
        origin: LPS position (x, y, z), mm, of the centre of voxel (0, 0, 0).
        direction: 3x3, columns = LPS unit vectors of the z, y, x array axes.
        slice_positions: LPS position (x, y, z) of each slice's first voxel,
            shape (n_slices, 3); the exact geometry even when spacing is uneven.
        sop_instance_uids: SOP Instance UID of each slice, in array order.
        frame_numbers: for multi-frame sources, the 1-based frame number of each
            slice within its SOP instance; ``None`` for single-frame series.
        study_instance_uid, series_instance_uid, patient_id,
        frame_of_reference_uid: identifiers (empty string when unknown).
        source: where the volume came from (folder or file path).
        source_files: the file of each slice, in array order.
        quality: the :class:`QualityRecord`.
        meta: other header facts (series description, manufacturer, kVp...).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    slice_positions: np.ndarray
    sop_instance_uids: tuple[str, ...]
    quality: QualityRecord
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    patient_id: str = ""
    frame_of_reference_uid: str = ""
    source: str = ""
    source_files: tuple[str, ...] = ()
    frame_numbers: tuple[int, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.hu, np.ndarray) or self.hu.ndim != 3:
            raise TypeError(f"CTVolume.hu must be a 3-D numpy array (z, y, x); got {type(self.hu)}")
        if self.hu.dtype not in (np.int16, np.float32):
            raise TypeError(f"CTVolume.hu dtype must be int16 or float32, got {self.hu.dtype}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"CTVolume.spacing must be three positive mm values (z, y, x), got {self.spacing}")
        if np.asarray(self.direction).shape != (3, 3):
            raise ValueError("CTVolume.direction must be 3x3 (columns z, y, x)")
        n = self.hu.shape[0]
        if len(self.sop_instance_uids) != n:
            raise ValueError(f"CTVolume needs one SOP Instance UID per slice: {len(self.sop_instance_uids)} for {n} slices")
        if np.asarray(self.slice_positions).shape != (n, 3):
            raise ValueError("CTVolume.slice_positions must have shape (n_slices, 3)")

    # -- geometry -----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape, z-y-x."""
        return tuple(int(s) for s in self.hu.shape)  # type: ignore[return-value]

    @property
    def n_slices(self) -> int:
        return int(self.hu.shape[0])

    @property
    def affine(self) -> np.ndarray:
        """4x4 map from voxel (k, j, i) to LPS (x, y, z) mm; exact when ``quality.uniform``."""
        return affine_from(self.origin, self.spacing, self.direction)

    @property
    def orientation(self) -> str:
        """Patient-direction letters of the array axes z, y, x (e.g. ``"SPL"``)."""
        return orientation_code(self.direction)

    @property
    def warnings(self) -> tuple[VolumeWarning, ...]:
        return self.quality.warnings

    def hu_range(self) -> tuple[float, float]:
        return float(self.hu.min()), float(self.hu.max())

    def resample_uniform(self, spacing_z: float | None = None) -> CTVolume:
        """Return a copy on an evenly spaced slice grid (linear interpolation along z).

        Use it when ``quality.uniform`` is False (gaps or uneven spacing).  Each
        new slice is interpolated between the two acquired slices around it,
        using their real positions along the stacking direction.  The output is
        float32 (interpolated values are not integers); SOP UIDs of new slices
        are those of the nearest acquired slice.
        """
        dz = float(spacing_z or self.quality.slice_spacing_mm)
        stack = self.direction[:, 0]
        s = (self.slice_positions - self.slice_positions[0]) @ stack
        n_new = int(np.floor(s[-1] / dz + 1e-6)) + 1
        targets = np.arange(n_new) * dz
        idx = np.clip(np.searchsorted(s, targets, side="right") - 1, 0, len(s) - 2)
        w = ((targets - s[idx]) / np.maximum(s[idx + 1] - s[idx], 1e-9)).astype(np.float32)
        out = np.empty((n_new,) + self.hu.shape[1:], dtype=np.float32)
        for n, (k, wk) in enumerate(zip(idx, w, strict=True)):
            np.multiply(self.hu[k], 1.0 - wk, out=out[n], casting="unsafe")
            out[n] += wk * self.hu[k + 1]
        nearest = np.clip(np.rint(idx + w).astype(int), 0, len(s) - 1)
        positions = self.slice_positions[0] + np.outer(targets, stack)
        q = self.quality
        quality = QualityRecord(
            q.noise_sigma_hu, q.slice_thickness_mm, dz, (), q.tilt_deg, q.oblique, True,
            q.warnings + (VolumeWarning("resampled", f"resampled to a uniform {dz:.3f} mm slice grid"),),
        )
        return CTVolume(
            out, (dz, self.spacing[1], self.spacing[2]), self.origin, self.direction, positions,
            tuple(self.sop_instance_uids[i] for i in nearest), quality, self.study_instance_uid,
            self.series_instance_uid, self.patient_id, self.frame_of_reference_uid, self.source,
            tuple(self.source_files[i] for i in nearest) if self.source_files else (), None, dict(self.meta),
        )

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (what ``lungfuse inspect`` prints)."""
        lo, hi = self.hu_range()
        return {
            "source": self.source,
            "patient_id": self.patient_id,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "n_slices": self.n_slices,
            "shape": list(self.shape),
            "axis_order": "z-y-x",
            "spacing_mm": [round(float(s), 6) for s in self.spacing],
            "origin_lps_mm": [round(float(o), 4) for o in self.origin],
            "direction": np.round(self.direction, 6).tolist(),
            "orientation": self.orientation,
            "extent_mm": [round(float(s * n), 2) for s, n in zip(self.spacing, self.shape, strict=True)],
            "dtype": str(self.hu.dtype),
            "hu_range": [lo, hi],
            "quality": self.quality.to_dict(),
            "warnings": [w.to_dict() for w in self.warnings],
            "meta": self.meta,
        }
