"""What a site shares from its held-out evaluation: metrics.json-style report -> flat metrics,
then only quality metrics and case counts (never chosen thresholds or per-label counts)."""

from __future__ import annotations

from typing import Any

import numpy as np


def flatten_metrics(report: dict[str, Any]) -> dict[str, float]:
    """metrics.json-style report -> flat numeric metrics (undefined values left out)."""
    flat: dict[str, float] = {}
    for name, value in report.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, int | float) and np.isfinite(v):
                    flat[f"{name}/{sub}"] = float(v)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if value is not None and np.isfinite(value):
                flat[name] = float(value)
    return flat


# What a site reports from its held-out evaluation: quality metrics and case counts. Chosen
# thresholds and per-label positive/negative counts stay in the site's local report (the
# counts of a small held-out split say too much about individual patients).
SHARED_EVALUATION = (
    "macro_auc",
    "auc/",
    "mean_dice",
    "dice/",
    "mean_hd95",
    "hd95/",
    "calibration_error",
    "sensitivity/",
    "specificity/",
    "n_cases",
    "n_labeled",
    "n_masks",
    "n_unlabeled_skipped",
)


def shared_evaluation(flat: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in flat.items() if k.startswith(SHARED_EVALUATION)}
