"""Training precision chosen by hardware capability."""

import pytest
import torch

from core.config import PretrainRunConfig, load_config
from core.precision import (
    Precision,
    autocast,
    cpu_flags,
    refuse_bf16_with_dp,
    resolve_precision,
)

X86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"
OLD = "processor\t: 0\nflags\t\t: fpu sse2 avx2\n"


@pytest.mark.parametrize(
    ("cpuinfo", "expected"), [(X86, Precision.bf16), (ARM, Precision.bf16), (OLD, Precision.fp32)]
)
def test_auto_follows_the_cpu_flags(tmp_path, cpuinfo, expected):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    flags = cpu_flags(path)
    assert flags and flags == sorted(flags)
    assert resolve_precision("auto", flags=flags) is expected


def test_unreadable_cpuinfo_means_no_flags_and_fp32(tmp_path):
    assert cpu_flags(tmp_path / "missing") == []
    assert resolve_precision(Precision.auto, flags=[]) is Precision.fp32


@pytest.mark.parametrize("forced", ["fp32", "bf16"])
def test_explicit_precision_is_kept_whatever_the_hardware(forced):
    for flags in ([], ["avx512_bf16"]):
        assert resolve_precision(forced, flags=flags) is Precision(forced)


def test_config_rejects_an_unknown_precision_naming_the_key():
    with pytest.raises(ValueError, match="precision"):
        load_config(PretrainRunConfig, overrides=["train.precision=fp16"])
    config = load_config(PretrainRunConfig, overrides=["train.precision=bf16"])
    assert config.train.precision is Precision.bf16


def test_bf16_autocast_runs_convolutions_in_bf16_and_fp32_does_not():
    conv = torch.nn.Conv3d(1, 2, 3)
    x = torch.randn(1, 1, 4, 4, 4)
    with autocast(Precision.bf16):
        assert conv(x).dtype == torch.bfloat16
    with autocast(Precision.fp32):
        assert conv(x).dtype == torch.float32


def test_client_dp_refuses_explicit_bf16_only():
    refuse_bf16_with_dp("auto")
    refuse_bf16_with_dp("fp32")
    with pytest.raises(ValueError, match="finetune.train.precision=bf16 is not supported"):
        refuse_bf16_with_dp("bf16", key="finetune.train")
