"""Client-side DP-SGD: clipping and noise, the persistent site budget, refusal, empty batches."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import create_accountant

from core.config import ModelConfig, PretrainConfig, PretrainRunConfig, load_config, to_dict
from core.data.cache import CaseTensors
from core.diffusion.ddpm import build_scheduler, noised
from core.models.backbone import build_backbone
from core.train import site_round
from core.train.dp_pretrain import (
    make_private_unet,
    pretrain_privately,
    private_step,
    train_private,
)
from core.train.pretrain import Pretrainer
from core.train.privacy import (
    BUDGET_FILE,
    ClientDPConfig,
    SiteBudget,
    epsilon_of,
    parse_client_dp,
    round_entries,
)
from core.views import VIEWS

MODEL = {
    "name": "dp-test",
    "input_slices": 8,
    "input_size": 16,
    "backbone": {
        "channels": [4, 8],
        "attention_levels": [False, True],
        "norm_num_groups": 4,
        "num_head_channels": 4,
    },
    "heads": {"view_dim": 8, "seg_proj": 4, "seg_channels": 4},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model_config() -> ModelConfig:
    return load_config(ModelConfig, data=MODEL)


def _cases(n: int, *, views=VIEWS, seed: int = 0) -> list[CaseTensors]:
    rng = np.random.default_rng(seed)
    return [
        CaseTensors(
            case_id=f"c{i}",
            views={v: rng.uniform(-1, 1, (1, 8, 16, 16)).astype(np.float16) for v in views},
            labels=None,
            mask=None,
            heldout=False,
        )
        for i in range(n)
    ]


def _trainer(cases, *, steps: int = 1) -> Pretrainer:
    from core.train.pretrain import training_volumes

    train = PretrainConfig(steps=steps, batch_size=2)
    config = PretrainRunConfig(model=_model_config(), train=train)
    return Pretrainer(config=config, volumes=training_volumes(cases, config=config.model))


def _randomised_unet():
    """MONAI zero-initialises the output conv (all other gradients would be 0): re-draw all."""
    torch.manual_seed(0)
    unet = build_backbone(_model_config().backbone)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.3)
    return unet


def _clipped_mean(unet, scheduler, clean, *, generator, clip: float, expected: float):
    """Reference DP-SGD gradient without noise, one sample at a time (no Opacus)."""
    t = torch.randint(0, scheduler.num_train_timesteps, (len(clean),), generator=generator)
    noise = torch.randn(clean.shape, generator=generator)
    total, norms = [torch.zeros_like(p) for p in unet.parameters()], []
    for i in range(len(clean)):
        unet.zero_grad()
        x = noised(scheduler, clean[i : i + 1], timesteps=t[i : i + 1], noise=noise[i : i + 1])
        F.mse_loss(unet(x, t[i : i + 1]), noise[i : i + 1]).backward()
        grads = [p.grad.clone() for p in unet.parameters()]
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        norms.append(float(norm))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        total = [a + factor * g for a, g in zip(total, grads, strict=True)]
    return [g / expected for g in total], norms


@pytest.mark.parametrize(
    "bad",
    [
        {"noise_multiplier": -1.0},
        {"max_grad_norm": 0.0},
        {"delta": 1.0},
        {"accountant": "gdp"},
        {"max_epsilon": 0.0},
        {"phases": ["evaluate"]},
        {"enabled": True},
        {"enabled": True, "noise_multiplier": 1.0, "target_epsilon": 2.0},
    ],
)
def test_bad_settings_are_rejected(bad):
    with pytest.raises(ValueError, match="client_dp"):
        ClientDPConfig(**bad)


def test_settings_travel_as_json():
    config = ClientDPConfig(enabled=True, target_epsilon=2.0, max_epsilon=8.0, accountant="prv")
    assert parse_client_dp(json.dumps(to_dict(config))) == config
    assert parse_client_dp("").enabled is False


def test_clipping_then_noise_match_dp_sgd():
    unet, scheduler = _randomised_unet(), build_scheduler(_model_config().diffusion)
    reference = copy.deepcopy(unet)
    rng = np.random.default_rng(1)
    volumes = [rng.uniform(-1, 1, (1, 8, 16, 16)).astype(np.float32) for _ in range(3)]
    clip, sigma = 1e-3, 2.0
    view = make_private_unet(
        unet=unet,
        optimizer=torch.optim.SGD(unet.parameters(), lr=0.0),
        cases=3,
        sample_rate=1.0,
        noise_multiplier=0.0,
        max_grad_norm=clip,
        generator=torch.Generator().manual_seed(5),
    )
    expected, norms = _clipped_mean(
        reference,
        scheduler,
        torch.from_numpy(np.stack(volumes)),
        generator=torch.Generator().manual_seed(9),
        clip=clip,
        expected=3.0,
    )
    assert min(norms) > 10 * clip  # clipping is active for every case
    private_step(
        view=view,
        volumes=volumes,
        scheduler=scheduler,
        loss_generator=torch.Generator().manual_seed(9),
    )
    got = [p.grad.clone() for p in unet.parameters()]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-9)
    view.optimizer.noise_multiplier = sigma
    private_step(
        view=view,
        volumes=volumes,
        scheduler=scheduler,
        loss_generator=torch.Generator().manual_seed(9),
    )
    pairs = zip(unet.parameters(), expected, strict=True)
    residual = torch.cat([(p.grad - e).flatten() for p, e in pairs])
    assert residual.std().item() == pytest.approx(sigma * clip / 3.0, rel=0.1)


def test_empty_poisson_batch_adds_noise_only(tmp_path):
    trainer = _trainer(_cases(3, views=VIEWS[:1]))
    before = {k: v.clone() for k, v in trainer.unets[VIEWS[0]].state_dict().items()}
    losses = train_private(
        trainer,
        steps=2,
        noise_multiplier=1.0,
        rates={VIEWS[0]: 1e-9},
        max_grad_norm=1.0,
        seeds={VIEWS[0]: 4},
    )
    assert losses == {VIEWS[0]: []} and trainer.step == 2  # no case drawn, both steps taken
    after = trainer.unets[VIEWS[0]].state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(torch.isfinite(after[k]).all() for k in changed)
    assert not any(hasattr(p, "grad_sample") for p in trainer.unets[VIEWS[0]].parameters())


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_matches_a_fresh_opacus_accountant(accountant):
    history = [(1.1, 0.5, 3), (0.9, 0.25, 4), (1.1, 0.5, 2)]
    fresh = create_accountant(accountant)
    for sigma, rate, steps in history:
        for _ in range(steps):
            fresh.step(noise_multiplier=sigma, sample_rate=rate)
    ours = epsilon_of(history, accountant=accountant, delta=1e-5)
    assert ours == pytest.approx(fresh.get_epsilon(delta=1e-5), rel=1e-6)


@pytest.mark.parametrize("n_views", [1, 2, 3])
def test_views_compose_and_budget_survives_a_restart(tmp_path, n_views):
    config = ClientDPConfig(enabled=True, noise_multiplier=1.0)
    cases = _cases(4, views=VIEWS[:n_views])
    first = pretrain_privately(
        _trainer(cases), config=config, state_dir=tmp_path, index=1, site_id="s"
    )
    one_view = epsilon_of([(1.0, 0.5, 1)], accountant="rdp", delta=1e-5)
    assert first.metrics["epsilon"] == pytest.approx(
        epsilon_of([(1.0, 0.5, n_views)], accountant="rdp", delta=1e-5)
    )
    assert (first.metrics["epsilon"] > one_view) == (n_views > 1)
    reloaded = SiteBudget.load(tmp_path, config=config)  # a restarted site
    assert reloaded.epsilon() == first.metrics["epsilon"]
    second = pretrain_privately(
        _trainer(cases), config=config, state_dir=tmp_path, index=1, site_id="s"
    )
    assert second.metrics["epsilon"] > first.metrics["epsilon"]  # a redone round spends again
    assert second.metrics["dp_steps"] == 2 * n_views
    saved = json.loads((tmp_path / BUDGET_FILE).read_text())
    assert saved["history"] == [[1.0, 0.5, 2 * n_views]] and saved["accountant"] == "rdp"


def test_exhausted_budget_refuses_without_training(tmp_path, monkeypatch):
    cases = _cases(4)
    monkeypatch.setattr(site_round, "site_cases", lambda site, config: cases)
    model = _model_config()
    global_arrays = {k: v.numpy() for k, v in _trainer(cases).backbone_weights(ema=False).items()}
    entries = round_entries(rates=[0.5] * 3, steps=1, config=ClientDPConfig(noise_multiplier=1.0))
    eps1 = epsilon_of(entries, accountant="rdp", delta=1e-5)
    eps2 = epsilon_of(entries * 2, accountant="rdp", delta=1e-5)
    config = ClientDPConfig(enabled=True, noise_multiplier=1.0, max_epsilon=(eps1 + eps2) / 2)

    def run(index):
        return site_round.pretrain_round(
            site=None,
            site_id="knee-a",
            state_dir=tmp_path,
            index=index,
            seed=0,
            model_config=model,
            train=PretrainConfig(steps=1, batch_size=2),
            global_arrays=global_arrays,
            client_dp=config,
        )

    trained = run(1)
    assert not trained.refused and trained.arrays
    assert trained.metrics["epsilon"] == pytest.approx(eps1)
    assert not any(k.startswith("loss/") for k in trained.metrics)  # losses are not private
    refused = run(2)
    assert refused.refused.startswith("privacy budget exhausted: epsilon would reach")
    assert f"> max_epsilon {config.max_epsilon:.4g} at delta 1e-05" in refused.refused
    assert refused.arrays == {} and refused.examples == {}
    assert SiteBudget.load(tmp_path, config=config).epsilon() == pytest.approx(eps1)


def test_target_epsilon_sets_the_noise_for_one_round():
    config = ClientDPConfig(enabled=True, target_epsilon=3.0)
    entries = round_entries(rates=[0.5, 0.25], steps=4, config=config)
    assert len(entries) == 2 and entries[0][0] == entries[1][0] > 0
    assert epsilon_of(entries, accountant="rdp", delta=1e-5) <= 3.0


def test_missing_budget_is_empty_and_a_bad_one_is_an_error(tmp_path):
    assert SiteBudget.load(tmp_path, config=ClientDPConfig()).epsilon() == 0.0
    (tmp_path / BUDGET_FILE).write_text('{"history": [[1.0, 2.0, 3]]}')
    with pytest.raises(ValueError, match="never delete it"):
        SiteBudget.load(tmp_path, config=ClientDPConfig())


def test_two_federations_at_one_site_never_share_noise(tmp_path):
    """The same round index in two runs (same site secret) must draw different noise: the
    difference of two releases with shared noise would cancel it. The same run redone
    draws the same."""
    config = ClientDPConfig(enabled=True, noise_multiplier=1.0)
    cases = _cases(4, views=VIEWS[:1])

    def weights(run_key: str) -> torch.Tensor:
        trainer = _trainer(cases)
        pretrain_privately(
            trainer, config=config, state_dir=tmp_path, index=1, site_id="s", run_key=run_key
        )
        return torch.cat([p.detach().flatten() for p in trainer.unets[VIEWS[0]].parameters()])

    run_a, run_b, run_a_again = weights("run-a"), weights("run-b"), weights("run-a")
    assert torch.equal(run_a, run_a_again)
    assert not torch.equal(run_a, run_b)
