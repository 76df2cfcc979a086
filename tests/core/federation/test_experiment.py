"""Experiment files: the shipped ones load; contradictory privacy settings fail at load time."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.federation.experiment import load_experiment

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "experiments"


@pytest.mark.parametrize("name", ["demo.yaml", "demo-dp.yaml"])
def test_shipped_experiments_load(name):
    experiment = load_experiment(CONFIGS / name)
    assert experiment.sites and experiment.pretrain.rounds > 0


@pytest.mark.parametrize("mode", ["partial", "full"])
def test_client_dp_finetuning_needs_linear_mode_before_any_round(mode):
    with pytest.raises(ValueError, match="mode linear only"):
        load_experiment(CONFIGS / "demo-dp.yaml", overrides=[f"finetune.train.mode={mode}"])
    # allowed when fine-tuning is not private
    load_experiment(
        CONFIGS / "demo-dp.yaml",
        overrides=[f"finetune.train.mode={mode}", "client_dp.phases=[pretrain]"],
    )


def test_client_dp_refuses_bf16():
    with pytest.raises(ValueError, match="bf16"):
        load_experiment(CONFIGS / "demo-dp.yaml", overrides=["pretrain.train.precision=bf16"])


@pytest.mark.parametrize("dp", [["client_dp.enabled=false"], ["server_dp.enabled=false"]])
def test_cross_site_refuses_dp_at_load(dp):
    # local-only models leave the sites un-noised: not allowed in a DP run (either kind)
    with pytest.raises(ValueError, match="cross_site"):
        load_experiment(CONFIGS / "demo-dp.yaml", overrides=["evaluate.cross_site=true", *dp])
    assert load_experiment(
        CONFIGS / "demo.yaml", overrides=["evaluate.cross_site=true"]
    ).evaluate.cross_site


def test_cross_site_needs_evaluation():
    with pytest.raises(ValueError, match="evaluate.enabled"):
        load_experiment(
            CONFIGS / "demo.yaml", overrides=["evaluate.cross_site=true", "evaluate.enabled=false"]
        )
