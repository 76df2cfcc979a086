"""The classification part of metrics.json from held-out and training-side predictions.

Held-out (test) predictions give every reported number; training-side predictions are used
for one thing only, choosing each label's threshold, so the test cases never tune it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.eval.bootstrap import N_RESAMPLES, bootstrap_auc_ci
from core.eval.metrics import expected_calibration_error, mean_defined, roc_auc_per_label
from core.eval.thresholds import choose_thresholds, sensitivity_specificity


def classification_metrics(
    *,
    test_probabilities: np.ndarray,
    test_labels: np.ndarray,
    train_probabilities: np.ndarray,
    train_labels: np.ndarray,
    names: Sequence[str],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict:
    """AUC (+ bootstrap CI), thresholds, sensitivity/specificity, calibration, label counts.

    All arrays are (cases, labels) over labeled cases only; either side may have no cases.
    """
    test_p = np.asarray(test_probabilities, dtype=np.float64).reshape(-1, len(names))
    test_y = np.asarray(test_labels, dtype=np.float64).reshape(-1, len(names))
    train_p = np.asarray(train_probabilities, dtype=np.float64).reshape(-1, len(names))
    train_y = np.asarray(train_labels, dtype=np.float64).reshape(-1, len(names))
    auc = roc_auc_per_label(test_p, test_y, names=names)
    intervals = bootstrap_auc_ci(test_p, test_y, names=names, n_resamples=n_resamples, seed=seed)
    thresholds, sources = choose_thresholds(train_p, train_y, names=names)
    sensitivity, specificity = sensitivity_specificity(
        test_p, test_y, thresholds=thresholds, names=names
    )
    positives = (test_y > 0.5).sum(axis=0)
    return {
        "auc": auc,
        "auc_ci": intervals.per_label,
        "macro_auc": mean_defined(auc),
        "macro_auc_ci": intervals.macro,
        "bootstrap_resamples": intervals.n_resamples,
        "threshold": thresholds,
        "threshold_source": sources,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "calibration_error": expected_calibration_error(test_p, test_y),
        "n_positive": {name: int(positives[j]) for j, name in enumerate(names)},
        "n_negative": {name: int(test_y.shape[0] - positives[j]) for j, name in enumerate(names)},
    }
