"""Diffusion features: noise a clean volume to timestep t, run the UNet once, hook blocks.

Noise is drawn per sample from its own seed (derive it from the case id with `case_seed`),
so a case's features do not depend on the batch it is in. Taps sharing a timestep share one
UNet pass; when no tap needs the decoder the pass stops after the deepest hooked block.
Several taps are fused by resizing every map to the first tap's grid and concatenating
channels (the classification head then pools over that grid).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler

from core.config import BackboneConfig, FeatureTap
from core.diffusion.ddpm import noised
from core.models.backbone import block_channels, block_module, parse_block


class _StopForward(Exception):
    """Raised by the last needed hook to skip the rest of the UNet."""


def case_seed(seed: int, case_id: str) -> int:
    """Stable 63-bit noise seed for one case (independent of batch order and Python's hash)."""
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def draw_seeds(seeds: Sequence[int], *, draw: int) -> list[int]:
    """The noise seeds of averaging draw `draw` (draw 0 is `seeds` itself)."""
    if draw == 0:
        return [int(s) for s in seeds]
    return [case_seed(int(s), f"draw-{draw}") for s in seeds]


def seeded_noise(shape: Sequence[int], *, seeds: Sequence[int]) -> torch.Tensor:
    """Standard normal noise (len(seeds), *shape), sample i drawn from seeds[i]."""
    return torch.stack(
        [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    )


def _execution_rank(block: str, *, levels: int) -> int:
    kind, index = parse_block(block, levels=levels)
    return {"down": index, "middle": levels, "up": levels + 1 + index}[kind]


def _one_pass(
    unet: DiffusionModelUNet, noisy: torch.Tensor, *, timestep: int, blocks: list[str]
) -> dict[str, torch.Tensor]:
    levels = len(unet.block_out_channels)
    last = max(blocks, key=lambda b: _execution_rank(b, levels=levels))
    stop_early = not any(b.startswith("up") for b in blocks)
    outputs: dict[str, torch.Tensor] = {}

    def hook_for(block: str):
        def hook(_module, _inputs, output):
            outputs[block] = output[0] if isinstance(output, tuple) else output
            if stop_early and block == last:
                raise _StopForward

        return hook

    handles = [block_module(unet, b).register_forward_hook(hook_for(b)) for b in blocks]
    try:
        timesteps = torch.full((noisy.shape[0],), timestep, dtype=torch.long)
        unet(noisy, timesteps)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def extract_taps(
    unet: DiffusionModelUNet,
    scheduler: DDPMScheduler,
    clean: torch.Tensor,
    *,
    taps: Sequence[FeatureTap],
    seeds: Sequence[int],
    bf16: bool = False,
) -> list[torch.Tensor]:
    """Feature maps (N, C, d, h, w) for each tap, in order; one UNet pass per timestep.

    Gradients flow only when grad mode is on and the backbone has trainable parameters.
    """
    if len(seeds) != clean.shape[0]:
        raise ValueError(
            f"need one noise seed per volume: {len(seeds)} seeds, {clean.shape[0]} volumes"
        )
    for tap in taps:
        if not 0 <= tap.timestep < scheduler.num_train_timesteps:
            raise ValueError(
                f"feature timestep {tap.timestep} outside [0, {scheduler.num_train_timesteps})"
            )
    trainable = any(p.requires_grad for p in unet.parameters())
    noise = seeded_noise(clean.shape[1:], seeds=seeds)
    found: dict[tuple[int, str], torch.Tensor] = {}
    with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
        for timestep in dict.fromkeys(t.timestep for t in taps):
            blocks = list(dict.fromkeys(t.block for t in taps if t.timestep == timestep))
            t = torch.full((clean.shape[0],), timestep, dtype=torch.long)
            x_t = noised(scheduler, clean, timesteps=t, noise=noise)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                outputs = _one_pass(unet, x_t, timestep=timestep, blocks=blocks)
            found.update({(timestep, b): o.float() for b, o in outputs.items()})
    return [found[(t.timestep, t.block)] for t in taps]


def fuse(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate channels after resizing every map to the first map's grid.

    Larger maps are average-pooled down, smaller ones trilinearly upsampled.
    """
    target = tuple(maps[0].shape[2:])
    resized = []
    for item in maps:
        grid = tuple(item.shape[2:])
        if grid == target:
            resized.append(item)
        elif all(g >= s for g, s in zip(grid, target, strict=True)):
            resized.append(F.adaptive_avg_pool3d(item, target))
        else:
            resized.append(F.interpolate(item, size=target, mode="trilinear", align_corners=False))
    return torch.cat(resized, dim=1)


def fused_channels(config: BackboneConfig, taps: Sequence[FeatureTap]) -> int:
    """Channels of `fuse(extract_taps(...))` for these taps."""
    return sum(block_channels(config, t.block) for t in taps)
