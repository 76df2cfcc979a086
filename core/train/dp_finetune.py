"""DP-SGD fine-tuning of a joint's heads on frozen backbones (per-case clipping, Opacus).

Only `linear` mode: the backbones are frozen, so each case's features are computed once
(no gradient) and DP-SGD runs on the heads alone; `partial`/`full` would need per-case
gradients through the UNets every step (the pretraining path does that, at ~1x a plain
step per view, but fine-tuning a whole UNet privately on a few dozen labeled cases spends
far more budget than it buys). The privacy unit is the case, as in pretraining, and both
phases spend the same site budget (`core.train.privacy.SiteBudget`).

Per-case gradients are a loop of `torch.autograd.grad` over the Poisson batch: the heads
are small and a case's loss mixes BCE (if labeled) and segmentation (if masked), which a
vmap cannot branch on. Opacus's `DPOptimizer` clips them, adds the noise and divides by the
expected batch size; an empty batch is a noise-only step, counted by the accountant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from opacus.optimizers import DPOptimizer

from core.config import FinetuneConfig
from core.models.encode import EncodedCases, encode_in_chunks
from core.models.registry import OrthoModel
from core.precision import refuse_bf16_with_dp
from core.train.dp_pretrain import (
    PrivateRound,
    poisson_indices,
    release_optimizer,
    secure_generator,
)
from core.train.finetune import (
    FinetuneResult,
    build_optimizer,
    select_training_cases,
    set_trainable,
)
from core.train.losses import task_loss
from core.train.privacy import (
    ClientDPConfig,
    SiteBudget,
    private_seed,
    round_entries,
    run_part,
    sample_rate,
    site_secret,
)
from core.train.proximal import attach_proximal_term


def dp_steps(*, epochs: int, rate: float, min_steps: int = 0) -> int:
    """Steps for `epochs` passes in expectation (epochs x 1/q), at least `min_steps`: the same
    floor `train.min_steps` sets without DP, so small label sets train as long with DP on."""
    return max(1, epochs * math.ceil(1.0 / rate), min_steps)


def _per_case_gradients(
    model: OrthoModel, batch: EncodedCases, *, params: list[torch.nn.Parameter]
) -> list[torch.Tensor]:
    """(n, *shape) per parameter: each case's gradient of its own task loss (0 if none)."""
    rows: list[list[torch.Tensor]] = []
    for i in range(len(batch.case_ids)):
        loss = task_loss(model, batch.select(torch.tensor([i])))
        if loss is None:
            rows.append([torch.zeros_like(p) for p in params])
            continue
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        rows.append(
            [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        )
    return [torch.stack([row[j] for row in rows]) for j in range(len(params))]


def _private_step(
    model: OrthoModel,
    *,
    cached: EncodedCases,
    optimizer: DPOptimizer,
    rate: float,
    generator: torch.Generator | None,
) -> None:
    params = list(optimizer.params)
    rows = poisson_indices(cases=len(cached.case_ids), sample_rate=rate, generator=generator)
    optimizer.zero_grad(set_to_none=True)
    if len(rows):
        samples = _per_case_gradients(model, cached.select(rows), params=params)
    else:
        samples = [torch.zeros((0, *p.shape), dtype=p.dtype) for p in params]
    for p, g in zip(params, samples, strict=True):
        p.grad_sample = g
    optimizer.step()


def finetune_privately(
    model: OrthoModel,
    cases: Sequence,
    *,
    config: FinetuneConfig,
    dp: ClientDPConfig,
    state_dir: Path,
    index: int,
    site_id: str,
    subset_seed: int | None = None,
    run_key: str = "",
) -> tuple[PrivateRound, FinetuneResult | None]:
    """Check the site budget, fine-tune the heads by DP-SGD, spend the budget.

    Refuses (trains nothing, spends nothing) when the round would pass `max_epsilon`.
    """
    if config.mode != "linear":
        raise ValueError(
            f"client DP fine-tuning supports train.mode=linear only (got {config.mode!r}): "
            "set finetune.train.mode=linear, or client_dp.phases=[pretrain]"
        )
    refuse_bf16_with_dp(config.precision)
    chosen = select_training_cases(cases, model=model, config=config, subset_seed=subset_seed)
    rate = sample_rate(batch_size=config.batch_size, cases=len(chosen))
    steps = dp_steps(epochs=config.epochs, rate=rate, min_steps=config.min_steps)
    entries = round_entries(rates=[rate], steps=steps, config=dp)
    budget = SiteBudget.load(state_dir, config=dp)
    refused = budget.refusal(entries, max_epsilon=dp.max_epsilon)
    if refused:
        return PrivateRound(refused=refused), None
    set_trainable(model, mode="linear")
    with torch.no_grad():
        cached = encode_in_chunks(model, chosen, batch_size=config.batch_size)
    base = build_optimizer(model, backbone_params=[], config=config)
    proximal = attach_proximal_term(base, mu=config.proximal_mu)
    generator = (
        secure_generator()
        if dp.secure_rng
        else torch.Generator().manual_seed(
            private_seed(site_secret(state_dir), *run_part(run_key), index, site_id, "finetune")
        )
    )
    optimizer = DPOptimizer(
        base,
        noise_multiplier=entries[0][0],
        max_grad_norm=dp.max_grad_norm,
        expected_batch_size=rate * len(chosen),
        loss_reduction="mean",
        generator=generator,
        secure_mode=dp.secure_rng,
    )
    try:
        for _ in range(steps):
            _private_step(model, cached=cached, optimizer=optimizer, rate=rate, generator=generator)
    finally:
        release_optimizer(optimizer)
        if proximal is not None:
            proximal.remove()
        for p in model.parameters():
            p.requires_grad_(True)
    budget.spend(entries)
    return PrivateRound(metrics=budget.metrics(entries)), FinetuneResult(
        case_ids=[c.case_id for c in chosen]
    )
