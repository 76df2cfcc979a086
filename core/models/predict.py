"""Run a model on cases and collect what the metrics need (probabilities, per-case Dice)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.eval.metrics import dice_per_structure, dice_rows, mean_defined, roc_auc_per_label
from core.models.encode import encode_cases
from core.models.registry import OrthoModel
from core.views import KNEE_STRUCTURES, LABELS


@dataclass
class Predictions:
    case_ids: list[str]
    probabilities: np.ndarray  # (N, n_labels)
    labels: np.ndarray  # (N, n_labels)
    has_labels: np.ndarray  # (N,) bool
    dice: torch.Tensor | None  # (cases with masks, n_structures), NaN where GT is empty


@torch.no_grad()
def predict(model: OrthoModel, cases: Sequence, *, batch_size: int = 4) -> Predictions:
    """Classification probabilities for every case and Dice for cases with masks."""
    if not cases:
        raise ValueError("no cases to evaluate")
    probs, labels, has, dice = [], [], [], []
    for start in range(0, len(cases), batch_size):
        batch = encode_cases(model, list(cases[start : start + batch_size]))
        probs.append(torch.sigmoid(model.classify(batch.features, batch.present)).float())
        labels.append(batch.labels)
        has.append(batch.has_labels)
        if batch.masks is not None and bool(batch.has_mask.any()):
            logits = model.segment(batch.seg_features[batch.has_mask])
            prediction = logits.argmax(dim=1, keepdim=True)
            dice.append(
                dice_rows(prediction, batch.masks[batch.has_mask], n_classes=logits.shape[1])
            )
    return Predictions(
        case_ids=[c.case_id for c in cases],
        probabilities=torch.cat(probs).numpy(),
        labels=torch.cat(labels).numpy(),
        has_labels=torch.cat(has).numpy(),
        dice=torch.cat(dice) if dice else None,
    )


def metrics_report(model: OrthoModel, predictions: Predictions) -> dict:
    """The metrics.json payload: joint, n_cases, per-label and macro AUC, (knee) Dice."""
    rows = predictions.has_labels
    names = LABELS[model.joint]
    auc = roc_auc_per_label(predictions.probabilities[rows], predictions.labels[rows], names=names)
    report = {
        "joint": model.joint.value,
        "n_cases": len(predictions.case_ids),
        "n_labeled": int(rows.sum()),
        "auc": auc,
        "macro_auc": mean_defined(auc),
    }
    if model.seg_head is not None:
        dice = (
            dice_per_structure(predictions.dice, names=KNEE_STRUCTURES)
            if predictions.dice is not None
            else dict.fromkeys(KNEE_STRUCTURES)
        )
        report.update(
            {
                "dice": dice,
                "mean_dice": mean_defined(dice),
                "n_masks": 0 if predictions.dice is None else int(predictions.dice.shape[0]),
            }
        )
    return report


def evaluate(model: OrthoModel, cases: Sequence, *, batch_size: int = 4) -> dict:
    """Metrics of `model` on the held-out cases among `cases`."""
    heldout = [c for c in cases if c.heldout]
    if not heldout:
        raise ValueError("the site has no held-out cases to evaluate on (check heldout_fraction)")
    model.eval()
    return metrics_report(model, predict(model, heldout, batch_size=batch_size))
