import pytest
import torch

from core.models.heads import ClassificationHead, SegmentationHead, segmentation_loss
from core.views import VIEWS


@pytest.fixture
def head():
    torch.manual_seed(0)
    return ClassificationHead(channels=6, view_dim=10, n_labels=4)


def _features(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {v.value: torch.randn(n, 6, 2, 4, 4, generator=g) for v in VIEWS}


@pytest.mark.parametrize("missing", VIEWS)
def test_missing_view_is_masked_not_used(head, missing):
    present = torch.ones(3, 3, dtype=torch.bool)
    present[0, VIEWS.index(missing)] = False
    features = _features()
    base = head(features, present)
    changed = dict(features)
    changed[missing.value] = _features(seed=1)[missing.value] * 5.0
    out = head(changed, present)
    assert torch.allclose(out[0], base[0])  # case 0 lacks the view: its values are ignored
    assert not torch.allclose(out[1], base[1])  # case 1 has it: they matter


@pytest.mark.parametrize("missing", VIEWS)
def test_view_absent_from_the_whole_batch_may_be_omitted(head, missing):
    present = torch.ones(3, 3, dtype=torch.bool)
    present[:, VIEWS.index(missing)] = False
    features = _features()
    without = {k: v for k, v in features.items() if k != missing.value}
    assert torch.allclose(head(features, present), head(without, present))


def test_presence_mask_shape_is_checked(head):
    with pytest.raises(ValueError, match="present mask"):
        head(_features(), torch.ones(3, 2, dtype=torch.bool))


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_segmentation_head_upsamples_to_input_grid(stages):
    seg = SegmentationHead(in_channels=16, stages=stages, width=4, n_classes=12)
    out = seg(torch.randn(1, 16, 1, 2, 2))
    assert out.shape == (1, 12, 2**stages, 2 ** (stages + 1), 2 ** (stages + 1))


def test_segmentation_loss_is_lower_for_the_right_answer():
    loss = segmentation_loss(ce_weight=0.2, dice_weight=1.0)
    target = torch.randint(0, 3, (2, 1, 4, 8, 8))
    right = torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3).float() * 10
    assert loss(right, target) < loss(-right, target)
    assert torch.isfinite(loss(torch.randn(2, 3, 4, 8, 8), target))
