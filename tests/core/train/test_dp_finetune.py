"""Client DP-SGD fine-tuning (linear mode): per-case clipping, budget spending and refusal."""

import json

import pytest
import torch
from opacus.optimizers import DPOptimizer

from core.config import FinetuneConfig
from core.models.encode import encode_in_chunks
from core.models.registry import build_model
from core.train.dp_finetune import _per_case_gradients, _private_step, dp_steps, finetune_privately
from core.train.finetune import select_training_cases, set_trainable, task_loss
from core.train.privacy import BUDGET_FILE, ClientDPConfig, epsilon_of

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


def test_per_case_gradients_match_one_backward_per_case(tiny_config, knee_cases):
    model = build_model(tiny_config, joint="knee", seed=0)
    cached = _encoded(model, knee_cases)
    params = list(model.head.parameters())
    stacked = _per_case_gradients(model, cached, params=params)
    for i in (0, len(cached.case_ids) - 1):
        model.zero_grad()
        task_loss(model, cached.select(torch.tensor([i]))).backward()
        for p, g in zip(params, stacked, strict=True):
            expected = torch.zeros_like(p) if p.grad is None else p.grad
            torch.testing.assert_close(g[i], expected)


def test_each_case_is_clipped_to_max_grad_norm(tiny_config, knee_cases):
    model = build_model(tiny_config, joint="knee", seed=0)
    cached = _encoded(model, knee_cases)
    params = list(model.head.parameters())
    clip, n = 1e-3, len(cached.case_ids)
    optimizer = DPOptimizer(
        torch.optim.SGD(params, lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=n,
        loss_reduction="mean",
    )
    _private_step(model, cached=cached, optimizer=optimizer, rate=1.0, generator=None)
    total = torch.sqrt(sum((p.grad**2).sum() for p in params))
    raw = _per_case_gradients(model, cached, params=params)
    raw_norms = torch.sqrt(sum((g.flatten(1) ** 2).sum(1) for g in raw))
    assert bool((raw_norms > clip).all())  # clipping is active for every case
    assert float(total) <= clip * 1.0001  # mean of n vectors of norm <= clip
    assert float(total) > 0.0


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
