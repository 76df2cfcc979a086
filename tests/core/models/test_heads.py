import pytest
import torch

from core.models.heads import (
    ClassificationHead,
    SegmentationHead,
    ViewPooling,
    segmentation_loss,
)
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


@pytest.mark.parametrize("scales", [(1,), (1, 2), (1, 2, 4)])
def test_segmentation_head_predicts_on_the_input_grid(scales):
    seg = SegmentationHead(
        tap_channels=[6] * len(scales), proj=3, width=4, context_pool=4, n_classes=12
    )
    image = torch.randn(2, 1, 4, 8, 8)
    maps = [torch.randn(2, 6, 4 // s, 8 // s, 8 // s) for s in scales]
    assert seg(image, maps).shape == (2, 12, 4, 8, 8)
    with pytest.raises(ValueError, match="expects"):
        seg(image, maps[:-1] if len(maps) > 1 else maps * 2)


def test_segmentation_head_ignores_the_scale_of_a_sites_features():
    # per-case, per-channel normalisation: a site whose features are 10x larger and shifted
    # (another scanner's contrast) gets the same prediction
    torch.manual_seed(0)
    seg = SegmentationHead(tap_channels=[5], proj=3, width=4, context_pool=2, n_classes=3)
    image, item = torch.randn(1, 1, 4, 8, 8), torch.randn(1, 5, 2, 4, 4)
    assert torch.allclose(seg(image, [item]), seg(image, [item * 10 + 3]), atol=1e-4)


def test_segmentation_head_sees_the_image():
    torch.manual_seed(0)
    seg = SegmentationHead(tap_channels=[5], proj=3, width=4, context_pool=2, n_classes=3)
    item = torch.randn(1, 5, 2, 4, 4)
    assert not torch.allclose(
        seg(torch.zeros(1, 1, 4, 8, 8), [item]), seg(torch.ones(1, 1, 4, 8, 8), [item])
    )


def test_max_pooling_keeps_a_small_finding(head):
    # one hot voxel in one channel: mean pooling dilutes it, the head's max pooling does not
    present = torch.ones(1, 3, dtype=torch.bool)
    features = {v.value: torch.zeros(1, 6, 2, 4, 4) for v in VIEWS}
    pooled = head.pool["sagittal"]
    spot = torch.zeros(1, 6, 2, 4, 4)
    spot[0, 2, 1, 2, 2] = 5.0
    assert not torch.allclose(pooled(spot), pooled(torch.zeros_like(spot)))
    assert head(features, present).shape == (1, 4)


def test_segmentation_loss_is_lower_for_the_right_answer():
    loss = segmentation_loss(ce_weight=0.2, dice_weight=1.0)
    target = torch.randint(0, 3, (2, 1, 4, 8, 8))
    right = torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3).float() * 10
    assert loss(right, target) < loss(-right, target)
    assert torch.isfinite(loss(torch.randn(2, 3, 4, 8, 8), target))


@pytest.mark.parametrize("context_pool", [0, 2, 4])
def test_context_branch_is_optional_and_keeps_the_grid(context_pool):
    seg = SegmentationHead(
        tap_channels=[5], proj=3, width=4, context_pool=context_pool, n_classes=3
    )
    assert (seg.context is None) == (context_pool <= 1)
    out = seg(torch.randn(1, 1, 6, 10, 10), [torch.randn(1, 5, 3, 5, 5)])  # not divisible by 4
    assert out.shape == (1, 3, 6, 10, 10)


@pytest.mark.parametrize("stem_kernel", [1, 3])
def test_stem_kernel_sets_the_fusions_neighbourhood(stem_kernel):
    seg = SegmentationHead(
        tap_channels=[5], proj=3, width=4, context_pool=0, n_classes=3, stem_kernel=stem_kernel
    )
    assert seg.stem[0].kernel_size == (stem_kernel,) * 3
    assert seg(torch.randn(1, 1, 4, 8, 8), [torch.randn(1, 5, 2, 4, 4)]).shape == (1, 3, 4, 8, 8)


@pytest.mark.parametrize("stem_kernel", [0, 2, 5])
def test_stem_kernel_other_than_1_or_3_is_refused(stem_kernel):
    with pytest.raises(ValueError, match="seg_stem_kernel"):
        SegmentationHead(
            tap_channels=[5], proj=3, width=4, context_pool=0, n_classes=3, stem_kernel=stem_kernel
        )


@pytest.mark.parametrize("grid", [0, 1, 2])
def test_grid_pooling_tells_where_a_finding_is(grid):
    # the same bright spot in two places: the global poolings (attention, mean, max) cannot
    # tell them apart; a 2x2x2 grid average can
    torch.manual_seed(0)
    pool = ViewPooling(channels=6, dim=10, grid=grid)
    front, back = torch.zeros(1, 6, 2, 4, 4), torch.zeros(1, 6, 2, 4, 4)
    front[0, 2, 0, 0, 0] = 5.0
    back[0, 2, 1, 3, 3] = 5.0
    same = torch.allclose(pool(front), pool(back), atol=1e-6)
    assert same == (grid < 2)


def test_negative_pool_grid_is_refused():
    with pytest.raises(ValueError, match="pool_grid"):
        ClassificationHead(channels=6, view_dim=10, n_labels=4, pool_grid=-1)


@pytest.mark.parametrize("missing", VIEWS)
def test_grid_pooling_head_masks_a_missing_view(missing):
    torch.manual_seed(0)
    head = ClassificationHead(channels=6, view_dim=10, n_labels=4, pool_grid=2)
    features = _features()
    present = torch.ones(3, 3, dtype=torch.bool)
    present[:, VIEWS.index(missing)] = False
    changed = {**features, missing.value: features[missing.value] * 7 + 1}
    assert torch.allclose(head(features, present), head(changed, present))
