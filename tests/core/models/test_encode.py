"""encode_cases for training passes only the views a batch's losses need."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from core.models.encode import encode_cases
from core.models.registry import build_model
from core.views import Joint
from tests.core.tiny_model import random_case


@pytest.mark.parametrize("labeled", [False, True])
def test_training_batch_without_labels_encodes_the_segmentation_view_only(tiny_config, labeled):
    model = build_model(tiny_config, joint="knee").eval()
    rng = np.random.default_rng(3)
    cases = [random_case(f"c{i}", joint=Joint.KNEE, rng=rng) for i in range(2)]
    if not labeled:
        cases = [replace(c, labels=None) for c in cases]
    full = encode_cases(model, cases)
    training = encode_cases(model, cases, for_training=True)
    expected = set(full.features) if labeled else {"sagittal"}
    assert set(training.features) == expected and len(full.features) == 3
    for mine, reference in zip(training.seg_maps, full.seg_maps, strict=True):
        assert torch.equal(mine, reference)
    assert torch.equal(training.masks, full.masks)
