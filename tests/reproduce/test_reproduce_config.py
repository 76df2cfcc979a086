"""The reproduction's config: both shipped files load, bad files are one ValueError line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reproduce.config import (
    DEFAULT_CONFIG,
    QUICK_CONFIG,
    fingerprint,
    load_reproduce_config,
)

REPO = Path(__file__).resolve().parents[2]


def test_shipped_configs_load_and_seeds_override():
    full = load_reproduce_config()
    quick = load_reproduce_config(quick=True, seeds=2)
    assert full.seeds == 3 and sorted(full.label_fractions) == [0.1, 0.5, 1.0]
    assert quick.seeds == 2
    assert {s.profile for s in full.phantom.sites} == {
        "knee-3t",
        "knee-15t",
        "ankle-std",
        "shoulder-std",
    }
    assert DEFAULT_CONFIG.is_file() and QUICK_CONFIG.is_file()


def test_unknown_key_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seeds: 2\nfederation:\n  pretrain_rounds: 2\n  pretrain_stepz: 3\n")
    with pytest.raises(ValueError, match="pretrain_stepz"):
        load_reproduce_config(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("label_fractions: [1.0, 0.0]", "label_fractions"),
        ("federation: {pretrain_steps: 0}", "pretrain_steps"),
        ("phantom: {sites: [{profile: knee-3t, joint: knee, cases: 10}]}", "two knee sites"),
        ("privacy: {epsilons: [.inf]}", "epsilons"),
        ("phantom: {heldout_fraction: 1.0}", "heldout_fraction"),
        ("federation: {pretrain_lr_schedule: linear}", "pretrain_lr_schedule"),
        ("federation: {pretrain_warmup_steps: -1}", "pretrain_warmup_steps"),
        ("federation: {finetune_lr: 0}", "finetune_lr"),
        ("finetune: {min_steps: -5}", "min_steps"),
        ("federation: {finetune_min_steps: -1}", "federation.finetune_min_steps"),
        ("federation: {dp_finetune_min_steps: -2}", "federation.dp_finetune_min_steps"),
        ("finetune: {lr: -1}", "finetune.lr"),
    ],
)
def test_invalid_values_are_rejected(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError, match=match):
        load_reproduce_config(path)


def test_fingerprint_ignores_what_cell_keys_carry(tmp_path):
    base = load_reproduce_config(quick=True)
    more = load_reproduce_config(quick=True, seeds=5)
    more.label_fractions = [*more.label_fractions, 0.25]
    more.privacy.epsilons = [*more.privacy.epsilons, 1.0]
    assert fingerprint(more) == fingerprint(base)
    more.federation.finetune_min_steps = 0  # keys added later, at their no-op value
    more.federation.dp_finetune_min_steps = 0
    assert fingerprint(more) == fingerprint(base)
    more.federation.finetune_min_steps = 30
    floor_without_dp = fingerprint(more)
    assert floor_without_dp != fingerprint(base)
    more.federation.dp_finetune_min_steps = 30
    assert fingerprint(more) not in (floor_without_dp, fingerprint(base))
    more.federation.finetune_min_steps = more.federation.dp_finetune_min_steps = 0
    more.federation.pretrain_steps += 1
    assert fingerprint(more) != fingerprint(base)


def test_cli_turns_a_config_error_into_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sedes: 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "reproduce", "--config", str(path), "--out", str(tmp_path / "o")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "sedes" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_local_fine_tuning_takes_the_configured_lr_and_step_floor():
    from types import SimpleNamespace

    from reproduce import plan, specs

    config = load_reproduce_config()
    ctx = SimpleNamespace(config=config)
    for method in specs.METHODS:
        train = plan._method_train(ctx, method, 0.1)
        assert (train["lr"], train["min_steps"]) == (config.finetune.lr, config.finetune.min_steps)
    assert (config.finetune.lr, config.finetune.min_steps) == (5e-3, 400)  # the measured defaults


def test_local_only_baselines_get_the_federation_floor_over_all_rounds():
    from reproduce import plan

    fed = load_reproduce_config(quick=True).federation
    assert plan.federation_compute(fed)["min_steps"] == 0
    fed.finetune_min_steps = 30
    assert plan.federation_compute(fed)["min_steps"] == 30 * fed.finetune_rounds
