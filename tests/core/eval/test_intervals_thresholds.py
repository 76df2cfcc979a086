"""Bootstrap AUC intervals, Youden thresholds, sensitivity/specificity, ECE and HD95."""

import math

import numpy as np
import pytest
import torch
from monai.metrics import CalibrationErrorMetric, compute_roc_auc

from core.eval.bootstrap import bootstrap_auc_ci, weighted_auc
from core.eval.metrics import (
    expected_calibration_error,
    hd95_rows,
    mean_defined,
    reliability_bins,
    roc_auc_per_label,
)
from core.eval.thresholds import (
    DEFAULT_THRESHOLD,
    choose_thresholds,
    roc_points,
    sensitivity_specificity,
    youden_threshold,
)

NAMES = ["a", "b", "c"]


def _informative(n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three labels whose scores carry strong, weak and some signal (with ties)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 3)) < [0.5, 0.3, 0.2]).astype(np.float32)
    noise = rng.normal(size=(n, 3))
    effect = np.array([1.5, 0.5, 1.0])
    scores = 1 / (1 + np.exp(-(labels * effect - effect / 2 + noise)))
    scores[: n // 4, 1] = 0.5  # ties
    return scores, labels


def test_weighted_auc_with_unit_weights_is_monais_auc_including_ties():
    scores, labels = _informative(40, seed=0)
    for j in range(3):
        ours = weighted_auc(scores[:, j], labels[:, j], weights=np.ones((1, 40)))[0]
        theirs = compute_roc_auc(torch.from_numpy(scores[:, j]), torch.from_numpy(labels[:, j]))
        assert ours == pytest.approx(float(theirs))


def test_weighted_auc_counts_duplicated_cases_and_skips_one_class_resamples():
    scores = np.array([0.9, 0.2, 0.6, 0.4])
    labels = np.array([1, 0, 0, 1])
    weights = np.array([[2, 1, 1, 0], [0, 1, 1, 0]], dtype=float)
    auc = weighted_auc(scores, labels, weights=weights)
    assert auc[0] == pytest.approx(1.0)  # only case 0 (twice) among positives: beats both
    assert math.isnan(auc[1])  # no positive drawn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_ci_contains_the_point_estimate(seed):
    scores, labels = _informative(60, seed=seed)
    point = roc_auc_per_label(scores, labels, names=NAMES)
    intervals = bootstrap_auc_ci(scores, labels, names=NAMES, n_resamples=500, seed=seed)
    for name in NAMES:
        low, high = intervals.per_label[name]
        assert low <= point[name] <= high
        assert high - low > 0.01  # an interval, not a point
    low, high = intervals.macro
    assert low <= mean_defined(point) <= high


def test_bootstrap_is_seeded_narrows_with_more_cases_and_skips_one_class_labels():
    scores, labels = _informative(60, seed=3)
    labels[:, 2] = 0  # one class: no AUC, no interval
    first = bootstrap_auc_ci(scores, labels, names=NAMES, n_resamples=300, seed=7)
    again = bootstrap_auc_ci(scores, labels, names=NAMES, n_resamples=300, seed=7)
    other = bootstrap_auc_ci(scores, labels, names=NAMES, n_resamples=300, seed=8)
    assert first == again and first != other
    assert first.per_label["c"] is None and first.macro is not None
    big_scores, big_labels = _informative(600, seed=3)
    big = bootstrap_auc_ci(big_scores, big_labels, names=NAMES, n_resamples=300, seed=7)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(big.per_label["a"]) < width(first.per_label["a"])
    empty = bootstrap_auc_ci(np.zeros((0, 3)), np.zeros((0, 3)), names=NAMES)
    assert empty.per_label == dict.fromkeys(NAMES) and empty.macro is None


def test_roc_points_run_from_origin_to_one_and_their_area_is_the_auc():
    scores, labels = _informative(50, seed=4)
    fpr, tpr, thresholds = roc_points(scores[:, 1], labels[:, 1])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert thresholds[0] == np.inf and np.all(np.diff(thresholds[1:]) < 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(roc_auc_per_label(scores, labels, names=NAMES)["b"])
    with pytest.raises(ValueError, match="positive and negative"):
        roc_points(scores[:, 0], np.ones(50))


def test_youden_threshold_separates_the_classes_between_their_scores():
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.35])
    labels = np.array([0, 0, 0, 1, 1, 1])
    # Best J: call 0.35 and above positive (sens 1, spec 1): halfway between 0.35 and 0.3.
    assert youden_threshold(scores, labels) == pytest.approx(0.325)
    assert youden_threshold(scores, np.zeros(6)) is None


def test_thresholds_fall_back_to_half_and_sensitivity_specificity_at_threshold():
    probs = np.array([[0.9, 0.2], [0.6, 0.8], [0.3, 0.7], [0.1, 0.4]])
    labels = np.array([[1, 1], [1, 1], [0, 1], [0, 1]], dtype=float)  # label y: one class
    thresholds, sources = choose_thresholds(probs, labels, names=["x", "y"])
    assert sources == {"x": "youden", "y": "default"}
    assert thresholds["y"] == DEFAULT_THRESHOLD and 0.3 < thresholds["x"] < 0.6
    empty, empty_sources = choose_thresholds(np.zeros((0, 2)), np.zeros((0, 2)), names=["x", "y"])
    assert empty == {"x": 0.5, "y": 0.5} and set(empty_sources.values()) == {"default"}
    sens, spec = sensitivity_specificity(
        probs, labels, thresholds={"x": 0.5, "y": 0.5}, names=["x", "y"]
    )
    assert sens == {"x": 1.0, "y": 0.5}  # y: 0.8 and 0.7 called, 0.2 and 0.4 missed
    assert spec == {"x": 1.0, "y": None}  # no negatives for y


def test_ece_pools_labels_and_matches_monai_per_channel():
    assert expected_calibration_error(np.full((10, 2), 0.9), np.zeros((10, 2))) == pytest.approx(
        0.9
    )
    rng = np.random.default_rng(5)
    probs = rng.random((200, 1))
    labels = (rng.random((200, 1)) < probs).astype(np.float32)
    ours = expected_calibration_error(probs, labels)
    metric = CalibrationErrorMetric(num_bins=10)
    metric(
        y_pred=torch.from_numpy(probs.T[None].astype(np.float32)),
        y=torch.from_numpy(labels.T[None]),
    )
    assert ours == pytest.approx(float(metric.aggregate()), abs=1e-5)
    assert ours < 0.15  # labels drawn from the probabilities: roughly calibrated
    mean_p, frequency, counts = reliability_bins(probs, labels)
    assert counts.sum() == 200 and len(counts) == 10
    assert expected_calibration_error(np.zeros((0, 2)), np.zeros((0, 2))) is None


def test_hd95_is_in_voxels_nan_without_ground_truth_and_the_diagonal_when_missed():
    target = torch.zeros(1, 1, 4, 12, 12, dtype=torch.long)
    target[..., 2:6, 2:6] = 1
    target[..., 8:10, 8:10] = 2
    prediction = torch.zeros_like(target)
    prediction[..., 2:6, 4:8] = 1  # structure 1 shifted by 2 voxels; structure 2 missed
    prediction[..., 0:2, 10:12] = 3  # structure 3 predicted, absent from the ground truth
    rows = hd95_rows(prediction, target, n_classes=4)
    assert rows.shape == (1, 3)
    assert rows[0, 0].item() == pytest.approx(2.0)
    assert rows[0, 1].item() == pytest.approx(math.sqrt(3**2 + 11**2 + 11**2))
    assert math.isnan(rows[0, 2].item())
