"""The supervised multi-view 3D CNN baseline: the probe's label subset, views fused over the
ones a case has, and it learns a finding the images show."""

import numpy as np
import pytest
import torch

from core.data.cache import CaseTensors
from core.train.subsets import stratified_subset
from core.views import LABELS, VIEWS, Joint
from reproduce.cnn_baseline import (
    CNNBudget,
    MultiViewCNN,
    _inputs,
    cnn_macro_auc,
    label_subset,
    train_cnn,
)

SHAPE = (4, 16, 16)


def _case(i: int, *, joint: Joint, heldout=False, missing=()) -> CaseTensors:
    """Label 0 positive in every other case, shown as a bright block in every view."""
    rng = np.random.default_rng(i)
    labels = (rng.random(len(LABELS[joint])) > 0.5).astype(np.float32)
    labels[0] = float(i % 2)
    views = {}
    for view in VIEWS:
        if view in missing:
            continue
        image = 0.1 * rng.standard_normal(SHAPE)
        if labels[0]:
            image[1:3, 4:12, 4:12] += 1.5
        views[view] = image[None].astype(np.float16)
    return CaseTensors(case_id=f"c{i:03d}", views=views, labels=labels, mask=None, heldout=heldout)


@pytest.mark.parametrize("joint", list(Joint))
def test_label_subset_is_the_probes_stratified_subset(joint):
    cases = [_case(i, joint=joint) for i in range(20)] + [_case(20, joint=joint, heldout=True)]
    chosen = label_subset(cases, fraction=0.3, seed=2)
    pairs = [(c.case_id, c.labels) for c in cases[:20]]
    assert {c.case_id for c in chosen} == set(stratified_subset(pairs, fraction=0.3, seed=2))


def test_a_missing_view_does_not_change_the_logits():
    net = MultiViewCNN(shape=SHAPE, n_labels=5, channels=(4, 8)).eval()
    case = _case(1, joint=Joint.KNEE, missing=(VIEWS[2],))
    volumes, present = _inputs([case])
    assert present.tolist() == [[True, True, False]]
    with torch.no_grad():
        before = net(volumes, present)
        volumes[:, 2] = 100.0  # whatever sits in the absent view's slot
        assert torch.equal(net(volumes, present), before)


@pytest.mark.parametrize("joint", list(Joint))
def test_it_learns_a_finding_the_images_show(joint):
    train = [_case(i, joint=joint, missing=(VIEWS[2],) if i % 3 == 0 else ()) for i in range(16)]
    val = [_case(100 + i, joint=joint) for i in range(8)]
    budget = CNNBudget(steps=40, batch_size=8, lr=3e-3, channels=(4, 8))
    net = train_cnn(train, joint=joint, budget=budget, seed=0)
    volumes, present = _inputs(val)
    with torch.no_grad():
        probs = torch.sigmoid(net(volumes, present))[:, 0]
    positive = torch.tensor([c.labels[0] == 1 for c in val])
    assert probs[positive].min() > probs[~positive].max()  # label 0 separated perfectly
    assert cnn_macro_auc(net, val, joint=joint) is not None
