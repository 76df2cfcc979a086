"""FedProx: the proximal gradient is exact, and a strong term keeps fine-tuning near its start."""

import pytest
import torch

from core.config import FinetuneConfig
from core.models.registry import build_model
from core.train.finetune import finetune
from core.train.proximal import attach_proximal_term


def _distance(model, start):
    return sum(
        float((p.detach() - s).pow(2).sum())
        for p, s in zip(model.head.parameters(), start, strict=True)
    )


def test_proximal_gradient_pulls_back_toward_the_anchor():
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    handle = attach_proximal_term(optimizer, mu=0.4)
    with torch.no_grad():
        weight.add_(torch.tensor([1.0, 1.0]))  # drift away from the anchor
    weight.grad = torch.zeros(2)  # the data term is flat: only the proximal term acts
    optimizer.step()
    # w <- w - lr * mu * (w - anchor) = [2, -1] - 0.5 * 0.4 * [1, 1]
    torch.testing.assert_close(weight.detach(), torch.tensor([1.8, -1.2]))
    handle.remove()
    weight.grad = torch.zeros(2)
    optimizer.step()
    torch.testing.assert_close(weight.detach(), torch.tensor([1.8, -1.2]))


def test_zero_mu_is_plain_fedavg_and_negative_is_refused():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert attach_proximal_term(optimizer, mu=0.0) is None
    with pytest.raises(ValueError, match="proximal_mu"):
        attach_proximal_term(optimizer, mu=-1.0)


def test_strong_proximal_term_keeps_finetuning_near_its_start(tiny_config, knee_cases):
    moved = {}
    for mu in (0.0, 50.0):
        model = build_model(tiny_config, joint="knee", seed=0)
        start = [p.detach().clone() for p in model.head.parameters()]
        finetune(
            model,
            knee_cases,
            config=FinetuneConfig(epochs=3, batch_size=2, lr=1e-2, proximal_mu=mu),
        )
        moved[mu] = _distance(model, start)
    assert moved[50.0] < 0.5 * moved[0.0]
