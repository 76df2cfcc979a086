"""Whole-federation DP calibration, experiment files the federation accepts, site handling."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

from core.data.cache import CaseTensors
from core.federation.experiment import load_experiment
from core.train.privacy import epsilon_of
from core.views import LABELS, View
from reproduce import federations, privacy
from reproduce.config import load_reproduce_config
from reproduce.sites import SiteCases, ensure_site, pooled_ids


def _cases(n: int, *, views=tuple(View), heldout_every: int = 4) -> list[CaseTensors]:
    return [
        CaseTensors(
            case_id=f"c{i}",
            views={v: np.zeros((1, 2, 2, 2), np.float16) for v in views},
            labels=np.zeros(len(LABELS["knee"]), np.float32),
            mask=None,
            heldout=i % heldout_every == 0,
        )
        for i in range(n)
    ]


def test_noise_reaches_the_whole_federation_target_at_the_worst_site():
    config = load_reproduce_config(quick=True)
    fed, spec = config.federation, config.privacy
    sites = [_cases(12), _cases(8, views=(View.SAGITTAL, View.CORONAL))]
    sigma = privacy.noise_for(3.0, sites=sites, fed=fed, privacy=spec)
    worst = privacy.worst_epsilon(sites, sigma=sigma, fed=fed, privacy=spec)
    assert 2.99 <= worst <= 3.0
    assert privacy.worst_epsilon(sites, sigma=sigma * 0.98, fed=fed, privacy=spec) > 3.0
    # what the sites' own accountant will count: at most the target, not far under it
    exact = [
        epsilon_of(
            privacy.site_history(c, sigma=sigma, fed=fed), accountant="rdp", delta=spec.delta
        )
        for c in sites
    ]
    assert 2.7 <= max(exact) <= 3.0
    assert exact[1] > exact[0]  # the smaller site (larger sampling rate) is the worst one
    settings = privacy.client_dp(3.0, sites=sites, fed=fed, privacy=spec)
    assert settings["noise_multiplier"] == pytest.approx(sigma)
    assert settings["max_epsilon"] == pytest.approx(3.0 * privacy.GUARD)


def test_site_history_counts_views_and_finetune_steps():
    config = load_reproduce_config(quick=True)
    fed = config.federation
    two_views = privacy.site_history(
        _cases(9, views=(View.SAGITTAL, View.CORONAL)), sigma=1.0, fed=fed
    )
    # 9 cases, 3 held out: both views q = 2/6 (merged), fine-tuning q = 4/6
    total = fed.pretrain_steps * fed.pretrain_rounds
    assert (1.0, pytest.approx(2 / 6), 2 * total) in [tuple(e) for e in two_views]
    assert any(q == pytest.approx(4 / 6) for _, q, _ in two_views)


def test_site_history_takes_the_dp_federations_finetune_floor():
    config = load_reproduce_config(quick=True)
    fed, cases = config.federation, _cases(9)
    rate = 4 / 6  # fine-tuning batch 4 (or more) over 6 training cases
    plain = dict((q, n) for _, q, n in privacy.site_history(cases, sigma=1.0, fed=fed))
    fed.finetune_min_steps = 50  # the non-DP federations' floor: not what DP sites spend
    assert dict((q, n) for _, q, n in privacy.site_history(cases, sigma=1.0, fed=fed)) == plain
    fed.dp_finetune_min_steps = 40
    floored = dict((q, n) for _, q, n in privacy.site_history(cases, sigma=1.0, fed=fed))
    finetune_q = next(q for q in floored if q == pytest.approx(rate))
    assert plain[finetune_q] < 40 * fed.finetune_rounds == floored[finetune_q]


@pytest.mark.parametrize(
    ("phases", "private"), [(None, False), (["pretrain", "finetune"], True), (["pretrain"], False)]
)
def test_experiment_is_accepted_by_the_federation_schema(tmp_path, phases, private):
    config = load_reproduce_config(quick=True)
    config.federation.finetune_min_steps, config.federation.dp_finetune_min_steps = 30, 20
    sites = [tmp_path / "knee-3t", tmp_path / "knee-15t"]
    dp = None
    if phases:  # the DP floor only where fine-tuning is private
        dp = {"enabled": True, "noise_multiplier": 1.5, "max_epsilon": 3.03, "phases": phases}
    spec = federations.experiment(
        name="t", seed=4, config=config, sites=sites, joints=["knee"], client_dp=dp
    )
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    exp = load_experiment(path)
    assert exp.seed == 4 and exp.finetune.train.mode == "linear"
    assert exp.pretrain.rounds == config.federation.pretrain_rounds
    assert exp.client_dp.enabled == bool(phases)
    assert exp.model_overrides == config.model.overrides and exp.pretrain.min_sites == 2
    assert federations.planned_rounds(config) == exp.pretrain.rounds + exp.finetune.rounds + 1
    assert federations.completed_rounds(tmp_path / "no-run") == 0
    fed = config.federation
    assert exp.pretrain.train.lr == fed.pretrain_lr
    assert exp.pretrain.train.lr_schedule == fed.pretrain_lr_schedule
    assert exp.pretrain.train.warmup_steps == fed.pretrain_warmup_steps
    assert exp.finetune.train.lr == fed.finetune_lr
    assert exp.finetune.train.min_steps == (20 if private else 30)


def test_site_generated_once_reused_and_pooled_with_unique_ids(tmp_path):
    config = load_reproduce_config(quick=True)
    config.phantom.size, config.phantom.slices = 32, 8
    spec = config.phantom.sites[0]
    spec.cases = 5
    folder = ensure_site(tmp_path, spec=spec, phantom=config.phantom)
    stamp = (folder / "phantom.json").stat().st_mtime_ns
    assert ensure_site(tmp_path, spec=spec, phantom=config.phantom) == folder
    assert (folder / "phantom.json").stat().st_mtime_ns == stamp  # reused, not regenerated
    assert not list(tmp_path.glob(".tmp-*"))
    spec.cases = 6
    with pytest.raises(ValueError, match="other settings"):
        ensure_site(tmp_path, spec=spec, phantom=config.phantom)
    from reproduce.local import model_config

    loaded = SiteCases({"a": folder, "b": folder}, model_config=model_config(config.model))
    pooled = loaded.pooled(["a", "b"])
    assert len(pooled) == 10 and len({c.case_id for c in pooled}) == 10
    assert [c.heldout for c in pooled[:5]] == [c.heldout for c in loaded.cases("a")]
    assert pooled[0].case_id == "a/case-0001"
    held = {c.case_id for c in pooled if c.heldout}
    assert held  # the site holds some cases out
    ids = pooled_ids(pooled, ["a", "b"])
    assert ids == {"a": {i for i in held if i.startswith("a/")}, "b": held - ids["a"]}
    assert len(ids["a"]) == len(ids["b"]) == len(held) // 2
    alone = loaded.cases("a")
    assert pooled_ids(alone, ["a"]) == {"a": {c.case_id for c in alone if c.heldout}}
    kept = [
        dataclasses.replace(c, heldout=False) if c.case_id.startswith("b/") else c for c in pooled
    ]
    assert list(pooled_ids(kept, ["a", "b"])) == ["a"]  # b holds nothing out: left out
