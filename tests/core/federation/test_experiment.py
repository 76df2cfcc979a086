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


def test_cosine_pretraining_decays_over_the_whole_federation():
    experiment = load_experiment(
        CONFIGS / "demo.yaml",
        overrides=[
            "pretrain.rounds=3",
            "pretrain.train.steps=5",
            "pretrain.train.lr_schedule=cosine",
        ],
    )
    assert experiment.pretrain.train.lr_decay_steps == 15


@pytest.mark.parametrize(
    ("override", "key"),
    [("pretrain.train.steps=-1", "pretrain.train.steps"),
     ("pretrain.train.lr=0", "pretrain.train.lr"),
     ("pretrain.train.lr_schedule=step", "lr_schedule")],
)  # fmt: skip
def test_wrong_pretraining_values_are_refused_at_load(override, key):
    with pytest.raises(ValueError, match=key):
        load_experiment(CONFIGS / "demo.yaml", overrides=[override])


@pytest.mark.parametrize(
    ("preset", "schedule", "lr"), [("tiny", "cosine", 1e-3), ("paper", "constant", 1e-4)]
)
def test_presets_bring_their_own_pretraining_defaults(preset, schedule, lr):
    from core.config import PretrainRunConfig
    from core.models.presets import load_run_config

    train = load_run_config(PretrainRunConfig, preset=preset, train="pretrain").train
    assert (train.lr_schedule, train.lr) == (schedule, lr)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["finetune.train.batch_size=-1"], "finetune.train.batch_size must be >= 1, got -1"),
        (["finetune.train.lr=0"], "finetune.train.lr must be > 0, got 0.0"),
        (["finetune.train.mode=bogus"], "finetune.train.mode: unknown fine-tuning mode 'bogus'"),
        (["pretrain.train.batch_size=-1"], "pretrain.train.batch_size must be >= 1, got -1"),
        (["pretrain.timeout_s=-5"], "pretrain.timeout_s must be a number of seconds > 0"),
        (["finetune.timeout_s=0"], "finetune.timeout_s must be a number of seconds > 0"),
        (["evaluate.timeout_s=-1"], "evaluate.timeout_s must be a number of seconds > 0"),
        (["evaluate.min_sites=0"], "evaluate.min_sites must be >= 1, got 0"),
        (["finetune.fraction=1.5"], "finetune.fraction must be in (0, 1], got 1.5"),
        (["pretrain.min_sites_per_group=0"], "pretrain.min_sites_per_group must be >= 1, got 0"),
        (
            ["finetune.min_sites=4"],
            "finetune.min_sites=4 but the experiment lists 3 site(s): set finetune.min_sites to "
            "at most 3, or list more sites",
        ),
        (["evaluate.min_sites=5"], "evaluate.min_sites=5 but the experiment lists 3 site(s)"),
        (["pretrain.min_sites_per_group=4"], "pretrain.min_sites_per_group=4 but the experiment"),
        (
            ["sites=[demo-sites/knee-3t,demo-sites/ankle-std,./demo-sites/knee-3t]"],
            "sites: 'demo-sites/knee-3t' and './demo-sites/knee-3t' are the same site folder; "
            "list each site once",
        ),
    ],
)
def test_coordinator_mistakes_are_refused_at_load_naming_key_and_fix(overrides, message):
    # issue 15, defect 3: refused when the experiment loads, before Ray or any message
    with pytest.raises(ValueError) as err:
        load_experiment(CONFIGS / "demo.yaml", overrides=overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_site_count_limits_only_phases_that_run():
    # a skipped phase's min_sites does not matter; a deployment lists no sites at all
    load_experiment(CONFIGS / "demo.yaml", overrides=["finetune.rounds=0", "finetune.min_sites=9"])
    load_experiment(
        CONFIGS / "demo.yaml", overrides=["evaluate.enabled=false", "evaluate.min_sites=9"]
    )
    load_experiment(CONFIGS / "demo.yaml", overrides=["sites=[]", "pretrain.min_sites=9"])
