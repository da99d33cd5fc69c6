"""Training and evaluation examples: inserted nodules on real CT backgrounds, plus reports.

One *example* is one (nodule, reader) pair: the nodule's image crop (the
nodule inserted once into a real lung background, then crops with
augmentation) and that reader's free-text report (or none: missing report).

Backgrounds (never mixed across splits):

* ``train`` and ``val`` nodules go into LIDC-IDRI-0001 and LIDC-IDRI-0002;
  the backgrounds' own real nodules are kept (as real training examples) and
  masked out as insertion sites;
* ``test`` nodules go into LIDC-IDRI-0003 only (a held-out background); its
  own real nodules are evaluated as they are.

The nodule's look is rendered from the median of its readers' *visual*
ratings (the image is the same for every reader, as a real CT would be); each
reader's report is written from that reader's own ratings.  Malignancy is
used only as the label.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy import ndimage

from lungfuse.pipelines.core.errors import DataLeakageError
from lungfuse.pipelines.imaging.crops import CROP_SIZE, extract_crop, random_rotation
from lungfuse.pipelines.imaging.lung import LobeLocator, LungMask, segment_lungs
from lungfuse.pipelines.io.dicom import load_ct
from lungfuse.pipelines.lab.insertion import (
    appearance_from_ratings,
    insert_into,
    render_patch,
    sample_location,
    thicken_slices,
)
from lungfuse.pipelines.lab.library import LibraryNodule
from lungfuse.pipelines.lab.lidc import ScanNodule, patient_split, scan_nodules

log = logging.getLogger(__name__)

__all__ = ["Background", "InsertedNodule", "prepare_background", "insert_nodule", "real_nodule_block", "crops_for",
           "CropAugmentation", "draw_augmentations",
           "BACKGROUNDS"]

#: Which real CT hosts which split's nodules.
BACKGROUNDS: dict[str, tuple[str, ...]] = {
    "train": ("LIDC-IDRI-0001", "LIDC-IDRI-0002"),
    "val": ("LIDC-IDRI-0001", "LIDC-IDRI-0002"),
    "test": ("LIDC-IDRI-0003",),
}
PLACE_STEP_MM = 2.0


@dataclass(eq=False)
class Background:
    """A real CT prepared for insertion (arrays z-y-x)."""

    patient_id: str
    hu: np.ndarray
    spacing: tuple[float, float, float]
    noise_sigma_hu: float
    slice_thickness_mm: float
    lung: LungMask
    place_step: tuple[int, int, int]
    place_dist_mm: np.ndarray  # lung depth (mm) on the coarse placement grid
    forbidden: np.ndarray  # coarse grid: real nodules and earlier insertions
    real_nodules: list[ScanNodule] = field(default_factory=list)
    #: LPS z (mm) of each slice, in array order: lets a caller check that the loaded
    #: series is the annotated grid the real nodules' voxel indices refer to.
    slice_z_mm: np.ndarray | None = None

    @cached_property
    def lobes(self) -> LobeLocator:
        """Side/lobe of a voxel (z-y-x) in this scan, the lung extents measured once: each
        insertion asks for one, and measuring them again per nodule was ~70 % of building the
        train examples (1,759 insertions, profiled 2026-11-30)."""
        return LobeLocator(self.lung)

    def reserve(self, center_voxel: Sequence[float] | np.ndarray, radius_mm: float) -> None:
        """Mark the coarse placement cells within ``radius_mm`` (per axis, a box) of
        ``center_voxel`` (source voxels, z-y-x) as forbidden: later insertions keep clear of a
        real nodule or an earlier insertion there."""
        step = np.array(self.place_step)
        c = np.asarray(center_voxel, float) / step
        r = radius_mm / (np.array(self.spacing) * step)
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, self.forbidden.shape)
        self.forbidden[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True


def prepare_background(case_dir: Path, patient_id: str, series_uid: str | None = None) -> Background:
    """Load a real CT, segment its lungs, and mark where nodules may not go.

    ``series_uid`` loads that series of ``case_dir`` (and takes the real nodules of
    the matching annotated scan); by default the automatic choice of ``load_ct``
    and the patient's first annotated scan, which agree for the bundled cases.
    """
    vol = load_ct(case_dir, series_uid=series_uid)
    lung = segment_lungs(vol.hu, vol.spacing)
    step = tuple(max(1, int(round(PLACE_STEP_MM / s))) for s in vol.spacing)
    coarse = lung.lungs[:: step[0], :: step[1], :: step[2]]
    csp = tuple(s * k for s, k in zip(vol.spacing, step, strict=True))
    dist = ndimage.distance_transform_edt(coarse, sampling=csp).astype(np.float32)
    reals = scan_nodules(patient_id, series_uid)
    bg = Background(
        patient_id=patient_id, hu=vol.hu, spacing=vol.spacing,
        noise_sigma_hu=float(vol.quality.noise_sigma_hu or 15.0),
        slice_thickness_mm=float(vol.quality.slice_thickness_mm), lung=lung, place_step=step,  # type: ignore[arg-type]
        place_dist_mm=dist, forbidden=np.zeros(coarse.shape, bool), real_nodules=reals,
        slice_z_mm=vol.slice_positions[:, 2].copy(),
    )
    for n in reals:
        bg.reserve(n.center_zyx, n.diameter_mm / 2 + 12.0)
    return bg


@dataclass(eq=False)
class InsertedNodule:
    """A nodule inserted into a background: a float32 HU block around it and where it is."""

    key: str
    background: str
    block: np.ndarray  # HU, z-y-x, background spacing
    spacing: tuple[float, float, float]
    center_in_block: tuple[float, float, float]
    center_in_volume: tuple[float, float, float]
    side: str | None
    lobe: str | None
    noise_sigma_hu: float
    slice_thickness_mm: float
    alpha: np.ndarray | None = None  # fill fraction on the block grid (kept only when asked)
    diameter_mm: float = 0.0

    @property
    def block_origin(self) -> tuple[int, int, int]:
        """Voxel index in the background volume of ``block[0, 0, 0]``."""
        return tuple(int(round(a - b)) for a, b in zip(self.center_in_volume, self.center_in_block, strict=True))  # type: ignore[return-value]


def _block_around(bg: Background, center: np.ndarray, block_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """A float32 copy of ``bg.hu`` about ``block_mm`` wide around voxel ``center`` (z-y-x),
    clipped at the volume edge, and the voxel index of its first corner."""
    half = np.ceil((block_mm / 2) / np.array(bg.spacing)).astype(int)
    lo = np.maximum(np.floor(center).astype(int) - half, 0)
    hi = np.minimum(np.floor(center).astype(int) + half + 1, bg.hu.shape)
    return bg.hu[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float32), lo


def insert_nodule(nod: LibraryNodule, bg: Background, rng: np.random.Generator, block_mm: float = 64.0,
                  reserve: bool = True, keep_alpha: bool = False) -> InsertedNodule | None:
    """Insert ``nod`` at a random lung site of ``bg`` (once) and return the block around it.

    The site is marked forbidden for later insertions when ``reserve``.
    Returns None when no site deep enough is left.
    """
    radius = max(2.0, float(np.ptp(np.nonzero(nod.mask)[1])) / 2.0 + 0.5)
    site = sample_location(bg.place_dist_mm, radius, rng, bg.forbidden)
    if site is None:
        return None
    step = np.array(bg.place_step)
    center = np.array(site, float) * step + rng.uniform(0, 1, 3) * (step - 1)
    block, lo = _block_around(bg, center, block_mm)
    app = appearance_from_ratings(nod.median_ratings(), rng)
    alpha, value = render_patch(nod.mask, app, rng)
    cib = tuple(float(v) for v in center - lo)
    fill = insert_into(block, bg.spacing, cib, alpha, value, bg.noise_sigma_hu, rng)  # type: ignore[arg-type]
    if reserve:
        bg.reserve(center, radius + 6.0)
    side, lobe = bg.lobes(center)
    return InsertedNodule(nod.key, bg.patient_id, block, bg.spacing, cib, tuple(float(v) for v in lo + np.array(cib)),  # type: ignore[arg-type]
                          side, lobe, bg.noise_sigma_hu, bg.slice_thickness_mm,
                          fill.astype(np.float16) if keep_alpha else None, nod.diameter_mm)


def real_nodule_block(bg: Background, nod: ScanNodule, block_mm: float = 64.0) -> InsertedNodule:
    """A scan's own real nodule as the same block type an insertion yields (nothing inserted).

    The float32 HU block is ``block_mm`` wide around the consensus-mask centroid
    (z-y-x, the background's spacing; clipped at the volume edge), side/lobe come
    from the background's lung mask, so :func:`crops_for` crops, augments and
    thickens real and inserted nodules identically. ``key`` is
    ``"<patient>#<nodule_index>"`` like :attr:`LibraryNodule.key`.
    """
    center = np.array(nod.center_zyx, float)
    block, lo = _block_around(bg, center, block_mm)
    side, lobe = bg.lobes(center)
    return InsertedNodule(f"{nod.patient_id}#{nod.nodule_index}", bg.patient_id, block, bg.spacing,
                          tuple(float(v) for v in center - lo), tuple(float(v) for v in center),  # type: ignore[arg-type]
                          side, lobe, bg.noise_sigma_hu, bg.slice_thickness_mm, None, nod.diameter_mm)


@dataclass(frozen=True)
class CropAugmentation:
    """The random draws of one augmented crop (:func:`draw_augmentations`)."""

    jitter_mm: np.ndarray  # (3,) centre shift, mm, z-y-x
    flips: tuple[bool, bool, bool]  # mirror along z, y, x
    rotation: np.ndarray  # (3, 3) rotation in the z-y-x frame
    gain: float  # intensity scale


def draw_augmentations(rng: np.random.Generator, n: int) -> list[CropAugmentation]:
    """``n`` crop augmentations drawn from ``rng`` in a fixed order (jitter up to 1.5 mm, flips,
    any rotation, intensity +/- 3 %), so a caller can draw them serially and render the crops in
    any order or in parallel and get the same crops as :func:`crops_for` with that ``rng``."""
    out = []
    for _ in range(n):
        jitter = rng.uniform(-1.5, 1.5, 3)
        flips = tuple(bool(b) for b in rng.integers(0, 2, 3))
        rotation = random_rotation(rng)
        out.append(CropAugmentation(jitter, flips, rotation, float(rng.uniform(0.97, 1.03))))  # type: ignore[arg-type]
    return out


def crops_for(ins: InsertedNodule, rng: np.random.Generator | None, n: int = 1, *, thickness_mm: float | None = None,
              extra_noise_hu: float = 0.0, augmentations: Sequence[CropAugmentation] | None = None
              ) -> tuple[np.ndarray, float, float]:
    """``n`` crops (n, S, S, S) float32 HU of an inserted nodule.

    With ``rng`` the crops are augmented (random rotation, flips, jitter of
    the centre by up to 1.5 mm, intensity scale +/- 3 %: :func:`draw_augmentations`);
    ``augmentations`` gives those draws instead (then ``n`` is their number and
    ``rng`` only draws the extra noise); with neither, the single canonical crop
    is returned.  ``thickness_mm`` re-slices the block thick first;
    ``extra_noise_hu`` adds white Gaussian noise (HU) to the crop.
    Returns ``(crops, noise_sigma_hu, slice_thickness_mm)`` — the environment
    the crops were acquired in.
    """
    block, spacing, center = ins.block, ins.spacing, np.array(ins.center_in_block)
    thick = ins.slice_thickness_mm
    if thickness_mm is not None and thickness_mm > spacing[0] * 1.01:
        block, spacing2 = thicken_slices(block, spacing, thickness_mm)
        center = center.copy()
        center[0] = center[0] * spacing[0] / spacing2[0]
        spacing, thick = spacing2, thickness_mm
    if augmentations is None and rng is not None:
        augmentations = draw_augmentations(rng, n)
    if augmentations is None:
        out = np.repeat(extract_crop(block, spacing, center)[None].astype(np.float32), n, axis=0)
    else:
        out = np.empty((len(augmentations), CROP_SIZE, CROP_SIZE, CROP_SIZE), np.float32)
        for i, a in enumerate(augmentations):
            crop = extract_crop(block, spacing, center + a.jitter_mm / np.array(spacing), rotation=a.rotation,
                                flips=a.flips)
            out[i] = crop * a.gain
    noise = ins.noise_sigma_hu
    if extra_noise_hu > 0:
        r = rng if rng is not None else np.random.default_rng(0)
        out += r.normal(0.0, extra_noise_hu, out.shape).astype(np.float32)
        noise = float(np.hypot(noise, extra_noise_hu))
    return out, noise, thick


def backgrounds_for(split: str, lidc_root: Path) -> list[Background]:
    """Prepared backgrounds for a split (see :data:`BACKGROUNDS`); checks split hygiene."""
    out = []
    for pid in BACKGROUNDS[split]:
        if split != "test" and patient_split(pid) == "test":
            raise DataLeakageError(f"refusing to use test patient {pid} as a {split} background")
        out.append(prepare_background(lidc_root / pid, pid))
    return out


def insert_all(nodules: Sequence[LibraryNodule], bgs: Sequence[Background], rng: np.random.Generator,
               max_per_background: int = 60) -> list[InsertedNodule]:
    """Insert every nodule once, spreading them over backgrounds and over fresh copies.

    A background holds at most ``max_per_background`` insertions before its
    placement map is reset (a fresh copy of the same scan), so big libraries
    never run out of room and nodules do not crowd.
    """
    out: list[InsertedNodule] = []
    counts = [0] * len(bgs)
    base_forbidden = [bg.forbidden.copy() for bg in bgs]
    for i, nod in enumerate(nodules):
        b = i % len(bgs)
        bg = bgs[b]
        if counts[b] >= max_per_background:
            bg.forbidden[...] = base_forbidden[b]
            counts[b] = 0
        ins = insert_nodule(nod, bg, rng)
        if ins is None:
            bg.forbidden[...] = base_forbidden[b]
            counts[b] = 0
            ins = insert_nodule(nod, bg, rng)
        if ins is None:
            log.warning("no room for nodule %s in %s", nod.key, bg.patient_id)
            continue
        counts[b] += 1
        out.append(ins)
    return out


def volume_with_insertions(bg: Background, nodules: Sequence[LibraryNodule], rng: np.random.Generator
                           ) -> tuple[np.ndarray, list[InsertedNodule]]:
    """A float32 copy of the whole background with ``nodules`` inserted (detection data).

    Each nodule's block is pasted back only where the nodule fills the voxel
    (alpha > 0.002), so neighbouring blocks never erase each other.  The
    background's placement map is restored afterwards.  Returns the volume
    (z-y-x, background spacing) and the inserted nodules (blocks dropped).
    """
    vol = bg.hu.astype(np.float32)
    saved = bg.forbidden.copy()
    placed: list[InsertedNodule] = []
    try:
        for nod in nodules:
            ins = insert_nodule(nod, bg, rng, keep_alpha=True)
            if ins is None:
                continue
            o = ins.block_origin
            sl = tuple(slice(a, a + s) for a, s in zip(o, ins.block.shape, strict=True))
            a = ins.alpha
            assert a is not None
            vol[sl] = np.where(a > 0.002, ins.block, vol[sl])
            ins.alpha = None
            ins.block = np.empty((0, 0, 0), np.float32)
            placed.append(ins)
    finally:
        bg.forbidden[...] = saved
    return vol, placed
