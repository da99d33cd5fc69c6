"""One finding through the fusion model: the report as the text branch reads it, the EAF environment,
the fused and calibrated malignancy probability, and the crop's voxel->LPS affine.

Research software, NOT for diagnostic use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lungfuse.pipelines.core.volume import CTVolume
from lungfuse.pipelines.inference.registry import LoadedModels
from lungfuse.pipelines.io.report import Report
from lungfuse.pipelines.nlp.claims import ReportClaims

__all__ = ["SERIOUS_WARNINGS", "Fused", "ReportText", "crop_affine", "environment", "focus_text", "fuse",
           "fused_probability_batch", "quality_score", "sigmoid", "to_report_span"]

#: Ingestion warnings that lower the EAF environment's quality score (0.15 each).
SERIOUS_WARNINGS = {"gap", "uneven_spacing", "gantry_tilt", "skipped_file", "duplicate_position", "mixed_size"}


def quality_score(vol: CTVolume) -> float:
    codes = [w.code for w in vol.warnings]
    bad = sum(1 for c in codes if c in SERIOUS_WARNINGS)
    return float(np.clip(1.0 - 0.15 * bad, 0.2, 1.0))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 60.0), -60.0)))


@dataclass
class ReportText:
    """The report as the text branch reads it (as in training: nodule sentences + impression)."""

    report: Report
    claims: ReportClaims
    focus: str
    pieces: list[tuple[int, int, int]]  # (focus_start, report_start, length)
    sentence: np.ndarray  # (384,)
    tokens: Any  # TextEncoding of the focus


def focus_text(report: Report, claims: ReportClaims) -> tuple[str, list[tuple[int, int, int]]]:
    parts: list[tuple[str, int]] = [(n.text, n.span[0]) for n in claims.positive_nodules if n.text]
    if claims.impression:
        parts.append((claims.impression, max(report.text.find(claims.impression), 0)))
    if not parts:
        return report.text, [(0, 0, len(report.text))]
    out, pieces, pos = [], [], 0
    for txt, rstart in parts:
        pieces.append((pos, rstart, len(txt)))
        out.append(txt)
        pos += len(txt) + 1
    return " ".join(out), pieces


def to_report_span(pieces: list[tuple[int, int, int]], start: int, end: int) -> tuple[int, int]:
    for fs, rs, n in pieces:
        if fs <= start < fs + n:
            return rs + (start - fs), rs + min(end - fs, n)
    return start, end


def environment(vol: CTVolume, det_score: float, text: ReportText | None, mentioned: bool) -> Any:
    from lungfuse.models.eaf import EnvironmentVector

    q = vol.quality
    noise = float(q.noise_sigma_hu) if q.noise_sigma_hu is not None and math.isfinite(q.noise_sigma_hu) else 20.0
    thick = float(q.slice_thickness_mm) if q.slice_thickness_mm and q.slice_thickness_mm > 0 else float(vol.spacing[0])
    if text is None or not mentioned:
        return EnvironmentVector(min(noise, 2000.0), min(thick, 20.0), quality_score(vol), float(det_score),
                                 0.0, 0, False, False, True)
    cl = text.claims
    return EnvironmentVector(
        noise_sigma_hu=min(noise, 2000.0), slice_thickness_mm=min(thick, 20.0), quality_score=quality_score(vol),
        detection_confidence=float(np.clip(det_score, 0.0, 1.0)), completeness=float(cl.completeness),
        report_length_tokens=int(len(text.report.text.split()) * 1.3),
        negation=bool(cl.negative_statement or any(n.negated for n in cl.nodules)),
        uncertainty=bool(any(n.uncertain for n in cl.positive_nodules)), report_missing=False)


@dataclass
class Fused:
    probs: dict[str, float]
    strategy: str
    weights: list[float]
    env: dict[str, Any]
    cos: float
    w_img_mean: float
    w_txt_mean: float
    feature_map: Any
    logit_afa_eaf: float


def fuse(models: LoadedModels, crop01: np.ndarray, sentence: np.ndarray | None, claim_vec: np.ndarray | None, env: Any,
          need_map: bool = False) -> Fused:
    """One finding through the fusion model (eval, no grad)."""
    import torch

    from lungfuse.models.eaf import normalise_env
    from lungfuse.pipelines.nlp.text_features import CLAIM_FEATURES

    fm = models.fusion
    dev = models.device
    present = sentence is not None
    sent = torch.from_numpy(np.asarray(sentence if present else np.zeros(384), np.float32))[None]
    cv = torch.from_numpy(np.asarray(claim_vec if claim_vec is not None else np.zeros(len(CLAIM_FEATURES)), np.float32))[None]
    strategy = fm.policy.decide(env)
    with torch.inference_mode():
        out = fm(torch.from_numpy(np.ascontiguousarray(crop01, np.float32))[None, None].to(dev), sent.to(dev), cv.to(dev),
                 torch.tensor([present], device=dev), normalise_env(env.to_raw_tensor()[None]).to(dev), [strategy])
    probs = {}
    for k, v in out.logits.items():
        t = float(models.calibration.get(k, {}).get("temperature", 1.0))
        probs[k] = sigmoid(float(v[0]) / t)
    return Fused(probs, strategy, [float(x) for x in out.eaf.weights[0].cpu()], env.to_dict(),
                  float(out.afa.cos_sim[0]), float(out.afa.w_img[0].mean()), float(out.afa.w_txt[0].mean()),
                  out.feature_map if need_map else None, float(out.logits["afa_eaf"][0]))


def fused_probability_batch(models: LoadedModels, crop01: np.ndarray, sentences: np.ndarray, claim_vecs: np.ndarray,
                             env: Any) -> np.ndarray:
    """Calibrated ``afa_eaf`` probability of one crop with N report variants (one forward pass)."""
    import torch

    from lungfuse.models.eaf import normalise_env

    n = len(sentences)
    dev = models.device
    strategy = models.fusion.policy.decide(env)
    t = float(models.calibration.get("afa_eaf", {}).get("temperature", 1.0))
    from lungfuse.models.image import NoduleEncoderOutput

    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(crop01, np.float32))[None, None].to(dev)
        e = models.fusion.encoder(x)  # once: every variant shares the crop
        enc = NoduleEncoderOutput(e.embedding.expand(n, -1), e.feature_map.expand(n, *e.feature_map.shape[1:]),
                                  e.logit.expand(n))
        out = models.fusion(
            x.expand(n, 1, *crop01.shape),
            torch.from_numpy(np.asarray(sentences, np.float32)).to(dev),
            torch.from_numpy(np.asarray(claim_vecs, np.float32)).to(dev), torch.ones(n, dtype=torch.bool, device=dev),
            normalise_env(env.to_raw_tensor()[None]).expand(n, -1).to(dev), [strategy] * n, encoded=enc)
    return torch.sigmoid(out.logits["afa_eaf"].float().cpu() / t).numpy()


def crop_affine(vol_affine: np.ndarray, spacing: Sequence[float], centre_src: Sequence[float]) -> np.ndarray:
    """4x4 map crop voxel (z-y-x) -> LPS of a CROP_SIZE^3 crop at CROP_SPACING_MM around ``centre_src``."""
    from lungfuse.pipelines.imaging.crops import CROP_SIZE, CROP_SPACING_MM

    sc = CROP_SPACING_MM / np.asarray(spacing, float)
    to_src = np.eye(4)
    to_src[:3, :3] = np.diag(sc)
    to_src[:3, 3] = np.asarray(centre_src, float) - (CROP_SIZE - 1) / 2.0 * sc
    return vol_affine @ to_src
