"""Pretraining step of a preset on a CUDA GPU: fp32, TF32 and bf16 autocast (issue 13 item 7).

For each precision and batch size prints seconds per step (median of `--steps` timed steps
after `--warmup` untimed ones), achieved FLOP/s (the forward+backward FLOPs counted on the meta
device, as `bench/train_step.py` does) against a dense GEMM of the same precision measured in
the same run on the same GPU, and the peak memory PyTorch allocated. It runs our own step
(`core.train.pretrain.pretrain_step`: the denoising loss, Adam, autocast by device) on the
preset's MONAI `DiffusionModelUNet`; the data are random volumes (a step's cost does not depend
on the values). Without a CUDA device it says so and exits 2 (0 with `--optional`, as
`make bench` runs it: the project's pinned torch is a CPU build).

    python bench/gpu_step.py --preset paper --batches 1,10 --json runs/gpu-step.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.train_step import step_flops  # noqa: E402
from core.diffusion.ddpm import build_scheduler  # noqa: E402
from core.models.backbone import build_backbone  # noqa: E402
from core.models.presets import load_model_config  # noqa: E402
from core.train.pretrain import pretrain_step  # noqa: E402

PRECISIONS = ("fp32", "tf32", "bf16")


def set_tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def cuda_seconds(fn, *, repeats: int) -> list[float]:
    """Per-call seconds of `fn` on the GPU (CUDA events, synchronised)."""
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return times


def gemm_flops(precision: str, *, n: int = 8192) -> float:
    """FLOP/s of an n^3 matrix product in `precision` (the GPU's practical dense peak)."""
    set_tf32(precision == "tf32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 / statistics.median(cuda_seconds(lambda: a @ b, repeats=10))


def step_row(config, *, precision: str, batch: int, warmup: int, steps: int) -> dict:
    set_tf32(precision == "tf32")
    torch.manual_seed(0)
    unet = build_backbone(config.backbone).cuda()
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-4)
    scheduler = build_scheduler(config.diffusion)
    shape = (batch, 1, config.input_slices, config.input_size, config.input_size)
    clean = torch.rand(shape, device="cuda") * 2 - 1
    generator = torch.Generator(device="cuda").manual_seed(0)
    losses: list[float] = []

    def step() -> None:
        losses.append(
            pretrain_step(
                unet=unet,
                optimizer=optimizer,
                scheduler=scheduler,
                clean=clean,
                generator=generator,
                bf16=precision == "bf16",
            )
        )

    torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = cuda_seconds(step, repeats=steps)
    row = {
        "precision": precision,
        "batch": batch,
        "s_per_step": statistics.median(times),
        "s_min": min(times),
        "s_max": max(times),
        "peak_mem_bytes": torch.cuda.max_memory_allocated(),
        "last_loss": losses[-1],
    }
    return row  # the model, optimizer and batch go with this frame


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batches", default="1,10", help="comma-separated batch sizes")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    parser.add_argument(
        "--optional", action="store_true", help="exit 0 rather than 2 without a CUDA device"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this bench measures a GPU (CPU steps: bench/train_step.py)")
        raise SystemExit(0 if args.optional else 2)
    precisions = [p for p in args.precisions.split(",") if p]
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        parser.error(f"--precisions: unknown {unknown}; choose from {', '.join(PRECISIONS)}")
    config = load_model_config(args.preset)
    name = torch.cuda.get_device_name()
    print(f"{name}, torch {torch.__version__}, preset {args.preset}")
    peaks = {p: gemm_flops(p) for p in precisions}
    for p, f in peaks.items():
        print(f"GEMM 8192^3 {p}: {f / 1e12:.1f} TFLOP/s")
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        flops = step_flops(config, batch)
        for precision in precisions:
            try:
                row = step_row(
                    config, precision=precision, batch=batch, warmup=args.warmup, steps=args.steps
                )
            except torch.OutOfMemoryError:
                print(f"batch {batch} {precision}: out of GPU memory")
                torch.cuda.empty_cache()
                continue
            torch.cuda.empty_cache()
            row["flops_per_step"] = flops
            row["achieved_flops"] = flops / row["s_per_step"]
            row["of_gemm"] = row["achieved_flops"] / peaks[precision]
            rows.append(row)
            print(
                f"batch {batch:3d} {precision}: {row['s_per_step'] * 1000:8.1f} ms/step "
                f"[{row['s_min'] * 1000:.1f}-{row['s_max'] * 1000:.1f}], "
                f"{row['achieved_flops'] / 1e12:6.1f} TFLOP/s = {row['of_gemm']:.1%} of the "
                f"{precision} GEMM, {flops / batch / 1e12:.2f} TFLOP per volume, "
                f"peak {row['peak_mem_bytes'] / 2**30:.1f} GiB, loss {row['last_loss']:.3f}",
                flush=True,
            )
    if args.json:
        payload = {
            "device": name,
            "torch": torch.__version__,
            "preset": args.preset,
            "gemm_flops": peaks,
            "rows": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
