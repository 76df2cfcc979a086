"""Percentile-bootstrap confidence intervals of per-label and macro ROC AUC.

Cases are resampled with replacement (the same resample for every label, so the macro AUC
keeps the labels' correlation). A resample is represented by how often it draws each case,
which makes the AUC of all resamples one weighted pairwise count: for positives p and
negatives n with draw counts w, AUC = sum w_p w_n [s_p > s_n] (+ 1/2 on ties) / (W_pos W_neg),
the Mann-Whitney form of the same statistic MONAI computes for the point estimate.
Resamples that draw one class only have no AUC and are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

N_RESAMPLES = 1000
LEVEL = 0.95
MIN_USABLE = 0.5  # fewer usable resamples than this fraction: no interval


@dataclass(frozen=True)
class AucIntervals:
    per_label: dict[str, list[float] | None]  # label -> [low, high]
    macro: list[float] | None
    n_resamples: int


def weighted_auc(scores: np.ndarray, labels: np.ndarray, *, weights: np.ndarray) -> np.ndarray:
    """AUC of one label under each row of `weights` (resamples x cases); NaN for one class."""
    positive = np.asarray(labels) > 0.5
    s_pos, s_neg = scores[positive], scores[~positive]
    wins = (s_pos[:, None] > s_neg[None, :]) + 0.5 * (s_pos[:, None] == s_neg[None, :])
    w_pos, w_neg = weights[:, positive], weights[:, ~positive]
    numerator = ((w_pos @ wins) * w_neg).sum(axis=1)
    denominator = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1e-300), np.nan)


def _interval(samples: np.ndarray, *, level: float) -> list[float] | None:
    usable = samples[np.isfinite(samples)]
    if usable.size == 0 or usable.size < MIN_USABLE * samples.size:
        return None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(usable, [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_auc_ci(
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    names: Sequence[str],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> AucIntervals:
    """Per-label and macro AUC intervals; None where a label has one class in the data or
    most resamples have one class. Like the point estimate (`mean_defined`), a resample's
    macro AUC is the mean over the labels that have an AUC in it."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    n = probabilities.shape[0]
    empty = AucIntervals(per_label=dict.fromkeys(names), macro=None, n_resamples=n_resamples)
    if n == 0:
        return empty
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)
    per_label: dict[str, list[float] | None] = {}
    defined = []
    for j, name in enumerate(names):
        if np.unique(labels[:, j]).size < 2:
            per_label[name] = None
            continue
        samples = weighted_auc(probabilities[:, j], labels[:, j], weights=weights)
        per_label[name] = _interval(samples, level=level)
        defined.append(samples)
    macro = None
    if defined:
        stacked = np.stack(defined, axis=1)
        defined_any = np.isfinite(stacked).any(axis=1)
        macro_samples = np.full(n_resamples, np.nan)
        macro_samples[defined_any] = np.nanmean(stacked[defined_any], axis=1)
        macro = _interval(macro_samples, level=level)
    return AucIntervals(per_label=per_label, macro=macro, n_resamples=n_resamples)
