"""aggregate_round: validation + rule or DP + accounting, as the Flower strategy calls it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.federation.accounting import GroupPrivacyAccountant
from core.federation.config import AggregationConfig, ServerDPConfig
from core.federation.groups import split_groups
from core.federation.server_round import aggregate_round

GROUPS = ("backbone.sagittal", "backbone.coronal", "head.knee.cls", "head.knee.seg")
REPO = Path(__file__).resolve().parents[3]


def _round_inputs(make_state, make_update):
    """Global model, 3 sites with different groups; site c sends a NaN backbone.coronal."""
    global_state = make_state(GROUPS)
    a = make_update("a", make_state(GROUPS, seed=1), groups=GROUPS[:3], num_examples=4)
    b = make_update("b", make_state(GROUPS, seed=2), groups=GROUPS[1:3], num_examples=2)
    c_state = make_state(GROUPS, seed=3)
    c_state["backbone.coronal.conv.weight"][0, 0] = np.nan
    c = make_update("c", c_state, groups=["backbone.coronal", "head.knee.cls"], num_examples=6)
    return global_state, [c, a, b]


@pytest.mark.parametrize("rule", ["weighted_mean", "median", "trimmed_mean"])
def test_round_without_dp(rule, make_state, make_update):
    global_state, updates = _round_inputs(make_state, make_update)
    result = aggregate_round(
        global_state=global_state, updates=updates, config=AggregationConfig(rule=rule)
    )
    assert result.groups == {
        "backbone.sagittal": {"sites": ["a"], "examples": 4},
        "backbone.coronal": {"sites": ["a", "b"], "examples": 6},
        "head.knee.cls": {"sites": ["a", "b", "c"], "examples": 12},
    }
    assert [(r["site"], r["group"]) for r in result.rejected] == [("c", "backbone.coronal")]
    assert result.privacy == {} and result.skipped == []
    assert list(result.state) == list(global_state)
    for key, value in split_groups(global_state)["head.knee.seg"].items():
        np.testing.assert_array_equal(result.state[key], value)
    assert all(np.isfinite(v).all() for v in result.state.values())


def _dp_round(global_state, updates, *, dp, accountant, seed=0, sample_rate=0.5):
    return aggregate_round(
        global_state=global_state,
        updates=updates,
        config=AggregationConfig(),
        dp=dp,
        rng=np.random.default_rng(seed),
        accountant=accountant,
        sample_rate=sample_rate,
    )


def test_dp_rounds_account_each_group_it_aggregated(make_state, make_update):
    global_state, updates = _round_inputs(make_state, make_update)
    dp = ServerDPConfig(enabled=True, clip_norm=0.5, noise_multiplier=1.2)
    accountant = GroupPrivacyAccountant()
    first = _dp_round(global_state, updates, dp=dp, accountant=accountant)
    assert set(first.privacy) == set(first.groups) == set(GROUPS[:3])
    assert first.rejected[0]["group"] == "backbone.coronal"
    # Round 2: only the knee classification head is sent.
    only_head = [make_update("a", make_state(GROUPS, seed=4), groups=["head.knee.cls"])]
    second = _dp_round(first.state, only_head, dp=dp, accountant=accountant)
    assert second.privacy["head.knee.cls"]["steps"] == 2
    assert second.privacy["backbone.sagittal"]["steps"] == 1
    assert second.privacy["head.knee.cls"]["epsilon"] > first.privacy["head.knee.cls"]["epsilon"]
    assert second.privacy["backbone.sagittal"] == first.privacy["backbone.sagittal"]
    assert set(second.privacy["head.knee.cls"]) == {
        "epsilon",
        "noise_multiplier",
        "sample_rate",
        "steps",
        "delta",
        "accountant",
    }


def test_dp_round_is_reproducible_with_a_seed(make_state, make_update):
    global_state, updates = _round_inputs(make_state, make_update)
    dp = ServerDPConfig(enabled=True, clip_norm=0.5, noise_multiplier=1.2)
    runs = [
        _dp_round(
            global_state,
            updates,
            dp=dp,
            accountant=GroupPrivacyAccountant(),
            seed=s,
            sample_rate=1.0,
        )
        for s in (1, 1, 2)
    ]
    assert all(runs[0].state[k].tobytes() == runs[1].state[k].tobytes() for k in global_state)
    assert any(runs[0].state[k].tobytes() != runs[2].state[k].tobytes() for k in global_state)


def test_group_over_budget_keeps_its_weights(make_state, make_update):
    global_state, updates = _round_inputs(make_state, make_update)
    accountant = GroupPrivacyAccountant()
    for _ in range(3):
        accountant.step(group="head.knee.cls", noise_multiplier=1.0, sample_rate=1.0)
    limit = accountant.epsilon(group="head.knee.cls", delta=1e-5) + 0.01
    dp = ServerDPConfig(enabled=True, noise_multiplier=1.0, max_epsilon=limit)
    result = _dp_round(global_state, updates, dp=dp, accountant=accountant, sample_rate=1.0)
    assert [s["group"] for s in result.skipped] == ["head.knee.cls"]
    assert "budget exhausted" in result.skipped[0]["reason"]
    assert "head.knee.cls" not in result.groups
    assert result.privacy["head.knee.cls"]["steps"] == 3
    assert result.privacy["head.knee.cls"]["epsilon"] < limit
    for key, value in split_groups(global_state)["head.knee.cls"].items():
        np.testing.assert_array_equal(result.state[key], value)


def test_dp_needs_mean_rule_and_an_accountant(make_state, make_update):
    global_state, updates = _round_inputs(make_state, make_update)
    dp = ServerDPConfig(enabled=True)
    with pytest.raises(ValueError, match="median"):
        aggregate_round(
            global_state=global_state,
            updates=updates,
            config=AggregationConfig(rule="median"),
            dp=dp,
            accountant=GroupPrivacyAccountant(),
        )
    with pytest.raises(ValueError, match="accountant"):
        aggregate_round(
            global_state=global_state, updates=updates, config=AggregationConfig(), dp=dp
        )


def test_disabled_dp_is_plain_aggregation(make_state, make_update):
    global_state, updates = _round_inputs(make_state, make_update)
    plain = aggregate_round(global_state=global_state, updates=updates, config=AggregationConfig())
    off = aggregate_round(
        global_state=global_state,
        updates=updates,
        config=AggregationConfig(),
        dp=ServerDPConfig(enabled=False),
    )
    assert all(np.array_equal(plain.state[k], off.state[k]) for k in global_state)


def test_round_module_imports_neither_flwr_nor_torch():
    code = (
        "import sys, core.federation.server_round; "
        "print(sorted(m for m in ('flwr', 'torch', 'opacus') if m in sys.modules))"
    )
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
