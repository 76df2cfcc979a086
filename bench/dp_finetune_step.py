"""DP-SGD fine-tuning step of a knee model's heads over a plain step, one run.

`dp` is `core.train.dp_finetune`'s step (per-case gradients by `torch.func` vmap, one vmap
per group of cases with the same annotations, then Opacus's DPOptimizer); `dp-loop` is the
same step with per-case gradients from one `torch.autograd.grad` per case (how it was done
before 2026-12-07), kept here as the reference; `plain` is one batched backward and an Adam
step. The model is the reproduction's (configs/reproduce.yaml's preset and overrides) unless
`--preset`/`--no-overrides` say otherwise. Every step draws all `--batch` cases (q = 1); a
third of them have no mask and a quarter no labels, as on a partly annotated site. Steps of
all loops alternate; the median of `--repeats` steps is reported.
Run: `python bench/dp_finetune_step.py [--batch 8] [--threads N] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from opacus.optimizers import DPOptimizer

from core.data.cache import CaseTensors
from core.models.encode import EncodedCases, encode_in_chunks
from core.models.presets import load_model_config
from core.models.registry import build_model
from core.train.dp_finetune import _private_step
from core.train.finetune import set_trainable
from core.train.losses import task_loss
from core.views import LABELS, VIEWS, Joint
from reproduce.config import load_reproduce_config


def synthetic_cases(*, n: int, slices: int, size: int) -> list[CaseTensors]:
    rng = np.random.default_rng(0)
    return [
        CaseTensors(
            case_id=f"c{i:02d}",
            views={
                v: rng.uniform(-1, 1, (1, slices, size, size)).astype(np.float16) for v in VIEWS
            },
            labels=None
            if i % 4 == 3
            else (rng.random(len(LABELS[Joint.KNEE])) < 0.3).astype(np.float32),
            mask=None if i % 3 == 2 else rng.integers(0, 12, (slices, size, size)).astype(np.uint8),
            heldout=False,
        )
        for i in range(n)
    ]


def loop_gradients(model, batch: EncodedCases, *, params) -> list[torch.Tensor]:
    """Reference: one autograd.grad per case (zeros for a case with neither labels nor mask)."""
    rows = []
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


def _dp_step(model, cached: EncodedCases, *, per_case=None):
    params = list(model.head.parameters())
    optimizer = DPOptimizer(
        torch.optim.Adam(params, lr=1e-4),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=len(cached.case_ids),
        loss_reduction="mean",
        generator=torch.Generator().manual_seed(0),
    )
    if per_case is None:
        return lambda: _private_step(
            model, cached=cached, optimizer=optimizer, rate=1.0, generator=None
        )

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, per_case(model, cached, params=params), strict=True):
            p.grad_sample = g
        optimizer.step()

    return step


def _plain_step(model, cached: EncodedCases):
    optimizer = torch.optim.Adam(model.head.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        task_loss(model, cached).backward()
        optimizer.step()

    return step


def measure(*, preset: str, overrides: list[str], batch: int, repeats: int) -> dict[str, float]:
    config = load_model_config(preset, overrides=overrides)
    model = build_model(config, joint="knee", seed=0)
    set_trainable(model, mode="linear")
    cases = synthetic_cases(n=batch, slices=config.input_slices, size=config.input_size)
    with torch.no_grad():
        cached = encode_in_chunks(model, cases, batch_size=batch)
    steps = {
        "plain": _plain_step(model, cached),
        "dp": _dp_step(model, cached),
        "dp-loop": _dp_step(model, cached, per_case=loop_gradients),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(repeats + 1):  # one warm-up round
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            if i >= 1:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=None, help="model preset (default: the reproduction's)")
    parser.add_argument("--no-overrides", action="store_true", help="the preset as it is")
    parser.add_argument("--batch", type=int, default=8, help="cases per step (default 8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write figures")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_reproduce_config().model
    preset = args.preset or model.preset
    overrides = [] if args.no_overrides else list(model.overrides)
    result = measure(preset=preset, overrides=overrides, batch=args.batch, repeats=args.repeats)
    print(
        f"preset {preset} ({len(overrides)} overrides), {args.batch} cases/step, "
        f"torch threads {torch.get_num_threads()}"
    )
    for name, seconds in result.items():
        print(f"{name:>8}: {seconds:.3f} s/step  ratio to plain {seconds / result['plain']:.2f}x")
    print(f"dp-loop / dp: {result['dp-loop'] / result['dp']:.2f}x")
    if args.json:
        payload = {
            "preset": preset,
            "overrides": overrides,
            "batch": args.batch,
            "threads": torch.get_num_threads(),
            "seconds_per_step": result,
            "ratio_to_plain": {name: s / result["plain"] for name, s in result.items()},
            "loop_over_vmap": result["dp-loop"] / result["dp"],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
