import numpy as np
import pytest
import torch

from core.eval.metrics import dice_rows, mean_defined, mean_per_structure, roc_auc_per_label


def _rank_auc(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    return np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])


def test_auc_per_label_matches_rank_formula_and_skips_single_class():
    rng = np.random.default_rng(0)
    labels = np.stack([rng.integers(0, 2, 30), np.ones(30), rng.integers(0, 2, 30)], 1)
    probs = rng.random((30, 3))
    probs[:, 2] = labels[:, 2] * 0.5 + 0.25  # perfectly separating
    aucs = roc_auc_per_label(probs, labels.astype(np.float32), names=["a", "b", "c"])
    assert aucs["a"] == pytest.approx(_rank_auc(probs[:, 0], labels[:, 0]))
    assert aucs["b"] is None
    assert aucs["c"] == pytest.approx(1.0)
    assert mean_defined(aucs) == pytest.approx((aucs["a"] + 1.0) / 2)


def test_auc_shape_errors_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(cases, 2\)"):
        roc_auc_per_label(np.zeros((4, 3)), np.zeros((4, 3)), names=["a", "b"])


def test_mean_defined_is_none_without_values():
    assert mean_defined({"a": None}) is None


def test_mean_per_structure_of_dice_rows():
    target = torch.zeros(2, 1, 2, 4, 4, dtype=torch.long)
    target[:, :, :, :2] = 1
    target[0, :, :, 2:] = 2
    prediction = target.clone()
    prediction[1, :, :, :1] = 0  # case 1 misses half of structure 1
    rows = dice_rows(prediction, target, n_classes=4)
    assert rows.shape == (2, 3)
    scores = mean_per_structure(rows, names=["one", "two", "three"])
    assert scores["one"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert scores["two"] == pytest.approx(1.0)  # only case 0 has it
    assert scores["three"] is None  # in no ground truth
    with pytest.raises(ValueError, match="prediction"):
        dice_rows(prediction[:1], target, n_classes=4)
