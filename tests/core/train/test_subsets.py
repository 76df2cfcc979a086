import numpy as np
import pytest

from core.train.subsets import stratified_subset


def _cases(n=200, seed=0):
    rng = np.random.default_rng(seed)
    rates = np.array([0.3, 0.2, 0.05, 0.5])
    out = []
    for i in range(n):
        labels = (rng.random(4) < rates).astype(np.float32)
        out.append((f"case-{i:03d}", labels if i % 10 else None))
    return out


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_subset_is_deterministic_and_order_independent(fraction):
    cases = _cases()
    first = stratified_subset(cases, fraction=fraction, seed=3)
    assert first == stratified_subset(list(reversed(cases)), fraction=fraction, seed=3)
    assert first != stratified_subset(cases, fraction=fraction, seed=4)
    assert len(first) == round(fraction * len(cases))


def test_subset_keeps_the_rare_label_and_class_balance():
    labeled = []
    for i in range(100):
        labels = np.zeros(4, dtype=np.float32)
        labels[0] = i % 2  # common: 50 positives
        labels[2] = i % 10 == 3  # rare: 10 positives
        labeled.append((f"case-{i:03d}", labels))
    unlabeled = [(f"mask-only-{i}", None) for i in range(20)]
    chosen = set(stratified_subset(labeled + unlabeled, fraction=0.1, seed=0))
    assert len(chosen) == 12
    assert sum(lab[2] for c, lab in labeled if c in chosen) == 1  # 10% of the rare positives
    assert sum(lab[0] for c, lab in labeled if c in chosen) == 5  # 10% of the common ones
    assert sum(c.startswith("mask-only") for c in chosen) == 2


def test_tiny_fraction_keeps_one_case_and_full_fraction_keeps_all():
    cases = _cases(n=12)
    assert len(stratified_subset(cases, fraction=0.01)) == 1
    assert stratified_subset(cases, fraction=1.0) == sorted(c for c, _ in cases)


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1])
def test_fraction_out_of_range_is_rejected(fraction):
    with pytest.raises(ValueError, match="label fraction"):
        stratified_subset(_cases(n=5), fraction=fraction)
