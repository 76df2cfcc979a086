"""Row 5's supervised UNet baseline: the heads' mask subset, any grid, Dice per structure."""

import numpy as np
import pytest

from core.data.cache import CaseTensors
from core.train.subsets import stratified_subset
from core.views import KNEE_STRUCTURES, View
from reproduce.baselines import UNetBudget, mask_subset, train_unet, unet_dice


def _case(i: int, *, heldout: bool = False, mask: bool = True, shape=(6, 12, 10)) -> CaseTensors:
    rng = np.random.default_rng(i)
    label_map = np.zeros(shape, dtype=np.uint8)
    label_map[1:4, 2:8, 3:7] = 1 + i % 3  # femur, tibia or patella
    image = np.where(label_map > 0, 0.8, -0.8) + 0.05 * rng.standard_normal(shape)
    labels = (rng.random(8) > 0.6).astype(np.float32)
    return CaseTensors(
        case_id=f"case-{i:04d}",
        views={View.SAGITTAL: image[None].astype(np.float16)},
        labels=labels,
        mask=label_map if mask else None,
        heldout=heldout,
    )


def test_mask_subset_is_the_heads_stratified_subset_of_training_masks():
    cases = [_case(i) for i in range(20)] + [_case(20, heldout=True), _case(21, mask=False)]
    chosen = mask_subset(cases, fraction=0.3, seed=4)
    expected = stratified_subset([(c.case_id, c.labels) for c in cases[:20]], fraction=0.3, seed=4)
    assert [c.case_id for c in chosen] == expected
    assert all(not c.heldout and c.mask is not None for c in chosen)


def test_mask_subset_without_masks_is_one_clear_error():
    with pytest.raises(ValueError, match="no training cases with knee masks"):
        mask_subset([_case(0, mask=False)], fraction=1.0, seed=0)


@pytest.mark.parametrize("shape", [(6, 12, 10), (16, 16, 16)])
def test_unet_trains_on_any_grid_and_reports_dice_per_structure(shape):
    cases = [_case(i, shape=shape) for i in range(3)]
    net = train_unet(cases, budget=UNetBudget(steps=2, batch_size=2), seed=0)
    report = unet_dice(net, [_case(5, heldout=True, shape=shape)])
    assert set(report["dice"]) == set(KNEE_STRUCTURES)
    defined = [v for v in report["dice"].values() if v is not None]
    assert defined and all(0.0 <= v <= 1.0 for v in defined)
    assert report["mean_dice"] == pytest.approx(np.mean(defined))
    assert report["n_masks"] == 1


def _weights(net) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in net.parameters()])


def test_unet_training_is_seeded():
    cases = [_case(i) for i in range(3)]
    budget = UNetBudget(steps=2, batch_size=2)
    first = _weights(train_unet(cases, budget=budget, seed=1))
    again = _weights(train_unet(cases, budget=budget, seed=1))
    other = _weights(train_unet(cases, budget=budget, seed=2))
    # threads may sum in another order, and Adam's first steps move every weight by ~lr
    # whatever the gradient's size: equal to within 2 x 2 x lr
    assert np.allclose(first, again, rtol=0, atol=4 * budget.lr)
    assert not np.allclose(first, other, rtol=0, atol=4 * budget.lr)
