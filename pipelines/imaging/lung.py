"""Classical lung segmentation and lung/lobe localisation.

Used by lesion insertion (where a nodule may go), report generation (side and
lobe of a nodule) and, later, case analysis (the region the detector scans).

Method (threshold + connectivity, as in most classical CT lung pipelines):

1. work on a copy downsampled to about 2 mm (speed; the mask is
   smooth at that scale) — the result is returned at the input grid;
2. ``body`` = largest 3-D component of tissue (HU > -500), holes filled slice
   by slice (so lungs and airways are inside it);
3. ``air inside body`` = HU < -400 within ``body``;
4. the lungs are the one or two largest components of that air (the trachea
   and main bronchi join them and are removed by an opening when they form a
   thin bridge between the two lungs);
5. vessels and nodules inside the lung are restored by a per-slice hole fill
   and a 3-D closing (radius ~6 mm), so juxtapleural nodules stay inside.

Everything is z-y-x with spacing in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["LungMask", "segment_lungs", "closing_edt", "LOBES", "estimate_lobe", "LobeLocator"]

LOBES = ("RUL", "RML", "RLL", "LUL", "lingula", "LLL")


@dataclass(frozen=True, eq=False)
class LungMask:
    """Boolean lung masks on the input grid (z-y-x).

    Attributes:
        lungs: union of both lungs.
        right, left: each lung (patient right = smaller LPS x, i.e. +x is Left).
        volume_ml: lung volume in millilitres.
    """

    lungs: np.ndarray
    right: np.ndarray
    left: np.ndarray
    volume_ml: float


def ball_structure(radius_vox: tuple[int, int, int]) -> np.ndarray:
    rz, ry, rx = (max(0, int(r)) for r in radius_vox)
    z, y, x = np.ogrid[-rz : rz + 1, -ry : ry + 1, -rx : rx + 1]
    return ((z / max(rz, 1)) ** 2 + (y / max(ry, 1)) ** 2 + (x / max(rx, 1)) ** 2) <= 1.0


def _component_sizes(lab: np.ndarray, n: int) -> np.ndarray:
    """Voxel count of labels 1..n (``bincount``: one pass, unlike ``ndimage.sum_labels``)."""
    return np.bincount(lab.ravel(), minlength=n + 1)[1 : n + 1].astype(np.float64)


def closing_edt(mask: np.ndarray, radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """Binary closing by a Euclidean ball of ``radius_mm`` (anisotropic ``spacing``, mm, z-y-x).

    Dilation and erosion are thresholds of exact Euclidean distance transforms, O(N) whatever the
    radius, where ``ndimage.binary_closing`` with a ball costs O(N * ball volume) (seconds per lung
    at 1.5 mm).  The volume is padded by the radius so structures at the border close as if the
    outside were empty.
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask.copy()
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in spacing]
    # Work on the mask's bounding box plus the pad: the closing never reaches further, and the
    # pad's outer layer (> radius from the mask) bounds every erosion distance, so the result is
    # the same as on the whole volume, at a fraction of the cost for one lung.
    nz = [np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0] for ax in range(3)]
    box = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in nz)
    m = np.pad(mask[box], [(p, p) for p in pad])
    dil = ndimage.distance_transform_edt(~m, sampling=spacing) <= radius_mm
    closed = ndimage.distance_transform_edt(dil, sampling=spacing) > radius_mm
    out = np.zeros_like(mask)
    lo = [max(b.start - p, 0) for b, p in zip(box, pad, strict=True)]
    hi = [min(b.stop + p, n) for b, p, n in zip(box, pad, mask.shape, strict=True)]
    src = tuple(slice(a - b.start + p, e - b.start + p) for a, e, b, p in zip(lo, hi, box, pad, strict=True))
    out[tuple(slice(a, e) for a, e in zip(lo, hi, strict=True))] = closed[src]
    return out


def segment_lungs(
    hu: np.ndarray, spacing: tuple[float, float, float], x_axis_sign: float = 1.0, closing_mm: float = 6.0,
    working_mm: float = 2.0,
) -> LungMask:
    """Segment the lungs of a chest CT.

    Args:
        hu: HU volume, z-y-x.
        spacing: voxel size (z, y, x) in mm.
        x_axis_sign: +1 when increasing array x points to patient Left (the
            DICOM default, direction[:, 2] = +x LPS), -1 otherwise; used to tell
            right from left.
        closing_mm: radius of the 3-D closing that brings vessels and
            juxtapleural nodules into the mask.
        working_mm: the segmentation runs on a copy subsampled to about this voxel size
            (case analysis uses 3 mm: the mask only bounds the detector's search region and
            places findings in a lobe, and 3 mm is ~8x cheaper than 1.5 mm).
    """
    if hu.ndim != 3:
        raise ValueError(f"segment_lungs expects a 3-D z-y-x volume, got shape {hu.shape}")
    step = max(1, int(round(working_mm / max(spacing[1], 1e-3))))  # ~working_mm in-plane
    zstep = max(1, int(round(working_mm / max(spacing[0], 1e-3))))  # ~working_mm or coarser along z
    small = hu[::zstep, ::step, ::step]
    sp = (spacing[0] * zstep, spacing[1] * step, spacing[2] * step)

    tissue = small > -500
    lab, n = ndimage.label(tissue)
    if n == 0:
        empty = np.zeros(hu.shape, bool)
        return LungMask(empty, empty, empty, 0.0)
    sizes = _component_sizes(lab, n)
    body = lab == (int(np.argmax(sizes)) + 1)
    body = np.stack([ndimage.binary_fill_holes(s) for s in body])

    air = (small < -400) & body
    # Remove air touching the image border in-plane (outside the body, bowel gas in folds).
    lab, n = ndimage.label(air)
    if n == 0:
        empty = np.zeros(hu.shape, bool)
        return LungMask(empty, empty, empty, 0.0)
    voxel_ml = float(np.prod(sp)) / 1000.0
    sizes = _component_sizes(lab, n) * voxel_ml
    order = np.argsort(sizes)[::-1]
    keep = [int(i) + 1 for i in order[:2] if sizes[i] > 30.0]  # > 30 mL: a lung, not a bowel loop
    lungs = np.isin(lab, keep) if keep else np.zeros_like(air)

    # Two seeds, one per lung: the two largest components, or - when the lungs
    # touch (anterior junction, carina) - the two largest pieces left after
    # eroding until the bridge breaks.  Every lung voxel then goes to its
    # nearest seed (EDT indices), a watershed-like split.
    seeds = None
    if len(keep) == 2:
        seeds = (lab == keep[0], lab == keep[1])
    else:
        eroded = lungs
        for _ in range(8):
            eroded = ndimage.binary_erosion(eroded, structure=ball_structure((1, 1, 1)))
            lab2, n2 = ndimage.label(eroded)
            if n2 >= 2:
                s2 = _component_sizes(lab2, n2)
                o2 = np.argsort(s2)[::-1]
                if s2[o2[1]] > 0.15 * s2[o2[0]]:
                    seeds = (lab2 == int(o2[0]) + 1, lab2 == int(o2[1]) + 1)
                    break
    if seeds is None:
        x = np.arange(lungs.shape[2])[None, None, :]
        xs = np.nonzero(lungs)[2]
        mid = float(np.median(xs)) if xs.size else lungs.shape[2] / 2
        seeds = (lungs & (x <= mid), lungs & (x > mid))
    seed_lab = np.zeros(lungs.shape, np.int8)
    seed_lab[seeds[0]] = 1
    seed_lab[seeds[1]] = 2
    _, idx = ndimage.distance_transform_edt(seed_lab == 0, return_indices=True)
    nearest = seed_lab[idx[0], idx[1], idx[2]]
    parts = [lungs & (nearest == 1), lungs & (nearest == 2)]

    # Restore vessels / juxtapleural nodules in each lung separately (a closing
    # of the union would bridge the mediastinum): 3-D closing, per-slice fill.
    filled = []
    for part in parts:
        c = closing_edt(part, closing_mm, sp)
        filled.append(np.stack([ndimage.binary_fill_holes(sl) for sl in c]) & body)
    both = filled[0] & filled[1]
    filled[0] &= ~both | parts[0]
    filled[1] &= ~filled[0]
    cx = [float(np.nonzero(f)[2].mean()) if f.any() else 0.0 for f in filled]
    first_is_left = (cx[0] > cx[1]) if x_axis_sign > 0 else (cx[0] < cx[1])
    left, right = (filled[0], filled[1]) if first_is_left else (filled[1], filled[0])
    lungs = left | right

    def up(m: np.ndarray) -> np.ndarray:
        big = m
        if zstep > 1:
            big = np.repeat(big, zstep, axis=0)
        if step > 1:
            big = np.repeat(np.repeat(big, step, axis=1), step, axis=2)
        return big[: hu.shape[0], : hu.shape[1], : hu.shape[2]]

    lungs_f, right_f, left_f = up(lungs), up(right), up(left)
    return LungMask(lungs_f, right_f, left_f, float(lungs.sum()) * voxel_ml)


def estimate_lobe(point_zyx: tuple[float, float, float], lung: LungMask, y_axis_sign: float = 1.0,
                  z_axis_sign: float = 1.0) -> tuple[str | None, str | None]:
    """Side and lobe of a point, estimated from where it sits in its lung.

    A geometric approximation (no fissure detection): within the lung that
    contains (or is nearest to) the point, h = relative height from the lung
    base (0) to the apex (1) and a = relative anterior position (1 = most
    anterior).  Right lung: h > 0.62 -> RUL; 0.3 < h <= 0.62 and anterior
    (a > 0.5) -> RML; otherwise RLL.  Left lung: h > 0.55 -> LUL, except
    anterior mid-height (0.3 < h <= 0.55, a > 0.55) -> lingula; below -> LLL.
    The thresholds follow typical lobar volume fractions (RUL ~ 20-25 %,
    RML ~ 10 %, LUL ~ 50 % incl. lingula) and are an estimate: real fissures
    vary between patients.

    Args:
        point_zyx: voxel coordinates (z, y, x) of the point.
        y_axis_sign: +1 when increasing array y points Posterior (DICOM default).
        z_axis_sign: +1 when increasing array z points Superior.
    Returns:
        (side, lobe) with side "right"/"left", or (None, None) if no lung.
    """
    return LobeLocator(lung, y_axis_sign, z_axis_sign)(point_zyx)


class LobeLocator:
    """:func:`estimate_lobe` with the per-lung extents precomputed once (O(1) per point).

    Case analysis asks for the lobe of dozens of candidate peaks; each plain
    :func:`estimate_lobe` call would rescan the whole mask.
    """

    def __init__(self, lung: LungMask, y_axis_sign: float = 1.0, z_axis_sign: float = 1.0) -> None:
        self.y_axis_sign, self.z_axis_sign = y_axis_sign, z_axis_sign
        self.sides: list[tuple[str, np.ndarray, tuple[int, int], np.ndarray, np.ndarray, np.ndarray]] = []
        for side, m in (("right", lung.right), ("left", lung.left)):
            if not m.any():
                continue
            zs = np.nonzero(m.any(axis=(1, 2)))[0]
            rows = np.asarray(m.any(axis=2))  # (z, y): which rows of each slice hold lung
            has = rows.any(axis=1)
            ylo = np.where(has, rows.argmax(axis=1), 0)
            yhi = np.where(has, rows.shape[1] - 1 - rows[:, ::-1].argmax(axis=1), 0)
            allys = np.nonzero(m.any(axis=(0, 2)))[0]
            ylo[~has], yhi[~has] = allys.min(), allys.max()
            zz, yy, xx = np.nonzero(m[::4, ::4, ::4])
            centre = np.array([zz.mean(), yy.mean(), xx.mean()]) * 4
            self.sides.append((side, m, (int(zs.min()), int(zs.max())), ylo, yhi, centre))

    def _position(self, point_zyx: tuple[float, float, float] | np.ndarray) -> tuple[str, float, float] | None:
        """(side, h, a) of a point: relative height in its lung (0 base, 1 apex) and anteriority."""
        k, j, i = (int(round(float(v))) for v in point_zyx)
        best, best_d = None, float("inf")
        for entry in self.sides:
            m = entry[1]
            if 0 <= k < m.shape[0] and 0 <= j < m.shape[1] and 0 <= i < m.shape[2] and bool(m[k, j, i]):
                best = entry
                break
            d = float(np.sum((entry[5] - np.array([k, j, i])) ** 2))  # nearest lung centre as a fallback
            if d < best_d:
                best, best_d = entry, d
        if best is None:
            return None
        side, _, (zlo, zhi), ylo_a, yhi_a, _ = best
        h = (k - zlo) / max(zhi - zlo, 1)
        if self.z_axis_sign < 0:
            h = 1 - h
        kk = int(np.clip(k, zlo, zhi))
        ylo, yhi = int(ylo_a[kk]), int(yhi_a[kk])
        a = (yhi - j) / max(yhi - ylo, 1)  # 1 = most anterior when +y is posterior
        if self.y_axis_sign < 0:
            a = 1 - a
        return side, float(h), float(a)

    @staticmethod
    def _lobe(side: str, h: float, a: float) -> str:
        if side == "right":
            return "RUL" if h > 0.62 else ("RML" if h > 0.3 and a > 0.5 else "RLL")
        return "LUL" if h > 0.55 else ("lingula" if h > 0.3 and a > 0.55 else "LLL")

    def __call__(self, point_zyx: tuple[float, float, float] | np.ndarray) -> tuple[str | None, str | None]:
        pos = self._position(point_zyx)
        if pos is None:
            return None, None
        side, h, a = pos
        return side, self._lobe(side, h, a)

    def plausible(self, point_zyx: tuple[float, float, float] | np.ndarray, margin: float = 0.12) -> tuple[str, ...]:
        """Every lobe the point could be in when its relative height and anteriority are uncertain
        by ``margin`` (fissures vary between patients; this rule has none): the lobes of the
        point moved by +-margin in h and a."""
        pos = self._position(point_zyx)
        if pos is None:
            return ()
        side, h, a = pos
        out = {self._lobe(side, h + dh, a + da) for dh in (-margin, 0.0, margin) for da in (-margin, 0.0, margin)}
        return tuple(sorted(out))
