import numpy as np
import pytest
import torch

from core.config import FinetuneConfig
from core.models.registry import build_model
from core.train.finetune import finetune
from core.train.validation import MIN_TRAIN_CASES, Validation, validation_split
from core.views import Joint
from tests.core.tiny_model import random_case


def _cases(n: int):
    rng = np.random.default_rng(5)
    return [random_case(f"c{i:02d}", joint=Joint.KNEE, rng=rng) for i in range(n)]


@pytest.mark.parametrize("n", [10, 25])
def test_split_is_disjoint_covers_all_and_is_seeded(n):
    cases = _cases(n)
    train, val = validation_split(cases, fraction=0.2, seed=1)
    assert len(val) == round(0.2 * n)
    assert {c.case_id for c in train} | {c.case_id for c in val} == {c.case_id for c in cases}
    assert not {c.case_id for c in train} & {c.case_id for c in val}
    again = validation_split(list(reversed(cases)), fraction=0.2, seed=1)[1]
    assert sorted(c.case_id for c in again) == sorted(c.case_id for c in val)


def test_small_sets_and_zero_fraction_keep_every_case_for_training():
    assert validation_split(_cases(MIN_TRAIN_CASES), fraction=0.2, seed=0)[1] == []
    assert validation_split(_cases(7), fraction=0.2, seed=0)[1] == []  # 1 validation case
    assert len(validation_split(_cases(8), fraction=0.2, seed=0)[1]) == 2
    assert validation_split(_cases(20), fraction=0.0, seed=0)[1] == []
    with pytest.raises(ValueError, match="val_fraction"):
        validation_split(_cases(20), fraction=1.0, seed=0)


@pytest.mark.parametrize("per_head", [True, False])
def test_best_epoch_weights_are_restored(tiny_config, per_head):
    model = build_model(tiny_config, joint="knee")
    cases = _cases(4)
    validation = Validation(model, cases=cases, encoded=None, per_head=per_head)
    validation.after_epoch()
    good = {k: v.clone() for k, v in model.head.state_dict().items()}
    with torch.no_grad():  # a much worse second epoch
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 5)
    assert validation.after_epoch() == 1
    validation.restore_best()
    for key, value in model.head.state_dict().items():
        assert torch.equal(value, good[key]), key
    expected = {"cls": 1, "seg": 1} if per_head else {"cls": 1, "seg": 1, "all": 1}
    assert validation.best_epochs() == expected


def test_whole_model_keeps_the_last_epoch_any_head_improved(tiny_config, monkeypatch):
    """partial/full: the classification loss rises while segmentation still improves (the
    sum gets worse); the state kept is the later one, where segmentation was best."""
    model = build_model(tiny_config, joint="knee")
    validation = Validation(model, cases=_cases(4), encoded=None, per_head=False)
    scripted = iter([{"cls": 0.4, "seg": 1.4}, {"cls": 1.0, "seg": 1.0}, {"cls": 0.9, "seg": 1.1}])
    monkeypatch.setattr(validation, "_losses", lambda: next(scripted))
    validation.after_epoch()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert validation.after_epoch() == 0  # seg improved, though the sum rose from 1.8 to 2.0
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert validation.after_epoch() == 1  # neither head beat its own best
    validation.restore_best()
    for key, value in model.state_dict().items():
        assert torch.equal(value, kept[key]), key
    assert validation.best_epochs() == {"cls": 1, "seg": 2, "all": 2}


def test_training_stops_after_patience_without_improvement(tiny_config):
    model = build_model(tiny_config, joint="knee")
    # lr 1e-30 moves no float32 weight (far below their spacing): the loss never improves
    config = FinetuneConfig(epochs=30, batch_size=4, lr=1e-30, weight_decay=0.0, patience=3)
    result = finetune(model, _cases(12), config=config)
    assert len(result.epoch_losses) == 4  # epoch 1 is the best; 3 more without improvement
    assert result.best_epochs == {"cls": 1, "seg": 1}


@pytest.mark.parametrize(("min_steps", "expected"), [(0, 2), (10, 4)])
def test_min_steps_raises_the_epochs_and_holds_off_early_stopping(tiny_config, min_steps, expected):
    model = build_model(tiny_config, joint="knee")
    # 12 cases -> 10 train + 2 validation -> 3 batches of 4 per epoch: 10 steps need 4 epochs
    # (more than epochs=3); lr 1e-30 never improves the loss, so patience 1 alone stops at 2
    config = FinetuneConfig(
        epochs=3, min_steps=min_steps, batch_size=4, lr=1e-30, weight_decay=0.0, patience=1
    )
    result = finetune(model, _cases(12), config=config)
    assert len(result.epoch_losses) == expected
