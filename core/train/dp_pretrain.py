"""DP-SGD pretraining of the view backbones (per-case clipping + Gaussian noise, Opacus).

Per-case gradients come from `torch.func` (vmap of grad over the whole UNet, one case per
call); Opacus's `DPOptimizer` wraps the trainer's Adam and clips them, adds the noise and
divides by the expected batch size. Measured on the tiny preset this costs ~1.0x a plain
step, against ~1.65x for `make_private(grad_sample_mode="functorch")`, whose per-layer vmap
recomputes every layer's forward, and ~2.6x for its default hooks (see bench/dp_step.py).
The trainer's UNets and optimizers are only borrowed for the round, so its state (weights,
EMA, Adam, generator) is saved and restored exactly as without DP.

Batches are Poisson samples (each case independently with rate q) drawn, like the noise,
from a generator seeded with the site secret; timesteps and diffusion noise still come from
the trainer's generator (data-independent). An empty Poisson batch is a real DP-SGD step: no
forward pass, zero clipped-gradient sum, noise only, and the accountant counts it (the
Poisson-subsampled Gaussian analysis includes empty draws).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDPMScheduler
from opacus import PrivacyEngine
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from core.diffusion.ddpm import noised
from core.precision import refuse_bf16_with_dp
from core.train.pretrain import Pretrainer, stack_batch
from core.train.privacy import (
    ClientDPConfig,
    SiteBudget,
    private_seed,
    round_entries,
    run_part,
    sample_rate,
    site_secret,
)
from core.views import View


@dataclass
class PrivateView:
    """One view's UNet with its DP optimizer (wrapping the trainer's) and sampling rate."""

    unet: nn.Module
    optimizer: DPOptimizer
    sample_rate: float
    generator: torch.Generator | None  # batches and noise; secure mode: torchcsprng's


def secure_generator() -> torch.Generator:
    """torchcsprng's generator, as Opacus secure mode uses it (ValueError if missing)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            return PrivacyEngine(secure_mode=True).secure_rng
    except ImportError as err:
        raise ValueError(
            f"client_dp.secure_rng=true needs the torchcsprng package at this site ({err}); "
            "install it or set secure_rng=false"
        ) from None


def make_private_unet(
    *,
    unet: nn.Module,
    optimizer: torch.optim.Optimizer,
    cases: int,
    sample_rate: float,
    noise_multiplier: float,
    max_grad_norm: float,
    generator: torch.Generator | None,
    secure: bool = False,
) -> PrivateView:
    """Wrap `optimizer` (over `unet`'s parameters) for DP-SGD over `cases` at rate q; the
    gradient is divided by the expected batch size q * N, not the drawn one."""
    dp_optimizer = DPOptimizer(
        optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=sample_rate * cases,
        loss_reduction="mean",
        generator=generator,
        secure_mode=secure,
    )
    return PrivateView(
        unet=unet, optimizer=dp_optimizer, sample_rate=sample_rate, generator=generator
    )


def poisson_indices(
    *, cases: int, sample_rate: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Indices of the cases drawn this step (each independently with probability q)."""
    return torch.nonzero(torch.rand(cases, generator=generator) < sample_rate).flatten()


def per_case_gradients(
    unet: nn.Module, scheduler: DDPMScheduler, clean: torch.Tensor, *, generator: torch.Generator
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-case gradients {name: (N, *shape)} of the denoising loss, and the N losses.

    Timesteps and noise are drawn as `core.diffusion.ddpm.denoising_loss` draws them.
    """
    clean = clean.float()
    timesteps = torch.randint(0, scheduler.num_train_timesteps, (len(clean),), generator=generator)
    noise = torch.randn(clean.shape, generator=generator)
    inputs = noised(scheduler, clean, timesteps=timesteps, noise=noise)
    params = {k: p.detach() for k, p in unet.named_parameters() if p.requires_grad}
    buffers = dict(unet.named_buffers())

    def case_loss(weights, x, t, target):
        out = functional_call(unet, (weights, buffers), (x.unsqueeze(0), t.unsqueeze(0)))
        return F.mse_loss(out.float(), target.unsqueeze(0))

    with warnings.catch_warnings():  # no batching rule for CPU flash attention: loop fallback
        warnings.filterwarnings("ignore", message="There is a performance drop")
        grads, losses = vmap(grad_and_value(case_loss), in_dims=(None, 0, 0, 0))(
            params, inputs, timesteps, noise
        )
    return grads, losses


def private_step(
    *,
    view: PrivateView,
    volumes: Sequence[np.ndarray],
    scheduler: DDPMScheduler,
    loss_generator: torch.Generator,
) -> float | None:
    """One DP-SGD step on a Poisson batch; returns the (local-only) loss, None if empty."""
    rows = poisson_indices(
        cases=len(volumes), sample_rate=view.sample_rate, generator=view.generator
    )
    view.optimizer.zero_grad(set_to_none=True)
    view.unet.train()
    loss = None
    named = dict(view.unet.named_parameters())
    if len(rows):
        grads, losses = per_case_gradients(
            view.unet, scheduler, stack_batch(volumes, rows), generator=loss_generator
        )
        for name, g in grads.items():
            named[name].grad_sample = g
        loss = float(losses.mean())
    else:  # empty batch: zero per-case gradients -> the step adds noise only
        for p in view.optimizer.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
    view.optimizer.step()
    return loss


def release_optimizer(optimizer: DPOptimizer) -> None:
    """Drop the gradients and per-case buffers Opacus leaves on the optimizer's parameters."""
    optimizer.zero_grad(set_to_none=True)
    for p in optimizer.params:
        for attr in ("grad_sample", "summed_grad"):
            if hasattr(p, attr):
                delattr(p, attr)


def release(views: dict[View, PrivateView]) -> None:
    """Drop the per-case gradient buffers Opacus leaves on the trainer's parameters."""
    for view in views.values():
        release_optimizer(view.optimizer)


def train_private(
    trainer: Pretrainer,
    *,
    steps: int,
    noise_multiplier: float,
    rates: dict[View, float],
    max_grad_norm: float,
    seeds: dict[View, int] | None,
) -> dict[View, list[float]]:
    """`steps` DP-SGD steps per trained view (views interleaved as in `train_step`).

    `seeds` seed each view's batch/noise generator (None: Opacus secure mode, torchcsprng).
    Returns the per-view losses of non-empty batches: for local logs only (not private).
    """
    refuse_bf16_with_dp(trainer.config.train.precision)
    views: dict[View, PrivateView] = {}
    try:
        for view in trainer.trained_views:
            views[view] = make_private_unet(
                unet=trainer.unets[view],
                optimizer=trainer.optimizers[view],
                cases=len(trainer.volumes[view]),
                sample_rate=rates[view],
                noise_multiplier=noise_multiplier,
                max_grad_norm=max_grad_norm,
                generator=(
                    torch.Generator().manual_seed(seeds[view]) if seeds else secure_generator()
                ),
                secure=seeds is None,
            )
        losses: dict[View, list[float]] = {v: [] for v in views}
        for _ in range(steps):
            trainer.apply_learning_rate()
            for view, wrapped in views.items():
                loss = private_step(
                    view=wrapped,
                    volumes=trainer.volumes[view],
                    scheduler=trainer.scheduler,
                    loss_generator=trainer.generator,
                )
                trainer.emas[view].update_parameters(trainer.unets[view])
                if loss is not None:
                    losses[view].append(loss)
            trainer.step += 1
        return losses
    finally:
        release(views)


@dataclass
class PrivateRound:
    """Outcome of a DP pretraining round: a refusal reason, or the reply's DP metrics."""

    refused: str = ""
    metrics: dict[str, float] | None = None


def pretrain_privately(
    trainer: Pretrainer,
    *,
    config: ClientDPConfig,
    state_dir: Path,
    index: int,
    site_id: str,
    run_key: str = "",
) -> PrivateRound:
    """Check the site budget, train `train.steps` DP-SGD steps per view, spend the budget.

    Refuses (trains nothing, spends nothing) when the round would pass `max_epsilon`.
    """
    budget = SiteBudget.load(state_dir, config=config)
    train = trainer.config.train
    rates = {
        v: sample_rate(batch_size=train.batch_size, cases=len(trainer.volumes[v]))
        for v in trainer.trained_views
    }
    entries = round_entries(rates=list(rates.values()), steps=train.steps, config=config)
    refused = budget.refusal(entries, max_epsilon=config.max_epsilon)
    if refused:
        return PrivateRound(refused=refused)
    seeds = None
    if not config.secure_rng:
        secret = site_secret(state_dir)
        seeds = {
            v: private_seed(secret, *run_part(run_key), index, site_id, v.value) for v in rates
        }
    train_private(
        trainer,
        steps=train.steps,
        noise_multiplier=entries[0][0],
        rates=rates,
        max_grad_norm=config.max_grad_norm,
        seeds=seeds,
    )
    budget.spend(entries)
    return PrivateRound(metrics=budget.metrics(entries))
