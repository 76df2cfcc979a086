"""Client DP-SGD fine-tuning (linear mode): per-case clipping, budget spending and refusal."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from opacus.optimizers import DPOptimizer

from core.config import FinetuneConfig
from core.models.encode import encode_in_chunks
from core.models.registry import build_model
from core.train.dp_finetune import _per_case_gradients, _private_step, dp_steps, finetune_privately
from core.train.finetune import select_training_cases, set_trainable, task_loss
from core.train.privacy import BUDGET_FILE, ClientDPConfig, epsilon_of
from core.views import VIEWS, Joint
from tests.core.tiny_model import random_case

DP = ClientDPConfig(enabled=True, noise_multiplier=1.0, max_grad_norm=1.0, phases=["finetune"])
CONFIG = FinetuneConfig(epochs=2, batch_size=3, lr=1e-2)

pytestmark = pytest.mark.usefixtures("one_thread")


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _encoded(model, cases):
    chosen = select_training_cases(cases, model=model, config=CONFIG)
    set_trainable(model, mode="linear")
    with torch.no_grad():
        return encode_in_chunks(model, chosen, batch_size=4)


# Which cases keep their labels / mask: every case's loss has the terms it has, so the vmapped
# groups (labels and mask, labels only, mask only, neither) must each match a plain backward.
ANNOTATIONS = {
    "labels and masks": lambda i: (True, True),
    "mixed": lambda i: (i % 3 != 1, i % 2 == 0),
    "labels only": lambda i: (True, False),
}


@pytest.mark.parametrize("annotation", ANNOTATIONS)
@pytest.mark.parametrize("joint", [Joint.KNEE, Joint.ANKLE])
def test_per_case_gradients_match_one_backward_per_case(tiny_config, joint, annotation):
    rng = np.random.default_rng(1)
    cases = []
    for i in range(8):
        labeled, masked = ANNOTATIONS[annotation](i)
        case = random_case(f"c{i}", joint=joint, rng=rng, missing=(VIEWS[1],) if i == 2 else ())
        cases.append(
            replace(
                case,
                labels=case.labels if labeled else None,
                mask=case.mask if masked else None,
            )
        )
    model = build_model(tiny_config, joint=joint, seed=0)
    set_trainable(model, mode="linear")
    with torch.no_grad():  # every case, unannotated ones included (their gradient is zero)
        cached = encode_in_chunks(model, cases, batch_size=4)
    params = list(model.head.parameters())
    stacked = _per_case_gradients(model, cached, params=params)
    for i in range(len(cached.case_ids)):
        model.zero_grad()
        loss = task_loss(model, cached.select(torch.tensor([i])))
        if loss is not None:
            loss.backward()
        for p, g in zip(params, stacked, strict=True):
            expected = torch.zeros_like(p) if p.grad is None else p.grad
            torch.testing.assert_close(g[i], expected, rtol=1e-4, atol=1e-6)


def test_per_case_gradients_refuse_backbone_parameters(tiny_config, knee_cases):
    model = build_model(tiny_config, joint="knee", seed=0)
    cached = _encoded(model, knee_cases)
    params = list(model.head.parameters()) + list(model.backbone["sagittal"].parameters())[:1]
    with pytest.raises(ValueError, match="heads only"):
        _per_case_gradients(model, cached, params=params)


def test_step_gradient_is_the_mean_of_clipped_per_case_gradients(tiny_config, knee_cases):
    model = build_model(tiny_config, joint="knee", seed=0)
    cached = _encoded(model, knee_cases)
    params = list(model.head.parameters())
    clip, n = 1e-3, len(cached.case_ids)
    raw = _per_case_gradients(model, cached, params=params)
    norms = torch.sqrt(sum((g.flatten(1) ** 2).sum(1) for g in raw))
    assert bool((norms > clip).all())  # clipping is active for every case
    factors = torch.clamp(clip / (norms + 1e-6), max=1.0)
    expected = [(g * factors.view(-1, *[1] * (g.dim() - 1))).sum(0) / n for g in raw]
    optimizer = DPOptimizer(
        torch.optim.SGD(params, lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=n,
        loss_reduction="mean",
    )
    _private_step(model, cached=cached, optimizer=optimizer, rate=1.0, generator=None)
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-9)


def test_private_finetuning_trains_heads_and_spends_the_budget(tiny_config, knee_cases, tmp_path):
    model = build_model(tiny_config, joint="knee", seed=0)
    backbone, heads = _snapshot(model.backbone.parameters()), _snapshot(model.head.parameters())
    private, result = finetune_privately(
        model, knee_cases, config=CONFIG, dp=DP, state_dir=tmp_path, index=1, site_id="knee-a"
    )
    assert result is not None and not private.refused
    assert all(
        torch.equal(a, b) for a, b in zip(backbone, model.backbone.parameters(), strict=True)
    )
    assert any(not torch.equal(a, b) for a, b in zip(heads, model.head.parameters(), strict=True))
    budget = json.loads((tmp_path / BUDGET_FILE).read_text())
    rate = min(1.0, CONFIG.batch_size / result.num_examples)
    steps = dp_steps(epochs=CONFIG.epochs, rate=rate)
    assert budget["history"] == [[1.0, rate, steps]]
    expected = epsilon_of([(1.0, rate, steps)], accountant="rdp", delta=DP.delta)
    assert private.metrics["epsilon"] == pytest.approx(expected)
    assert private.metrics["dp_steps"] == steps


@pytest.mark.parametrize(("min_steps", "expected"), [(0, 8), (5, 8), (11, 11)])
def test_dp_steps_take_the_step_floor(min_steps, expected):
    assert dp_steps(epochs=2, rate=0.25, min_steps=min_steps) == expected


def test_private_finetuning_trains_and_spends_at_least_the_step_floor(
    tiny_config, knee_cases, tmp_path
):
    model = build_model(tiny_config, joint="knee", seed=0)
    plain = dp_steps(epochs=CONFIG.epochs, rate=min(1.0, CONFIG.batch_size / len(knee_cases)))
    floored = replace(CONFIG, min_steps=plain + 3)
    private, result = finetune_privately(
        model, knee_cases, config=floored, dp=DP, state_dir=tmp_path, index=1, site_id="knee-a"
    )
    assert result is not None and not private.refused
    rate = min(1.0, CONFIG.batch_size / result.num_examples)
    budget = json.loads((tmp_path / BUDGET_FILE).read_text())
    assert budget["history"] == [[1.0, rate, floored.min_steps]]
    assert private.metrics["dp_steps"] == floored.min_steps


def test_exhausted_budget_refuses_without_training(tiny_config, knee_cases, tmp_path):
    model = build_model(tiny_config, joint="knee", seed=0)
    heads = _snapshot(model.head.parameters())
    strict = ClientDPConfig(**{**DP.__dict__, "max_epsilon": 0.01})
    private, result = finetune_privately(
        model, knee_cases, config=CONFIG, dp=strict, state_dir=tmp_path, index=1, site_id="knee-a"
    )
    assert result is None and "budget exhausted" in private.refused
    assert all(torch.equal(a, b) for a, b in zip(heads, model.head.parameters(), strict=True))
    assert not (tmp_path / BUDGET_FILE).exists()


@pytest.mark.parametrize("mode", ["partial", "full"])
def test_only_linear_mode_is_private(tiny_config, knee_cases, tmp_path, mode):
    model = build_model(tiny_config, joint="knee", seed=0)
    config = FinetuneConfig(mode=mode, epochs=1, batch_size=3)
    with pytest.raises(ValueError, match="mode=linear"):
        finetune_privately(
            model, knee_cases, config=config, dp=DP, state_dir=tmp_path, index=1, site_id="k"
        )


def test_site_round_spends_then_refuses_and_reports_no_loss(
    tiny_config, knee_cases, tmp_path, monkeypatch
):
    from types import SimpleNamespace

    from core.train import site_round
    from core.views import Joint

    monkeypatch.setattr(site_round, "site_cases", lambda site, config: knee_cases)
    model = build_model(tiny_config, joint="knee", seed=0)
    global_arrays = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    dp = ClientDPConfig(**{**DP.__dict__, "max_epsilon": None})

    def run(index, config):
        return site_round.finetune_round(
            site=SimpleNamespace(joint=Joint.KNEE),
            site_id="knee-a",
            state_dir=tmp_path,
            index=index,
            seed=0,
            model_config=tiny_config,
            train=CONFIG,
            global_arrays=global_arrays,
            client_dp=config,
        )

    first = run(3, dp)
    assert not first.refused and "loss" not in first.metrics
    assert first.metrics["epsilon"] > 0 and first.metrics["dp_steps"] > 0
    assert first.arrays and all(k.startswith("head.knee.") for k in first.arrays)
    spent = first.metrics["epsilon"]
    refused = run(4, ClientDPConfig(**{**DP.__dict__, "max_epsilon": spent * 1.2}))
    assert refused.refused.startswith("privacy budget exhausted") and refused.arrays == {}


def test_proximal_term_also_acts_under_dp(tiny_config, knee_cases, tmp_path):
    moved = {}
    for mu in (0.0, 50.0):
        model = build_model(tiny_config, joint="knee", seed=0)
        start = _snapshot(model.head.parameters())
        config = FinetuneConfig(epochs=2, batch_size=3, lr=1e-2, proximal_mu=mu)
        finetune_privately(
            model,
            knee_cases,
            config=config,
            dp=DP,
            state_dir=tmp_path / str(mu),
            index=1,
            site_id="knee-a",
        )
        moved[mu] = sum(
            float((p.detach() - s).pow(2).sum())
            for p, s in zip(model.head.parameters(), start, strict=True)
        )
    assert moved[50.0] < 0.5 * moved[0.0]
