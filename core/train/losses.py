"""Task losses of a batch of encoded cases: BCE (classification), 0.2 CE + Dice (segmentation).

`classification_loss` and `weighted_segmentation_loss` are the formulas on logits; the DP
path (`core.train.dp_finetune`) applies them per case under `torch.func`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.config import HeadConfig
from core.models.encode import EncodedCases
from core.models.heads import segmentation_loss
from core.models.registry import OrthoModel


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label BCE, mean over rows and labels."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels)


def weighted_segmentation_loss(
    heads: HeadConfig, *, logits: torch.Tensor, target: torch.Tensor, one_hot: bool = False
) -> torch.Tensor:
    """`heads.seg_loss_weight` x (CE + Dice); `target` holds integer labels (N, 1, ...), or
    one-hot channels (N, K, ...) with `one_hot` (what a vmapped loss needs: MONAI's one-hot
    conversion writes in place, which vmap cannot batch)."""
    loss = segmentation_loss(
        ce_weight=heads.seg_ce_weight, dice_weight=heads.seg_dice_weight, one_hot_target=one_hot
    )
    return heads.seg_loss_weight * loss(logits.float(), target)


def _seg_loss(model: OrthoModel, batch: EncodedCases) -> torch.Tensor | None:
    if batch.masks is None or batch.seg_maps is None or not bool(batch.has_mask.any()):
        return None
    rows = batch.has_mask
    logits = model.segment(batch.seg_image[rows], [m[rows] for m in batch.seg_maps])
    return weighted_segmentation_loss(model.config.heads, logits=logits, target=batch.masks[rows])


def _cls_loss(model: OrthoModel, batch: EncodedCases) -> torch.Tensor | None:
    if not bool(batch.has_labels.any()):
        return None
    logits = model.classify(batch.features, batch.present)[batch.has_labels]
    return classification_loss(logits, batch.labels[batch.has_labels])


def head_losses(model: OrthoModel, batch: EncodedCases) -> dict[str, torch.Tensor]:
    """ "cls": BCE over labeled rows; "seg": weighted 0.2 CE + Dice over rows with masks."""
    found = {"cls": _cls_loss(model, batch), "seg": _seg_loss(model, batch)}
    return {k: v for k, v in found.items() if v is not None}


def task_loss(model: OrthoModel, batch: EncodedCases) -> torch.Tensor | None:
    """Sum of the head losses of the batch; None if it has neither labels nor masks."""
    terms = list(head_losses(model, batch).values())
    return sum(terms) if terms else None
