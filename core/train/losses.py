"""Task losses of a batch of encoded cases: BCE (classification), 0.2 CE + Dice (segmentation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.models.encode import EncodedCases
from core.models.heads import segmentation_loss
from core.models.registry import OrthoModel


def _seg_loss(model: OrthoModel, batch: EncodedCases) -> torch.Tensor | None:
    if batch.masks is None or batch.seg_maps is None or not bool(batch.has_mask.any()):
        return None
    heads = model.config.heads
    loss = segmentation_loss(ce_weight=heads.seg_ce_weight, dice_weight=heads.seg_dice_weight)
    rows = batch.has_mask
    logits = model.segment(batch.seg_image[rows], [m[rows] for m in batch.seg_maps])
    return heads.seg_loss_weight * loss(logits.float(), batch.masks[rows])


def _cls_loss(model: OrthoModel, batch: EncodedCases) -> torch.Tensor | None:
    if not bool(batch.has_labels.any()):
        return None
    logits = model.classify(batch.features, batch.present)[batch.has_labels]
    return F.binary_cross_entropy_with_logits(logits.float(), batch.labels[batch.has_labels])


def head_losses(model: OrthoModel, batch: EncodedCases) -> dict[str, torch.Tensor]:
    """ "cls": BCE over labeled rows; "seg": weighted 0.2 CE + Dice over rows with masks."""
    found = {"cls": _cls_loss(model, batch), "seg": _seg_loss(model, batch)}
    return {k: v for k, v in found.items() if v is not None}


def task_loss(model: OrthoModel, batch: EncodedCases) -> torch.Tensor | None:
    """Sum of the head losses of the batch; None if it has neither labels nor masks."""
    terms = list(head_losses(model, batch).values())
    return sum(terms) if terms else None
