"""AFA: Adaptive Feature Alignment between the image embedding and the report embedding.

Both modalities are projected into one shared space (``z_img``, ``z_txt``, ``(B, S)``).
A weight generator then looks at the *pair* and emits a per-dimension gate for each
modality; the gated features ``a_img = w_img * z_img`` and ``a_txt = w_txt * z_txt`` are
what EAF fuses.

Design fix: the sketch this module comes from fed only the scalar cosine similarity into
``Linear(dim, .)``, which cannot type-check (a (B, 1) input to a (dim -> .) layer) and would
in any case give the gate a single number to decide ``dim`` weights from. Here the
generator reads ``[z_img, z_txt, z_img * z_txt, |z_img - z_txt|, cos_sim]`` (``4 S + 1``
features): the products/differences tell it *which* dimensions agree, the cosine how much the
pair agrees overall.

Missing reports (``txt_present[b] = False``): ``z_txt[b]`` is replaced by a learned
``missing_embedding`` (so the generator still sees a well-defined input, and learns how to
weigh the image alone), and ``w_txt[b]`` is forced to exactly 0, hence ``a_txt[b] = 0``:
nothing derived from an absent text reaches the fusion.

Also here: CLIP-style symmetric InfoNCE with a learnable temperature, and token-to-voxel
cross-attention (report tokens attend over the encoder's last feature map) used to draw
each report phrase as a heatmap on the CT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AFAConfig", "AFAOutput", "AFA", "phrase_heatmap"]

# Weights are squeezed into [eps, 1 - eps]: float32 sigmoid rounds to exactly 1.0 above ~17,
# and downstream code (and the tests) rely on the gates being strictly inside (0, 1).
_W_EPS = 1e-4


@dataclass(frozen=True)
class AFAConfig:
    """Configuration of :class:`AFA`.

    Attributes:
        img_dim: image embedding size (``NoduleEncoderConfig.embed_dim``).
        txt_dim: text feature size (``TextAdapterConfig.text_dim``).
        shared_dim: S, the shared space size.
        hidden: hidden width of the weight generator.
        temperature_init: initial InfoNCE temperature (CLIP: 0.07).
        voxel_dim: channels C of the image feature map used by :meth:`AFA.cross_attention`
            (``NoduleEncoderConfig.channels[-1]``).
        dropout: dropout inside the weight generator.
    """

    img_dim: int = 128
    txt_dim: int = 128
    shared_dim: int = 128
    hidden: int = 128
    temperature_init: float = 0.07
    voxel_dim: int = 96
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0.01 <= self.temperature_init <= 1.0:
            raise ValueError("temperature_init must lie in [0.01, 1]")


@dataclass
class AFAOutput:
    """Output of :meth:`AFA.forward` (B rows, S = shared_dim).

    Attributes:
        z_img, z_txt: ``(B, S)`` projections (``z_txt`` = missing embedding where text is absent).
        a_img, a_txt: ``(B, S)`` aligned features ``w * z`` (``a_txt`` = 0 where text is absent).
        w_img, w_txt: ``(B, S)`` per-dimension weights in (0, 1) (``w_txt`` = 0 where text is absent).
        cos_sim: ``(B,)`` cosine similarity of ``z_img`` and ``z_txt``.
        txt_present: ``(B,)`` bool.
    """

    z_img: torch.Tensor
    z_txt: torch.Tensor
    a_img: torch.Tensor
    a_txt: torch.Tensor
    w_img: torch.Tensor
    w_txt: torch.Tensor
    cos_sim: torch.Tensor
    txt_present: torch.Tensor


class AFA(nn.Module):
    """Adaptive feature alignment (see the module docstring).

    Trainable parts: ``img_proj``, ``txt_proj`` (Linear + LayerNorm), ``missing_embedding``,
    ``weight_gen`` (MLP, ``4 S + 1 -> hidden -> 2 S``), ``logit_scale`` (used only by
    :meth:`info_nce`) and ``voxel_proj`` (used only by :meth:`cross_attention`).
    """

    def __init__(self, config: AFAConfig | None = None) -> None:
        super().__init__()
        self.config = config or AFAConfig()
        c = self.config
        s = c.shared_dim
        self.img_proj = nn.Sequential(nn.Linear(c.img_dim, s), nn.LayerNorm(s))
        self.txt_proj = nn.Sequential(nn.Linear(c.txt_dim, s), nn.LayerNorm(s))
        self.missing_embedding = nn.Parameter(torch.randn(s) * 0.02)
        self.weight_gen = nn.Sequential(
            nn.Linear(4 * s + 1, c.hidden),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.hidden, 2 * s),
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / c.temperature_init)))
        self.voxel_proj = nn.Sequential(nn.Linear(c.voxel_dim, s), nn.LayerNorm(s))

    # -- alignment -----------------------------------------------------------------------------

    def forward(
        self, img_feat: torch.Tensor, txt_feat: torch.Tensor, txt_present: torch.Tensor | None = None
    ) -> AFAOutput:
        """``img_feat (B, img_dim)``, ``txt_feat (B, txt_dim)``, ``txt_present (B,) bool | None`` -> :class:`AFAOutput`.

        ``txt_present=None`` means every row has text. Rows without text may carry any
        finite ``txt_feat`` (e.g. zeros): it is ignored.
        """
        b = img_feat.shape[0]
        present = (
            torch.ones(b, dtype=torch.bool, device=img_feat.device)
            if txt_present is None
            else txt_present.to(device=img_feat.device, dtype=torch.bool).reshape(b)
        )
        z_img = self.img_proj(img_feat)
        z_txt = self.txt_proj(txt_feat)
        z_txt = torch.where(present[:, None], z_txt, self.missing_embedding.expand_as(z_txt))
        cos = F.cosine_similarity(z_img, z_txt, dim=-1, eps=1e-6)
        gen_in = torch.cat([z_img, z_txt, z_img * z_txt, (z_img - z_txt).abs(), cos[:, None]], dim=-1)
        w = _W_EPS + (1.0 - 2.0 * _W_EPS) * torch.sigmoid(self.weight_gen(gen_in))
        w_img, w_txt = w.chunk(2, dim=-1)
        w_txt = w_txt * present[:, None].to(w_txt.dtype)  # exactly 0 for missing text
        return AFAOutput(
            z_img=z_img,
            z_txt=z_txt,
            a_img=w_img * z_img,
            a_txt=w_txt * z_txt,
            w_img=w_img,
            w_txt=w_txt,
            cos_sim=cos,
            txt_present=present,
        )

    # -- contrastive loss ----------------------------------------------------------------------

    @property
    def temperature(self) -> torch.Tensor:
        """Current InfoNCE temperature, clamped to [0.01, 1]."""
        return 1.0 / self._scale()

    def _scale(self) -> torch.Tensor:
        # exp(logit_scale) in [1, 100] <=> temperature in [0.01, 1] (CLIP clamps likewise).
        return self.logit_scale.clamp(0.0, math.log(100.0)).exp()

    def info_nce(
        self, z_img: torch.Tensor, z_txt: torch.Tensor, txt_present: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Symmetric CLIP InfoNCE over the L2-normalised projections of rows with text.

        ``z_img``, ``z_txt``: ``(B, S)``; row i of each is a positive pair, every other row a
        negative. Returns a scalar; with fewer than 2 valid rows there are no negatives and
        the loss is a graph-connected 0 (so ``backward`` still works).
        """
        if txt_present is not None:
            keep = txt_present.to(device=z_img.device, dtype=torch.bool).reshape(-1)
            zi, zt = z_img[keep], z_txt[keep]
        else:
            zi, zt = z_img, z_txt
        if zi.shape[0] < 2:
            return (z_img.sum() + z_txt.sum()) * 0.0 + self.logit_scale * 0.0
        zi = F.normalize(zi, dim=-1)
        zt = F.normalize(zt, dim=-1)
        logits = self._scale() * zi @ zt.t()
        labels = torch.arange(zi.shape[0], device=zi.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))

    # -- token-to-voxel attention --------------------------------------------------------------

    def voxel_tokens(self, voxel_feat: torch.Tensor) -> torch.Tensor:
        """``(B, C, d, h, w)`` feature map -> ``(B, d*h*w, S)`` voxel tokens (C-order flattening: z, y, x).

        These are also the ``img_tokens`` EAF's hybrid path attends over.
        """
        if voxel_feat.ndim != 5:
            raise ValueError(f"voxel_feat must be (B, C, d, h, w), got {tuple(voxel_feat.shape)}")
        return self.voxel_proj(voxel_feat.flatten(2).transpose(1, 2))

    def cross_attention(
        self, token_feat: torch.Tensor, token_mask: torch.Tensor | None, voxel_feat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Report tokens attend over image voxels (scaled dot product, one head).

        Args:
            token_feat: ``(B, T, S)`` (``TextAdapter`` token features).
            token_mask: ``(B, T)`` 1/True for real tokens, or ``None`` (all real).
            voxel_feat: ``(B, C, d, h, w)`` encoder feature map.

        Returns:
            ``attended (B, T, S)`` and ``attn (B, T, d*h*w)``; each real token's attention row
            sums to 1, padded tokens get all-zero rows and zero outputs.
        """
        v = self.voxel_tokens(voxel_feat)  # keys = values: one projection keeps it small
        scores = token_feat @ v.transpose(1, 2) / math.sqrt(token_feat.shape[-1])
        attn = scores.softmax(dim=-1)
        if token_mask is not None:
            attn = attn * token_mask.to(attn.dtype).unsqueeze(-1)
        return attn @ v, attn


def phrase_heatmap(
    attn: torch.Tensor | np.ndarray,
    token_indices: Sequence[int],
    spatial_shape: Sequence[int],
    out_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Heatmap of one report phrase: the mean attention of its tokens over the voxels.

    Args:
        attn: ``(T, N)`` attention of one report (or ``(1, T, N)``), from :meth:`AFA.cross_attention`.
        token_indices: the phrase's token positions (e.g. ``text.tokens_in_span``).
        spatial_shape: ``(d, h, w)`` of the feature map, ``d*h*w == N``.
        out_shape: optional ``(D, H, W)`` (e.g. the crop size) to upsample to, trilinearly.

    Returns:
        float32 map z-y-x, ``spatial_shape`` (or ``out_shape``), not normalised: values are
        attention probabilities (each token's row sums to 1 over the N voxels).
    """
    a = torch.as_tensor(np.asarray(attn) if not torch.is_tensor(attn) else attn).detach().float().cpu()
    if a.ndim == 3:
        if a.shape[0] != 1:
            raise ValueError("pass the attention of one report: (T, N) or (1, T, N)")
        a = a[0]
    shape = tuple(int(s) for s in spatial_shape)
    if a.ndim != 2 or a.shape[1] != int(np.prod(shape)):
        raise ValueError(f"attn {tuple(a.shape)} does not match spatial shape {shape}")
    idx = list(token_indices)
    if not idx:
        raise ValueError("token_indices is empty")
    hm = a[idx].mean(dim=0).reshape(shape)
    if out_shape is not None:
        hm = F.interpolate(hm[None, None], size=tuple(int(s) for s in out_shape), mode="trilinear")[0, 0]
    return hm.numpy().astype(np.float32)
