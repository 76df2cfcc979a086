"""Task heads on diffusion features.

Classification (per joint): per view, attention pooling + global average pooling over the
3D feature map, projected to `view_dim`; the three view vectors are concatenated and a linear
layer gives one logit per label. A view a case lacks is masked: its vector is zeroed and the
present ones are rescaled by 3 / (number present), so the classifier sees a comparable scale.

Segmentation (knee): transposed-convolution decoder from bottleneck features to the input
grid, one channel per class (background + structures); loss 0.2 x CE + Dice (MONAI DiceCELoss).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from monai.losses import DiceCELoss
from torch import nn

from core.views import VIEWS


class ViewPooling(nn.Module):
    """Attention pooling + global average pooling of (N, C, d, h, w) -> (N, dim)."""

    def __init__(self, *, channels: int, dim: int) -> None:
        super().__init__()
        self.attention = nn.Conv3d(channels, 1, kernel_size=1)
        self.norm = nn.LayerNorm(2 * channels)
        self.proj = nn.Linear(2 * channels, dim)
        self.act = nn.GELU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        flat = features.flatten(2)  # N, C, voxels
        weights = torch.softmax(self.attention(features).flatten(2), dim=-1)  # N, 1, voxels
        attended = (flat * weights).sum(-1)
        average = flat.mean(-1)
        return self.act(self.proj(self.norm(torch.cat([attended, average], dim=1))))


class ClassificationHead(nn.Module):
    """Multi-view, multi-label classifier: one logit per label."""

    def __init__(self, *, channels: int, view_dim: int, n_labels: int) -> None:
        super().__init__()
        self.view_dim = view_dim
        self.pool = nn.ModuleDict(
            {v.value: ViewPooling(channels=channels, dim=view_dim) for v in VIEWS}
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


class SegmentationHead(nn.Module):
    """`stages` x (ConvTranspose3d stride 2 + GroupNorm + SiLU), then a 1x1x1 classifier."""

    def __init__(self, *, in_channels: int, stages: int, width: int, n_classes: int) -> None:
        super().__init__()
        if stages < 1:
            raise ValueError("segmentation head needs at least one upsampling stage")
        layers: list[nn.Module] = []
        channels = in_channels
        for stage in range(stages):
            out = max(width, in_channels // 2 ** (stage + 1))
            layers += [
                nn.ConvTranspose3d(channels, out, kernel_size=2, stride=2),
                _norm(out),
                nn.SiLU(),
            ]
            channels = out
        self.decoder = nn.Sequential(*layers)
        self.classifier = nn.Conv3d(channels, n_classes, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.decoder(features))


def segmentation_loss(*, ce_weight: float, dice_weight: float) -> DiceCELoss:
    """lambda_ce x CE + lambda_dice x Dice on logits (N, K, ...) vs integer labels (N, 1, ...)."""
    return DiceCELoss(to_onehot_y=True, softmax=True, lambda_ce=ce_weight, lambda_dice=dice_weight)
