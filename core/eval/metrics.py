"""Evaluation metrics from MONAI: per-label ROC AUC, macro AUC, Dice per structure.

A metric that is undefined on the data (a label with one class only, a structure absent
from every ground truth) is reported as None, never as NaN, and left out of the means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_roc_auc


def roc_auc_per_label(
    probabilities: np.ndarray, labels: np.ndarray, *, names: Sequence[str]
) -> dict[str, float | None]:
    """ROC AUC of each label column; None where the column holds a single class."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    if probabilities.shape != labels.shape or probabilities.shape[1:] != (len(names),):
        raise ValueError(
            f"predictions {probabilities.shape} and labels {labels.shape} must both be "
            f"(cases, {len(names)})"
        )
    aucs: dict[str, float | None] = {}
    for j, name in enumerate(names):
        column = labels[:, j]
        if np.unique(column).size < 2:
            aucs[name] = None
            continue
        value = compute_roc_auc(torch.from_numpy(probabilities[:, j]), torch.from_numpy(column))
        aucs[name] = float(value)
    return aucs


def mean_defined(values: Mapping[str, float | None]) -> float | None:
    """Mean over the defined (non-None, finite) values; None when there are none."""
    defined = [v for v in values.values() if v is not None and math.isfinite(v)]
    return float(np.mean(defined)) if defined else None


def dice_rows(prediction: torch.Tensor, target: torch.Tensor, *, n_classes: int) -> torch.Tensor:
    """Per-case Dice of each foreground class: (N, n_classes - 1), NaN where GT is empty.

    `prediction` and `target` are class indices of shape (N, 1, D, H, W).
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} vs target {tuple(target.shape)}")
    return compute_dice(
        prediction, target, include_background=False, ignore_empty=True, num_classes=n_classes
    )


def dice_per_structure(rows: torch.Tensor, *, names: Sequence[str]) -> dict[str, float | None]:
    """Mean Dice of each structure over the cases where it is present (None if never)."""
    rows = torch.as_tensor(rows, dtype=torch.float64).reshape(-1, len(names))
    out: dict[str, float | None] = {}
    for j, name in enumerate(names):
        column = rows[:, j]
        valid = column[~torch.isnan(column)]
        out[name] = float(valid.mean()) if valid.numel() else None
    return out
