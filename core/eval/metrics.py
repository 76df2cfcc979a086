"""Evaluation metrics from MONAI: per-label ROC AUC, macro AUC, Dice and HD95 per structure,
expected calibration error.

A metric that is undefined on the data (a label with one class only, a structure absent
from every ground truth) is reported as None, never as NaN, and left out of the means.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_roc_auc
from monai.metrics.calibration import calibration_binning
from monai.networks.utils import one_hot

CALIBRATION_BINS = 10


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


def hd95_rows(prediction: torch.Tensor, target: torch.Tensor, *, n_classes: int) -> torch.Tensor:
    """Per-case 95th-percentile Hausdorff distance of each foreground class, in voxels.

    Same inputs and output shape as `dice_rows`. NaN where the ground truth lacks the class
    (as for Dice). Where the ground truth has it but the prediction does not, MONAI gives NaN
    too, which would drop the worst misses from the mean; such entries get the grid diagonal,
    the largest distance possible on the grid.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} vs target {tuple(target.shape)}")
    pred_1h, target_1h = one_hot(prediction, n_classes), one_hot(target, n_classes)
    with warnings.catch_warnings():  # empty classes warn per case; handled below
        warnings.simplefilter("ignore")
        distances = compute_hausdorff_distance(
            pred_1h, target_1h, include_background=False, percentile=95
        ).double()
    spatial = tuple(range(2, target_1h.ndim))
    in_target = target_1h[:, 1:].sum(dim=spatial) > 0
    in_pred = pred_1h[:, 1:].sum(dim=spatial) > 0
    diagonal = math.sqrt(sum((s - 1) ** 2 for s in target.shape[2:]))
    distances = torch.where(in_target & ~in_pred, torch.full_like(distances, diagonal), distances)
    return torch.where(in_target, distances, torch.full_like(distances, math.nan))


def reliability_bins(
    probabilities: np.ndarray, labels: np.ndarray, *, n_bins: int = CALIBRATION_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean probability, observed frequency, count) per equal-width bin, all labels pooled.

    Empty bins hold NaN means and count 0 (MONAI's calibration_binning).
    """
    p = torch.as_tensor(np.asarray(probabilities, dtype=np.float32)).reshape(1, 1, -1)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32)).reshape(1, 1, -1)
    mean_p, mean_y, counts = calibration_binning(p, y, num_bins=n_bins)
    return mean_p[0, 0].numpy(), mean_y[0, 0].numpy(), counts[0, 0].numpy()


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, *, n_bins: int = CALIBRATION_BINS
) -> float | None:
    """ECE over all (case, label) pairs: count-weighted mean |mean probability - frequency|.

    None without predictions. Computed from `reliability_bins`, so the plot and the number
    agree (MONAI's CalibrationErrorMetric gives the same value per channel, not pooled).
    """
    if np.asarray(probabilities).size == 0:
        return None
    mean_p, mean_y, counts = reliability_bins(probabilities, labels, n_bins=n_bins)
    used = counts > 0
    gaps = np.abs(mean_p[used] - mean_y[used])
    return float((counts[used] * gaps).sum() / counts[used].sum())


def mean_per_structure(rows: torch.Tensor, *, names: Sequence[str]) -> dict[str, float | None]:
    """Mean of each structure's column (Dice or HD95) over the cases where it is defined."""
    rows = torch.as_tensor(rows, dtype=torch.float64).reshape(-1, len(names))
    out: dict[str, float | None] = {}
    for j, name in enumerate(names):
        column = rows[:, j]
        valid = column[~torch.isnan(column)]
        out[name] = float(valid.mean()) if valid.numel() else None
    return out
