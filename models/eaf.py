"""EAF: Environment-Aware Fusion of the aligned image and report features.

Each case comes with an *environment*: how trustworthy the image is (noise, slice
thickness, acquisition quality, detector confidence) and how usable the report is
(completeness, length, negation, hedging, absence). A fixed, documented
:class:`FusionPolicy` maps the environment to a fusion *strategy*; :class:`EAF` computes
every strategy's logit (all paths are trained jointly) and returns, per row, the one its
strategy selects.

Strategies:

* ``"image_only"``: the image head alone (report missing).
* ``"late"``: one head per modality, ``w_img * logit_img + w_txt * logit_txt``; robust when
  one side is unreliable because a bad modality can only shift the logit, not corrupt the
  other's features.
* ``"hybrid"``: learned convex combination of early fusion, late fusion and a
  cross-attention head (report feature attending over image spatial tokens); the richest
  interaction, used when the report is complete and the image clean.
* ``"early"``: MLP on ``[a_img, a_txt]``; not chosen by the default policy but trained as a
  path of its own (and as a part of hybrid).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ENV_FIELDS",
    "STRATEGIES",
    "EnvironmentVector",
    "FusionPolicy",
    "EAFConfig",
    "EAFOutput",
    "EAF",
    "eaf_loss",
]

ENV_FIELDS: tuple[str, ...] = (
    "noise_sigma_hu",
    "slice_thickness_mm",
    "quality_score",
    "detection_confidence",
    "completeness",
    "report_length_tokens",
    "negation",
    "uncertainty",
    "report_missing",
)
STRATEGIES: tuple[str, ...] = ("image_only", "late", "hybrid", "early")

# Normalisation of each field in EnvironmentVector.to_tensor(): value / scale, clipped to
# [0, clip]. Scales put typical values near [0, 1]; clipping keeps pathological inputs
# (a 500 HU noise estimate, a 2000-token report) from saturating the gate MLP.
_NORM: dict[str, tuple[float, float]] = {
    "noise_sigma_hu": (100.0, 5.0),  # HU; low-dose lung CT ~ 10-60 HU
    "slice_thickness_mm": (5.0, 4.0),  # mm; 0.625-5 mm typical
    "quality_score": (1.0, 1.0),
    "detection_confidence": (1.0, 1.0),
    "completeness": (1.0, 1.0),
    "report_length_tokens": (256.0, 4.0),  # word pieces
    "negation": (1.0, 1.0),
    "uncertainty": (1.0, 1.0),
    "report_missing": (1.0, 1.0),
}
_BOOL_FIELDS = ("negation", "uncertainty", "report_missing")


@dataclass(frozen=True)
class EnvironmentVector:
    """The environment of one case (raw units; validated at construction).

    Image side:
        noise_sigma_hu: noise standard deviation in HU (>= 0, <= 2000).
        slice_thickness_mm: reconstructed slice thickness in mm (> 0, <= 20).
        quality_score: 0..1, 1 = clean acquisition (derived by the caller from ingestion
            warnings, slice gaps, artefacts).
        detection_confidence: 0..1, the detector's score for this nodule.
    Report side:
        completeness: 0..1, fraction of expected descriptors the report states (size,
            location, texture, margin, ...).
        report_length_tokens: length of the report in word pieces (int >= 0).
        negation: the report contains a negated nodule mention / negative statement.
        uncertainty: the report hedges ("possible", "cannot exclude", ...).
        report_missing: no report text at all (then :class:`FusionPolicy` ignores the other
            report fields).

    Raises ``ValueError`` naming the field when a value is out of range or of the wrong type.
    """

    noise_sigma_hu: float
    slice_thickness_mm: float
    quality_score: float
    detection_confidence: float
    completeness: float
    report_length_tokens: int
    negation: bool
    uncertainty: bool
    report_missing: bool

    def __post_init__(self) -> None:
        ranges: dict[str, tuple[float, float, bool]] = {  # (lo, hi, lo inclusive)
            "noise_sigma_hu": (0.0, 2000.0, True),
            "slice_thickness_mm": (0.0, 20.0, False),
            "quality_score": (0.0, 1.0, True),
            "detection_confidence": (0.0, 1.0, True),
            "completeness": (0.0, 1.0, True),
        }
        for name, (lo, hi, lo_incl) in ranges.items():
            v = getattr(self, name)
            if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
                raise ValueError(f"{name} must be a number, got {v!r}")
            v = float(v)
            ok = math.isfinite(v) and (v >= lo if lo_incl else v > lo) and v <= hi
            if not ok:
                bound = "[" if lo_incl else "("
                raise ValueError(f"{name}={v!r} outside {bound}{lo}, {hi}]")
            object.__setattr__(self, name, v)
        n = self.report_length_tokens
        if isinstance(n, bool | np.bool_) or not isinstance(n, int | np.integer | float | np.floating):
            raise ValueError(f"report_length_tokens must be an integer, got {n!r}")
        if not (math.isfinite(float(n)) and float(n) == int(n) and n >= 0):
            raise ValueError(f"report_length_tokens={n!r} must be an integer >= 0")
        object.__setattr__(self, "report_length_tokens", int(n))
        for name in _BOOL_FIELDS:
            v = getattr(self, name)
            if not isinstance(v, bool | np.bool_):
                raise ValueError(f"{name} must be a bool, got {v!r}")
            object.__setattr__(self, name, bool(v))

    def to_dict(self) -> dict[str, float | int | bool]:
        """Raw values keyed by :data:`ENV_FIELDS`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, float | int | bool]) -> EnvironmentVector:
        kw: dict[str, Any] = {f.name: d[f.name] for f in fields(cls)}  # validated by __post_init__
        return cls(**kw)

    def to_raw_tensor(self) -> torch.Tensor:
        """``(len(ENV_FIELDS),)`` float32 raw values (booleans as 0/1), for :meth:`FusionPolicy.decide_batch`."""
        return torch.tensor([float(getattr(self, f)) for f in ENV_FIELDS], dtype=torch.float32)

    def to_tensor(self) -> torch.Tensor:
        """``(len(ENV_FIELDS),)`` float32 normalised input of the EAF gate.

        Per field (order :data:`ENV_FIELDS`): noise_sigma_hu / 100 (clip 5),
        slice_thickness_mm / 5 (clip 4), quality_score, detection_confidence, completeness
        as is, report_length_tokens / 256 (clip 4), booleans as 0/1.
        """
        return normalise_env(self.to_raw_tensor())


def normalise_env(raw: torch.Tensor) -> torch.Tensor:
    """Raw environment tensor ``(..., len(ENV_FIELDS))`` -> normalised (see :meth:`EnvironmentVector.to_tensor`)."""
    scale = torch.tensor([_NORM[f][0] for f in ENV_FIELDS], dtype=raw.dtype, device=raw.device)
    clip = torch.tensor([_NORM[f][1] for f in ENV_FIELDS], dtype=raw.dtype, device=raw.device)
    return torch.minimum((raw / scale).clamp(min=0.0), clip)


def _default_weights() -> dict[str, tuple[float, float]]:
    return {"image_only": (1.0, 0.0), "late": (0.5, 0.5), "hybrid": (0.5, 0.5), "early": (0.5, 0.5)}


@dataclass
class FusionPolicy:
    """The default, rule-based choice of fusion strategy.

    Rules, first match wins:

    1. ``report_missing``                        -> ``"image_only"``
    2. ``noise_sigma_hu > noise_threshold_hu``   -> ``"late"`` (noisy image: keep modalities apart)
    3. ``completeness > completeness_threshold`` -> ``"hybrid"`` (strictly greater: 0.85 itself is ``"late"``)
    4. otherwise                                 -> ``"late"``

    ``noise_threshold_hu`` defaults to 40 HU and is meant to be calibrated on the validation
    split by the training code (store it with ``to_dict``). ``default_weights`` are the
    per-strategy (image, text) modality weights EAF's gate refines; ``image_only`` stays (1, 0).
    """

    noise_threshold_hu: float = 40.0
    completeness_threshold: float = 0.85
    default_weights: dict[str, tuple[float, float]] = field(default_factory=_default_weights)

    def decide(self, env: EnvironmentVector) -> str:
        """Strategy for one environment."""
        if env.report_missing:
            return "image_only"
        if env.noise_sigma_hu > self.noise_threshold_hu:
            return "late"
        if env.completeness > self.completeness_threshold:
            return "hybrid"
        return "late"

    def decide_batch(
        self, env: torch.Tensor | Sequence[EnvironmentVector], *, normalised: bool = False
    ) -> list[str]:
        """Strategies for a batch: a list of :class:`EnvironmentVector`, or a tensor
        ``(B, len(ENV_FIELDS))`` of raw values (``normalised=True``: the output of
        :meth:`EnvironmentVector.to_tensor`; noise is then un-scaled by 100).
        """
        if not torch.is_tensor(env):
            return [self.decide(e) for e in env]
        t = env.detach().float().reshape(-1, len(ENV_FIELDS))
        noise = t[:, ENV_FIELDS.index("noise_sigma_hu")] * (_NORM["noise_sigma_hu"][0] if normalised else 1.0)
        complete = t[:, ENV_FIELDS.index("completeness")]
        missing = t[:, ENV_FIELDS.index("report_missing")] > 0.5
        # codes index STRATEGIES: 0 image_only, 1 late, 2 hybrid; applied in reverse rule order.
        code = torch.ones(t.shape[0], dtype=torch.long)
        code = torch.where(complete > self.completeness_threshold, torch.full_like(code, 2), code)
        code = torch.where(noise > self.noise_threshold_hu, torch.full_like(code, 1), code)
        code = torch.where(missing, torch.zeros_like(code), code)
        return [STRATEGIES[i] for i in code.tolist()]

    def weights_for(self, strategies: Sequence[str]) -> torch.Tensor:
        """``(B, 2)`` default (image, text) weights of each row's strategy."""
        return torch.tensor([self.default_weights[s] for s in strategies], dtype=torch.float32)

    def to_dict(self) -> dict[str, object]:
        return {
            "noise_threshold_hu": float(self.noise_threshold_hu),
            "completeness_threshold": float(self.completeness_threshold),
            "default_weights": {k: list(v) for k, v in self.default_weights.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> FusionPolicy:
        dw = d.get("default_weights")
        weights = _default_weights()
        if isinstance(dw, Mapping):
            weights.update({str(k): (float(v[0]), float(v[1])) for k, v in dw.items()})
        return cls(
            noise_threshold_hu=float(d.get("noise_threshold_hu", 40.0)),  # type: ignore[arg-type]
            completeness_threshold=float(d.get("completeness_threshold", 0.85)),  # type: ignore[arg-type]
            default_weights=weights,
        )


@dataclass(frozen=True)
class EAFConfig:
    """Configuration of :class:`EAF`.

    Attributes:
        shared_dim: S, size of AFA's aligned features and of the image tokens.
        env_dim: size of the normalised environment vector (``len(ENV_FIELDS)``).
        hidden: hidden width of the heads and of the gate.
        n_heads: heads of the hybrid cross-attention (must divide ``shared_dim``).
        dropout: dropout in the heads.
    """

    shared_dim: int = 128
    env_dim: int = len(ENV_FIELDS)
    hidden: int = 64
    n_heads: int = 4
    dropout: float = 0.1


@dataclass
class EAFOutput:
    """Output of :meth:`EAF.forward`.

    Attributes:
        logit: ``(B,)`` malignancy logit of each row's strategy.
        path_logits: ``{"early", "late", "hybrid", "image_only"}`` -> ``(B,)``: every path for
            every row, for joint supervision.
        logit_txt: ``(B,)`` text head alone (the late path's text term; useful for discordance).
        weights: ``(B, 2)`` final (image, text) modality weights used by the late path.
        gate: ``(B, 2)`` raw gate softmax.
        strategies: the strategy of each row.
    """

    logit: torch.Tensor
    path_logits: dict[str, torch.Tensor]
    logit_txt: torch.Tensor
    weights: torch.Tensor
    gate: torch.Tensor
    strategies: list[str]


def _head(inp: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


class EAF(nn.Module):
    """Environment-aware fusion (see the module docstring).

    Gate: ``softmax(MLP(env))`` gives (image, text) weights ``g``; the final late-fusion
    weights are ``w = d * g / sum(d * g)`` with ``d`` the policy's default weights for the row's
    strategy. With ``d = (0.5, 0.5)`` this is just ``g`` (the environment decides the
    balance); with ``image_only``'s ``d = (1, 0)`` it stays exactly (1, 0) whatever the gate says.
    """

    def __init__(self, config: EAFConfig | None = None, policy: FusionPolicy | None = None) -> None:
        super().__init__()
        self.config = config or EAFConfig()
        self.policy = policy or FusionPolicy()
        c = self.config
        s = c.shared_dim
        self.early_head = _head(2 * s, c.hidden, c.dropout)
        self.img_head = _head(s, c.hidden, c.dropout)
        self.txt_head = _head(s, c.hidden, c.dropout)
        self.query = nn.Linear(s, s)
        self.cross_attn = nn.MultiheadAttention(s, c.n_heads, dropout=0.0, batch_first=True)
        self.attn_norm = nn.LayerNorm(s)
        self.attn_head = _head(2 * s, c.hidden, c.dropout)
        self.hybrid_mix = nn.Parameter(torch.zeros(3))  # softmax -> equal thirds at init
        self.gate = nn.Sequential(nn.Linear(c.env_dim, c.hidden), nn.GELU(), nn.Linear(c.hidden, 2))

    def forward(
        self,
        a_img: torch.Tensor,
        a_txt: torch.Tensor,
        env_tensor: torch.Tensor,
        strategies: Sequence[str],
        img_tokens: torch.Tensor | None = None,
    ) -> EAFOutput:
        """Fuse one batch.

        Args:
            a_img, a_txt: ``(B, S)`` AFA aligned features.
            env_tensor: ``(B, env_dim)`` normalised environments (``EnvironmentVector.to_tensor``).
            strategies: B strategy names from :data:`STRATEGIES` (usually ``policy.decide_batch``).
            img_tokens: ``(B, N, S)`` image spatial tokens (``AFA.voxel_tokens``); ``None``
                uses ``a_img`` as a single token.

        Returns:
            :class:`EAFOutput`.
        """
        b = a_img.shape[0]
        strategies = list(strategies)
        if len(strategies) != b:
            raise ValueError(f"{len(strategies)} strategies for a batch of {b}")
        bad = sorted(set(strategies) - set(STRATEGIES))
        if bad:
            raise ValueError(f"unknown strategies {bad}; expected {STRATEGIES}")

        logit_img = self.img_head(a_img).squeeze(-1)
        logit_txt = self.txt_head(a_txt).squeeze(-1)
        early = self.early_head(torch.cat([a_img, a_txt], dim=-1)).squeeze(-1)

        gate = self.gate(env_tensor.to(a_img.dtype)).softmax(dim=-1)
        default = self.policy.weights_for(strategies).to(device=a_img.device, dtype=a_img.dtype)
        w = default * gate
        w = w / w.sum(dim=-1, keepdim=True).clamp(min=1e-8)
        late = w[:, 0] * logit_img + w[:, 1] * logit_txt

        tokens = a_img.unsqueeze(1) if img_tokens is None else img_tokens
        q = self.query(a_txt).unsqueeze(1)
        ctx, _ = self.cross_attn(q, tokens, tokens, need_weights=False)
        ctx = self.attn_norm(ctx.squeeze(1))
        attn_logit = self.attn_head(torch.cat([ctx, a_txt], dim=-1)).squeeze(-1)
        mix = self.hybrid_mix.softmax(dim=0)
        hybrid = mix[0] * early + mix[1] * late + mix[2] * attn_logit

        paths = {"early": early, "late": late, "hybrid": hybrid, "image_only": logit_img}
        stacked = torch.stack([paths[s] for s in STRATEGIES], dim=1)  # (B, len(STRATEGIES))
        idx = torch.tensor([STRATEGIES.index(s) for s in strategies], device=a_img.device)
        logit = stacked.gather(1, idx[:, None]).squeeze(1)
        return EAFOutput(
            logit=logit, path_logits=paths, logit_txt=logit_txt, weights=w, gate=gate, strategies=strategies
        )


def eaf_loss(
    out: EAFOutput, target: torch.Tensor, pos_weight: torch.Tensor | float | None = None
) -> torch.Tensor:
    """Mean BCE over all path logits + BCE on the selected logit.

    ``target``: ``(B,)`` in {0, 1} (or soft labels in [0, 1]). ``pos_weight`` as in
    ``binary_cross_entropy_with_logits`` (class imbalance).
    """
    y = target.to(out.logit.dtype).reshape(-1)
    pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=y.dtype, device=y.device)
    paths = torch.stack(
        [F.binary_cross_entropy_with_logits(v, y, pos_weight=pw) for v in out.path_logits.values()]
    ).mean()
    return paths + F.binary_cross_entropy_with_logits(out.logit, y, pos_weight=pw)
