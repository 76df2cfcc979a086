"""The full model of a joint: three view backbones + that joint's task heads.

State-dict keys are grouped exactly as the federation aggregates them:
`backbone.<view>.<param>`, `head.<joint>.cls.<param>`, `head.<joint>.seg.<param>` (knee only).
The noise scheduler is attached but holds no state-dict entries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from core.config import ModelConfig
from core.diffusion.ddpm import build_scheduler
from core.models.backbone import block_channels, build_backbone, seg_taps
from core.models.features import draw_seeds, extract_taps, fuse, fused_channels
from core.models.heads import ClassificationHead, SegmentationHead
from core.models.presets import validate_model_config
from core.views import KNEE_STRUCTURES, LABELS, VIEWS, Joint, View, parse_joint

SEG_VIEW = View.SAGITTAL  # knee masks live on the sagittal grid


def has_segmentation(joint: Joint) -> bool:
    return joint == Joint.KNEE


class OrthoModel(nn.Module):
    """Backbones (`self.backbone[view]`) and heads (`self.head[joint]["cls"|"seg"]`)."""

    def __init__(self, config: ModelConfig, *, joint: Joint | str) -> None:
        super().__init__()
        validate_model_config(config)
        self.config = config
        self.joint = parse_joint(str(joint))
        with torch.device("cpu"):  # also when laid out on "meta" for a shape check
            self.scheduler = build_scheduler(config.diffusion)
        self.backbone = nn.ModuleDict({v.value: build_backbone(config.backbone) for v in VIEWS})
        heads = nn.ModuleDict(
            {
                "cls": ClassificationHead(
                    channels=fused_channels(config.backbone, config.features.taps),
                    view_dim=config.heads.view_dim,
                    pool_grid=config.heads.pool_grid,
                    n_labels=len(LABELS[self.joint]),
                )
            }
        )
        if has_segmentation(self.joint):
            heads["seg"] = self._seg_head()
        self.head = nn.ModuleDict({self.joint.value: heads})

    def _seg_head(self) -> SegmentationHead:
        heads = self.config.heads
        return SegmentationHead(
            tap_channels=[
                block_channels(self.config.backbone, t.block) for t in seg_taps(self.config)
            ],
            proj=heads.seg_proj,
            width=heads.seg_channels,
            context_pool=heads.seg_context_pool,
            stem_kernel=heads.seg_stem_kernel,
            n_classes=len(KNEE_STRUCTURES) + 1,
        )

    @property
    def cls_head(self) -> ClassificationHead:
        return self.head[self.joint.value]["cls"]

    @property
    def seg_head(self) -> SegmentationHead | None:
        heads = self.head[self.joint.value]
        return heads["seg"] if "seg" in heads else None

    def encode(
        self, view: View | str, clean: torch.Tensor, *, seeds: Sequence[int], with_seg: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """(fused classification features, segmentation feature maps or None) of one view.

        Classification and segmentation taps at the same timestep share one UNet pass.
        """
        cls_taps = list(self.config.features.taps)
        taps = cls_taps + (seg_taps(self.config) if with_seg else [])
        unet = self.backbone[str(view)]
        maps = extract_taps(unet, self.scheduler, clean, taps=taps, seeds=seeds)
        n_cls = len(cls_taps)
        cls_maps = maps[:n_cls]
        draws = self.config.features.noise_draws
        for draw in range(1, draws):
            more = extract_taps(
                unet, self.scheduler, clean, taps=cls_taps, seeds=draw_seeds(seeds, draw=draw)
            )
            cls_maps = [a + b for a, b in zip(cls_maps, more, strict=True)]
        return fuse([m / draws for m in cls_maps]), (maps[n_cls:] if with_seg else None)

    def classify(self, features: Mapping[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return self.cls_head(features, present)

    def segment(self, image: torch.Tensor, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits (N, classes, D, H, W) from the sagittal image and its segmentation maps."""
        if self.seg_head is None:
            raise ValueError(f"joint {self.joint.value} has no segmentation head")
        return self.seg_head(image, maps)


def build_model(config: ModelConfig, *, joint: Joint | str, seed: int = 0) -> OrthoModel:
    """A freshly initialised model, identical for a given seed (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return OrthoModel(config, joint=joint)
