"""Image models: a dense nodule detector and a nodule-crop encoder (MONAI 3D CNNs).

Conventions shared by everything here:

* Volumes are ``(B, C, D, H, W)`` tensors with ``D = z`` (slice), ``H = y`` (row),
  ``W = x`` (column); spatial tuples are always z-y-x.
* Intensities are HU clipped to ``HU_WINDOW = [-1000, 400]`` and scaled linearly
  to ``[0, 1]`` (``pipelines.crops.normalize_hu`` does exactly this).  The models
  never see raw HU: the window keeps lung parenchyma (~ -850 HU) and solid
  nodules (~ 0..100 HU) well separated while discarding bone/metal extremes.
* Sizes are in millimetres, positions in voxels of the model's input grid.

Nothing in this module reads or writes files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.nets import UNet
from torch import nn

__all__ = [
    "HU_WINDOW",
    "DetectorConfig",
    "NoduleDetector",
    "detector_loss",
    "render_detector_targets",
    "decode_peaks",
    "decode_detections",
    "NoduleEncoderConfig",
    "NoduleEncoder",
    "NoduleEncoderOutput",
    "grad_cam",
]

HU_WINDOW: tuple[float, float] = (-1000.0, 400.0)


# ----------------------------------------------------------------------------------------------
# Detector
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectorConfig:
    """Configuration of :class:`NoduleDetector`.

    Attributes:
        in_channels: input channels (1: the HU-windowed CT scaled to [0, 1]).
        channels: UNet encoder widths, one per resolution level.
        strides: down-sampling strides between levels (``len(channels) - 1`` entries).
            Input spatial sizes must be divisible by ``prod(strides)`` (8 by default).
        num_res_units: residual units per UNet block (MONAI ``UNet``).
        patch_size: training/inference patch, voxels z-y-x.
        spacing_mm: isotropic voxel size the CT is resampled to before detection (mm).
        hu_window: HU clip window before scaling to [0, 1].
        heatmap_prior: initial centre probability of every voxel; the heatmap bias starts at
            ``logit(prior)`` so the focal loss does not explode on the first steps (CenterNet
            uses 0.1 in 2D; centres are far sparser in 3D, hence 0.01).
        init_diameter_mm: initial output of the diameter regressor (a typical nodule size).
    """

    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 96)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    patch_size: tuple[int, int, int] = (64, 64, 64)
    spacing_mm: float = 1.5
    hu_window: tuple[float, float] = HU_WINDOW
    heatmap_prior: float = 0.01
    init_diameter_mm: float = 6.0

    def __post_init__(self) -> None:
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError("strides must have len(channels) - 1 entries")
        if not 0.0 < self.heatmap_prior < 1.0:
            raise ValueError("heatmap_prior must lie in (0, 1)")


class NoduleDetector(nn.Module):
    """CenterNet-style dense nodule localiser on a MONAI ``UNet``.

    ``forward(x)`` with ``x`` of shape ``(B, in_channels, D, H, W)`` (HU-windowed, [0, 1],
    z-y-x, ``config.spacing_mm`` isotropic) returns ``(B, 2, D, H, W)`` at full input
    resolution:

    * channel 0 ``heatmap_logit``: logit of the Gaussian nodule-centre heatmap
      (train with :func:`detector_loss`; ``sigmoid`` gives probabilities for :func:`decode_peaks`);
    * channel 1 ``log_diameter``: natural log of the nodule diameter in mm, meaningful at
      centre voxels only.
    """

    HEATMAP = 0
    LOG_DIAMETER = 1

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__()
        self.config = config or DetectorConfig()
        c = self.config
        width = c.channels[0]
        # The UNet's top layer is a bare convolution; a norm + activation + 1x1x1 head on top
        # gives the two outputs their own non-linear readout and a bias we can initialise.
        self.backbone = UNet(
            spatial_dims=3,
            in_channels=c.in_channels,
            out_channels=width,
            channels=c.channels,
            strides=c.strides,
            num_res_units=c.num_res_units,
            norm="INSTANCE",
            act="PRELU",
        )
        out = nn.Conv3d(width, 2, kernel_size=1)
        self.head = nn.Sequential(nn.InstanceNorm3d(width, affine=True), nn.PReLU(width), out)
        with torch.no_grad():
            bias = out.bias
            assert bias is not None
            bias[self.HEATMAP] = math.log(c.heatmap_prior / (1.0 - c.heatmap_prior))
            bias[self.LOG_DIAMETER] = math.log(c.init_diameter_mm)

    @property
    def size_divisor(self) -> int:
        """Spatial sizes of the input must be multiples of this."""
        return int(np.prod(self.config.strides))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W)`` -> ``(B, 2, D, H, W)`` = [heatmap_logit, log_diameter_mm]."""
        if x.ndim != 5:
            raise ValueError(f"expected (B, C, D, H, W), got shape {tuple(x.shape)}")
        div = self.size_divisor
        if any(s % div for s in x.shape[2:]):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} must be divisible by {div}")
        return self.head(self.backbone(x))


def _as_5d(t: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, 1, D, H, W); 5-D passes through."""
    return t.unsqueeze(1) if t.ndim == 4 else t


def detector_loss(
    pred: torch.Tensor,
    target_heatmap: torch.Tensor,
    target_logdiam: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    alpha: float = 2.0,
    beta: float = 4.0,
    size_weight: float = 1.0,
    return_parts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CenterNet penalty-reduced focal loss + L1 on log diameter at the centres.

    Args:
        pred: ``(B, 2, D, H, W)`` detector output (logits, log-diameter).
        target_heatmap: ``(B, D, H, W)`` or ``(B, 1, D, H, W)`` Gaussian heatmap in [0, 1], exactly
            1 at nodule centres (see :func:`render_detector_targets`).
        target_logdiam: same shape, ``log(diameter_mm)`` (only read where ``mask`` is set).
        mask: same shape, bool/0-1: centre voxels where the diameter is supervised. ``None``
            uses the voxels where the heatmap equals 1.
        alpha, beta: focal exponents (CenterNet: 2 and 4). ``beta`` down-weights negatives
            near a centre, which would otherwise be punished for being almost right.
        size_weight: weight of the log-diameter L1 term.
        return_parts: also return ``{"heatmap": ..., "size": ...}``.

    Returns:
        scalar total loss; the focal term is summed over voxels and divided by the number of
        centres (at least 1), so a patch without nodules still trains the negatives.
    """
    th = _as_5d(target_heatmap).to(pred.dtype)
    tl = _as_5d(target_logdiam).to(pred.dtype)
    pos = th >= 1.0 - 1e-6
    m = pos if mask is None else _as_5d(mask).bool()

    logit = pred[:, NoduleDetector.HEATMAP : NoduleDetector.HEATMAP + 1]
    prob = torch.sigmoid(logit)
    # log-sigmoid instead of log(prob): stays finite for saturated logits.
    log_p = F.logsigmoid(logit)
    log_1mp = F.logsigmoid(-logit)
    posf = pos.to(pred.dtype)
    pos_loss = -((1.0 - prob) ** alpha * log_p * posf).sum()
    neg_loss = -(((1.0 - th) ** beta) * prob**alpha * log_1mp * (1.0 - posf)).sum()
    n_pos = posf.sum().clamp(min=1.0)
    heat = (pos_loss + neg_loss) / n_pos

    mf = m.to(pred.dtype)
    logd = pred[:, NoduleDetector.LOG_DIAMETER : NoduleDetector.LOG_DIAMETER + 1]
    size = ((logd - tl).abs() * mf).sum() / mf.sum().clamp(min=1.0)

    total = heat + size_weight * size
    if return_parts:
        return total, {"heatmap": heat.detach(), "size": size.detach()}
    return total


def render_detector_targets(
    shape: Sequence[int],
    centres_vox: Sequence[Sequence[float]] | np.ndarray,
    diameters_mm: Sequence[float] | np.ndarray,
    *,
    spacing_mm: float = 1.5,
    sigma_fraction: float = 0.25,
    min_sigma_vox: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training targets for :func:`detector_loss` (pure numpy).

    Args:
        shape: patch shape z-y-x (voxels).
        centres_vox: nodule centres, voxel z-y-x (rounded to the nearest voxel).
        diameters_mm: one diameter per centre, mm.
        spacing_mm: isotropic voxel size (mm).
        sigma_fraction: Gaussian sigma as a fraction of the diameter in voxels: larger
            nodules get wider peaks, as CenterNet scales its radius with object size.
        min_sigma_vox: lower bound on sigma (voxels) so tiny nodules still get a blob.

    Returns:
        ``(heatmap, log_diameter, mask)``, each ``shape``; heatmap float32 in [0, 1] with
        exactly 1 at each centre (overlaps take the max), log_diameter float32 ``log(mm)``
        at centres (0 elsewhere), mask bool at centres. Centres outside the patch are skipped.
    """
    shape_t = tuple(int(s) for s in shape)
    heat = np.zeros(shape_t, np.float32)
    logd = np.zeros(shape_t, np.float32)
    mask = np.zeros(shape_t, bool)
    grids = np.ogrid[tuple(slice(0, s) for s in shape_t)]
    for centre, diam in zip(centres_vox, diameters_mm, strict=True):
        c = np.rint(np.asarray(centre, float)).astype(int)
        if np.any(c < 0) or np.any(c >= shape_t):
            continue
        sigma = max(min_sigma_vox, sigma_fraction * float(diam) / spacing_mm)
        d2 = sum((g - ci) ** 2 for g, ci in zip(grids, c, strict=True))
        np.maximum(heat, np.exp(-d2 / (2.0 * sigma * sigma)).astype(np.float32), out=heat)
        idx = tuple(c)
        heat[idx] = 1.0
        logd[idx] = math.log(max(float(diam), 1e-3))
        mask[idx] = True
    return heat, logd, mask


def decode_peaks(
    heatmap: np.ndarray | torch.Tensor,
    threshold: float = 0.3,
    nms_radius_vox: int = 3,
    max_peaks: int = 20,
) -> list[tuple[int, int, int, float]]:
    """Local maxima of a centre-probability heatmap (pure function).

    Args:
        heatmap: ``(D, H, W)`` probabilities (apply ``sigmoid`` to the logits first).
        threshold: minimum probability of a peak.
        nms_radius_vox: suppression radius in voxels (Chebyshev / cube neighbourhood).
        max_peaks: at most this many peaks are returned.

    Returns:
        ``[(z, y, x, score), ...]`` sorted by decreasing score.

    A voxel is a candidate if it equals the max over its ``(2r+1)^3`` neighbourhood
    (a separable ``max_pool3d``, the CenterNet trick). Plateaus give several equal candidates, so a
    greedy pass then drops any candidate within ``r`` of an already accepted, higher one.
    """
    hm = torch.as_tensor(np.asarray(heatmap) if not torch.is_tensor(heatmap) else heatmap)
    hm = hm.detach().to(torch.float32).cpu()
    if hm.ndim != 3:
        raise ValueError(f"heatmap must be (D, H, W), got {tuple(hm.shape)}")
    r = max(int(nms_radius_vox), 0)
    # The cube maximum is separable: three 1-D passes cost 3(2r+1) comparisons per voxel instead
    # of (2r+1)^3, with the same result.  Each pass runs ``max_pool1d`` over a contiguous last
    # axis (7 s for max_pool3d -> 0.1 s on a 230x150x230 lung box with r = 4).
    pooled = hm
    for dim in range(3):
        t = pooled.movedim(dim, -1).contiguous()
        t = F.max_pool1d(t.reshape(-1, 1, t.shape[-1]), kernel_size=2 * r + 1, stride=1, padding=r).reshape(t.shape)
        pooled = t.movedim(-1, dim)
    cand = (hm == pooled) & (hm >= threshold)
    idx = torch.nonzero(cand, as_tuple=False).numpy()
    if len(idx) == 0:
        return []
    scores = hm.numpy()[idx[:, 0], idx[:, 1], idx[:, 2]]
    order = np.argsort(-scores, kind="stable")
    kept: list[tuple[int, int, int, float]] = []
    kept_zyx = np.empty((max(int(max_peaks), 1), 3), np.int64)
    for i in order:
        c = idx[i]
        if kept and (np.abs(kept_zyx[: len(kept)] - c).max(axis=1) <= r).any():
            continue
        kept_zyx[len(kept)] = c
        kept.append((int(c[0]), int(c[1]), int(c[2]), float(scores[i])))
        if len(kept) >= max_peaks:
            break
    return kept


def decode_detections(
    pred: torch.Tensor,
    threshold: float = 0.3,
    nms_radius_vox: int = 3,
    max_peaks: int = 20,
) -> list[tuple[int, int, int, float, float]]:
    """One detector output ``(2, D, H, W)`` -> ``[(z, y, x, score, diameter_mm), ...]``."""
    if pred.ndim != 4 or pred.shape[0] != 2:
        raise ValueError(f"expected (2, D, H, W), got {tuple(pred.shape)}")
    prob = torch.sigmoid(pred[NoduleDetector.HEATMAP].detach().float())
    logd = pred[NoduleDetector.LOG_DIAMETER].detach().float()
    return [
        (z, y, x, s, float(torch.exp(logd[z, y, x])))
        for z, y, x, s in decode_peaks(prob, threshold, nms_radius_vox, max_peaks)
    ]


# ----------------------------------------------------------------------------------------------
# Nodule encoder
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoduleEncoderConfig:
    """Configuration of :class:`NoduleEncoder`.

    Attributes:
        in_channels: 1 (HU-windowed crop in [0, 1]) or 2 (e.g. crop + nodule mask/second window).
        channels: widths of the stem and of each residual stage.
        strides: stride of each residual stage (``len(channels) - 1`` entries). The default
            (2, 2, 1) maps a 32^3 crop to an 8^3 feature map: fine enough for Grad-CAM and
            for token-to-voxel attention, coarse enough to stay cheap.
        embed_dim: embedding size.
        crop_size: expected crop, voxels z-y-x (the network itself accepts any size).
        spacing_mm: isotropic crop spacing the model is trained at (mm).
        dropout: dropout before the malignancy head.
        norm: MONAI norm of every convolution, ``"INSTANCE"`` (the default, what the shipped
            models use and what configs written before this field mean) or ``"BATCH"`` (measured
            for the malignancy model, ``lungfuse train --encoder-norm batch``: on val no better
            than instance norm once the size head was added).
        stem_stride: stride of the stem convolution, 1 (default, as shipped) or 2. With 2 the
            residual stages start at half resolution (use ``strides=(1, 2, 1)`` to keep the 8^3
            feature map): a training step costs ~0.6x on a 2-core CPU (batch 64 of 32^3, measured
            2026-11-30), the 32^3 convolutions and their backward being most of the cost.
    """

    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 96)
    strides: tuple[int, ...] = (2, 2, 1)
    embed_dim: int = 128
    crop_size: tuple[int, int, int] = (32, 32, 32)
    spacing_mm: float = 1.0
    hu_window: tuple[float, float] = HU_WINDOW
    dropout: float = 0.1
    norm: str = "INSTANCE"
    stem_stride: int = 1

    def __post_init__(self) -> None:
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError("strides must have len(channels) - 1 entries")
        if self.in_channels not in (1, 2):
            raise ValueError("in_channels must be 1 or 2")
        if self.norm not in ("BATCH", "INSTANCE"):
            raise ValueError(f"norm must be 'BATCH' or 'INSTANCE', got {self.norm!r}")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {self.stem_stride!r}")


class NoduleEncoderOutput(NamedTuple):
    """Output of :class:`NoduleEncoder`.

    Attributes:
        embedding: ``(B, embed_dim)`` crop embedding (input of AFA's image projection).
        feature_map: ``(B, C, d, h, w)`` last convolutional feature map (C = ``channels[-1]``),
            kept in the graph for Grad-CAM and token-to-voxel cross-attention.
        logit: ``(B,)`` image-only malignancy logit.
    """

    embedding: torch.Tensor
    feature_map: torch.Tensor
    logit: torch.Tensor


class NoduleEncoder(nn.Module):
    """Small residual 3D CNN over a nodule-centred crop ``(B, in_channels, 32, 32, 32)``.

    Stem ``Convolution`` (stride 1) followed by MONAI ``ResidualUnit`` stages; the last
    feature map is pooled (mean and max: mean sees the whole lesion, max keeps small
    high-contrast details such as calcifications or spicules) into the embedding, and a
    linear head gives an image-only malignancy logit.
    """

    def __init__(self, config: NoduleEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or NoduleEncoderConfig()
        c = self.config
        layers: list[nn.Module] = [
            Convolution(
                3, c.in_channels, c.channels[0], strides=c.stem_stride, kernel_size=3, act="PRELU", norm=c.norm
            )
        ]
        for cin, cout, s in zip(c.channels[:-1], c.channels[1:], c.strides, strict=True):
            layers.append(
                ResidualUnit(3, cin, cout, strides=s, kernel_size=3, subunits=2, act="PRELU", norm=c.norm)
            )
        self.features = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(2 * c.channels[-1], c.embed_dim), nn.LayerNorm(c.embed_dim))
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.embed_dim, 1)

    @property
    def feature_channels(self) -> int:
        """C of ``feature_map`` (AFA's ``voxel_dim``)."""
        return self.config.channels[-1]

    def forward(self, x: torch.Tensor) -> NoduleEncoderOutput:
        """``(B, in_channels, D, H, W)`` -> :class:`NoduleEncoderOutput`."""
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected (B, {self.config.in_channels}, D, H, W), got {tuple(x.shape)}")
        return self.from_features(self.features(x))

    def from_features(self, fmap: torch.Tensor) -> NoduleEncoderOutput:
        """The rest of :meth:`forward` given the convolutional trunk's output ``self.features(x)``
        (``(B, C, d, h, w)``): pooling, embedding, dropout and head. Split out so that training can
        run the trunk, which treats samples independently, on batch chunks in parallel
        (:class:`~lungfuse.models.parallel.ThreadedTrunk`)."""
        pooled = torch.cat([fmap.mean(dim=(2, 3, 4)), fmap.amax(dim=(2, 3, 4))], dim=1)
        emb = self.embed(pooled)
        logit = self.head(self.dropout(emb)).squeeze(1)
        return NoduleEncoderOutput(embedding=emb, feature_map=fmap, logit=logit)


def grad_cam(
    model: NoduleEncoder,
    crop: torch.Tensor | np.ndarray,
    target: str | Callable[[NoduleEncoderOutput], torch.Tensor] = "logit",
) -> np.ndarray:
    """Grad-CAM of ``target`` w.r.t. the encoder's last feature map, at crop resolution.

    Args:
        model: a :class:`NoduleEncoder` (switched to eval for the call, mode restored after).
        crop: one crop, ``(D, H, W)``, ``(C, D, H, W)`` or ``(1, C, D, H, W)``, scaled as in training.
        target: ``"logit"`` (evidence for malignancy), ``"neg_logit"`` (evidence against),
            or a callable mapping the output (batch of 1) to a scalar.

    Returns:
        float32 ``(D, H, W)`` map in [0, 1]: ReLU of the gradient-weighted channel sum (weights =
        spatial mean of the gradients), upsampled trilinearly and divided by its max (all zeros
        when nothing positively supports the target).
    """
    x = torch.as_tensor(np.asarray(crop) if not torch.is_tensor(crop) else crop).float()
    while x.ndim < 5:
        x = x.unsqueeze(0)
    if x.shape[0] != 1:
        raise ValueError("grad_cam takes one crop")
    x = x.to(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            out = model(x)
            if callable(target):
                score = target(out)
            elif target == "logit":
                score = out.logit.sum()
            elif target == "neg_logit":
                score = -out.logit.sum()
            else:
                raise ValueError(f"unknown Grad-CAM target {target!r}")
            (grads,) = torch.autograd.grad(score, out.feature_map)
        fmap = out.feature_map.detach()
        weights = grads.mean(dim=(2, 3, 4), keepdim=True)
        cam = F.relu((weights * fmap).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode="trilinear", align_corners=False)[0, 0]
        cam = cam.clamp(min=0.0)
        peak = float(cam.max())
        cam = cam / peak if peak > 0 else torch.zeros_like(cam)
        return cam.cpu().numpy().astype(np.float32)
    finally:
        model.train(was_training)
