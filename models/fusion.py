"""The malignancy model: nodule encoder + text adapter + AFA + EAF, and its baselines.

One module holds every variant scored by ``lungfuse evaluate`` so that they
are trained on the same batches and compared on the same reports:

* ``image_only`` - the nodule encoder's own head;
* ``text_only`` - a linear head on the adapted text features;
* ``concat`` - a static concatenation baseline: an MLP on [image embedding,
  text features] with NO AFA and NO EAF.  Its inputs are detached, so it
  cannot shape the shared encoders: it is a probe of what plain concatenation
  of the same features achieves;
* ``afa`` - AFA alignment + the early-fusion head (no environment awareness);
* ``afa_eaf`` - AFA + EAF, the strategy picked per case by the policy.

Tensors: crops (B, 1, D, H, W) with D = z, HU normalised to [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .afa import AFA, AFAConfig, AFAOutput
from .eaf import EAF, EAFConfig, EAFOutput, FusionPolicy
from .image import NoduleEncoder, NoduleEncoderConfig, NoduleEncoderOutput
from .text import TextAdapter, TextAdapterConfig

__all__ = ["FusionModelConfig", "FusionModel", "FusionOutput", "VARIANTS"]

VARIANTS = ("image_only", "text_only", "concat", "afa", "afa_eaf")


@dataclass(frozen=True)
class FusionModelConfig:
    encoder: NoduleEncoderConfig = field(default_factory=NoduleEncoderConfig)
    text: TextAdapterConfig = field(default_factory=TextAdapterConfig)
    afa: AFAConfig = field(default_factory=AFAConfig)
    eaf: EAFConfig = field(default_factory=EAFConfig)
    # Auxiliary outputs regressed from the image embedding: the readers' median semantic ratings
    # (lidc.RATING_NAMES order, each scaled to [0, 1]). 0 = no such head (weights before 2026-11-30).
    n_attributes: int = 0

    def __post_init__(self) -> None:
        if self.n_attributes < 0:
            raise ValueError(f"n_attributes must be >= 0, got {self.n_attributes}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FusionModelConfig:
        def build(klass: type[Any], v: Mapping[str, Any]) -> Any:
            kw = {k: tuple(x) if isinstance(x, list) else x for k, x in v.items()}
            return klass(**kw)

        return cls(build(NoduleEncoderConfig, d["encoder"]), build(TextAdapterConfig, d["text"]),
                   build(AFAConfig, d["afa"]), build(EAFConfig, d["eaf"]), int(d.get("n_attributes", 0)))


@dataclass
class FusionOutput:
    logits: dict[str, torch.Tensor]  # one (B,) logit per variant in VARIANTS
    afa: AFAOutput
    eaf: EAFOutput
    embedding: torch.Tensor  # (B, embed_dim) image embedding
    log_diameter: torch.Tensor  # (B,) ln(diameter mm) estimated from the image embedding
    feature_map: torch.Tensor  # (B, C, d, h, w) for Grad-CAM / cross-attention
    attributes: torch.Tensor | None = None  # (B, n_attributes) rating estimates in [0, 1] scale, or None


class FusionModel(nn.Module):
    """All variants over shared encoders (see module docstring)."""

    def __init__(self, config: FusionModelConfig | None = None, policy: FusionPolicy | None = None) -> None:
        super().__init__()
        self.config = config or FusionModelConfig()
        c = self.config
        self.encoder = NoduleEncoder(c.encoder)
        self.text_adapter = TextAdapter(c.text)
        self.afa = AFA(c.afa)
        self.eaf = EAF(c.eaf, policy or FusionPolicy())
        self.text_head = nn.Linear(c.text.text_dim, 1)
        # Auxiliary ln(diameter mm) regression on the image embedding, so that the embedding states
        # the lesion's size explicitly (trained with ``TrainConfig.size_weight``): the encoder
        # without it ranked nodules below their plain reader diameter (per-nodule AUC 0.896 vs 0.907
        # on train), although size is the strongest single cue of malignancy.
        self.size_head = nn.Linear(c.encoder.embed_dim, 1)
        # Auxiliary regression of the readers' median semantic ratings (texture, margin, spiculation,
        # ...; never malignancy) from the image embedding, so that the embedding states the
        # appearance the readers rated: on val, gradient boosting on those medians + diameter ranks
        # malignancy at AUC 0.974 where the encoder alone reached 0.938.
        self.attr_head = nn.Linear(c.encoder.embed_dim, c.n_attributes) if c.n_attributes else None
        self.concat_head = nn.Sequential(
            nn.Linear(c.encoder.embed_dim + c.text.text_dim, 64), nn.GELU(), nn.Dropout(0.1), nn.Linear(64, 1)
        )

    @property
    def policy(self) -> FusionPolicy:
        return self.eaf.policy

    def forward(
        self,
        crop: torch.Tensor,
        sentence: torch.Tensor,
        claims: torch.Tensor,
        txt_present: torch.Tensor,
        env: torch.Tensor,
        strategies: list[str],
        encoded: NoduleEncoderOutput | None = None,
    ) -> FusionOutput:
        """Args: crop (B,1,32,32,32) in [0,1]; sentence (B,384) frozen MiniLM embedding
        (zeros when missing); claims (B, n_claim_features); txt_present (B,) bool;
        env (B, 9) normalised environment; strategies: B names from the policy.
        ``encoded``: the encoder's output for these crops when the caller already has it (the
        same crop scored against many report variants); ``crop`` is then ignored."""
        enc = self.encoder(crop) if encoded is None else encoded
        text_feat, _ = self.text_adapter(sentence, claims)
        present = txt_present.to(torch.bool)
        text_feat = torch.where(present[:, None], text_feat, torch.zeros_like(text_feat))
        afa_out = self.afa(enc.embedding, text_feat, present)
        tokens = self.afa.voxel_tokens(enc.feature_map)
        eaf_out = self.eaf(afa_out.a_img, afa_out.a_txt, env, strategies, img_tokens=tokens)
        logits = {
            "image_only": enc.logit,
            "text_only": self.text_head(text_feat).squeeze(-1),
            "concat": self.concat_head(torch.cat([enc.embedding.detach(), text_feat.detach()], dim=-1)).squeeze(-1),
            "afa": eaf_out.path_logits["early"],
            "afa_eaf": eaf_out.logit,
        }
        attributes = self.attr_head(enc.embedding) if self.attr_head is not None else None
        return FusionOutput(logits, afa_out, eaf_out, enc.embedding,
                            self.size_head(enc.embedding).squeeze(-1), enc.feature_map, attributes)
