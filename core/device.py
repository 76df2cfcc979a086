"""Where pretraining runs: `pretrain.train.device: auto | cpu | cuda`.

`auto` (the default) takes the site's CUDA GPU when PyTorch sees one and the CPU otherwise, so
one experiment file serves CPU and GPU sites alike; `cpu` and `cuda` force a device (`cuda`
is refused in one line where no GPU is visible). Only pretraining, the compute-heavy phase
(the `paper` preset's 21,500 steps per view), moves to the GPU; fine-tuning, features and
evaluation run on the CPU.

What stays the same on every device: batches, timesteps and noise are drawn from the run's
CPU generator and then moved, so a seed draws the same data on a CPU and a GPU; weights,
EMA, optimizer state and replies leave the trainer as CPU tensors, so checkpoints, resume
files and messages do not depend on where they were trained. What does not: bit-identical
resume is a CPU property (CUDA convolution kernels may be nondeterministic).

Client DP steps run on the CPU (their Poisson sampling and Opacus's noise use CPU
generators): a DP pretraining round resolves `auto` to `cpu`, and an explicit `cuda` with
client DP is refused when the experiment is loaded.
"""

from __future__ import annotations

import os
from enum import StrEnum


def available_cores() -> int:
    """The CPU cores this process may run on (a container's or taskset's limit, not the
    host's count), for work that splits into processes (e.g. phantom cases)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Device(StrEnum):
    """`train.device` values (config files use these names)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def resolve_device(setting: Device | str, *, key: str = "train") -> str:
    """`cpu` or `cuda` for a `train.device` setting on this machine."""
    import torch  # here, not at the top: core.config imports this module, and

    # a CLI start-up (`orthofed --help`) must not pay for torch
    chosen = Device(setting)
    available = torch.cuda.is_available()
    if chosen is Device.auto:
        return "cuda" if available else "cpu"
    if chosen is Device.cuda and not available:
        raise ValueError(
            f"{key}.device=cuda: PyTorch sees no CUDA GPU on this machine "
            "(torch.cuda.is_available() is False); use device auto or cpu"
        )
    return chosen.value


def refuse_cuda_with_dp(setting: Device | str, *, key: str = "train") -> None:
    """Client DP steps run on the CPU (see the module docstring); an explicit cuda is refused."""
    if Device(setting) is Device.cuda:
        raise ValueError(
            f"{key}.device=cuda is not supported with client DP (its sampling and noise are "
            f"drawn by CPU generators): set {key}.device=auto or cpu"
        )
