"""Training precision by capability: bf16 autocast where the hardware runs it fast, fp32 elsewhere.

`train.precision: auto` (the default) resolves once per run to `bf16` on CUDA GPUs that
support it and on CPUs with bf16 units (x86 `avx512_bf16` or `amx_bf16`, Arm `bf16`), and to
`fp32` everywhere else: on a CPU without them, PyTorch's bf16 3D convolutions fall back to slow
reference kernels (measured 5-50x slower per step). Measured on a 2-core AMD EPYC with
`avx512_bf16`: the tiny preset's pretraining step is 1.5x faster in bf16 with the same loss
curve (`python bench/train_step.py --bf16-curve 200`). `fp32` and `bf16` force a precision.

bf16 is also checked for correctness, not only speed: with torch 2.13's CPU kernels, the weight
gradient of a bf16 Conv3d over feature maps two slices deep is wrong (relative error ~1e36 or
NaN, every time, for 16+ channels; depths 1 and >= 3 agree with fp32 within 0.5%), which a
test model with 8 input slices and three levels hits. `resolve_precision` is therefore given
the (depth, channels) of the model's 3D feature maps and runs a small fp32-vs-bf16 gradient
check on exactly those shapes: `auto` falls back to fp32 and an explicit `bf16` is refused
when they disagree.

Client DP steps always run in fp32: per-sample gradient norms are clipped to the bound the
privacy accounting assumes, and bf16 rounding (8 mantissa bits) could let a clipped gradient
exceed it; `auto` therefore resolves to fp32 there and `bf16` is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

# x86 AVX-512 BF16 and AMX tiles; `bf16` is Arm's FEAT_BF16 in /proc/cpuinfo "Features".
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
CPUINFO = Path("/proc/cpuinfo")


class Precision(StrEnum):
    """`train.precision` values (config files use these names)."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


def cpu_flags(cpuinfo: Path = CPUINFO) -> list[str]:
    """The CPU feature flags the kernel reports (x86 "flags", Arm "Features"); [] if unknown."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return sorted(set(value.split()))
    return []


def bf16_is_fast(*, device: str = "cpu", flags: list[str] | None = None) -> bool:
    """Whether `device` has native bf16 units (so autocast to bf16 speeds training up)."""
    import torch  # here, not at the top: core.config imports this module, and

    # a CLI start-up (`orthofed --help`) must not pay for torch
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    present = cpu_flags() if flags is None else flags
    return any(flag in present for flag in BF16_CPU_FLAGS)


# A bf16 weight gradient agrees with fp32 when its relative max error is below this (measured
# 0.4-0.5% on correct kernels; the broken ones are off by orders of magnitude).
BF16_GRAD_TOLERANCE = 0.05


def bf16_conv3d_grads_agree(shapes: Iterable[tuple[int, int]], *, device: str = "cpu") -> bool:
    """Whether bf16 autocast gives Conv3d weight gradients that agree with fp32 for feature
    maps of each (depth, channels) in `shapes` (8 x 8 in-plane, batch 2, seeded inputs)."""
    import torch  # here, not at the top: core.config imports this module, and

    # a CLI start-up (`orthofed --help`) must not pay for torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for depth, channels in sorted(set(shapes)):
            conv = torch.nn.Conv3d(channels, channels, 3, padding=1).to(device)
            x = torch.randn((2, channels, depth, 8, 8), device=device)
            upstream = torch.randn((2, channels, depth, 8, 8), device=device)
            grads = []
            for enabled in (True, False):
                conv.weight.grad = None
                with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=enabled):
                    out = conv(x)
                (out.float() * upstream).sum().backward()
                grads.append(conv.weight.grad.detach().float().clone())
            error = (grads[0] - grads[1]).abs().max() / grads[1].abs().max().clamp_min(1e-12)
            if not (torch.isfinite(grads[0]).all() and error < BF16_GRAD_TOLERANCE):
                return False
    return True


def resolve_precision(
    setting: Precision | str,
    *,
    device: str = "cpu",
    flags: list[str] | None = None,
    conv_shapes: Iterable[tuple[int, int]] = (),
) -> Precision:
    """`fp32` or `bf16` for a `train.precision` setting on this machine. With `conv_shapes`
    (the model's 3D feature maps as (depth, channels)), bf16 must also pass the gradient check
    (see the module docstring): `auto` falls back to fp32, an explicit `bf16` is refused."""
    chosen = Precision(setting)
    if chosen is Precision.auto and not bf16_is_fast(device=device, flags=flags):
        return Precision.fp32
    shapes = list(conv_shapes)
    if chosen is Precision.fp32 or not shapes or bf16_conv3d_grads_agree(shapes, device=device):
        return Precision.bf16 if chosen is Precision.auto else chosen
    if chosen is Precision.auto:
        return Precision.fp32
    raise ValueError(
        "train.precision=bf16: this machine's bf16 Conv3d gradients are wrong for this "
        f"model's feature maps (depth, channels) {sorted(set(shapes))}: use precision auto or fp32"
    )


def refuse_bf16_with_dp(setting: Precision | str, *, key: str = "train") -> None:
    """Client DP steps run in fp32 (see the module docstring); an explicit bf16 is refused."""
    if Precision(setting) is Precision.bf16:
        raise ValueError(
            f"{key}.precision=bf16 is not supported with client DP (per-sample clipping must "
            f"be exact for the privacy guarantee): set {key}.precision=auto or fp32"
        )


def autocast(precision: Precision | str, *, device: str = "cpu"):
    """bf16 autocast when `precision` resolves to bf16 (a resolved value is used as is)."""
    import torch  # here, not at the top: core.config imports this module, and

    # a CLI start-up (`orthofed --help`) must not pay for torch
    if resolve_precision(precision, device=device) is Precision.bf16:
        return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()
