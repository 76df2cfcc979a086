"""DP-SGD step time over plain step time, same UNet, same batch, one run (goal <= 1.3x).

The plain step is `core.train.pretrain.pretrain_step` (Adam); `dp` is the DP-SGD step of
`core.train.dp_pretrain` (torch.func per-case gradients + Opacus DPOptimizer: clipping,
noise). `--opacus functorch hooks` adds Opacus `make_private` with those per-sample gradient
modes for comparison. Steps of all loops alternate, so load from other processes affects
them alike; the median of `--repeats` steps is reported.
Run: `python bench/dp_step.py [--preset tiny] [--batch 2] [--threads N] [--opacus functorch]`.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
from opacus import PrivacyEngine
from torch.utils.data import DataLoader, TensorDataset

from core.diffusion.ddpm import build_scheduler, denoising_loss
from core.models.backbone import build_backbone
from core.models.presets import load_model_config
from core.train.dp_pretrain import make_private_unet, private_step
from core.train.pretrain import pretrain_step


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def opacus_step(base, *, mode: str, scheduler, clean: torch.Tensor):
    """A step through Opacus `make_private` with per-sample gradient mode `mode`."""
    unet = copy.deepcopy(base)
    loader = DataLoader(TensorDataset(torch.arange(4 * len(clean))), batch_size=len(clean))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module, optimizer, _ = PrivacyEngine(accountant="rdp").make_private(
            module=unet,
            optimizer=torch.optim.Adam(unet.parameters(), lr=1e-4),
            data_loader=loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=True,
            grad_sample_mode=mode,
        )
    generator = torch.Generator().manual_seed(2)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            denoising_loss(module, scheduler, clean, generator=generator).backward()
        optimizer.step()

    return step


def measure(*, preset: str, batch: int, repeats: int, modes: list[str]) -> dict[str, float]:
    """Median seconds per step: plain, ours, and each Opacus mode (steps interleaved)."""
    config = load_model_config(preset)
    scheduler = build_scheduler(config.diffusion)
    torch.manual_seed(0)
    base = build_backbone(config.backbone)
    clean = torch.randn(batch, 1, config.input_slices, config.input_size, config.input_size)
    plain_unet = copy.deepcopy(base)
    plain_opt = torch.optim.Adam(plain_unet.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    steps = {
        "plain": lambda: pretrain_step(
            unet=plain_unet,
            optimizer=plain_opt,
            scheduler=scheduler,
            clean=clean,
            generator=generator,
        )
    }
    unet = copy.deepcopy(base)
    view = make_private_unet(
        unet=unet,
        optimizer=torch.optim.Adam(unet.parameters(), lr=1e-4),
        cases=batch,
        sample_rate=1.0,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        generator=torch.Generator().manual_seed(1),
    )
    volumes = list(clean.numpy())  # q = 1: every step trains on the same `batch` volumes
    steps["dp"] = lambda: private_step(
        view=view, volumes=volumes, scheduler=scheduler, loss_generator=generator
    )
    for mode in modes:
        steps[f"opacus-{mode}"] = opacus_step(base, mode=mode, scheduler=scheduler, clean=clean)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(repeats + 2):  # two warm-up rounds (functorch prepares layers lazily)
        for name, fn in steps.items():
            elapsed = _timed(fn)
            if i >= 2:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--opacus", nargs="*", default=[], choices=["functorch", "hooks"])
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write figures")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(preset=args.preset, batch=args.batch, repeats=args.repeats, modes=args.opacus)
    plain = result["plain"]
    print(f"preset {args.preset}, batch {args.batch}, torch threads {torch.get_num_threads()}")
    for name, seconds in result.items():
        print(f"{name:>14}: {seconds:.3f} s/step  ratio {seconds / plain:.2f}x")
    if args.json:
        payload = {
            "preset": args.preset,
            "batch": args.batch,
            "threads": torch.get_num_threads(),
            "seconds_per_step": result,
            "ratio_to_plain": {name: s / plain for name, s in result.items()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
