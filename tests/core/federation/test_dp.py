"""Server-side DP per group: clipping bound, noise scale, secure noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from core.federation.dp import (
    clip_delta,
    dp_aggregate_updates,
    gaussian_noise,
    secure_standard_normal,
)
from core.federation.groups import all_group_names, split_groups
from core.federation.updates import GroupUpdate, SiteUpdate

SOME_GROUPS = ("backbone.sagittal", "backbone.axial", "head.knee.cls", "head.ankle.seg")


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_clip_delta_bounds_norm_and_keeps_direction(scale):
    rng = np.random.default_rng(0)
    delta = {"a": scale * rng.normal(size=(4, 5)), "b": scale * rng.normal(size=7)}
    clipped, norm = clip_delta(delta, clip_norm=1.0)
    flat = np.concatenate([clipped["a"].ravel(), clipped["b"].ravel()])
    original = np.concatenate([delta["a"].ravel(), delta["b"].ravel()])
    assert norm == pytest.approx(np.linalg.norm(original))
    assert np.linalg.norm(flat) <= 1.0 + 1e-12
    # Same direction, scaled by min(1, C / norm): small deltas are untouched.
    np.testing.assert_allclose(flat, original * min(1.0, 1.0 / norm), rtol=1e-12)
    assert (np.linalg.norm(flat) == pytest.approx(1.0)) == (norm > 1.0)


@pytest.mark.parametrize("clip_norm", [0.1, 2.0])
def test_clipping_bound_holds_per_group(clip_norm, make_state, make_update):
    """Without noise, each group's aggregated delta is a mean of clipped deltas: norm <= C."""
    global_state = make_state(SOME_GROUPS)
    updates = [
        make_update(
            f"s{i}", {k: v + 100.0 * (i + 1) for k, v in make_state(SOME_GROUPS, seed=i).items()}
        )
        for i in range(3)
    ]
    state, summary, facts = dp_aggregate_updates(
        global_state=global_state,
        updates=updates,
        clip_norm=clip_norm,
        noise_multiplier=0.0,
        rng=np.random.default_rng(0),
    )
    new_groups, old_groups = split_groups(state), split_groups(global_state)
    for group in SOME_GROUPS:
        delta = np.concatenate(
            [
                (new_groups[group][k].astype(np.float64) - v).ravel()
                for k, v in old_groups[group].items()
            ]
        )
        assert 0.5 * clip_norm < np.linalg.norm(delta) <= clip_norm * (1 + 1e-5)
        assert facts[group] == {"sites": 3, "clipped": 3, "noise_std": 0.0}
        assert summary[group]["sites"] == ["s0", "s1", "s2"]


def test_small_deltas_are_averaged_without_weights(make_state):
    group = "head.knee.seg"
    key = f"{group}.w"
    global_state = {key: np.zeros(2)}
    updates = [
        SiteUpdate("a", {group: GroupUpdate({key: np.array([0.1, 0.0])}, 100)}),
        SiteUpdate("b", {group: GroupUpdate({key: np.array([0.0, 0.3])}, 1)}),
    ]
    state, summary, _ = dp_aggregate_updates(
        global_state=global_state,
        updates=updates,
        clip_norm=1.0,
        noise_multiplier=0.0,
        rng=np.random.default_rng(0),
    )
    np.testing.assert_allclose(state[key], [0.05, 0.15])
    assert summary[group]["examples"] == 101


def _noise_only(*, secure: bool, seed: int = 0) -> tuple[np.ndarray, float]:
    """Noise the server adds to one group of 200k zeros when 4 sites send no change."""
    group = "backbone.coronal"
    key = f"{group}.w"
    global_state = {key: np.zeros(200_000, np.float32), f"{group}.b": np.zeros(3, np.float32)}
    updates = [SiteUpdate(f"s{i}", {group: GroupUpdate(dict(global_state), 5)}) for i in range(4)]
    sigma, clip = 1.3, 0.5
    state, _, facts = dp_aggregate_updates(
        global_state=global_state,
        updates=updates,
        clip_norm=clip,
        noise_multiplier=sigma,
        rng=np.random.default_rng(seed),
        secure=secure,
    )
    assert facts[group]["noise_std"] == pytest.approx(sigma * clip / 4)
    assert state[key].dtype == np.float32
    return state[key].astype(np.float64), sigma * clip / 4


@pytest.mark.parametrize("secure", [False, True])
def test_noise_std_is_sigma_c_over_n(secure):
    noise, expected_std = _noise_only(secure=secure)
    assert abs(noise.mean()) < 5 * expected_std / np.sqrt(noise.size)
    assert noise.std() == pytest.approx(expected_std, rel=0.01)


def test_seeded_noise_is_reproducible_and_secure_noise_is_not():
    a, _ = _noise_only(secure=False, seed=7)
    b, _ = _noise_only(secure=False, seed=7)
    c, _ = _noise_only(secure=False, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    s1, _ = _noise_only(secure=True, seed=7)
    s2, _ = _noise_only(secure=True, seed=7)
    assert not np.array_equal(s1, s2)


@pytest.mark.parametrize("size", [0, 1, 3, 300_001])
def test_secure_standard_normal_is_standard_normal(size):
    draws = secure_standard_normal(size)
    assert draws.shape == (size,) and draws.dtype == np.float64
    if size > 1000:
        # Kolmogorov-Smirnov distance; 0.005 is above the 1e-6 critical value (~0.0047).
        assert stats.kstest(draws, "norm").statistic < 0.005
        assert abs(draws.mean()) < 0.01 and draws.std() == pytest.approx(1.0, rel=0.01)


def test_gaussian_noise_needs_a_generator_unless_secure():
    with pytest.raises(ValueError, match="Generator"):
        gaussian_noise((2,), std=1.0, rng=None)
    assert gaussian_noise((2, 3), std=2.0, rng=None, secure=True).shape == (2, 3)


def test_integer_weights_refused_under_dp():
    group = all_group_names()[0]
    key = f"{group}.steps"
    update = SiteUpdate("a", {group: GroupUpdate({key: np.ones(2, np.int64)}, 1)})
    with pytest.raises(ValueError, match=key):
        dp_aggregate_updates(
            global_state={key: np.zeros(2, np.int64)},
            updates=[update],
            clip_norm=1.0,
            noise_multiplier=1.0,
            rng=np.random.default_rng(0),
        )
