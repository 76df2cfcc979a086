import copy

import numpy as np
import pytest
import torch

from core.config import FinetuneConfig
from core.models.encode import encode_cases
from core.models.feature_cache import KEEP_DIGESTS, FeatureCache, feature_digest
from core.models.registry import build_model
from core.train.finetune import finetune
from core.views import VIEWS, Joint
from tests.core.tiny_model import random_case


def _cases(joint: Joint, n: int = 6):
    rng = np.random.default_rng(3)
    return [
        random_case(f"c{i}", joint=joint, rng=rng, missing=(VIEWS[i % 3],) if i % 2 else ())
        for i in range(n)
    ]


def test_digest_follows_backbone_weights_and_taps(tiny_config):
    a, b = build_model(tiny_config, joint="knee"), build_model(tiny_config, joint="knee")
    assert feature_digest(a) == feature_digest(b)
    with torch.no_grad():
        b.backbone["axial"].conv_in.conv.weight[0, 0, 0, 0, 0] += 1e-3
    assert feature_digest(a) != feature_digest(b)
    c = build_model(tiny_config, joint="knee")
    with torch.no_grad():  # heads do not change features
        next(c.head.parameters()).add_(1.0)
    assert feature_digest(a) == feature_digest(c)
    other = copy.deepcopy(tiny_config)
    other.features.taps[0].timestep = 11
    assert feature_digest(build_model(other, joint="knee")) != feature_digest(a)
    averaged = copy.deepcopy(tiny_config)
    averaged.features.noise_draws = 2
    assert feature_digest(build_model(averaged, joint="knee")) != feature_digest(a)


@pytest.mark.parametrize("joint", [Joint.KNEE, Joint.ANKLE])
def test_cached_features_match_computed_ones_and_are_read_back(tmp_path, tiny_config, joint):
    model = build_model(tiny_config, joint=joint)
    cases = _cases(joint)
    with torch.no_grad():
        direct = encode_cases(model, cases)
        cache = FeatureCache(digest=feature_digest(model), root=tmp_path)
        first = encode_cases(model, cases, cache=cache, batch_size=4)
        again = FeatureCache(digest=feature_digest(model), root=tmp_path)  # a new process
        second = encode_cases(model, cases, cache=again, batch_size=4)
    assert cache.misses == len(cases) and again.hits == len(cases) and again.misses == 0
    assert len(list((tmp_path / cache.digest).glob("*.safetensors"))) == len(cases)
    for view, feats in direct.features.items():
        assert torch.allclose(first.features[view].float(), feats, atol=2e-2, rtol=1e-2)
        assert torch.equal(first.features[view], second.features[view])
    assert torch.equal(first.present, direct.present)
    if joint == Joint.KNEE:
        for a, b in zip(direct.seg_maps, second.seg_maps, strict=True):
            assert torch.allclose(a, b.float(), atol=2e-2, rtol=1e-2)
        assert torch.equal(direct.seg_image, second.seg_image)
    else:
        assert second.seg_maps is None


def test_old_digests_are_pruned(tmp_path):
    for i in range(KEEP_DIGESTS + 3):
        FeatureCache(digest=f"d{i}", root=tmp_path)
    assert len(list(tmp_path.iterdir())) == KEEP_DIGESTS
    assert (tmp_path / f"d{KEEP_DIGESTS + 2}").is_dir()


def test_unreadable_cache_file_is_recomputed(tmp_path, tiny_config):
    model = build_model(tiny_config, joint="ankle")
    cases = _cases(Joint.ANKLE, n=2)
    cache = FeatureCache(digest=feature_digest(model), root=tmp_path)
    with torch.no_grad():
        encode_cases(model, cases, cache=cache)
    (tmp_path / cache.digest / "c0.safetensors").write_bytes(b"truncated")
    fresh = FeatureCache(digest=feature_digest(model), root=tmp_path)
    with torch.no_grad():
        encode_cases(model, cases, cache=fresh)
    assert fresh.misses == 1 and fresh.hits == 1


def test_linear_finetune_reuses_features_across_runs(tmp_path, tiny_config):
    knee_cases = _cases(Joint.KNEE, n=8)
    config = FinetuneConfig(epochs=2, batch_size=4, val_fraction=0.0)
    first = build_model(tiny_config, joint="knee")
    finetune(first, knee_cases, config=config, feature_root=tmp_path)
    (digest,) = [p.name for p in tmp_path.iterdir()]
    files = sorted(p.name for p in (tmp_path / digest).iterdir())
    mtimes = [(tmp_path / digest / f).stat().st_mtime_ns for f in files]
    second = build_model(tiny_config, joint="knee")  # same seed: same backbones, same digest
    finetune(second, knee_cases, config=config, feature_root=tmp_path)
    assert [(tmp_path / digest / f).stat().st_mtime_ns for f in files] == mtimes  # not rewritten
    for (k, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
