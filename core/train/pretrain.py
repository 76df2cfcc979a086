"""Self-supervised DDPM pretraining of the three view backbones.

`Pretrainer` holds, per view, a UNet, its Adam optimizer and an EMA of its weights, plus one
random generator that draws batches, timesteps and noise: a run is fully determined by its
seed, and its state (weights, EMA, optimizer, step, generator) can be saved and restored.
Views with no training volumes are kept (their weights stay as initialised) but not trained.
The UNets train on `train.device` (core/device.py); the generator stays on the CPU and every
tensor the trainer hands out (weights, state) is a CPU tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler
from torch.optim.swa_utils import AveragedModel

from core.config import (
    LrSchedule,
    ModelConfig,
    PretrainConfig,
    PretrainRunConfig,
    check_ranges,
)
from core.device import resolve_device
from core.diffusion.ddpm import build_scheduler, denoising_loss
from core.models.backbone import build_backbone, conv_shapes
from core.precision import Precision, resolve_precision
from core.train.ema import create_ema, ema_count, ema_weights, restore_ema
from core.train.state import optimizer_from_flat, optimizer_to_flat
from core.views import VIEWS, View


def pretrain_step(
    *,
    unet: DiffusionModelUNet,
    optimizer: torch.optim.Optimizer,
    scheduler: DDPMScheduler,
    clean: torch.Tensor,
    generator: torch.Generator,
    bf16: bool = False,
) -> float:
    """One optimizer step of the denoising objective on a batch (N, 1, D, H, W); returns loss."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(clean.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = denoising_loss(unet, scheduler, clean, generator=generator)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


# The floor of the cosine decay, as a fraction of `lr`: a federation that adds rounds past the
# horizon keeps learning slowly instead of stalling at zero.
COSINE_FLOOR = 0.1


def learning_rate(train: PretrainConfig, *, step: int) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warm-up, then constant or
    cosine to COSINE_FLOOR x lr at the horizon. A pure function of the step rather than a
    torch LRScheduler, so a run restored at any step (also between federated rounds, where
    each round builds a new trainer) continues on exactly the same curve without scheduler
    state to save."""
    warm = min(1.0, (step + 1) / train.warmup_steps) if train.warmup_steps > 0 else 1.0
    if LrSchedule(train.lr_schedule) is not LrSchedule.cosine:
        return train.lr * warm
    horizon = train.lr_decay_steps or train.steps
    progress = min(1.0, step / horizon) if horizon > 0 else 1.0
    decay = COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))
    return train.lr * warm * decay


def check_pretrain_config(train: PretrainConfig, *, key: str = "train") -> None:
    """One line per wrong value, naming it (checked before any data is read)."""
    checks = [
        (train.steps >= 0, "steps", "must be >= 0 (0 = the initialisation)", train.steps),
        (train.batch_size >= 1, "batch_size", "must be >= 1", train.batch_size),
        (train.lr > 0, "lr", "must be > 0", train.lr),
        (train.warmup_steps >= 0, "warmup_steps", "must be >= 0", train.warmup_steps),
        (train.lr_decay_steps >= 0, "lr_decay_steps", "must be >= 0", train.lr_decay_steps),
        (0 <= train.ema_decay < 1, "ema_decay", "must be in [0, 1)", train.ema_decay),
    ]
    check_ranges(checks, key=key)


def input_shape(config: ModelConfig) -> tuple[int, int, int, int]:
    """Shape (1, D, H, W) every view volume must have for this model."""
    return (1, config.input_slices, config.input_size, config.input_size)


def check_volume(array: np.ndarray, *, expected: tuple[int, ...], case_id: str, view: str) -> None:
    if tuple(array.shape) != expected:
        raise ValueError(
            f"case {case_id} {view}: volume shape {tuple(array.shape)} does not match the model "
            f"input {expected}; prepare the site with the model preset's slices/size"
        )


def training_volumes(cases: Sequence, *, config: ModelConfig) -> dict[View, list[np.ndarray]]:
    """Per view, the volumes of every non-held-out case (labeled or not) that has that view."""
    expected = input_shape(config)
    volumes: dict[View, list[np.ndarray]] = {view: [] for view in VIEWS}
    for case in cases:
        if case.heldout:
            continue
        for view, array in case.views.items():
            check_volume(array, expected=expected, case_id=case.case_id, view=str(view))
            volumes[View(view)].append(array)
    if not any(volumes.values()):
        raise ValueError("no training volumes: every case is held out or has no views")
    return volumes


def stack_batch(arrays: Sequence[np.ndarray], indices: torch.Tensor) -> torch.Tensor:
    """Float32 batch (N, 1, D, H, W) of the chosen volumes."""
    return torch.from_numpy(np.stack([np.asarray(arrays[i], dtype=np.float32) for i in indices]))


def build_view_backbones(config: ModelConfig, *, seed: int) -> dict[View, DiffusionModelUNet]:
    """Three freshly initialised backbones, identical for a given seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return {view: build_backbone(config.backbone) for view in VIEWS}


class Pretrainer:
    """Per-view UNets + Adam + EMA, trained on `volumes` with one seeded generator."""

    def __init__(
        self, *, config: PretrainRunConfig, volumes: Mapping[View, Sequence[np.ndarray]]
    ) -> None:
        train = config.train
        check_pretrain_config(train)
        self.config = config
        self.volumes = {View(v): list(a) for v, a in volumes.items()}
        self.scheduler = build_scheduler(config.model.diffusion)
        self.device = resolve_device(train.device)
        self.unets = {
            v: u.to(self.device)
            for v, u in build_view_backbones(config.model, seed=train.seed).items()
        }
        self.optimizers = {
            v: torch.optim.Adam(u.parameters(), lr=train.lr) for v, u in self.unets.items()
        }
        self.emas: dict[View, AveragedModel] = {
            v: create_ema(u, decay=train.ema_decay, warmup=train.ema_warmup)
            for v, u in self.unets.items()
        }
        self.generator = torch.Generator().manual_seed(train.seed)
        self.precision = resolve_precision(
            train.precision, device=self.device, conv_shapes=conv_shapes(config.model)
        )
        self.step = 0

    @property
    def trained_views(self) -> list[View]:
        return [v for v in VIEWS if self.volumes.get(v)]

    def apply_learning_rate(self) -> None:
        """Set every optimizer to the schedule's learning rate for the coming step."""
        lr = learning_rate(self.config.train, step=self.step)
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr

    def train_step(self) -> dict[View, float]:
        """One optimizer step per trained view; returns the per-view losses."""
        losses = {}
        self.apply_learning_rate()
        for view in self.trained_views:
            arrays = self.volumes[view]
            order = torch.randperm(len(arrays), generator=self.generator)
            batch = stack_batch(arrays, order[: self.config.train.batch_size]).to(self.device)
            self.unets[view].train()
            losses[view] = pretrain_step(
                unet=self.unets[view],
                optimizer=self.optimizers[view],
                scheduler=self.scheduler,
                clean=batch,
                generator=self.generator,
                bf16=self.precision is Precision.bf16,
            )
            self.emas[view].update_parameters(self.unets[view])
        self.step += 1
        return losses

    def backbone_weights(self, *, ema: bool = True) -> dict[str, torch.Tensor]:
        """`backbone.<view>.<param>` tensors (EMA weights by default: what a site shares)."""
        out = {}
        for view in VIEWS:
            state = ema_weights(self.emas[view]) if ema else self.unets[view].state_dict()
            out.update({f"backbone.{view.value}.{k}": t.cpu() for k, t in state.items()})
        return out

    def load_backbones(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Start from given backbone weights (e.g. a global model): weights and EMA both."""
        for view in VIEWS:
            prefix = f"backbone.{view.value}."
            state = {k[len(prefix) :]: t for k, t in tensors.items() if k.startswith(prefix)}
            if state:
                self.unets[view].load_state_dict(state)
                restore_ema(self.emas[view], weights=state, count=0)

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON metadata) that `restore` turns back into this exact trainer."""
        tensors: dict[str, torch.Tensor] = {"rng": self.generator.get_state()}
        meta: dict = {"ema_count": {}, "optimizer": {}}
        for view in VIEWS:
            tensors.update(
                {f"model.{view}.{k}": t for k, t in self.unets[view].state_dict().items()}
            )
            tensors.update({f"ema.{view}.{k}": t for k, t in ema_weights(self.emas[view]).items()})
            opt_tensors, opt_meta = optimizer_to_flat(self.optimizers[view], prefix=f"optim.{view}")
            tensors.update(opt_tensors)
            meta["optimizer"][view.value] = opt_meta
            meta["ema_count"][view.value] = ema_count(self.emas[view])
        return {k: t.cpu() for k, t in tensors.items()}, meta

    def restore(self, *, step: int, tensors: Mapping[str, torch.Tensor], meta: dict) -> None:
        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: t for k, t in tensors.items() if k.startswith(prefix)}

        for view in VIEWS:
            self.unets[view].load_state_dict(part(f"model.{view}."))
            restore_ema(
                self.emas[view], weights=part(f"ema.{view}."), count=meta["ema_count"][view.value]
            )
            optimizer_from_flat(
                self.optimizers[view],
                tensors=dict(tensors),
                meta=meta["optimizer"][view.value],
                prefix=f"optim.{view}",
            )
        self.generator.set_state(tensors["rng"])
        self.step = step
