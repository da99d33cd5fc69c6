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

Test patients never train, tune or calibrate: temperatures and the EAF noise
threshold are fitted on ``val``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .claims import extract_claims
from .crops import normalize_hu
from .library import LibraryNodule, cache_dir, load_library
from .lidc import RATING_NAMES
from .reportgen import ReportSpec, generate_report, sample_style
from .text_features import CLAIM_FEATURES, claim_features, pick_target_claim
from .training_data import backgrounds_for, crops_for, insert_all

log = logging.getLogger(__name__)

EXAMPLES_VERSION = 1
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

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        d = {k: v for k, v in asdict(self).items() if isinstance(v, np.ndarray)}
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


def build_examples(split: str, lidc_root: Path, seed: int, n_aug: int = 4, p_missing: float = 0.0,
                   nodules: list[LibraryNodule] | None = None, progress: Callable[[str], None] = log.info
                   ) -> ExampleSet:
    """Build the examples of ``split`` (deterministic for ``seed``)."""
    from lungfuse.models.text import encode_texts

    rng = np.random.default_rng(seed)
    nods = nodules if nodules is not None else load_library().split(split)
    t0 = time.time()
    bgs = backgrounds_for(split, lidc_root)
    inserted = insert_all(nods, bgs, rng)
    by_key = {n.key: n for n in nods}
    progress(f"[{split}] inserted {len(inserted)} nodules into {[b.patient_id for b in bgs]} ({time.time() - t0:.0f} s)")
    if split == "train":
        names = tuple([f"aug{i}" for i in range(n_aug)] + ["thick5"])
    else:
        names = ("clean", "thick5", "noise20")
    crops = np.empty((len(inserted), len(names), 32, 32, 32), np.float16)
    crop_env = np.zeros((len(inserted), len(names), 2), np.float32)
    for m, ins in enumerate(inserted):
        if split == "train":
            c, nz, th = crops_for(ins, rng, n_aug)
            crops[m, :n_aug] = normalize_hu(c)
            crop_env[m, :n_aug] = (nz, th)
            c, nz, th = crops_for(ins, rng, 1, thickness_mm=5.0)
            crops[m, n_aug] = normalize_hu(c[0])
            crop_env[m, n_aug] = (nz, th)
        else:
            c, nz, th = crops_for(ins, None, 1)
            crops[m, 0] = normalize_hu(c[0])
            crop_env[m, 0] = (nz, th)
            c, nz, th = crops_for(ins, None, 1, thickness_mm=5.0)
            crops[m, 1] = normalize_hu(c[0])
            crop_env[m, 1] = (nz, th)
            c, nz, th = crops_for(ins, None, 1, extra_noise_hu=NOISE_20PCT_HU)
            crops[m, 2] = normalize_hu(c[0])
            crop_env[m, 2] = (nz, th)
    progress(f"[{split}] crops {crops.shape} ({time.time() - t0:.0f} s)")

    rows_nod, labels, texts, focus, claims_f, present, env_r, struct = [], [], [], [], [], [], [], []
    for m, ins in enumerate(inserted):
        nod = by_key[ins.key]
        lab = {"malignant": 1, "benign": 0}.get(nod.label, -1)
        for ratings, diam in zip(nod.reader_ratings, nod.reader_diameters_mm, strict=True):
            rows_nod.append(m)
            labels.append(lab)
            struct.append([getattr(ratings, k) for k in RATING_NAMES] + [diam])
            missing = rng.random() < p_missing
            if missing:
                texts.append("")
                focus.append("")
                claims_f.append(np.zeros(len(CLAIM_FEATURES), np.float32))
                present.append(False)
                env_r.append([0.0, 0.0, 0.0, 0.0, 1.0])
                continue
            spec = ReportSpec(ratings=ratings, diameter_mm=max(float(diam), 1.0), side=ins.side, lobe=ins.lobe,
                              image_ref=(2, int(rng.integers(20, 200))))
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
    idx = [i for i, p in enumerate(present) if p]
    for s in range(0, len(idx), 256):
        chunk = idx[s : s + 256]
        enc = encode_texts([focus[i] for i in chunk], max_length=96, batch_size=64)
        sent[chunk] = enc.sentence.numpy().astype(np.float16)
    progress(f"[{split}] text embeddings ({time.time() - t0:.0f} s)")
    return ExampleSet(
        nodule=np.array(rows_nod, np.int32), label=np.array(labels, np.int8), sentence=sent,
        claims=np.array(claims_f, np.float32), present=np.array(present, bool),
        env_report=np.array(env_r, np.float32), structured=np.array(struct, np.float32), crops=crops,
        crop_env=crop_env, variant_names=names, texts=texts,
    )


def load_or_build(split: str, lidc_root: Path, seed: int, progress: Callable[[str], None] = log.info,
                  **kw: object) -> ExampleSet:
    path = cache_dir() / f"examples-{split}-s{seed}-v{EXAMPLES_VERSION}.npz"
    if path.exists():
        return ExampleSet.load(path)
    ex = build_examples(split, lidc_root, seed, progress=progress, **kw)  # type: ignore[arg-type]
    ex.save(path)
    return ex
