"""False-positive reduction: a second-stage 3-D CNN that re-scores detector candidates.

Research software, NOT for diagnostic use.

The classic two-stage design of LUNA16-era detectors: the dense detector proposes candidates
with high recall, a crop classifier decides nodule vs. not.  Here:

* **model** - a :class:`~lungfuse.models.image.NoduleEncoder` (MONAI residual units) on a
  32^3 patch of the detector's 1.5 mm grid (48 mm field of view, HU window [-1000, 400] -> [0, 1]),
  whose logit is trained as "this candidate is a nodule";
* **training data** (train split only) - the detector's own training volumes (train nodules
  inserted into LIDC-IDRI-0001/0002 plus their real nodules), the detector run over each:
  candidates that hit a nodule (centre within ``max(d/2, 5 mm)``) and the true centres with a
  +-2 voxel jitter are positives; the other candidates (hard negatives: vessels, fissures, chest
  wall) and random lung voxels are negatives.  Each crop is re-sampled every time it is drawn,
  with a random 3-D rotation and scale (:func:`sample_crop`);
* **use** - :func:`rescore`: final score = ``sqrt(detector score x classifier probability)``
  (a geometric mean: a candidate needs both a peak and a nodule-like neighbourhood).  The
  classifier probability is the mean over the model's test-time views (``test_time_views`` in
  ``fpr.json``; the crop alone by default, :data:`DEFAULT_VIEWS`).

``lungfuse train-fpr`` trains it; ``lungfuse calibrate detector`` then picks the operating
threshold of the combined score on val.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lungfuse.models.image import NoduleEncoder, NoduleEncoderConfig
from lungfuse.models.parallel import ThreadedTrunk, trunk_workers
from lungfuse.pipelines.core.errors import ConfigurationError, IngestError
from lungfuse.pipelines.imaging.crops import extract_crop, random_rotation
from lungfuse.pipelines.imaging.preprocess import DETECTION_SPACING_MM
from lungfuse.pipelines.inference.detector import detect, load_detector
from lungfuse.pipelines.inference.explain import patch_around
from lungfuse.pipelines.inference.fpr import COMBINE, CONFIG_NAME, DEFAULT_VIEWS, FPR_PATCH, WEIGHTS_NAME
from lungfuse.pipelines.lab.detection_data import (
    DetectionTrainConfig,
    DetectionVolume,
    make_detection_data,
    real_detection_volume,
)
from lungfuse.pipelines.lab.detection_eval import HIT_MIN_RADIUS_MM
from lungfuse.pipelines.lab.lidc_root import LidcRoot

__all__ = [
    "FPRConfig",
    "FPRExamples",
    "mine_examples",
    "sample_crop",
    "train_fpr",
]

@dataclass
class FPRConfig:
    """Training settings of the false-positive-reduction classifier (defaults sized for 2 CPU cores)."""

    steps: int = 800
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1
    mine_threshold: float = 0.05
    mine_max_peaks: int = 128
    mine_volumes: int = 4  # insertion copies per training background
    # insertion: mine only these training backgrounds (patient ids; the detector's own when it was
    # trained on a subset, DetectionTrainConfig.backgrounds); None = all
    backgrounds: tuple[str, ...] | None = None
    random_negatives_per_volume: int = 60
    jitter_per_nodule: int = 4
    channels: tuple[int, ...] = (8, 16, 32, 48)
    strides: tuple[int, ...] = (2, 2, 2)
    # CPU, threads >= 2: the convolutional trunk runs on ``threads`` chunks of each batch in
    # parallel, one intra-op thread each (models.parallel.ThreadedTrunk; 0.46 vs 0.64 s per
    # forward + backward of 32 crops on 2 cores); False: the whole batch on ``threads`` threads.
    split_batch: bool = True
    # Draw and render the next batch's crops in a background thread while the network trains on
    # this one. The crops come from the same generator in the same order, so the batches (and a
    # seeded run's weights) are the same either way; False: drawn between steps.
    prefetch: bool = True

    def encoder_config(self) -> NoduleEncoderConfig:
        return NoduleEncoderConfig(channels=tuple(self.channels), strides=tuple(self.strides), embed_dim=64,
                                   crop_size=(FPR_PATCH,) * 3, spacing_mm=DETECTION_SPACING_MM, dropout=0.2)


def _hits(c: np.ndarray, centres: np.ndarray, diams: np.ndarray) -> bool:
    if len(centres) == 0:
        return False
    dist = np.linalg.norm((centres - c) * DETECTION_SPACING_MM, axis=1)
    return bool(np.any(dist <= np.maximum(diams / 2.0, HIT_MIN_RADIUS_MM)))


@dataclass(eq=False)
class FPRExamples:
    """Mined training examples: candidate centres in whole volumes (crops are cut when training).

    Keeping the volumes instead of fixed patches lets training re-sample every example with a
    fresh random 3-D rotation and scale (see :func:`sample_crop`): with only two real backgrounds
    the classifier sees few distinct vessels and fissures, and arbitrary orientations are the
    cheapest way to stop it memorising the ones it has.

    Attributes:
        volumes: [0, 1]-windowed CTs on the 1.5 mm detector grid (z-y-x, float16).
        vol_index: (N,) volume of each example.
        centres: (N, 3) candidate centres, voxels z-y-x of that volume.
        labels: (N,) 1 nodule, 0 not a nodule.
    """

    volumes: list[np.ndarray]
    vol_index: np.ndarray
    centres: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.vol_index = np.asarray(self.vol_index, np.int32)
        self.centres = np.asarray(self.centres, np.float32).reshape(-1, 3)
        self.labels = np.asarray(self.labels, np.int8)
        n = len(self.labels)
        if len(self.vol_index) != n or len(self.centres) != n:
            raise ValueError(f"vol_index ({len(self.vol_index)}), centres ({len(self.centres)}) and labels ({n}) "
                             "differ in length")
        if n and (self.vol_index.min() < 0 or self.vol_index.max() >= len(self.volumes)):
            raise ValueError(f"vol_index outside [0, {len(self.volumes)})")
        if any(v.ndim != 3 for v in self.volumes):
            raise ValueError("volumes must be 3-D (z, y, x)")

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {f"volume{i}": v.astype(np.float16) for i, v in enumerate(self.volumes)}
        np.savez(path, vol_index=self.vol_index, centres=self.centres, labels=self.labels, **arrays)

    @classmethod
    def load(cls, path: Path) -> FPRExamples:
        with np.load(path) as z:
            if "volume0" not in z.files:
                raise ValueError(f"{path}: not an FPRExamples cache (old fixed-patch format?); delete it to re-mine")
            n = sum(1 for k in z.files if k.startswith("volume"))
            return cls([z[f"volume{i}"] for i in range(n)], z["vol_index"], z["centres"], z["labels"])


def _mining_volumes(cases: Path | LidcRoot, cfg: FPRConfig, log: Callable[[str], None],
                    grid_cache: Path | None) -> tuple[int, Iterator[DetectionVolume]]:
    """The detector's training volumes to mine: how many, and an iterator that prepares them one at a time.

    A :class:`Path` (the bundled cases): ``cfg.mine_volumes`` insertion copies of each training
    background (:func:`make_detection_data`, all built up front, as the detector saw them).  A
    :class:`LidcRoot`: a seeded subset of ``cfg.mine_volumes`` train patients' real scans
    (:func:`real_detection_volume`, read from ``grid_cache`` when the detector's run left them
    there), loaded lazily so only the current volume's mask is held; a patient that cannot be
    loaded is skipped with a log line.  Test patients are never read.
    """
    if not isinstance(cases, LidcRoot):
        # the detector's own training volumes
        dcfg = DetectionTrainConfig(seed=cfg.seed, n_volumes=cfg.mine_volumes, backgrounds=cfg.backgrounds)
        vols = make_detection_data("train", cases, dcfg, np.random.default_rng([dcfg.seed, 0]), log=log)
        return len(vols), iter(vols)
    patients = cases.split("train")
    if not patients:
        raise ConfigurationError(f"no usable train patients under {cases.root}", cases.root)
    pick = np.random.default_rng([cfg.seed, 13]).choice(len(patients), min(cfg.mine_volumes, len(patients)),
                                                        replace=False)

    def load() -> Iterator[DetectionVolume]:
        for i in sorted(int(k) for k in pick):
            try:
                yield real_detection_volume(patients[i], grid_cache, log)
            except (IngestError, OSError, ValueError) as exc:
                log(f"[fpr] warning: {patients[i].patient_id} skipped, cannot use {patients[i].series_folder}: {exc}")

    return len(pick), load()


def mine_examples(detector_pt: Path, cases: Path | LidcRoot, cfg: FPRConfig, log: Callable[[str], None] = print,
                  *, grid_cache: Path | None = None) -> FPRExamples:
    """Candidates of the shipped detector on the detector's training volumes (train split only).

    ``cases``: the bundled cases (insertion copies) or a local LIDC-IDRI download (real scans
    of a seeded subset of ``cfg.mine_volumes`` train patients; every mined volume's image stays
    in the returned examples, about 25 MB each), see :func:`_mining_volumes`.
    Candidates that hit a nodule and the true centres (``jitter_per_nodule`` copies, jittered
    when sampled) are positives; the other candidates (hard negatives: vessels, fissures, chest
    wall) and ``random_negatives_per_volume`` random lung voxels are negatives.
    """
    rng = np.random.default_rng([cfg.seed, 11])
    det = load_detector(detector_pt)
    n_vols, vols = _mining_volumes(cases, cfg, log, grid_cache)
    volumes: list[np.ndarray] = []
    vidx: list[int] = []
    centres: list[np.ndarray] = []
    labels: list[int] = []

    def add(k: int, c: np.ndarray, lab: int) -> None:
        vidx.append(k)
        centres.append(np.asarray(c, np.float32))
        labels.append(lab)

    for v in vols:
        k = len(volumes)  # index of this volume in the examples (a skipped patient leaves no gap)
        t0 = time.perf_counter()
        img = v.image.astype(np.float32)
        dets = detect(det, img, v.lung, threshold=cfg.mine_threshold, max_peaks=cfg.mine_max_peaks, normalized=True)
        n_pos = n_neg = 0
        for z, y, x, _s, _d in dets:
            c = np.array([z, y, x], float)
            lab = _hits(c, v.centres, v.diameters_mm)
            add(k, c, int(lab))
            n_pos += int(lab)
            n_neg += int(not lab)
        for c in v.centres:
            for _ in range(cfg.jitter_per_nodule):
                add(k, np.asarray(c, float), 1)
        if len(v.lung_index):
            for idx in rng.choice(v.lung_index, cfg.random_negatives_per_volume, replace=False):
                c = np.array(np.unravel_index(int(idx), v.lung.shape), float)
                if not _hits(c, v.centres, v.diameters_mm):
                    add(k, c, 0)
        volumes.append(v.image.astype(np.float16))
        log(f"[fpr] volume {k + 1}/{n_vols} ({v.background}): {len(dets)} candidates ({n_pos} nodules, {n_neg} false), "
            f"{time.perf_counter() - t0:.1f} s")
    return FPRExamples(volumes, np.asarray(vidx), np.asarray(centres), np.asarray(labels))


def sample_crop(ex: FPRExamples, i: int, rng: np.random.Generator | None) -> np.ndarray:
    """The ``FPR_PATCH``^3 [0, 1] crop of example ``i``; augmented when ``rng`` is given.

    Without ``rng`` it is exactly :func:`~.explain.patch_around` (what inference sees).
    Augmentation: a uniformly random 3-D rotation, isotropic scale 0.85-1.2, a centre jitter of
    up to 2 voxels for positives (1 for negatives), intensity gain 0.95-1.05 and offset
    +-0.02, and on half the crops Gaussian noise up to 0.02 (28 HU).
    """
    c = ex.centres[i].astype(float)
    vol = ex.volumes[int(ex.vol_index[i])]
    if rng is None:
        return patch_around(vol, c, FPR_PATCH)[0]
    c = c + rng.uniform(-1, 1, 3) * (2.0 if ex.labels[i] else 1.0)
    # extract_crop samples symmetric offsets (k - 15.5) around its centre; shifting the centre by
    # half a voxel puts them on patch_around's integer offsets (-16 .. 15).
    crop = extract_crop(vol, (DETECTION_SPACING_MM,) * 3, c - 0.5, size=FPR_PATCH,
                        crop_spacing=DETECTION_SPACING_MM * float(rng.uniform(0.85, 1.2)),
                        rotation=random_rotation(rng, 180.0))
    crop = np.maximum(crop, 0.0)  # extract_crop fills with -1000 (its HU air); air here is 0
    crop = crop * np.float32(rng.uniform(0.95, 1.05)) + np.float32(rng.uniform(-0.02, 0.02))
    if rng.random() < 0.5:
        crop = crop + rng.normal(0.0, rng.uniform(0.0, 0.02), crop.shape).astype(np.float32)
    return np.clip(crop, 0.0, 1.0).astype(np.float32)


def train_fpr(ex: FPRExamples, cfg: FPRConfig, out_dir: Path, log: Callable[[str], None] = print) -> Path:
    """Train the classifier (balanced batches of :func:`sample_crop`, AdamW, cosine LR); writes ``fpr.pt`` + ``fpr.json``."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 12])
    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    model = NoduleEncoder(cfg.encoder_config())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    labels = ex.labels
    pos, neg = np.nonzero(labels == 1)[0], np.nonzero(labels == 0)[0]
    if len(pos) == 0 or len(neg) == 0:
        raise ConfigurationError(f"need positives and negatives to train on, got {len(pos)} and {len(neg)}")
    t0 = time.perf_counter()
    run = 0.0
    half = cfg.batch_size // 2

    def draw() -> tuple[np.ndarray, np.ndarray]:  # rng is used here only, one batch after another
        idx = np.concatenate([rng.choice(pos, half), rng.choice(neg, cfg.batch_size - half)])
        return idx, np.stack([sample_crop(ex, int(i), rng) for i in idx])

    trunk = ThreadedTrunk(model.features, trunk_workers("cpu", cfg.threads, cfg.split_batch))
    sampler = ThreadPoolExecutor(1) if cfg.prefetch else None
    try:
        model.train()
        pending = sampler.submit(draw) if sampler is not None else None
        for step in range(cfg.steps):
            for g in opt.param_groups:
                g["lr"] = cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
            if pending is not None:  # prefetching: this batch was drawn during the last step
                idx, x = pending.result()
                pending = sampler.submit(draw) if sampler is not None and step + 1 < cfg.steps else None
            else:
                idx, x = draw()
            y = torch.from_numpy(labels[idx].astype(np.float32))
            out = model.from_features(trunk(torch.from_numpy(x)[:, None]))
            loss = F.binary_cross_entropy_with_logits(out.logit, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            trunk.backward()
            opt.step()
            run += loss.item()
            if (step + 1) % 100 == 0:
                log(f"[fpr] step {step + 1}/{cfg.steps} loss {run / 100:.4f} ({time.perf_counter() - t0:.0f} s)")
                run = 0.0
    finally:
        if sampler is not None:
            sampler.shutdown(wait=True, cancel_futures=True)
        trunk.close()
        torch.set_num_threads(prev)
    out_dir.mkdir(parents=True, exist_ok=True)
    pt = out_dir / WEIGHTS_NAME
    torch.save({k: v.detach().float().cpu() for k, v in model.state_dict().items()}, pt)
    meta = {"model": "lungfuse-fpr", "train": {**asdict(cfg), "n_examples": int(len(labels)), "n_positive": int(len(pos)),
                                               "n_volumes": len(ex.volumes)},
            "encoder": asdict(cfg.encoder_config()), "seconds": round(time.perf_counter() - t0, 1),
            "augmentation": "random 3-D rotation, scale 0.85-1.2, jitter, intensity, noise (sample_crop)",
            "combine": COMBINE, "test_time_views": [list(v) for v in DEFAULT_VIEWS]}
    (out_dir / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
    return pt


