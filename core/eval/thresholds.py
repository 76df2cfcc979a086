"""ROC points, Youden-J thresholds (chosen on training cases) and sensitivity/specificity.

A case is called positive when its probability is >= the threshold. Thresholds come from the
site's labeled training cases only; the held-out cases are never looked at when choosing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_THRESHOLD = 0.5


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, threshold) at every distinct score.

    Starts at (0, 0) with threshold +inf; the i-th point calls positive every score >=
    threshold[i]. Both classes must be present.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(labels) > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("a ROC curve needs positive and negative cases")
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positive[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(ranked) != 0), ranked.size - 1]
    tp = np.cumsum(hits)[last_of_value]
    fp = np.cumsum(~hits)[last_of_value]
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    return fpr, tpr, np.r_[np.inf, ranked[last_of_value]]


def youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """The threshold maximising sensitivity + specificity - 1, halfway between the cut score
    and the next lower score; None when the cases hold one class only."""
    positive = np.asarray(labels) > 0.5
    if positive.all() or not positive.any():
        return None
    fpr, tpr, thresholds = roc_points(scores, labels)
    best = 1 + int(np.argmax((tpr - fpr)[1:]))  # skip the +inf point (nothing called positive)
    if best + 1 < thresholds.size:
        return float((thresholds[best] + thresholds[best + 1]) / 2)
    return float(thresholds[best])


def choose_thresholds(
    probabilities: np.ndarray, labels: np.ndarray, *, names: Sequence[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """Per-label thresholds and where each came from ("youden" or "default" = 0.5)."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    thresholds: dict[str, float] = {}
    sources: dict[str, str] = {}
    for j, name in enumerate(names):
        chosen = youden_threshold(probabilities[:, j], labels[:, j]) if probabilities.size else None
        thresholds[name] = DEFAULT_THRESHOLD if chosen is None else chosen
        sources[name] = "default" if chosen is None else "youden"
    return thresholds, sources


def sensitivity_specificity(
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    thresholds: Mapping[str, float],
    names: Sequence[str],
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Sensitivity and specificity of each label at its threshold (None without positives,
    resp. negatives)."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    sensitivity: dict[str, float | None] = {}
    specificity: dict[str, float | None] = {}
    for j, name in enumerate(names):
        called = probabilities[:, j] >= thresholds[name]
        positive = labels[:, j] > 0.5
        sensitivity[name] = float(called[positive].mean()) if positive.any() else None
        specificity[name] = float((~called[~positive]).mean()) if (~positive).any() else None
    return sensitivity, specificity
