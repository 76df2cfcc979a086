"""`pretrain.train.device`: resolution and refusals at load time.

The trainer's side (CPU tensors out, whatever the device) is in tests/core/train/test_pretrain.py.
CI has no GPU, so what a CUDA run does is not tested here: `bench/gpu_step.py` measures it on a
GPU machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.config import PretrainRunConfig, load_config
from core.device import Device, resolve_device
from core.federation.experiment import load_experiment

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "experiments"


def test_auto_takes_the_gpu_only_where_pytorch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device(Device.cpu) == "cpu"


def test_cuda_without_a_gpu_is_one_line_naming_the_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"pretrain\.train\.device=cuda: PyTorch sees no CUDA"):
        resolve_device("cuda", key="pretrain.train")


def test_unknown_device_is_refused_at_load():
    with pytest.raises(ValueError, match="device"):
        load_config(PretrainRunConfig, data={"train": {"device": "tpu"}})


def test_client_dp_refuses_an_explicit_cuda_at_load():
    with pytest.raises(ValueError, match=r"pretrain\.train\.device=cuda is not supported"):
        load_experiment(CONFIGS / "demo-dp.yaml", overrides=["pretrain.train.device=cuda"])
    # auto stays allowed: a DP round resolves it to the CPU
    load_experiment(CONFIGS / "demo-dp.yaml", overrides=["pretrain.train.device=auto"])


def test_available_cores_follows_the_affinity_a_process_is_given():
    # a taskset or container cpuset limit, not the host's count: sites and phantom workers
    # sized on os.cpu_count() would oversubscribe the cores they may use
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " + (
        "from core.device import available_cores; print(available_cores(), os.cpu_count())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    limited, host = map(int, done.stdout.split())
    assert (limited, host) == (1, os.cpu_count())
