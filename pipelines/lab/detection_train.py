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

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from lungfuse.models.image import (
    NoduleDetector,
    detector_loss,
    render_detector_targets,
)
from lungfuse.models.parallel import ThreadedTrunk, trunk_workers
from lungfuse.pipelines.core.errors import ConfigurationError, DataLeakageError
from lungfuse.pipelines.imaging.crops import extract_crop, random_rotation
from lungfuse.pipelines.imaging.preprocess import DETECTION_SPACING_MM
from lungfuse.pipelines.inference.detector import CONFIG_NAME, WEIGHTS_NAME
from lungfuse.pipelines.lab.detection_data import (
    CKPT_NAME,
    DetectionTrainConfig,
    DetectionVolume,
    InsertionPool,
    VolumePool,
    draw_positive,
    make_detection_data,
    positive_index,
)
from lungfuse.pipelines.lab.lidc_root import LidcRoot

__all__ = ["train_detector"]



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
        vi, ni = draw_positive(vols, positives, cfg, rng)
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
    positives = positive_index(data)
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


