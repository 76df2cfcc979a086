"""A wrong setting is named alone, with its value (issue 15, defect 10): never one line for
several values such as "batch_size must be >= 1 and lr > 0"."""

import pytest

from core.config import FinetuneConfig
from core.models.heads import SegmentationHead
from core.train.finetune import check_finetune_config
from core.train.privacy import round_entries, sample_rate


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("epochs", 0, "train.epochs must be >= 1, got 0"),
        ("min_steps", -1, "train.min_steps must be >= 0 (0 = epochs alone), got -1"),
        ("batch_size", 0, "train.batch_size must be >= 1, got 0"),
        ("lr", 0.0, "train.lr must be > 0, got 0.0"),
        ("backbone_lr_scale", -1.0, "train.backbone_lr_scale must be >= 0, got -1.0"),
        ("label_fraction", 5.0, "train.label_fraction must be in (0, 1], got 5.0"),
        ("val_fraction", -0.1, "train.val_fraction must be in [0, 1), got -0.1"),
        ("patience", -1, "train.patience must be >= 0 (0 = every epoch), got -1"),
        ("weight_decay", -0.5, "train.weight_decay must be >= 0, got -0.5"),
        ("proximal_mu", -1.0, "train.proximal_mu must be >= 0 (0 = FedAvg), got -1.0"),
        ("mode", "half", "train.mode: unknown fine-tuning mode 'half': use one of linear"),
    ],
)
def test_finetune_values_are_named_one_by_one(field, value, expected):
    check_finetune_config(FinetuneConfig())
    with pytest.raises(ValueError) as err:
        check_finetune_config(FinetuneConfig(**{field: value}))
    assert str(err.value).startswith(expected)


def test_dp_and_head_messages_name_the_wrong_value():
    with pytest.raises(ValueError, match=r"^DP sampling needs batch_size >= 1, got 0$"):
        sample_rate(batch_size=0, cases=4)
    with pytest.raises(ValueError, match=r"^DP sampling needs at least one training case, got 0$"):
        sample_rate(batch_size=2, cases=0)
    with pytest.raises(ValueError, match=r"^a DP round needs train.steps >= 1, got 0$"):
        round_entries(rates=[0.5], steps=0, config=None)
    with pytest.raises(ValueError, match=r"^model.heads.seg_context_pool must be >= 0, got -1$"):
        SegmentationHead(tap_channels=[4], proj=2, width=2, context_pool=-1, n_classes=3)
