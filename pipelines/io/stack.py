"""What every CT loader shares once its slices are known: order them, check the stack's geometry
(spacing, gaps, duplicates, gantry tilt, obliquity) and turn stored values into HU.

Slices are ordered by their position along the slice normal, never by file name
or InstanceNumber, and the z spacing comes from the positions, not from
SliceThickness.  Positions are LPS mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lungfuse.pipelines.core.volume import QualityRecord, VolumeWarning

__all__ = ["ANGLE_TOL_DEG", "POS_TOL_MM", "SPACING_REL_TOL", "is_integral", "rescale_into", "stack_geometry"]

#: Tolerances (mm / degrees) for geometry checks; chosen well above DICOM's
#: float rounding (positions are written with ~6 decimals) and well below any
#: real slice spacing.
POS_TOL_MM = 0.01
SPACING_REL_TOL = 0.05
ANGLE_TOL_DEG = 0.5


def rescale_into(out: np.ndarray, stored: np.ndarray, slope: float, intercept: float) -> None:
    """Write ``stored * slope + intercept`` into ``out`` (one slice) without float64 temporaries."""
    if out.dtype == np.int16:
        if stored.dtype == np.int16:
            out[...] = stored
        else:
            np.copyto(out, np.clip(stored, -32768, 32767), casting="unsafe")
        if intercept:
            out += np.int16(intercept)
    else:
        np.multiply(stored, np.float32(slope), out=out, casting="unsafe")
        out += np.float32(intercept)


def is_integral(x: float) -> bool:
    return abs(x - round(x)) < 1e-6


# ---------------------------------------------------------------------------
# Geometry checks on a stack
# ---------------------------------------------------------------------------
def stack_geometry(
    ipps: np.ndarray, iop: tuple[float, ...], thickness: float | None, files: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, float, list[VolumeWarning], QualityRecord]:
    """Order slices and measure spacing, gaps, tilt, duplicates.

    Returns (order, keep_mask_in_sorted_order, dz, warnings, partial quality).
    """
    warns: list[VolumeWarning] = []
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:6])
    normal = np.cross(row, col)
    s = ipps @ normal
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    ipp_sorted = ipps[order]

    # Duplicated positions: keep the first file at each position, warn with the others.
    keep = np.ones(len(order), dtype=bool)
    diffs = np.diff(s_sorted)
    dup_idx = np.nonzero(np.abs(diffs) < POS_TOL_MM)[0]
    for j in dup_idx:
        keep[j + 1] = False
    if len(dup_idx):
        dropped = [files[order[i + 1]] for i in dup_idx]
        warns.append(VolumeWarning(
            "duplicate_position",
            f"{len(dup_idx)} slice(s) duplicate another slice's position (e.g. z={s_sorted[dup_idx[0]]:.2f} mm); "
            f"kept the first of each, dropped {', '.join(Path(p).name for p in dropped[:5])}"
            + (" ..." if len(dropped) > 5 else ""),
            tuple(dropped),
        ))
    s_k = s_sorted[keep]
    ipp_k = ipp_sorted[keep]
    if len(s_k) < 2:
        dz = float(thickness or 1.0)
        return order, keep, dz, warns, QualityRecord(None, float(thickness or dz), dz)

    d = np.diff(s_k)
    dz = float(np.median(d))

    # Gantry tilt: the stacking vector (first -> last slice) vs the slice normal.
    stack_vec = ipp_k[-1] - ipp_k[0]
    stack_unit = stack_vec / np.linalg.norm(stack_vec)
    tilt = float(np.degrees(np.arccos(np.clip(abs(stack_unit @ normal), -1, 1))))
    if tilt > ANGLE_TOL_DEG:
        warns.append(VolumeWarning(
            "gantry_tilt",
            f"gantry tilt of {tilt:.1f} deg: slices are sheared along the stacking direction; "
            "the affine follows the real stacking vector (as acquired, not de-tilted)",
        ))
    # Spacing along the stacking direction (differs from the normal spacing when tilted).
    dz_stack = float(np.median(np.linalg.norm(np.diff(ipp_k, axis=0), axis=1)))

    gaps: list[tuple[int, float]] = []
    for i, di in enumerate(d):
        if di > dz * (1 + 0.5):
            n_missing = int(round(di / dz)) - 1
            gaps.append((i, float(di - dz)))
            warns.append(VolumeWarning(
                "gap",
                f"gap of {di:.2f} mm between slices {i} and {i + 1} (z={s_k[i]:.2f} -> {s_k[i + 1]:.2f} mm; "
                f"about {max(n_missing, 1)} missing slice(s) at {dz:.2f} mm spacing)",
            ))
    uneven = np.abs(d - dz) > max(SPACING_REL_TOL * dz, POS_TOL_MM)
    uniform = not uneven.any()
    if not gaps and not uniform:
        warns.append(VolumeWarning(
            "uneven_spacing",
            f"uneven slice spacing: {d.min():.3f} to {d.max():.3f} mm (median {dz:.3f}); "
            "use CTVolume.resample_uniform() for an exact regular grid",
        ))
    elif gaps:
        warns.append(VolumeWarning(
            "uneven_spacing",
            "spacing is uneven because of the gap(s); use CTVolume.resample_uniform() to interpolate a regular grid",
        ))

    # Oblique: the image plane is not aligned with the patient axes.
    if max(1 - np.max(np.abs(row)), 1 - np.max(np.abs(col))) > 1 - np.cos(np.radians(ANGLE_TOL_DEG)):
        warns.append(VolumeWarning("oblique", f"oblique image orientation {tuple(round(v, 4) for v in iop)}"))
    oblique = any(w.code == "oblique" for w in warns)

    thick = float(thickness) if thickness else dz
    if thickness and abs(thickness - dz) > SPACING_REL_TOL * dz and thickness < dz:
        warns.append(VolumeWarning(
            "thickness_spacing",
            f"SliceThickness {thickness:.2f} mm differs from the measured spacing {dz:.2f} mm (gaps between slices)",
        ))
    quality = QualityRecord(None, thick, dz_stack if tilt > ANGLE_TOL_DEG else dz, tuple(gaps), tilt, oblique, uniform and not gaps)
    return order, keep, (dz_stack if tilt > ANGLE_TOL_DEG else dz), warns, quality
