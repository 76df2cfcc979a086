"""Exponential moving average of weights (reference: decay 0.995), via torch's AveragedModel.

With warm-up the effective decay is min(decay, (1 + n) / (10 + n)) after n updates, so a
short run's EMA follows the weights instead of staying near the random initialisation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

MultiAvgFn = Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor | int], None]


def ema_update_fn(*, decay: float, warmup: bool) -> MultiAvgFn:
    """In-place multi-tensor EMA update for AveragedModel (`num_averaged` counts updates)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = float(num_averaged)
        effective = min(decay, (1.0 + n) / (10.0 + n)) if warmup else decay
        torch._foreach_lerp_(averaged, current, 1.0 - effective)

    return update


def create_ema(module: nn.Module, *, decay: float, warmup: bool = True) -> AveragedModel:
    """An EMA copy of `module`; call `.update_parameters(module)` after each optimizer step.

    The first update copies the weights (AveragedModel's rule), later ones blend.
    """
    return AveragedModel(
        module, multi_avg_fn=ema_update_fn(decay=decay, warmup=warmup), use_buffers=True
    )


def ema_weights(ema: AveragedModel) -> dict[str, torch.Tensor]:
    """State dict of the averaged module (same keys as the source module)."""
    return ema.module.state_dict()


def ema_count(ema: AveragedModel) -> int:
    return int(ema.n_averaged.item())


def restore_ema(ema: AveragedModel, *, weights: dict[str, torch.Tensor], count: int) -> None:
    """Reload an EMA saved with `ema_weights` / `ema_count` (resume)."""
    ema.module.load_state_dict(weights)
    ema.n_averaged.fill_(count)
