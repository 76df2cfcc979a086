import pytest
import torch

from core.config import FeatureTap
from core.diffusion.ddpm import build_scheduler
from core.models.backbone import build_backbone
from core.models.features import case_seed, extract_taps, fuse, fused_channels


@pytest.fixture
def unet(tiny_config):
    torch.manual_seed(0)
    return build_backbone(tiny_config.backbone)


@pytest.fixture
def scheduler(tiny_config):
    return build_scheduler(tiny_config.diffusion)


def _x(n=2, seed=0):
    return torch.rand(n, 1, 8, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


MIDDLE = [FeatureTap(timestep=100, block="middle")]


def test_same_seed_same_features_other_seed_differs(unet, scheduler):
    x = _x()
    a = extract_taps(unet, scheduler, x, taps=MIDDLE, seeds=[1, 2])[0]
    b = extract_taps(unet, scheduler, x, taps=MIDDLE, seeds=[1, 2])[0]
    c = extract_taps(unet, scheduler, x, taps=MIDDLE, seeds=[3, 2])[0]
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], c[0])
    assert torch.allclose(a[1], c[1], atol=1e-5)  # sample 1 keeps its seed


def test_features_do_not_depend_on_the_batch(unet, scheduler):
    x = _x(3)
    batched = extract_taps(unet, scheduler, x, taps=MIDDLE, seeds=[5, 6, 7])[0]
    alone = extract_taps(unet, scheduler, x[1:2], taps=MIDDLE, seeds=[6])[0]
    assert torch.allclose(batched[1:2], alone, atol=1e-4)


def test_case_seed_is_stable_and_distinct():
    assert case_seed(0, "case-1") == case_seed(0, "case-1")
    assert len({case_seed(0, "case-1"), case_seed(1, "case-1"), case_seed(0, "case-2")}) == 3


def test_multi_tap_fusion_concatenates_on_first_grid(unet, scheduler, tiny_config):
    taps = [
        FeatureTap(timestep=200, block="middle"),
        FeatureTap(timestep=150, block="down.0"),
        FeatureTap(timestep=50, block="up.1"),
    ]
    maps = extract_taps(unet, scheduler, _x(), taps=taps, seeds=[1, 2])
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 4, 16, 16), (8, 4, 16, 16), (8, 8, 32, 32)]
    fused = fuse(maps)
    assert fused.shape == (2, fused_channels(tiny_config.backbone, taps), 4, 16, 16)
    assert fused.shape[1] == 32


def test_bottleneck_only_taps_skip_the_decoder(unet, scheduler):
    calls = []
    handle = unet.up_blocks[0].register_forward_hook(lambda *_: calls.append(1))
    extract_taps(unet, scheduler, _x(), taps=MIDDLE, seeds=[1, 2])
    extract_taps(unet, scheduler, _x(), taps=[FeatureTap(100, "up.0")], seeds=[1, 2])
    handle.remove()
    assert len(calls) == 1


def test_frozen_backbone_gives_no_graph_trainable_one_does(unet, scheduler):
    unet.requires_grad_(False)
    frozen = extract_taps(unet, scheduler, _x(), taps=MIDDLE, seeds=[1, 2])[0]
    unet.requires_grad_(True)
    trainable = extract_taps(unet, scheduler, _x(), taps=MIDDLE, seeds=[1, 2])[0]
    assert not frozen.requires_grad
    assert trainable.requires_grad


def test_bad_seeds_and_timesteps_are_rejected(unet, scheduler):
    with pytest.raises(ValueError, match="one noise seed per volume"):
        extract_taps(unet, scheduler, _x(), taps=MIDDLE, seeds=[1])
    with pytest.raises(ValueError, match="timestep 1000"):
        extract_taps(unet, scheduler, _x(), taps=[FeatureTap(1000, "middle")], seeds=[1, 2])
