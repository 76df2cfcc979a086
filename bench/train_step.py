"""Pretraining step benchmark: our step vs a bare PyTorch loop on the same MONAI UNet.

For each preset prints: seconds per step (ours, bare; medians of `--repeats` alternating
repeats) and their ratio bare / ours with its spread (median, min-max of the per-repeat
ratios; goal >= 0.95), achieved FLOP/s (FlopCounterMode count of forward+backward, on the meta
device) against a 1024^3 fp32 GEMM measured in the same run, the bf16-autocast speed-up
(fp32 step / bf16 step, alternating repeats) and feature-extraction throughput; the CPU flags
seen and what `train.precision: auto` resolves to here. The paper preset (16x256x256, ~8 TFLOP
per step) runs one step of each loop by default; `--paper-extras` adds its bf16 step and
feature extraction. `--bf16-curve N` (default 100) trains the tiny network N steps in fp32
and in bf16 on smooth synthetic volumes and prints both loss curves (0 skips it).
`--json PATH` writes the figures. Run: `python bench/train_step.py --presets tiny`.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from core.config import FeatureTap, ModelConfig
from core.diffusion.ddpm import build_scheduler
from core.models.backbone import build_backbone
from core.models.features import extract_taps
from core.models.presets import load_model_config
from core.precision import cpu_flags, resolve_precision
from core.train.pretrain import pretrain_step


def bare_step(unet, optimizer, scheduler, clean, generator) -> float:
    """The textbook DDPM step, written directly against PyTorch + MONAI."""
    optimizer.zero_grad()
    t = torch.randint(0, scheduler.num_train_timesteps, (clean.shape[0],), generator=generator)
    noise = torch.randn(clean.shape, generator=generator)
    loss = F.mse_loss(unet(scheduler.add_noise(clean, noise, t), t), noise)
    loss.backward()
    optimizer.step()
    return loss.item()


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def gemm_flops(n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    return 2 * n**3 * repeats / seconds(lambda: [a @ b for _ in range(repeats)])


def step_flops(config: ModelConfig, batch: int) -> int:
    """FLOPs of one forward+backward, counted on the meta device (nothing is computed)."""
    with torch.device("meta"):
        unet = build_backbone(config.backbone)
        x = torch.randn(batch, 1, config.input_slices, config.input_size, config.input_size)
        t = torch.zeros(batch, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(unet(x, t), x).backward()
    return counter.get_total_flops()


def volume(config: ModelConfig, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    shape = (batch, 1, config.input_slices, config.input_size, config.input_size)
    return torch.rand(shape, generator=g) * 2 - 1


def warm_up(config: ModelConfig) -> None:
    """Run every kernel once at a small grid so the first timed step is not penalised."""
    small = copy.deepcopy(config)
    small.input_slices = small.input_size = 2 ** (len(config.backbone.channels) - 1) * 2
    unet = build_backbone(small.backbone)
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    bare_step(unet, optimizer, build_scheduler(small.diffusion), volume(small, 1), g)


def bench_preset(name: str, *, batch: int, repeats: int, extras: bool) -> dict:
    config = load_model_config(name)
    warm_up(config)
    torch.manual_seed(0)
    ours_net = build_backbone(config.backbone)
    bare_net = copy.deepcopy(ours_net)
    scheduler = build_scheduler(config.diffusion)
    ours_opt = torch.optim.Adam(ours_net.parameters(), lr=1e-4)
    bare_opt = torch.optim.Adam(bare_net.parameters(), lr=1e-4)
    clean = volume(config, batch)
    g_ours, g_bare = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)

    def ours_step(bf16: bool = False) -> float:
        return seconds(
            lambda: pretrain_step(
                unet=ours_net,
                optimizer=ours_opt,
                scheduler=scheduler,
                clean=clean,
                generator=g_ours,
                bf16=bf16,
            )
        )

    def bare_timed() -> float:
        return seconds(lambda: bare_step(bare_net, bare_opt, scheduler, clean, g_bare))

    if repeats > 1:  # one untimed full-size step each: Adam state and allocator warm for both
        ours_step(), bare_timed()
    ours, bare = [], []
    for i in range(repeats):  # interleaved, alternating who goes first, so load hits both alike
        if i % 2:
            bare.append(bare_timed())
            ours.append(ours_step())
        else:
            ours.append(ours_step())
            bare.append(bare_timed())
    ratios = [b / o for b, o in zip(bare, ours, strict=True)]
    row = {
        "preset": name,
        "batch": batch,
        "ours": statistics.median(ours),
        "bare": statistics.median(bare),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "flops": step_flops(config, batch),
    }
    row["bf16"] = row["features"] = None
    if extras:
        # On CPUs without bf16 units (AVX2) autocast conv3d is several x slower: the paper
        # preset gets one bf16 step, the tiny one alternating repeats against fp32.
        fp32, bf16 = [], []
        ours_step(bf16=True)  # warm the bf16 kernels
        for i in range(repeats):
            for use in (True, False) if i % 2 else (False, True):
                (bf16 if use else fp32).append(ours_step(bf16=use))
        row["bf16"] = statistics.median(bf16)
        row["bf16_speedup"] = statistics.median(fp32) / row["bf16"]
        taps = [FeatureTap(timestep=100, block="middle")]
        with torch.no_grad():
            took = statistics.median(
                seconds(
                    lambda: extract_taps(
                        ours_net, scheduler, clean, taps=taps, seeds=list(range(batch))
                    )
                )
                for _ in range(repeats)
            )
        row["features"] = batch / took
    return row


def smooth_volumes(config: ModelConfig, n: int) -> torch.Tensor:
    """Blurred random blobs in [-1, 1]: a learnable stand-in for MRI volumes."""
    g = torch.Generator().manual_seed(0)
    shape = (n, 1, config.input_slices // 2, config.input_size // 4, config.input_size // 4)
    coarse = torch.rand(shape, generator=g)
    full = F.interpolate(
        coarse,
        size=(config.input_slices, config.input_size, config.input_size),
        mode="trilinear",
        align_corners=False,
    )
    low, high = full.amin(dim=(2, 3, 4), keepdim=True), full.amax(dim=(2, 3, 4), keepdim=True)
    return (full - low) / (high - low) * 2 - 1


def bf16_curve(steps: int, *, console: Console) -> dict:
    # The tiny network at an 8x32x32 grid keeps the slow bf16 run affordable.
    config = load_model_config("tiny", overrides=["input_slices=8", "input_size=32"])
    data = smooth_volumes(config, 16)
    curves = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        unet = build_backbone(config.backbone)
        optimizer = torch.optim.Adam(unet.parameters(), lr=1e-4)
        scheduler, g = build_scheduler(config.diffusion), torch.Generator().manual_seed(0)
        losses, start = [], time.perf_counter()
        for _ in range(steps):
            batch = data[torch.randperm(len(data), generator=g)[:4]]
            losses.append(
                pretrain_step(
                    unet=unet,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    clean=batch,
                    generator=g,
                    bf16=bf16,
                )
            )
        curves["bf16" if bf16 else "fp32"] = (losses, time.perf_counter() - start)
    table = Table(title=f"tiny network at 8x32x32, {steps} steps, batch 4: mean loss per window")
    table.add_column("steps")
    for name, (_, took) in curves.items():
        table.add_column(f"{name} ({took:.0f} s)", justify="right")
    window = max(1, steps // 10)
    for start in range(0, steps, window):
        cells = [f"{statistics.mean(c[0][start : start + window]):.4f}" for c in curves.values()]
        table.add_row(f"{start + 1}-{min(start + window, steps)}", *cells)
    console.print(table)
    return {name: {"losses": losses, "seconds": took} for name, (losses, took) in curves.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="tiny,paper", help="comma-separated presets")
    parser.add_argument(
        "--repeats", "--tiny-repeats", type=int, default=5, help="alternating repeats (tiny)"
    )
    parser.add_argument("--paper-extras", action="store_true", help="paper bf16 step + features")
    parser.add_argument("--bf16-curve", type=int, default=100, metavar="STEPS")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write figures")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    console = Console(width=130)
    flags = cpu_flags()
    auto = resolve_precision("auto").value
    bf16_flags = [f for f in flags if "bf16" in f or f.startswith("amx")]
    console.print(f"CPU bf16 flags: {', '.join(bf16_flags) or 'none'}; precision auto -> {auto}")
    gemm = gemm_flops()
    rows = []
    for name in args.presets.split(","):
        paper = name == "paper"
        rows.append(
            bench_preset(
                name,
                batch=1 if paper else 2,
                repeats=1 if paper else args.repeats,
                extras=args.paper_extras or not paper,
            )
        )
    table = Table(
        title=f"pretraining step, {torch.get_num_threads()} threads, GEMM {gemm / 1e9:.0f} GFLOP/s"
    )
    for column in (
        "preset",
        "batch",
        "ours s/step",
        "bare s/step",
        "bare/ours",
        "GFLOP/s (of GEMM)",
        "bf16 speed-up",
        "features vol/s",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        achieved = r["flops"] / r["ours"]
        table.add_row(
            r["preset"],
            str(r["batch"]),
            f"{r['ours']:.3f}",
            f"{r['bare']:.3f}",
            f"{r['ratio']:.3f} [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}]",
            f"{achieved / 1e9:.1f} ({achieved / gemm:.0%})",
            "skipped" if r["bf16"] is None else f"{r['bf16_speedup']:.2f}x",
            "skipped" if r["features"] is None else f"{r['features']:.2f}",
        )
    console.print(table)
    curves = bf16_curve(args.bf16_curve, console=console) if args.bf16_curve else None
    if args.json:
        write_json(args.json, rows=rows, flags=flags, auto=auto, gemm=gemm, curves=curves)


def write_json(path: Path, *, rows: list[dict], flags: list[str], auto: str, gemm, curves) -> None:
    """The contract: cpu_flags, precision_auto and per preset ratio (+ spread), bf16_speedup."""
    payload = {"cpu_flags": flags, "precision_auto": auto, "gemm_flops": gemm}
    for r in rows:
        payload[r["preset"]] = {
            "ratio": r["ratio"],
            "ratio_min": r["ratio_min"],
            "ratio_max": r["ratio_max"],
            "bf16_speedup": r.get("bf16_speedup"),
            "ours_s": r["ours"],
            "bare_s": r["bare"],
            "bf16_s": r["bf16"],
            "batch": r["batch"],
            "flops_per_step": r["flops"],
        }
    if curves:
        payload["bf16_curve"] = curves
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
