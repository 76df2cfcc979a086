"""encode_cases for training passes only the views a batch's losses need."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from core.models.encode import encode_cases
from core.models.features import draw_seeds, extract_taps, fuse
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


@pytest.mark.parametrize("view", ["sagittal", "coronal", "axial"])
def test_noise_draws_average_the_probe_features_and_leave_segmentation_alone(tiny_config, view):
    one = build_model(tiny_config, joint="knee").eval()
    config = copy.deepcopy(tiny_config)
    config.features.noise_draws = 3
    three = build_model(config, joint="knee").eval()
    three.load_state_dict(one.state_dict())
    shape = (tiny_config.input_slices, tiny_config.input_size, tiny_config.input_size)
    clean = torch.rand(2, 1, *shape) * 2 - 1
    seeds = [11, 12]
    with torch.no_grad():
        single, seg_one = one.encode(view, clean, seeds=seeds, with_seg=True)
        mean, seg_three = three.encode(view, clean, seeds=seeds, with_seg=True)
        draws = [
            fuse(
                extract_taps(
                    one.backbone[view],
                    one.scheduler,
                    clean,
                    taps=tiny_config.features.taps,
                    seeds=draw_seeds(seeds, draw=k),
                )
            )
            for k in range(3)
        ]
    assert torch.allclose(draws[0], single)  # draw 0 is what one draw always read
    assert torch.allclose(mean, sum(draws) / 3, atol=1e-5)
    assert not torch.allclose(mean, single, atol=1e-4)
    for a, b in zip(seg_one, seg_three, strict=True):
        assert torch.equal(a, b)


def test_noise_draws_below_one_are_refused(tiny_config):
    config = copy.deepcopy(tiny_config)
    config.features.noise_draws = 0
    with pytest.raises(ValueError, match="model.features.noise_draws"):
        build_model(config, joint="knee")


@pytest.mark.parametrize(
    ("key", "value"), [("pool_grid", -1), ("seg_stem_kernel", 2), ("seg_stem_kernel", 0)]
)
def test_head_shape_keys_out_of_range_are_refused_naming_the_key(tiny_config, key, value):
    config = copy.deepcopy(tiny_config)
    setattr(config.heads, key, value)
    with pytest.raises(ValueError, match=f"model.heads.{key}"):
        build_model(config, joint="knee")
