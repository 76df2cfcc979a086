"""Task heads on diffusion features.

Classification (per joint): per view, attention pooling + global average pooling + global max
pooling over the 3D feature map, projected to `view_dim`; the three view vectors are
concatenated and a linear layer gives one logit per label. Max pooling keeps a small finding
(a meniscal tear, a ligament defect) that averaging over the whole volume dilutes. A view a case
lacks is masked: its vector is zeroed and the present ones are rescaled by 3 / (number present),
so the classifier sees a comparable scale. `pool_grid` > 0 adds each channel's average over a
grid of the volume (where a signal is); measured and not a default (docs/feature-study.md §17).

Segmentation (knee): a pixel classifier on multi-scale diffusion features, in the spirit of
Baranchuk et al. (2022, label-efficient segmentation with diffusion models). Every tapped block
(decoder blocks at full and half resolution plus a shallow encoder block) is normalised per
case and channel (instance norm without parameters, so a site's contrast does not shift the
scale), projected by a 1x1x1 convolution to `proj` channels at its own grid (cheap), brought to
the input grid by trilinear interpolation and concatenated with the image itself; a few 3x3x3
convolutions (GroupNorm + SiLU) then give one logit per class and voxel.
Why this design (measured on a 40-case knee phantom site, 33 training / 7 validation cases,
16x32x32, 600 head steps of batch 4, frozen *random* tiny backbone): the reference head
(transposed convolutions from the 4x8x8 bottleneck) is capped by one class per 4x4x4 block
(mean Dice ~0.03 in `make reproduce`); the same small convolutional head on the image alone
reached mean Dice 0.56 (femur/tibia/patella 0.63/0.63/0.70); with the four diffusion taps
(t=10: up.2, up.1, up.0, down.0) 0.68 (0.92/0.93/0.73). The taps give the head the context its
few 3x3x3 layers cannot see. The presets tap at t = 2 rather than 10 (`heads.seg_timestep`):
at 10% of the masks on a 120-case site with a pretrained 16/32/64 backbone, mean Dice 0.774
against 0.765 (3 seeds, none worse), the thin structures (menisci, ACL, PCL) gaining most
(docs/feature-study.md, section 11). Loss: 0.2 x CE + Dice by default (MONAI DiceCELoss).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn

from core.views import VIEWS


class ViewPooling(nn.Module):
    """Attention + average + max pooling of (N, C, d, h, w) -> (N, dim); with `grid` > 0 also
    the average over each cell of a grid x grid x grid partition of the volume (where in the
    joint a signal is: the three global poolings cannot tell the notch from the recess)."""

    def __init__(self, *, channels: int, dim: int, grid: int = 0) -> None:
        super().__init__()
        if grid < 0:
            raise ValueError(f"model.heads.pool_grid must be >= 0, got {grid}")
        self.grid = grid
        width = channels * (3 + grid**3)
        self.attention = nn.Conv3d(channels, 1, kernel_size=1)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, dim)
        self.act = nn.GELU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = features.float()
        flat = features.flatten(2)  # N, C, voxels
        weights = torch.softmax(self.attention(features).flatten(2), dim=-1)  # N, 1, voxels
        attended = (flat * weights).sum(-1)
        parts = [attended, flat.mean(-1), flat.amax(-1)]
        if self.grid:
            parts.append(F.adaptive_avg_pool3d(features, self.grid).flatten(1))
        return self.act(self.proj(self.norm(torch.cat(parts, dim=1))))


class ClassificationHead(nn.Module):
    """Multi-view, multi-label classifier: one logit per label."""

    def __init__(self, *, channels: int, view_dim: int, n_labels: int, pool_grid: int = 0) -> None:
        super().__init__()
        self.view_dim = view_dim
        self.pool = nn.ModuleDict(
            {v.value: ViewPooling(channels=channels, dim=view_dim, grid=pool_grid) for v in VIEWS}
        )
        self.classifier = nn.Linear(len(VIEWS) * view_dim, n_labels)

    def forward(self, features: Mapping[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """`features[view]` (N, C, d, h, w) (a view may be absent); `present` (N, 3) bool."""
        if present.ndim != 2 or present.shape[1] != len(VIEWS):
            raise ValueError(f"present mask must be (N, {len(VIEWS)}), got {tuple(present.shape)}")
        mask = present.to(torch.float32)
        vectors = []
        for i, view in enumerate(VIEWS):
            if view.value in features:
                vector = self.pool[view.value](features[view.value])
            else:
                vector = mask.new_zeros(mask.shape[0], self.view_dim)
            vectors.append(vector * mask[:, i : i + 1])
        scale = len(VIEWS) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        return self.classifier(torch.cat(vectors, dim=1) * scale)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


def instance_normalised(features: torch.Tensor, *, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit variance per case and channel over the voxels (no parameters)."""
    features = features.float()
    mean = features.mean(dim=(2, 3, 4), keepdim=True)
    std = features.std(dim=(2, 3, 4), keepdim=True)
    return (features - mean) / (std + eps)


def _conv(in_channels: int, out_channels: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size=kernel, padding=kernel // 2),
        _norm(out_channels),
        nn.SiLU(),
    )


class SegmentationHead(nn.Module):
    """Multi-scale pixel classifier: per-tap norm + 1x1x1 projection, upsampling to the input
    grid, concat with the image; a 3x3x3 stem; a context branch (average-pooled by
    `context_pool`, two 3x3x3 convolutions, upsampled and added); a 3x3x3 convolution and a
    1x1x1 classifier."""

    def __init__(
        self,
        *,
        tap_channels: Sequence[int],
        proj: int,
        width: int,
        context_pool: int,
        n_classes: int,
        stem_kernel: int = 3,
    ) -> None:
        super().__init__()
        if not tap_channels:
            raise ValueError("segmentation head needs at least one feature tap")
        for key, value, low in (
            ("seg_proj", proj, 1),
            ("seg_channels", width, 1),
            ("seg_context_pool", context_pool, 0),
        ):
            if value < low:
                raise ValueError(f"model.heads.{key} must be >= {low}, got {value}")
        self.project = nn.ModuleList([nn.Conv3d(c, proj, kernel_size=1) for c in tap_channels])
        self.context_pool = context_pool
        if stem_kernel not in (1, 3):
            raise ValueError(f"model.heads.seg_stem_kernel must be 1 or 3, got {stem_kernel}")
        self.stem = _conv(1 + proj * len(tap_channels), width, stem_kernel)
        self.context = (
            nn.Sequential(_conv(width, width), _conv(width, width)) if context_pool > 1 else None
        )
        self.fine = _conv(width, width)
        self.classifier = nn.Conv3d(width, n_classes, kernel_size=1)

    def forward(self, image: torch.Tensor, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """`image` (N, 1, D, H, W) in [-1, 1]; `maps` one (N, C_i, d_i, h_i, w_i) per tap."""
        if len(maps) != len(self.project):
            raise ValueError(
                f"segmentation head expects {len(self.project)} feature maps, got {len(maps)}"
            )
        grid = tuple(image.shape[2:])
        parts = [image.float()]
        for project, item in zip(self.project, maps, strict=True):
            projected = project(instance_normalised(item))
            if tuple(projected.shape[2:]) != grid:
                projected = F.interpolate(
                    projected, size=grid, mode="trilinear", align_corners=False
                )
            parts.append(projected)
        hidden = self.stem(torch.cat(parts, dim=1))
        if self.context is not None:
            pooled = F.avg_pool3d(hidden, self.context_pool, ceil_mode=True)
            context = self.context(pooled)
            hidden = hidden + F.interpolate(
                context, size=grid, mode="trilinear", align_corners=False
            )
        return self.classifier(self.fine(hidden))


def segmentation_loss(
    *, ce_weight: float, dice_weight: float, one_hot_target: bool = False
) -> DiceCELoss:
    """lambda_ce x CE + lambda_dice x Dice on logits (N, K, ...) vs integer labels (N, 1, ...),
    or vs one-hot targets (N, K, ...) with `one_hot_target`."""
    return DiceCELoss(
        to_onehot_y=not one_hot_target, softmax=True, lambda_ce=ce_weight, lambda_dice=dice_weight
    )
