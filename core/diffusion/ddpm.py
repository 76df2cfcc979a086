"""DDPM noise schedule and the self-supervised denoising loss (wraps MONAI's DDPMScheduler).

The scheduler is not a set of weights (diffusers convention): it is rebuilt from the config
and never stored in checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDPMScheduler, NoiseSchedules
from torch import nn

from core.config import DiffusionConfig


def check_diffusion(config: DiffusionConfig) -> None:
    """Refuse a schedule MONAI does not have, a target we do not train, or too few steps
    (called when a model config is loaded, so a typo stops a run before any work starts)."""
    if config.schedule not in NoiseSchedules:
        names = ", ".join(sorted(NoiseSchedules.names))
        raise ValueError(
            f"model.diffusion.schedule {config.schedule!r} unknown: use one of {names}"
        )
    if config.prediction_type != "epsilon":
        raise ValueError("model.diffusion.prediction_type: only 'epsilon' is implemented")
    if config.num_train_timesteps < 2:
        raise ValueError("model.diffusion.num_train_timesteps must be >= 2")


def build_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    """MONAI DDPM scheduler for training-time noising (T steps, named beta schedule)."""
    check_diffusion(config)
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        schedule=config.schedule,
        prediction_type=config.prediction_type,
    )


def noised(
    scheduler: DDPMScheduler, clean: torch.Tensor, *, timesteps: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, computed in float32."""
    return scheduler.add_noise(clean.float(), noise.float(), timesteps)


def denoising_loss(
    unet: nn.Module,
    scheduler: DDPMScheduler,
    clean: torch.Tensor,
    *,
    generator: torch.Generator,
) -> torch.Tensor:
    """Epsilon-prediction MSE at uniformly drawn timesteps (plain DDPM objective).

    Timesteps and noise come from `generator`, so a run is reproducible from its seed and
    resumable from the generator's saved state. They are drawn on the generator's device and
    moved to the batch's, so a CPU generator draws the same noise for a CPU or a GPU run.
    """
    clean = clean.float()
    batch = clean.shape[0]
    drawn = generator.device
    timesteps = torch.randint(
        0, scheduler.num_train_timesteps, (batch,), generator=generator, device=drawn
    ).to(clean.device)
    noise = torch.randn(clean.shape, generator=generator, device=drawn).to(clean.device)
    prediction = unet(noised(scheduler, clean, timesteps=timesteps, noise=noise), timesteps)
    return F.mse_loss(prediction.float(), noise)
