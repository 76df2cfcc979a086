"""Aggregation and server DP configuration validation."""

from __future__ import annotations

import pytest

from core.config import load_config
from core.federation.config import AggregationConfig, ServerDPConfig


def test_defaults_are_valid():
    assert AggregationConfig().rule == "weighted_mean"
    dp = ServerDPConfig()
    assert dp.enabled is False and dp.max_epsilon is None


@pytest.mark.parametrize("rule", ["median", "Trimmed_Mean ", "weighted_mean"])
def test_rule_is_normalised(rule):
    assert AggregationConfig(rule=rule).rule == rule.strip().lower()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rule": "krum"}, "aggregation rule"),
        ({"trim_fraction": 0.5}, "trim_fraction"),
        ({"trim_fraction": -0.1}, "trim_fraction"),
        ({"norm_factor": 1.0}, "norm_factor"),
        ({"norm_factor": float("inf")}, "norm_factor"),
        ({"norm_min_sites": 2}, "norm_min_sites"),
    ],
)
def test_aggregation_config_rejects(kwargs, field):
    with pytest.raises(ValueError, match=field):
        AggregationConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"clip_norm": float("nan")}, "clip_norm"),
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"max_epsilon": 0.0}, "max_epsilon"),
        ({"max_epsilon": float("nan")}, "max_epsilon"),
    ],
)
def test_dp_config_rejects(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ServerDPConfig(**kwargs)


def test_configs_load_through_omegaconf_with_overrides():
    dp = load_config(ServerDPConfig, overrides=["enabled=true", "max_epsilon=8", "clip_norm=0.5"])
    assert dp.enabled and dp.max_epsilon == 8.0 and dp.clip_norm == 0.5
    agg = load_config(AggregationConfig, data={"rule": "median"})
    assert agg.rule == "median"
    with pytest.raises(ValueError, match="trim_fraction"):
        load_config(AggregationConfig, overrides=["trim_fraction=0.7"])
    with pytest.raises(ValueError, match="unknown_key"):
        load_config(ServerDPConfig, overrides=["unknown_key=1"])
