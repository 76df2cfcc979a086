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
        load_experiment(CONFIGS / "demo-dp.yaml", overrides=["pretrain.train.bf16=true"])
