"""Nodule measurement on the model grid: a local segmentation, sizes, volume and HU texture.

Research software, NOT for diagnostic use.

Method (classical, documented so a reader can reproduce it):

1. a cube of half-width ``max(0.75 * d_hint + 6 mm, 10 mm)`` around the candidate centre
   (``d_hint``: the detector's diameter estimate, mm) is cut from the HU grid (z-y-x, isotropic);
2. voxels above ``-600 HU`` are foreground (solid tissue and most ground glass; aerated lung
   is about -850 HU).  With a lung mask (the analysis passes its lung segmentation, whose
   closing takes juxtapleural nodules in) and the centre inside it, foreground outside the
   mask is dropped first, so a mass that abuts the pleura does not grow into the chest wall.
   The foreground is then opened with a 1-voxel ball so that thin vessels detach, or a
   2-voxel (3 mm) ball when ``d_hint`` >= 20 mm: pleural contact, spicules and vessels
   otherwise bridged a large mass out to the clip ball, so its size followed ``d_hint``.
   From their true centres and sizes, LIDC-IDRI-0001's 33 mm mass measured 45 mm (39 mm
   with the mask, 29 mm with both) and the demo's 32 mm nodule 38 mm (now 30 mm);
3. the connected component that contains (or lies nearest, within 3 mm of) the centre is the
   nodule, clipped to a ball of radius ``0.65 * d_hint + 3 mm``: the clip keeps a
   juxtapleural or juxtavascular nodule from leaking into the chest wall or a vessel tree;
4. measurements in mm: volume (voxel count x voxel volume); on the axial slice of largest
   area the *long axis* (largest Feret diameter) and the *short axis* (largest extent
   perpendicular to it), their mean (Lung-RADS v2022's mean diameter);
5. texture from the component's core (the component eroded by one voxel, or the whole
   component when that is empty): ``solid_fraction`` = share of core voxels > -300 HU,
   ``calcified_fraction`` = share > 200 HU; texture is ``solid`` when solid_fraction >= 0.8,
   ``part-solid`` when >= 0.15, else ``ground-glass``; ``calcified`` when
   calcified_fraction >= 0.1.

6. sub-solid nodules (``method = "subsolid"``): when steps 1-5 find nothing near the centre or a
   texture other than ``solid``, the -600 HU cut misses ground glass (LIDC-IDRI-0002's 31 mm
   ground-glass nodule, median -725 HU, fell back to the detector's 15.1 mm), so the nodule is
   segmented again on the grid smoothed by a 1.5 mm Gaussian, in a clip ball of radius
   ``size estimate + 6 mm`` (10-35 mm; the estimate is the larger of ``d_hint`` and step 4's long
   axis): the threshold is half-way between the lung's level (median of the ball's outer lung
   voxels) and the nodule's (smoothed maximum within 3 mm of the centre, or the median there
   when a vessel lifts the maximum 150 HU above it in a nodule of >= 10 mm; capped at -450 HU), at
   least -820 HU; nothing when these differ by < 60 HU.  The region is cut to the lung mask,
   opened with a 3 mm ball (1 voxel for a nodule too small to survive it), and the centre's
   component taken; while more than 10 % of its surface lies on the clip ball (a leak into a
   vessel, the pleura or dense lung) the threshold rises by 50 HU, up to -600 HU, after which
   step 5's answer stands.  Sizes and texture follow steps 4-5 on this component; a part-solid
   nodule's ``solid_component_mm`` is the mean of the axes of its largest cluster of voxels
   above -400 HU (Lung-RADS v2022 categorises part-solid nodules by the solid component's mean
   diameter).  Accuracy by texture, against the -600 HU method: ``bench/bench_size.py``,
   ``bench/results/size.json`` and ``docs/experiments/subsolid-size.md``.

When no foreground lies near the centre (a faint ground-glass nodule that step 6 cannot separate
from the lung either, or a false candidate) the measurement falls back to the detector's
diameter and a sphere's volume, and says so (``source = "detector"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from lungfuse.pipelines.imaging.lung import ball_structure

__all__ = ["NoduleMeasurement", "axial_axes", "measure_nodule", "FOREGROUND_HU", "SOLID_HU", "CALCIFIED_HU",
           "SOLID_COMPONENT_HU"]

FOREGROUND_HU = -600.0
SOLID_HU = -300.0
CALCIFIED_HU = 200.0
TEXTURES = ("solid", "part-solid", "ground-glass", "unknown")


@dataclass(frozen=True)
class NoduleMeasurement:
    """Measured nodule (grid voxels z-y-x; sizes mm, volume mm^3, HU).

    Attributes:
        centroid_zyx: centroid of the segmented component (grid voxels), or the input centre.
        bbox_lo, bbox_hi: component bounding box (grid voxels, hi exclusive); with
            ``source == "detector"`` the cube of the estimated diameter around the centre.
        volume_mm3: component volume (or the sphere of ``long_axis_mm`` when ``source == "detector"``).
        long_axis_mm, short_axis_mm, mean_diameter_mm: axial long and short axes and their mean.
        mean_hu: mean HU of the component.
        solid_fraction, calcified_fraction: shares of core voxels above -300 / 200 HU.
        texture: ``solid``, ``part-solid``, ``ground-glass``, or ``unknown`` (fallback).
        calcified: ``calcified_fraction >= 0.1``.
        source: ``segmentation`` or ``detector`` (fallback, see module docstring).
        method: ``threshold`` (steps 1-5, or the fallback) or ``subsolid`` (step 6).
        solid_component_mm: a part-solid nodule's solid component, mean diameter (mm; step 6),
            else None.
        n_voxels: component size.
        mask: the nodule's voxels (bool, z-y-x, the grid cut to ``bbox_lo:bbox_hi``): the
            segmented component, or with ``source == "detector"`` the ball of the estimated
            diameter; not part of :meth:`to_dict` (it is an array).
    """

    centroid_zyx: tuple[float, float, float]
    bbox_lo: tuple[int, int, int]
    bbox_hi: tuple[int, int, int]
    volume_mm3: float
    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    mean_hu: float
    solid_fraction: float
    calcified_fraction: float
    texture: str
    calcified: bool
    source: str
    n_voxels: int
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    solid_component_mm: float | None = None
    method: str = "threshold"

    def __post_init__(self) -> None:
        for name in ("volume_mm3", "long_axis_mm", "short_axis_mm", "mean_diameter_mm"):
            v = float(getattr(self, name))
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"NoduleMeasurement.{name} must be finite and >= 0, got {v!r}")
        if self.texture not in TEXTURES:
            raise ValueError(f"NoduleMeasurement.texture={self.texture!r} not in {TEXTURES}")
        if self.source not in ("segmentation", "detector"):
            raise ValueError(f"NoduleMeasurement.source={self.source!r}")
        if self.method not in ("threshold", "subsolid"):
            raise ValueError(f"NoduleMeasurement.method={self.method!r} not 'threshold' or 'subsolid'")
        if self.solid_component_mm is not None:
            v = float(self.solid_component_mm)
            if self.texture != "part-solid":
                raise ValueError(f"NoduleMeasurement.solid_component_mm applies to part-solid nodules only "
                                 f"(texture {self.texture!r})")
            if not np.isfinite(v) or v < 0 or v > self.mean_diameter_mm + 1e-6:
                raise ValueError(f"NoduleMeasurement.solid_component_mm={v!r} must be finite, >= 0 and "
                                 f"<= the mean diameter ({self.mean_diameter_mm:g} mm)")

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["mask"]
        for k in ("centroid_zyx", "bbox_lo", "bbox_hi"):
            d[k] = list(d[k])
        return d


def _float3(v: np.ndarray) -> tuple[float, float, float]:
    return float(v[0]), float(v[1]), float(v[2])


def _int3(v: np.ndarray) -> tuple[int, int, int]:
    return int(v[0]), int(v[1]), int(v[2])


def _feret(points_mm: np.ndarray) -> tuple[float, float]:
    """(long axis, short axis) of a 2-D point set (pixel centres, mm): the largest pairwise
    distance, and the largest extent perpendicular to it (both + 1 pixel for the pixel size
    is added by the caller)."""
    if len(points_mm) < 2:
        return 0.0, 0.0
    try:
        from scipy.spatial import ConvexHull

        hull = points_mm[ConvexHull(points_mm).vertices] if len(points_mm) >= 3 else points_mm
    except Exception:  # collinear points: the hull is degenerate
        hull = points_mm
    d = np.linalg.norm(hull[:, None, :] - hull[None, :, :], axis=-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    long_ax = float(d[i, j])
    if long_ax == 0:
        return 0.0, 0.0
    u = (hull[j] - hull[i]) / long_ax
    perp = np.array([-u[1], u[0]])
    proj = points_mm @ perp
    return long_ax, float(proj.max() - proj.min())


def axial_axes(mask: np.ndarray, spacing_mm: float) -> tuple[float, float]:
    """Lung-RADS v2022 axes of a 3-D mask (bool, z-y-x, isotropic ``spacing_mm``): on the axial
    slice of largest area, the long axis (largest Feret diameter) and the short axis (largest
    extent perpendicular to it), both mm, from pixel edge to edge (``+ spacing_mm`` on the
    centre-to-centre distances).  An empty mask gives ``(0.0, 0.0)``; short <= long always."""
    if not mask.any():
        return 0.0, 0.0
    k = int(np.argmax(mask.sum(axis=(1, 2))))
    long_ax, short_ax = _feret(np.argwhere(mask[k]).astype(float) * spacing_mm)
    long_ax += spacing_mm
    return long_ax, min(short_ax + spacing_mm, long_ax)


#: Nodules whose detector size estimate is at least this (mm) are opened with a 3 mm ball.
BIG_NODULE_MM = 20.0
#: Sub-solid segmentation (step 6 of the module docstring; every value chosen on the size bench's
#: ``inserted_tune`` set and LIDC-IDRI-0001/0002, never on LIDC-IDRI-0003):
#: the HU grid is smoothed by a Gaussian of this sigma (mm) first, because ground glass is only
#: ~100 HU above aerated lung (LIDC-IDRI-0002's 31 mm nodule: median -725 HU, its lung -833 HU) and
#: the voxel noise (~20-40 HU) would otherwise fragment it.
SUBSOLID_SMOOTH_MM = 1.5
#: The nodule's level is the smoothed maximum within 3 mm of the centre, capped at this (HU): a
#: part-solid nodule's solid core must not lift the threshold above its ground-glass rim ...
GROUND_GLASS_CAP_HU = -450.0
#: ... or their median, for a size estimate of >= 10 mm, when the maximum exceeds it by more than
#: this (HU): a vessel through the centre.  (The median always, or below 10 mm, made the tune set's
#: solid and part-solid nodules 0.1-0.5 mm MAE worse: a small nodule's 3 mm ball takes in lung.)
VESSEL_SPREAD_HU = 150.0
#: No sub-solid segmentation when the nodule's level is less than this (HU) above the lung's.
MIN_GROUND_GLASS_CONTRAST_HU = 60.0
#: The ground-glass threshold starts at the half-way point between lung and nodule levels (the
#: edge of a blurred step), never below this (HU) ...
GROUND_GLASS_MIN_HU = -820.0
#: ... and rises by this (HU) while the region leaks: while more than ``LEAK_SHELL_FRACTION`` of
#: its surface voxels lie on the clip ball's last 1.5 voxels (it ran into a vessel, the pleura or
#: dense dependent lung); at -600 HU and above the -600 HU method has already answered.
GROUND_GLASS_STEP_HU = 50.0
LEAK_SHELL_FRACTION = 0.10
#: The clip ball's radius is ``SUBSOLID_CLIP_FACTOR * size estimate + 6 mm`` (mm), within
#: [SUBSOLID_CLIP_MIN_MM, SUBSOLID_CLIP_MAX_MM]: the detector under-sizes ground glass
#: (LIDC-IDRI-0002's 31 mm nodule: estimate 15.1 mm), so the ball must reach about twice its estimate.
SUBSOLID_CLIP_FACTOR = 1.0
SUBSOLID_CLIP_MIN_MM = 10.0
SUBSOLID_CLIP_MAX_MM = 35.0
#: A part-solid nodule's solid component: its voxels above this (HU, unsmoothed).  Below -300 HU
#: because the slice profile (1.25-2.5 mm slices) pulls a small core's edge below it: at -300 HU the
#: inserted cores measured 2.7-3.1 mm small, at -400 HU 1.1-1.6 mm; -450 HU would be closer still but
#: is the densest ground glass the insertion renders, so it would call dense ground glass solid.
SOLID_COMPONENT_HU = -400.0
#: A solid -600 HU region gives way to the sub-solid one when that one is part-solid and its mean
#: diameter is larger by at least this (mm: 3 voxels, a ground-glass rim >= 2.25 mm each side).
#: On the tune set 2 mm and 3 mm also turned LIDC-IDRI-0001's solid 33 mm mass part-solid; 4.5 mm did not.
PART_SOLID_RIM_MM = 4.5
#: Solid-component voxels must number at least this many (1.5 mm grid) to count as a component.
MIN_SOLID_VOXELS = 2


def _classify(solid_fraction: float) -> str:
    return "solid" if solid_fraction >= 0.8 else ("part-solid" if solid_fraction >= 0.15 else "ground-glass")


def _grow(fg: np.ndarray, local_c: np.ndarray, clip_vox: float, open_radii: Sequence[int],
          near_vox: float) -> np.ndarray | None:
    """The nodule's component of a foreground (bool, ROI voxels z-y-x): the foreground opened with
    a ball of the first radius in ``open_radii`` (voxels) that leaves any of it within ``near_vox``
    voxels of ``local_c``, clipped to a ball of ``clip_vox`` voxels around ``local_c``; of its
    components the one with most voxels within ``near_vox``.  None when no radius leaves
    foreground near the centre."""
    zz, yy, xx = np.ogrid[tuple(slice(0, s) for s in fg.shape)]
    d2 = (zz - local_c[0]) ** 2 + (yy - local_c[1]) ** 2 + (xx - local_c[2]) ** 2
    for r_open in open_radii:
        f = ndimage.binary_opening(fg, structure=ball_structure((r_open,) * 3))  # r 1: the 6-connected cross
        f &= d2 <= clip_vox * clip_vox
        lab, n = ndimage.label(f)
        near = (d2 <= near_vox * near_vox) & (lab > 0)
        if n == 0 or not near.any():
            continue
        # the component with most voxels near the centre
        ids, counts = np.unique(lab[near], return_counts=True)
        return np.asarray(lab == int(ids[int(np.argmax(counts))]))
    return None


def _measurement(comp: np.ndarray, roi: np.ndarray, lo: np.ndarray, c: np.ndarray, spacing_mm: float,
                 method: str) -> NoduleMeasurement:
    """The measurement of component ``comp`` (bool, ROI voxels z-y-x) of ``roi`` (HU) whose first
    voxel is grid voxel ``lo``; ``c`` is the input centre (grid voxels).  With ``method ==
    "subsolid"`` a part-solid nodule gets ``solid_component_mm``: the mean of the Lung-RADS axes
    (:func:`axial_axes`) of the largest connected cluster of its voxels above
    :data:`SOLID_COMPONENT_HU`, 0.0 when there is no such cluster."""
    pts = np.argwhere(comp)
    plo, phi = pts.min(axis=0), pts.max(axis=0) + 1
    n_vox = len(pts)
    centroid = pts.mean(axis=0)
    cidx = tuple(np.rint(centroid).astype(int))
    centre_out = centroid + lo if comp[cidx] else c  # a crescent's centroid may fall outside it
    long_ax, short_ax = axial_axes(comp, spacing_mm)
    core = ndimage.binary_erosion(comp)
    vals = roi[core] if core.any() else roi[comp]
    solid = float(np.mean(vals > SOLID_HU))
    calc = float(np.mean(vals > CALCIFIED_HU))
    texture = _classify(solid)
    solid_mm: float | None = None
    if method == "subsolid" and texture == "part-solid":
        lab, n = ndimage.label(comp & (roi > SOLID_COMPONENT_HU))
        if n:
            sizes = np.bincount(lab.ravel())[1:]
            k = int(np.argmax(sizes)) + 1
            if sizes[k - 1] >= MIN_SOLID_VOXELS:
                sl, ss = axial_axes(lab == k, spacing_mm)
                solid_mm = min((sl + ss) / 2.0, (long_ax + short_ax) / 2.0)
        if solid_mm is None:
            solid_mm = 0.0  # no solid voxel cluster: the core's few solid voxels are scattered (noise)
    return NoduleMeasurement(
        centroid_zyx=_float3(np.asarray(centre_out)),
        bbox_lo=_int3(pts.min(axis=0) + lo),
        bbox_hi=_int3(pts.max(axis=0) + lo + 1),
        volume_mm3=float(n_vox * spacing_mm**3),
        long_axis_mm=float(long_ax),
        short_axis_mm=float(short_ax),
        mean_diameter_mm=float((long_ax + short_ax) / 2.0),
        mean_hu=float(roi[comp].mean()),
        solid_fraction=solid,
        calcified_fraction=calc,
        texture=texture,
        calcified=calc >= 0.1,
        source="segmentation",
        n_voxels=int(n_vox),
        mask=comp[plo[0] : phi[0], plo[1] : phi[1], plo[2] : phi[2]].copy(),
        solid_component_mm=None if solid_mm is None else float(solid_mm),
        method=method,
    )


def _roi(grid_hu: np.ndarray, c: np.ndarray, half_mm: float, spacing_mm: float,
         lung_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(HU cube of half-width ``half_mm`` around ``c``, its first grid voxel, the lung mask over it
    or None when there is no mask or the centre lies outside it)."""
    half = int(np.ceil(half_mm / spacing_mm))
    ci = np.rint(c).astype(int)
    lo = np.maximum(ci - half, 0)
    hi = np.minimum(ci + half + 1, grid_hu.shape)
    roi = np.asarray(grid_hu[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], np.float32)
    lung = None
    if lung_mask is not None:
        if lung_mask.shape != grid_hu.shape:
            raise ValueError(f"lung_mask shape {lung_mask.shape} differs from the grid's {grid_hu.shape}")
        if lung_mask[tuple(np.clip(ci, 0, np.array(grid_hu.shape) - 1))]:
            lung = np.asarray(lung_mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], bool)
    return roi, lo, lung


def measure_nodule(grid_hu: np.ndarray, centre_zyx: Sequence[float] | np.ndarray,
                   diameter_hint_mm: float, spacing_mm: float = 1.5,
                   lung_mask: np.ndarray | None = None, subsolid: bool = True) -> NoduleMeasurement:
    """Segment and measure the nodule at ``centre_zyx`` (grid voxels) of an isotropic HU grid.

    Args:
        grid_hu: HU volume z-y-x on an isotropic grid of ``spacing_mm``.
        centre_zyx: candidate centre, voxels.
        diameter_hint_mm: the detector's diameter estimate (sets the search and clip radii).
        spacing_mm: voxel size (mm).
        lung_mask: optional boolean lung mask on the same grid; used only when the rounded
            centre lies inside it (a candidate outside the mask is measured unrestricted).
        subsolid: re-segment a nodule that is not solid at -600 HU (or not found) with the
            ground-glass threshold (module docstring, step 6); False gives the -600 HU method
            alone (``method == "threshold"``), kept for the size benchmark's comparison.
    """
    c = np.asarray(centre_zyx, float)
    hint = float(np.clip(diameter_hint_mm if np.isfinite(diameter_hint_mm) else 6.0, 3.0, 60.0))
    roi, lo, lung = _roi(grid_hu, c, max(0.75 * hint + 6.0, 10.0), spacing_mm, lung_mask)
    local_c = c - lo

    def fallback() -> NoduleMeasurement:
        r = hint / 2.0
        # the box of the detector's size estimate (not one voxel), so that every consumer - the
        # finding figure, SEG/SR exports - shows a box as big as the size it reports
        rv = r / spacing_mm
        blo = np.clip(np.floor(c - rv), 0, np.array(grid_hu.shape) - 1).astype(int)
        bhi = np.clip(np.ceil(c + rv) + 1, blo + 1, grid_hu.shape).astype(int)
        bz, by, bx = np.ogrid[tuple(slice(int(a), int(b)) for a, b in zip(blo, bhi, strict=True))]
        ball = (bz - c[0]) ** 2 + (by - c[1]) ** 2 + (bx - c[2]) ** 2 <= max(rv, 0.5) ** 2
        return NoduleMeasurement(_float3(c), _int3(blo), _int3(bhi),
                                 4.0 / 3.0 * np.pi * r**3, hint, hint, hint,
                                 float(roi[tuple(np.clip(np.rint(local_c).astype(int), 0, np.array(roi.shape) - 1))])
                                 if roi.size else -1000.0, 0.0, 0.0, "unknown", False, "detector", 0, ball)

    if roi.size == 0:
        return fallback()
    fg = roi > FOREGROUND_HU
    if lung is not None:
        fg &= lung
    # Big nodules: a 3 mm ball opening, so that pleural contact, spicules and vessels do not bridge
    # the region out to the clip ball; small ones keep the 1-voxel opening (a 3 mm ball would erase them).
    r_open = 2 if hint >= BIG_NODULE_MM else 1
    comp = _grow(fg, local_c, (0.65 * hint + 3.0) / spacing_mm, (r_open,), 3.0 / spacing_mm)
    first = fallback() if comp is None else _measurement(comp, roi, lo, c, spacing_mm, "threshold")
    if not subsolid:
        return first
    sub = _measure_subsolid(grid_hu, c, hint, first, spacing_mm, lung_mask)
    if first.texture != "solid":
        return sub or first
    # A solid -600 HU region may be the core of a part-solid nodule whose ground glass lies below
    # -600 HU: the sub-solid answer replaces it only when it is part-solid and wider by a rim of at
    # least PART_SOLID_RIM_MM (not the partial-volume halo every solid nodule has).
    if sub is not None and sub.texture == "part-solid" and sub.mean_diameter_mm - first.mean_diameter_mm >= PART_SOLID_RIM_MM:
        return sub
    return first


def _measure_subsolid(grid_hu: np.ndarray, c: np.ndarray, hint: float, first: NoduleMeasurement,
                      spacing_mm: float, lung_mask: np.ndarray | None) -> NoduleMeasurement | None:
    """Step 6 of the module docstring: the ground-glass segmentation, or None when the nodule is
    too faint (contrast), nothing lies near the centre, or every threshold leaks."""
    est = max(hint, first.long_axis_mm if first.source == "segmentation" else 0.0)
    clip_mm = float(np.clip(SUBSOLID_CLIP_FACTOR * est + 6.0, SUBSOLID_CLIP_MIN_MM, SUBSOLID_CLIP_MAX_MM))
    roi, lo, lung = _roi(grid_hu, c, clip_mm + 3.0, spacing_mm, lung_mask)
    if roi.size == 0:
        return None
    smooth = ndimage.gaussian_filter(roi, SUBSOLID_SMOOTH_MM / spacing_mm)
    local_c = c - lo
    zz, yy, xx = np.ogrid[tuple(slice(0, s) for s in roi.shape)]
    d2 = (zz - local_c[0]) ** 2 + (yy - local_c[1]) ** 2 + (xx - local_c[2]) ** 2
    clip_vox = clip_mm / spacing_mm
    near = d2 <= (3.0 / spacing_mm) ** 2
    # lung level: the median of the (lung) voxels outside half the clip radius, mostly aerated lung
    far = d2 > 0.25 * clip_vox**2
    if lung is not None:
        far &= lung
    lung_hu = float(np.median(smooth[far])) if far.any() else -850.0
    top, mid = float(smooth[near].max()), float(np.median(smooth[near]))
    # the maximum, unless it stands far above the median: then a vessel through the centre holds the
    # top and the bulk around the centre is the nodule
    # (only for a nodule of >= 10 mm, whose 3 mm ball lies inside it: a smaller one's ball takes in lung)
    level = min(mid if top - mid > VESSEL_SPREAD_HU and est >= 10.0 else top, GROUND_GLASS_CAP_HU)
    if level - lung_hu < MIN_GROUND_GLASS_CONTRAST_HU:
        return None
    shell = d2 > (clip_vox - 1.5) ** 2
    threshold = max((lung_hu + level) / 2.0, GROUND_GLASS_MIN_HU)
    while threshold <= FOREGROUND_HU:
        fg = smooth > threshold
        if lung is not None:
            fg &= lung
        # A 3 mm ball opening detaches vessels (and their smoothed halo) from the ground glass; a
        # nodule too small to survive it is grown with the 1-voxel opening.
        comp = _grow(fg, local_c, clip_vox, (2, 1), 3.0 / spacing_mm)
        if comp is None:
            return None
        surface = comp & ~ndimage.binary_erosion(comp)
        if (comp & shell).sum() <= LEAK_SHELL_FRACTION * max(int(surface.sum()), 1):
            return _measurement(comp, roi, lo, c, spacing_mm, "subsolid")
        threshold += GROUND_GLASS_STEP_HU
    return None
