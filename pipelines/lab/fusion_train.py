"""Malignancy training and evaluation: examples, training loop, calibration, metrics.

Examples (one per (nodule, reader); see :mod:`training_data`) are built once
per split and cached under ``cache_dir()``:

* crops (float16, [0, 1]-normalised, 32^3 at 1.25 mm): train ``n_aug``
  augmented + one 5 mm thick-slice crop per nodule; val/test the canonical crop,
  the 5 mm crop and the canonical crop with 20 % noise (sigma = 0.2 x 1400 HU,
  the width of the HU window);
* one generated report per reader (``reportgen``; never from malignancy), its
  parsed claim features, its frozen MiniLM sentence embedding;
* the reader's 8 ratings + diameter (the structured baseline's inputs);
* the label from the median malignancy (indeterminate = -1, never scored).

Two sources of nodules, one example format: :func:`build_examples` inserts library
nodules into the bundled real CTs (lesion insertion); :func:`build_real_examples`
takes the real annotated nodules of the real scans of a local LIDC-IDRI download
(:mod:`lidc_root`, ``lungfuse train --lidc-root``), with no insertion. Both crop with
:func:`training_data.crops_for` and write reports with the same code, so the same
model trains on either.

Test patients never train, tune or calibrate: temperatures and the EAF noise
threshold are fitted on ``val``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lungfuse.pipelines.core.resources import cache_dir
from lungfuse.pipelines.core.volume import VolumeWarning
from lungfuse.pipelines.imaging.crops import normalize_hu
from lungfuse.pipelines.lab.library import LibraryNodule, load_library
from lungfuse.pipelines.lab.lidc import RATING_NAMES, NoduleRatings, malignancy_class
from lungfuse.pipelines.lab.lidc_root import LidcRoot, load_real_nodules
from lungfuse.pipelines.lab.reportgen import ReportSpec, generate_report, sample_style
from lungfuse.pipelines.lab.training_data import (
    InsertedNodule,
    backgrounds_for,
    crops_for,
    draw_augmentations,
    insert_all,
)
from lungfuse.pipelines.nlp.claims import extract_claims
from lungfuse.pipelines.nlp.text_features import CLAIM_FEATURES, claim_features, pick_target_claim

if TYPE_CHECKING:
    import torch

    from lungfuse.models.fusion import FusionModel, FusionOutput
    from lungfuse.models.image import NoduleEncoderOutput
    from lungfuse.models.parallel import ThreadedTrunk

log = logging.getLogger(__name__)

# 2: MiniLM sentences encoded in batches of similar length (encode_texts); the same up to float16
# rounding (0.1-0.2 % of the values one ulp apart), every other array identical to version 1.
# 3: the generated reports' Lung-RADS statements come from analysis.guidance (v2022: sizes half-up to
# 0.1 mm, spiculation upgrades 4B to 4X too) and name v2022 instead of v1.1.
EXAMPLES_VERSION = 3
NOISE_20PCT_HU = 0.2 * 1400.0  # 20 % of the [-1000, 400] HU window


@dataclass
class ExampleSet:
    """Arrays of one split; index ``i`` is one (nodule, reader) report."""

    nodule: np.ndarray  # (N,) index into crops
    label: np.ndarray  # (N,) 1 malignant, 0 benign, -1 indeterminate
    sentence: np.ndarray  # (N, 384) float16, zeros if missing
    claims: np.ndarray  # (N, F) float32
    present: np.ndarray  # (N,) bool: the reader has a report
    env_report: np.ndarray  # (N, 5): completeness, length, negation, uncertainty, missing
    structured: np.ndarray  # (N, 9): 8 ratings + the reader's diameter
    crops: np.ndarray  # (M, V, S, S, S) float16 in [0,1]: V variants per nodule
    crop_env: np.ndarray  # (M, V, 2): noise sigma HU, slice thickness mm
    variant_names: tuple[str, ...]
    texts: list[str]

    @functools.cached_property
    def nodule_log_diameter(self) -> np.ndarray:
        """``(M,)`` ln of each nodule's diameter in mm, the mean over its readers' diameters (the
        nodule encoder's auxiliary size target; annotation-derived, never the malignancy).
        Computed once per set: every training batch indexes it."""
        m = len(self.crops)
        total = np.bincount(self.nodule, weights=self.structured[:, -1].astype(np.float64), minlength=m)
        count = np.bincount(self.nodule, minlength=m)
        return np.log(np.maximum(total / np.maximum(count, 1), 1.0)).astype(np.float32)

    @functools.cached_property
    def nodule_attributes(self) -> np.ndarray:
        """``(M, 8)`` each nodule's median reader rating per :data:`RATING_NAMES` (never the
        malignancy), scaled from ``1..max`` to ``[0, 1]``: the nodule encoder's auxiliary
        appearance targets. Annotation-derived, like the size target; nodules without a row are 0."""
        m = len(self.crops)
        top = np.array([_SCALE_MAX[k] for k in RATING_NAMES], np.float32)
        out = np.zeros((m, len(RATING_NAMES)), np.float32)
        order = np.argsort(self.nodule, kind="stable")
        nods, first = np.unique(self.nodule[order], return_index=True)
        for j, rows in zip(nods, np.split(order, first[1:]), strict=True):
            med = np.median(self.structured[rows, : len(RATING_NAMES)], axis=0)
            out[j] = np.clip((med - 1.0) / (top - 1.0), 0.0, 1.0)
        return out

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        d: dict[str, Any] = {k: v for k, v in asdict(self).items() if isinstance(v, np.ndarray)}
        np.savez(path, version=EXAMPLES_VERSION, variant_names=json.dumps(list(self.variant_names)),
                 texts=json.dumps(self.texts), **d)

    @classmethod
    def load(cls, path: Path) -> ExampleSet:
        with np.load(path) as z:
            if int(z["version"]) != EXAMPLES_VERSION:
                raise ValueError(f"{path}: examples version {int(z['version'])} != {EXAMPLES_VERSION}")
            kw = {k: z[k] for k in z.files if k not in ("version", "variant_names", "texts")}
            return cls(**kw, variant_names=tuple(json.loads(str(z["variant_names"]))),
                       texts=json.loads(str(z["texts"])))


_SCALE_MAX = {"texture": 5, "calcification": 6, "margin": 5, "spiculation": 5, "lobulation": 5, "sphericity": 5,
              "internalStructure": 4, "subtlety": 5}


def _valid_ratings(r: NoduleRatings) -> NoduleRatings:
    """Clip a reader's ratings to their LIDC scales: a handful of database entries lie
    outside them (e.g. internalStructure 5 on a 1..4 scale)."""
    return NoduleRatings(**{k: float(min(max(round(v), 1), _SCALE_MAX[k])) for k, v in r.as_dict().items()})


def _focus_text(text: str) -> tuple[str, object]:
    """Parse a report; the text the encoder reads is its nodule mentions + impression.

    Reports carry a lot of boilerplate (technique, other organs); MiniLM reads
    at most ~100 word pieces here, so it is given the sentences that are about
    nodules (the parser's spans) and the impression.
    """
    claims = extract_claims(text)
    parts = [n.text for n in claims.positive_nodules] + ([claims.impression] if claims.impression else [])
    focus = " ".join(p for p in parts if p) or text
    return focus, claims


@dataclass(frozen=True)
class ReportSource:
    """What one nodule's reports are written from: one report per reader.

    ``reader_ratings`` / ``reader_diameters_mm`` (greatest axial diameter, mm) are in
    the same reader order; ``side``/``lobe`` come from where the nodule sits in the
    lung mask of its CT; ``label`` is 1 malignant, 0 benign, -1 indeterminate (from
    the median malignancy, which never reaches a report).
    """

    label: int
    reader_ratings: tuple[NoduleRatings, ...]
    reader_diameters_mm: tuple[float, ...]
    side: str | None
    lobe: str | None


def _label_code(median_malignancy: float) -> int:
    return {"malignant": 1, "benign": 0}.get(malignancy_class(median_malignancy), -1)


def _crop_variants(blocks: list[InsertedNodule], split: str, rng: np.random.Generator, n_aug: int,
                   workers: int | None = None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Crops (M, V, 32, 32, 32) float16 in [0, 1], their environment (M, V, 2: noise sigma HU,
    slice thickness mm) and the V variant names; train: ``n_aug`` augmented + a 5 mm crop,
    otherwise canonical, 5 mm and 20 %-noise crops. Inserted and real nodules alike.
    ``workers``: rendering threads (default: the CPU count, at most 4); the crops do not depend on it."""
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    if split == "train":
        names = tuple([f"aug{i}" for i in range(n_aug)] + ["thick5"])
    else:
        names = ("clean", "thick5", "noise20")
    crops = np.empty((len(blocks), len(names), 32, 32, 32), np.float16)
    crop_env = np.zeros((len(blocks), len(names), 2), np.float32)
    # The random draws are made here, serially, in the order one loop over the nodules made them;
    # the crops are then rendered in threads (scipy's resampling releases the GIL), so they are
    # the same crops whatever the number of workers.
    augs = [(draw_augmentations(rng, n_aug), draw_augmentations(rng, 1)) for _ in blocks] if split == "train" else None

    def render(m: int) -> None:
        ins = blocks[m]
        if augs is not None:
            variants = [crops_for(ins, None, augmentations=augs[m][0]),
                        crops_for(ins, None, thickness_mm=5.0, augmentations=augs[m][1])]
        else:
            variants = [crops_for(ins, None, 1), crops_for(ins, None, 1, thickness_mm=5.0),
                        crops_for(ins, None, 1, extra_noise_hu=NOISE_20PCT_HU)]
        v = 0
        for c, nz, th in variants:
            crops[m, v : v + len(c)] = normalize_hu(c)
            crop_env[m, v : v + len(c)] = (nz, th)
            v += len(c)

    with ThreadPoolExecutor(max(1, min(workers, len(blocks)))) as pool:
        list(pool.map(render, range(len(blocks))))
    return crops, crop_env, names


def _examples_from(cropped: tuple[np.ndarray, np.ndarray, tuple[str, ...]], sources: list[ReportSource], split: str,
                   rng: np.random.Generator, p_missing: float, progress: Callable[[str], None], t0: float
                   ) -> ExampleSet:
    """The shared half of both example builders: given the crops (:func:`_crop_variants`),
    one report per (nodule, reader) from ``sources`` (same nodule order), parsed and MiniLM-encoded."""
    from lungfuse.models.text import encode_texts

    crops, crop_env, names = cropped
    progress(f"[{split}] crops {crops.shape} ({time.time() - t0:.0f} s)")

    rows_nod, labels, texts, focus, claims_f, present, env_r, struct = [], [], [], [], [], [], [], []
    for m, src in enumerate(sources):
        for ratings, diam in zip(src.reader_ratings, src.reader_diameters_mm, strict=True):
            rows_nod.append(m)
            labels.append(src.label)
            struct.append([getattr(ratings, k) for k in RATING_NAMES] + [diam])
            missing = rng.random() < p_missing
            if missing:
                texts.append("")
                focus.append("")
                claims_f.append(np.zeros(len(CLAIM_FEATURES), np.float32))
                present.append(False)
                env_r.append([0.0, 0.0, 0.0, 0.0, 1.0])
                continue
            spec = ReportSpec(ratings=_valid_ratings(ratings), diameter_mm=max(float(diam), 1.0), side=src.side,
                              lobe=src.lobe, image_ref=(2, int(rng.integers(20, 200))))
            rep = generate_report(spec, sample_style(rng), rng)
            ftext, cl = _focus_text(rep.text)
            target = pick_target_claim(cl, rep.target_span)  # type: ignore[arg-type]
            texts.append(rep.text)
            focus.append(ftext)
            claims_f.append(claim_features(cl, target))  # type: ignore[arg-type]
            present.append(True)
            negation = float(cl.negative_statement or any(n.negated for n in cl.nodules))  # type: ignore[attr-defined]
            uncertain = float(any(n.uncertain for n in cl.positive_nodules))  # type: ignore[attr-defined]
            env_r.append([float(cl.completeness), float(len(rep.text.split()) * 1.3), negation, uncertain, 0.0])  # type: ignore[attr-defined]
    progress(f"[{split}] {len(texts)} reports written and parsed ({time.time() - t0:.0f} s)")
    sent = np.zeros((len(texts), 384), np.float16)
    # In chunks of 256 (the token states of all reports at once would take ~0.7 GB), the reports
    # ordered by length so that each chunk's batches are padded little (encode_texts).
    idx = sorted((i for i, p in enumerate(present) if p), key=lambda i: len(focus[i]))
    for s in range(0, len(idx), 256):
        chunk = idx[s : s + 256]
        enc = encode_texts([focus[i] for i in chunk], max_length=96, batch_size=64)
        sent[chunk] = enc.sentence.numpy().astype(np.float16)
    progress(f"[{split}] text embeddings ({time.time() - t0:.0f} s)")
    # reshape: an empty split (no patients) still gives arrays of the right rank.
    return ExampleSet(
        nodule=np.array(rows_nod, np.int32), label=np.array(labels, np.int8), sentence=sent,
        claims=np.array(claims_f, np.float32).reshape(-1, len(CLAIM_FEATURES)), present=np.array(present, bool),
        env_report=np.array(env_r, np.float32).reshape(-1, 5),
        structured=np.array(struct, np.float32).reshape(-1, len(RATING_NAMES) + 1), crops=crops,
        crop_env=crop_env, variant_names=names, texts=texts,
    )


def build_examples(split: str, lidc_root: Path, seed: int, n_aug: int = 4, p_missing: float = 0.0,
                   nodules: list[LibraryNodule] | None = None, progress: Callable[[str], None] = log.info
                   ) -> ExampleSet:
    """Build the examples of ``split`` by lesion insertion (deterministic for ``seed``).

    Library nodules of ``split`` are inserted into the bundled backgrounds under
    ``lidc_root`` (see :mod:`training_data`); each reader's report gets the insertion
    site's side/lobe.
    """
    rng = np.random.default_rng(seed)
    nods = nodules if nodules is not None else load_library(progress=progress).split(split)
    t0 = time.time()
    bgs = backgrounds_for(split, lidc_root)
    inserted = insert_all(nods, bgs, rng)
    by_key = {n.key: n for n in nods}
    progress(f"[{split}] inserted {len(inserted)} nodules into {[b.patient_id for b in bgs]} ({time.time() - t0:.0f} s)")
    sources = [ReportSource(_label_code(by_key[ins.key].malignancy_median), by_key[ins.key].reader_ratings,
                            by_key[ins.key].reader_diameters_mm, ins.side, ins.lobe) for ins in inserted]
    return _examples_from(_crop_variants(inserted, split, rng, n_aug), sources, split, rng, p_missing, progress, t0)


def build_real_examples(split: str, lidc: LidcRoot, seed: int, n_aug: int = 4, p_missing: float = 0.0,
                        progress: Callable[[str], None] = log.info) -> ExampleSet:
    """Build the examples of ``split`` from real scans of a local LIDC root (no insertion).

    Every patient of ``split`` in ``lidc`` (see :func:`lidc_root.discover`) is loaded and
    each of its real annotated nodules (50 % consensus centroid, z-y-x) gives one crop
    set and one report per reader, exactly as :func:`build_examples` does for inserted
    nodules. A patient that cannot be loaded is skipped with a warning naming its
    folder (added to ``lidc.warnings``). Patients of other splits are never read.
    """
    from lungfuse.pipelines.core.errors import DataLeakageError, IngestError

    rng = np.random.default_rng(seed)
    t0 = time.time()
    parts: list[tuple[np.ndarray, np.ndarray, tuple[str, ...]]] = [_crop_variants([], split, rng, n_aug)]
    sources: list[ReportSource] = []
    for patient in lidc.split(split):
        if patient.split != split:  # LidcPatient validates its split; this guards the filter itself
            raise DataLeakageError(f"refusing to use {patient.split} patient {patient.patient_id} for {split}",
                                   patient.folder)
        if not patient.has_annotations:
            continue
        try:
            got, reals = load_real_nodules(patient)
        except (IngestError, OSError, ValueError) as exc:
            msg = f"{patient.patient_id}: skipped, cannot use {patient.series_folder}: {exc}"
            log.warning("%s", msg)
            lidc.warnings.append(VolumeWarning("patient_skipped", msg, (str(patient.series_folder),)))
            continue
        # Cropped per patient so only one scan's blocks are in memory at a time (a full
        # download has ~1,500 train nodules); the RNG draws stay in nodule order.
        parts.append(_crop_variants(got, split, rng, n_aug))
        sources.extend(ReportSource(_label_code(n.malignancy_median), n.reader_ratings, n.reader_diameters_mm,
                                    b.side, b.lobe) for b, n in zip(got, reals, strict=True))
    progress(f"[{split}] {len(sources)} real nodules from {len(lidc.split(split))} patient(s) of {lidc.root} "
             f"({time.time() - t0:.0f} s)")
    crops = (np.concatenate([c for c, _, _ in parts]), np.concatenate([e for _, e, _ in parts]), parts[0][2])
    return _examples_from(crops, sources, split, rng, p_missing, progress, t0)


def load_or_build(split: str, lidc_root: Path | LidcRoot, seed: int, progress: Callable[[str], None] = log.info,
                  **kw: object) -> ExampleSet:
    """Cached examples of ``split``: a :class:`Path` (the bundled cases) selects lesion
    insertion, a :class:`LidcRoot` the real scans of a local download; their cache
    files differ (the latter's name carries a hash of the root, patients and ``kw``)."""
    if isinstance(lidc_root, LidcRoot):
        path = cache_dir() / f"examples-{split}-root{lidc_root.fingerprint(split, kw)}-s{seed}-v{EXAMPLES_VERSION}.npz"
        build: Callable[..., ExampleSet] = build_real_examples
    else:
        path = cache_dir() / f"examples-{split}-s{seed}-v{EXAMPLES_VERSION}.npz"
        build = build_examples
    if path.exists():
        return ExampleSet.load(path)
    ex = build(split, lidc_root, seed, progress=progress, **kw)
    ex.save(path)
    return ex


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Malignancy training settings (CPU defaults sized for a 2-core machine)."""

    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    threads: int = 2
    p_noise_aug: float = 0.25  # extra white noise, sigma ~ U(20, 300) HU
    p_thick: float = 0.2  # use the 5 mm crop
    p_drop_report: float = 0.1  # on top of the examples' own missing reports
    infonce_weight: float = 0.1
    size_weight: float = 0.5  # auxiliary ln(diameter mm) regression of the nodule encoder
    # auxiliary regression of the readers' median semantic ratings from the image embedding
    # (ExampleSet.nodule_attributes; mean squared error over the 8); 0 = no such head
    attr_weight: float = 0.0
    encoder_norm: str = "INSTANCE"  # the nodule encoder's norm (NoduleEncoderConfig.norm)
    encoder_stem_stride: int = 1  # 2: the encoder's stages start at 16^3 (NoduleEncoderConfig.stem_stride)
    # True: a step takes whole nodules (all their labelled reports, ~batch_size reports in all) and
    # encodes each nodule's crop once for all of them. The 3D encoder is nearly all of a step's
    # time and train has 2.7 labelled reports per nodule, so an epoch costs ~1/3 (67 vs ~220 s on
    # 2026-11-30); but the encoder then sees ~1/3 of the crop views, and on val a 10-epoch run
    # came out below the shipped per-report one (afa_eaf AUC 0.936 vs 0.943), so it is off.
    share_crops: bool = False
    # CPU: the nodule encoder's convolutional trunk runs on ``threads`` chunks of each batch in
    # parallel, one intra-op thread each (models.parallel.ThreadedTrunk: 4.0 vs 4.6 s per step on
    # 2 cores); the same gradients up to float rounding. False: the whole batch on ``threads``
    # intra-op threads, as the fusion models before the one shipped on 2026-11-30 were trained.
    split_batch: bool = True
    max_steps: int | None = None  # smoke tests


def _env_raw(noise: np.ndarray, thick: np.ndarray, env_report: np.ndarray) -> np.ndarray:
    """(B, 9) raw environment in ``models.eaf.ENV_FIELDS`` order (quality and detection confidence 1:
    examples sit on ground-truth nodule centres)."""
    b = len(noise)
    return np.column_stack([noise, thick, np.ones(b), np.ones(b), env_report]).astype(np.float32)


def make_batch(ex: ExampleSet, idx: np.ndarray, rng: np.random.Generator | None, cfg: TrainConfig | None = None,
               variant: int = 0, drop_report: bool = False) -> dict[str, torch.Tensor]:
    """Tensors for rows ``idx``.  With ``rng`` (training) variants/noise/report dropout are random.

    ``crop`` holds one crop per distinct nodule of ``idx`` (``(U, 1, S, S, S)``) and
    ``crop_index`` (``(B,)``) maps each row to its crop, so a nodule read by several readers is
    encoded once. Training with ``cfg.share_crops`` false draws a crop (variant and noise) per row
    instead, in the order the per-report batching always drew them.
    """
    import torch

    nod = ex.nodule[idx]
    train = (rng, cfg) if rng is not None and cfg is not None else None  # None: deterministic
    if train is not None and not train[1].share_crops:
        crop_nod, crop_index = nod, np.arange(len(idx))
    else:
        crop_nod, crop_index = np.unique(nod, return_inverse=True)
    if train is not None:
        rng, cfg = train
        nv = ex.crops.shape[1]
        thick_i = ex.variant_names.index("thick5") if "thick5" in ex.variant_names else None
        aug = [i for i, n in enumerate(ex.variant_names) if n.startswith("aug")] or [0]
        v = np.array([thick_i if (thick_i is not None and rng.random() < cfg.p_thick) else aug[rng.integers(len(aug))]
                      for _ in crop_nod])
        v = np.clip(v, 0, nv - 1)
    else:
        v = np.full(len(crop_nod), variant)
    crops = ex.crops[crop_nod, v].astype(np.float32)
    env_img = ex.crop_env[crop_nod, v].copy()
    if train is not None:
        rng, cfg = train
        noisy = rng.random(len(crop_nod)) < cfg.p_noise_aug
        sig = rng.uniform(20, 300, len(crop_nod)) * noisy
        crops += rng.normal(0, 1, crops.shape).astype(np.float32) * (sig / 1400.0)[:, None, None, None]
        env_img[:, 0] = np.hypot(env_img[:, 0], sig)
    env_img = env_img[crop_index]
    present = ex.present[idx].copy()
    sentence = ex.sentence[idx].astype(np.float32)
    claims = ex.claims[idx].copy()
    env_rep = ex.env_report[idx].copy()
    drop = np.full(len(idx), drop_report)
    if train is not None:
        rng, cfg = train
        drop |= rng.random(len(idx)) < cfg.p_drop_report
    if drop.any():
        present[drop] = False
        sentence[drop] = 0
        claims[drop] = 0
        env_rep[drop] = [0, 0, 0, 0, 1]
    env = _env_raw(env_img[:, 0], env_img[:, 1], env_rep)
    return {
        "crop": torch.from_numpy(crops[:, None]),
        "crop_index": torch.from_numpy(crop_index.astype(np.int64)),
        "sentence": torch.from_numpy(sentence),
        "claims": torch.from_numpy(claims),
        "present": torch.from_numpy(present),
        "env_raw": torch.from_numpy(env),
        "label": torch.from_numpy(ex.label[idx].astype(np.float32)),
        "log_diameter": torch.from_numpy(ex.nodule_log_diameter[nod]),
        "attributes": torch.from_numpy(ex.nodule_attributes[nod]),
    }


def _forward(model: FusionModel, b: dict[str, torch.Tensor], device: str, trunk: ThreadedTrunk | None = None,
             enc: NoduleEncoderOutput | None = None) -> FusionOutput:
    """The model on batch ``b``, each distinct crop encoded once; ``trunk`` runs the encoder's
    convolutional trunk on batch chunks in parallel (in training its ``backward`` is then the
    caller's to call after the loss's); ``enc``: the encoder's output for ``b["crop"]`` when the
    caller has it already."""
    from lungfuse.models.eaf import normalise_env
    from lungfuse.models.image import NoduleEncoderOutput

    strategies = model.policy.decide_batch(b["env_raw"])
    crop = b["crop"].to(device)
    if enc is None:
        enc = model.encoder(crop) if trunk is None else model.encoder.from_features(trunk(crop))
    i = b["crop_index"].to(device)
    encoded = NoduleEncoderOutput(enc.embedding[i], enc.feature_map[i], enc.logit[i])
    return model(crop, b["sentence"].to(device), b["claims"].to(device), b["present"].to(device),
                 normalise_env(b["env_raw"]).to(device), strategies, encoded=encoded)


def new_model(n_claims: int = len(CLAIM_FEATURES), encoder_norm: str = "INSTANCE",  # noqa: ANN201
              stem_stride: int = 1, n_attributes: int = 0):
    """A fresh fusion model; with ``stem_stride`` 2 the first residual stage does not stride, so the
    encoder's feature map stays 8^3 for a 32^3 crop; ``n_attributes`` > 0 adds the auxiliary
    rating head."""
    from lungfuse.models.fusion import FusionModel, FusionModelConfig
    from lungfuse.models.image import NoduleEncoderConfig
    from lungfuse.models.text import TextAdapterConfig

    strides = (2, 2, 1) if stem_stride == 1 else (1, 2, 1)
    enc = NoduleEncoderConfig(norm=encoder_norm, stem_stride=stem_stride, strides=strides)
    return FusionModel(FusionModelConfig(encoder=enc, text=TextAdapterConfig(n_claim_features=n_claims),
                                         n_attributes=n_attributes))


def train_fusion(cfg: TrainConfig, train: ExampleSet, out_dir: Path, progress: Callable[[str], None] = log.info):  # noqa: ANN201
    """Train all variants jointly; checkpoint every epoch and resume from ``out_dir/fusion_ckpt.pt``."""
    import torch
    import torch.nn.functional as F

    from lungfuse.models.eaf import eaf_loss
    from lungfuse.models.parallel import ThreadedTrunk, trunk_workers

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    model = new_model(train.claims.shape[1], cfg.encoder_norm, cfg.encoder_stem_stride,
                      len(RATING_NAMES) if cfg.attr_weight > 0 else 0).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rows = np.nonzero(train.label >= 0)[0]
    if cfg.share_crops:
        # whole nodules per step, as many as make ~batch_size reports on average
        by_row = rows[np.argsort(train.nodule[rows], kind="stable")]
        _, first = np.unique(train.nodule[by_row], return_index=True)
        by_nodule = np.split(by_row, first[1:])
        per_step = max(1, round(cfg.batch_size * len(by_nodule) / len(rows)))
        steps_per_epoch = int(np.ceil(len(by_nodule) / per_step))
    else:
        steps_per_epoch = int(np.ceil(len(rows) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, cfg.epochs * steps_per_epoch),
                                                pct_start=0.15)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "fusion_ckpt.pt"
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=cfg.device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        start = state["epoch"] + 1
        progress(f"resumed from {ckpt} at epoch {start}")
    t0 = time.time()
    step = 0
    # Training runs on the whole machine; the trunk's threads restore the caller's thread count.
    trunk = ThreadedTrunk(model.encoder.features, trunk_workers(cfg.device, cfg.threads, cfg.split_batch))
    try:
        for epoch in range(start, cfg.epochs):
            model.train()
            if cfg.share_crops:
                perm = rng.permutation(len(by_nodule))
                batches = [np.concatenate([by_nodule[j] for j in perm[s : s + per_step]])
                           for s in range(0, len(perm), per_step)]
            else:
                order = rng.permutation(rows)
                batches = [order[s : s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
            tot = 0.0
            for idx in batches:
                b = make_batch(train, idx, rng, cfg)
                y = b["label"].to(cfg.device)
                out = _forward(model, b, cfg.device, trunk)
                present = b["present"].to(cfg.device)
                loss = F.binary_cross_entropy_with_logits(out.logits["image_only"], y)
                loss = loss + F.binary_cross_entropy_with_logits(out.logits["concat"], y)
                if present.any():
                    loss = loss + F.binary_cross_entropy_with_logits(out.logits["text_only"][present], y[present])
                loss = loss + eaf_loss(out.eaf, y)
                loss = loss + cfg.infonce_weight * model.afa.info_nce(out.afa.z_img, out.afa.z_txt, present)
                if cfg.size_weight > 0:
                    loss = loss + cfg.size_weight * F.mse_loss(out.log_diameter, b["log_diameter"].to(cfg.device))
                if cfg.attr_weight > 0:
                    assert out.attributes is not None  # the model has the head when attr_weight > 0
                    loss = loss + cfg.attr_weight * F.mse_loss(out.attributes, b["attributes"].to(cfg.device))
                opt.zero_grad()
                loss.backward()
                trunk.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                sched.step()
                tot += float(loss.detach()) * len(y)
                step += 1
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
            progress(f"epoch {epoch + 1}/{cfg.epochs}: loss {tot / max(1, len(rows)):.4f} ({time.time() - t0:.0f} s)")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "epoch": epoch,
                        "config": asdict(cfg)}, ckpt)
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
    finally:
        trunk.close()
    return model


# ---------------------------------------------------------------------------
# Prediction, calibration, metrics
# ---------------------------------------------------------------------------
def encode_nodules(model: FusionModel, ex: ExampleSet, variant: int = 0, device: str = "cpu",
                   batch: int = 128) -> NoduleEncoderOutput:
    """The nodule encoder's output for every nodule of ``ex`` (crop variant ``variant``), in
    nodule order, for :func:`predict` to reuse when it scores the same crops several times."""
    import torch

    from lungfuse.models.image import NoduleEncoderOutput
    from lungfuse.models.parallel import ThreadedTrunk, trunk_workers

    model.eval()
    parts = []
    with torch.inference_mode(), ThreadedTrunk(model.encoder.features, trunk_workers(device)) as trunk:
        for s in range(0, len(ex.crops), batch):
            crop = torch.from_numpy(ex.crops[s : s + batch, variant].astype(np.float32)[:, None]).to(device)
            parts.append(model.encoder.from_features(trunk(crop)))
    return NoduleEncoderOutput(*(torch.cat(t) for t in zip(*parts, strict=True)))


def predict(model: FusionModel, ex: ExampleSet, rows: np.ndarray, variant: int = 0, drop_report: bool = False,
            device: str = "cpu", batch: int = 256, encoded: NoduleEncoderOutput | None = None
            ) -> dict[str, np.ndarray]:
    """Uncalibrated logits of every variant for ``rows`` (deterministic).

    ``encoded``: :func:`encode_nodules` of ``ex`` for this ``variant``, reused instead of
    encoding the crops again."""
    import torch

    from lungfuse.models.image import NoduleEncoderOutput
    from lungfuse.models.parallel import ThreadedTrunk, trunk_workers

    model.eval()
    outs: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode(), ThreadedTrunk(model.encoder.features, trunk_workers(device)) as trunk:
        for s in range(0, len(rows), batch):
            idx = rows[s : s + batch]
            b = make_batch(ex, idx, None, None, variant=variant, drop_report=drop_report)
            enc = None
            if encoded is not None:  # make_batch's crops are those of np.unique(nodules), in that order
                nod = torch.from_numpy(np.unique(ex.nodule[idx]).astype(np.int64))
                enc = NoduleEncoderOutput(*(t[nod] for t in encoded))
            o = _forward(model, b, device, trunk, enc)
            for k, v in o.logits.items():
                outs.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def binary_metrics(prob: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUC, error rate / sensitivity / specificity at ``threshold`` (malignant when ``prob >=
    threshold``), ECE (10 bins)."""
    from sklearn.metrics import roc_auc_score

    from lungfuse.models.calibration import expected_calibration_error

    pred = prob >= threshold
    pos, neg = y == 1, y == 0
    return {
        "auc": float(roc_auc_score(y, prob)),
        "error_rate": float(np.mean(pred != pos)),
        "sensitivity": float(pred[pos].mean()) if pos.any() else float("nan"),
        "specificity": float((~pred[neg]).mean()) if neg.any() else float("nan"),
        "ece": float(expected_calibration_error(prob, y.astype(int), n_bins=10)),
        "threshold": float(threshold),
        "n": int(len(y)),
    }


#: Candidate decision thresholds (probability) searched on val by :func:`decision_threshold`.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


def decision_threshold(prob: np.ndarray, y: np.ndarray) -> float:
    """The probability threshold with the fewest errors on ``(prob, y)`` - val data only - from
    :data:`THRESHOLD_GRID`; ties go to the one closest to 0.5.

    Why: the temperature keeps the ranking and the 0.5 point of the logits, so a calibrated
    probability is not automatically error-optimal at 0.5 (on val the shipped afa_eaf makes 15.4 %
    errors at 0.5 and 13.8 % at 0.62); the operating point is a val-picked setting like the
    detector's threshold.
    """
    errs = np.array([np.mean((prob >= t) != (y == 1)) for t in THRESHOLD_GRID])
    best = np.flatnonzero(errs <= errs.min() + 1e-12)
    return float(THRESHOLD_GRID[best[np.argmin(np.abs(THRESHOLD_GRID[best] - 0.5))]])


def uncalibrated() -> dict[str, dict]:
    """Temperature 1.0 for every variant: what is written when there is no val split to fit on."""
    from lungfuse.models.calibration import TemperatureScaler
    from lungfuse.models.fusion import VARIANTS

    return {k: TemperatureScaler(1.0).to_dict() for k in VARIANTS}


def calibrate(model: FusionModel, val: ExampleSet, device: str = "cpu") -> dict[str, dict]:
    """Per variant on ``val`` (clean crops, reports as generated): the temperature, then the
    decision threshold on the calibrated probabilities (:func:`decision_threshold`)."""
    from lungfuse.models.calibration import TemperatureScaler

    rows = np.nonzero(val.label >= 0)[0]
    logits = predict(model, val, rows, device=device)
    y = val.label[rows].astype(np.float32)
    out = {}
    for k, v in logits.items():
        ts = TemperatureScaler().fit(v, y)
        out[k] = {**ts.to_dict(), "decision_threshold": decision_threshold(np.asarray(ts.transform(v)), y)}
    return out


def calibrate_noise_threshold(model: FusionModel, val: ExampleSet, device: str = "cpu",
                              candidates: tuple[float, ...] = (25, 40, 60, 100, 150, 200)) -> float:
    """EAF's noise threshold: the candidate maximising val AUC of ``afa_eaf`` over clean + 20 %-noise crops."""
    from sklearn.metrics import roc_auc_score

    rows = np.nonzero(val.label >= 0)[0]
    noisy = val.variant_names.index("noise20")
    y = np.concatenate([val.label[rows], val.label[rows]])
    best, best_auc = model.policy.noise_threshold_hu, -1.0
    # The threshold only steers EAF's choice of path: the crops are encoded once, not per candidate.
    enc = {v: encode_nodules(model, val, v, device) for v in (0, noisy)}
    for thr in candidates:
        model.policy.noise_threshold_hu = float(thr)
        p = np.concatenate([predict(model, val, rows, v, device=device, encoded=enc[v])["afa_eaf"]
                            for v in (0, noisy)])
        auc = roc_auc_score(y, p)
        if auc > best_auc + 1e-4:
            best, best_auc = float(thr), auc
    model.policy.noise_threshold_hu = best
    return best


def structured_baseline(train: ExampleSet, *scored: ExampleSet, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Gradient boosting on one reader's 8 ratings + diameter (database values; no text, no image),
    fitted once on ``train``; per set in ``scored``, the probabilities of its labelled rows and
    those rows."""
    from sklearn.ensemble import GradientBoostingClassifier

    tr = train.label >= 0
    gb = GradientBoostingClassifier(random_state=seed).fit(train.structured[tr], train.label[tr])
    out = []
    for ex in scored:
        rows = np.nonzero(ex.label >= 0)[0]
        out.append((gb.predict_proba(ex.structured[rows])[:, 1], rows))
    return out


def evaluate_fusion(model: FusionModel, calib: dict[str, dict], train: ExampleSet, test: ExampleSet,
                    device: str = "cpu", val: ExampleSet | None = None) -> dict:
    """``malignancy`` and ``degraded`` sections of ``lungfuse evaluate``'s JSON (per report).

    Error rate, sensitivity and specificity are read at each variant's val-picked
    ``decision_threshold`` (0.5 for calibrations without one); the structured baseline's
    threshold is picked the same way on ``val`` when given (else 0.5), so all variants get the
    same treatment and test data never sets a threshold.
    """
    from lungfuse.models.calibration import TemperatureScaler

    def probs(logits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.asarray(TemperatureScaler.from_dict(calib[k]).transform(v), dtype=np.float64)
                for k, v in logits.items()}

    rows = np.nonzero(test.label >= 0)[0]
    y = test.label[rows]
    enc0 = encode_nodules(model, test, 0, device)  # the clean crops, scored three times below
    clean = probs(predict(model, test, rows, 0, device=device, encoded=enc0))
    mal = {k: binary_metrics(clean[k], y, float(calib[k].get("decision_threshold", 0.5)))
           for k in ("image_only", "text_only", "concat", "afa", "afa_eaf")}
    (p_sb, rows_sb), *on_val = structured_baseline(train, test, *([val] if val is not None else []))
    thr_sb = 0.5
    if val is not None:
        (p_sb_val, rows_sb_val), = on_val
        thr_sb = decision_threshold(p_sb_val, val.label[rows_sb_val])
    mal["structured_baseline"] = binary_metrics(p_sb, test.label[rows_sb], thr_sb)

    from sklearn.metrics import roc_auc_score

    def pair(p: dict[str, np.ndarray], yy: np.ndarray) -> dict[str, dict[str, float]]:
        return {k: {"auc": float(roc_auc_score(yy, p[k]))} for k in ("concat", "afa_eaf")}

    degraded = {
        "image_noise": pair(probs(predict(model, test, rows, test.variant_names.index("noise20"), device=device)), y),
        "thick_slices": pair(probs(predict(model, test, rows, test.variant_names.index("thick5"), device=device)), y),
    }
    inc = rows[(test.env_report[rows, 0] < 0.85) & test.present[rows]]
    degraded["report_incomplete"] = pair(probs(predict(model, test, inc, 0, device=device, encoded=enc0)), test.label[inc])
    degraded["report_incomplete"]["n"] = int(len(inc))  # type: ignore[assignment]
    degraded["report_missing"] = pair(probs(predict(model, test, rows, 0, drop_report=True, device=device, encoded=enc0)), y)
    return {"malignancy": mal, "degraded": degraded, "n_test_reports": int(len(rows)),
            "n_test_nodules": int(len(np.unique(test.nodule[rows])))}


# ---------------------------------------------------------------------------
# Weights on disk (resources/models) with a SHA-256 manifest
# ---------------------------------------------------------------------------
def save_fusion(model: FusionModel, calib: dict[str, dict], out_dir: Path, extra: dict | None = None) -> Path:
    """Write ``fusion.pt`` (float32 state_dict) + ``fusion.json`` and record both in ``manifest.json``."""
    import torch

    from lungfuse.pipelines.core.resources import write_manifest_entry

    out_dir.mkdir(parents=True, exist_ok=True)
    pt = out_dir / "fusion.pt"
    torch.save({k: v.detach().float().cpu() for k, v in model.state_dict().items()}, pt)
    write_manifest_entry(out_dir, pt.name, "fusion model weights (nodule encoder, text adapter, AFA, EAF, baseline heads)")
    write_fusion_meta(out_dir, {"model": "lungfuse-fusion", "version": 1, "config": model.config.to_dict(),
                                "policy": model.policy.to_dict(), "calibration": calib, **(extra or {})})
    return pt


def write_fusion_meta(out_dir: Path, meta: dict) -> None:
    """Write ``fusion.json`` (config, EAF policy, calibration) and record it in ``manifest.json``."""
    from lungfuse.pipelines.core.resources import write_manifest_entry

    (out_dir / "fusion.json").write_text(json.dumps(meta, indent=2, default=str))
    write_manifest_entry(out_dir, "fusion.json", "fusion model config, EAF policy and calibration")


