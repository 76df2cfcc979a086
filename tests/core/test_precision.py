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


def test_bf16_gradients_that_disagree_send_auto_to_fp32_and_refuse_bf16(monkeypatch):
    import core.precision as precision

    monkeypatch.setattr(precision, "bf16_conv3d_grads_agree", lambda shapes, device="cpu": False)
    shapes = [(2, 16)]
    assert resolve_precision("auto", flags=["avx512_bf16"], conv_shapes=shapes) is Precision.fp32
    assert resolve_precision("fp32", flags=["avx512_bf16"], conv_shapes=shapes) is Precision.fp32
    with pytest.raises(ValueError, match=r"bf16 Conv3d gradients are wrong.*\(2, 16\)"):
        resolve_precision("bf16", flags=["avx512_bf16"], conv_shapes=shapes)
    monkeypatch.setattr(precision, "bf16_conv3d_grads_agree", lambda shapes, device="cpu": True)
    assert resolve_precision("auto", flags=["avx512_bf16"], conv_shapes=shapes) is Precision.bf16


def test_gradient_check_passes_where_kernels_are_correct_and_keeps_the_rng():
    from core.precision import bf16_conv3d_grads_agree

    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    assert bf16_conv3d_grads_agree([(4, 8), (4, 16)])  # depth 4: correct on every CPU measured
    assert torch.equal(torch.rand(3), before)


@pytest.mark.parametrize("slices", [8, 16])
def test_gradients_under_auto_precision_agree_with_fp32(slices):
    """8 slices over three levels puts 2-slice maps in the decoder, where torch 2.13's CPU bf16
    Conv3d weight gradients are garbage (1e36 or NaN); auto must not train on such gradients."""
    from core.config import ModelConfig, PretrainConfig
    from core.diffusion.ddpm import denoising_loss
    from core.train.pretrain import Pretrainer
    from core.views import View
    from tests.core.tiny_model import TINY_MODEL

    three_levels = {"channels": [8, 16, 16], "attention_levels": [False, False, True]}
    backbone = {**TINY_MODEL["backbone"], **three_levels}
    model = load_config(
        ModelConfig, data={**TINY_MODEL, "input_slices": slices, "backbone": backbone}
    )
    clean = torch.rand((2, 1, slices, model.input_size, model.input_size)) * 2 - 1
    train = PretrainConfig(steps=1, batch_size=2, precision=Precision.auto)
    trainer = Pretrainer(
        config=PretrainRunConfig(model=model, train=train), volumes={View("sagittal"): []}
    )
    unet = trainer.unets[View("sagittal")]
    grads = []
    for precision in (trainer.precision, Precision.fp32):
        unet.zero_grad(set_to_none=True)
        with autocast(precision):
            loss = denoising_loss(
                unet, trainer.scheduler, clean, generator=torch.Generator().manual_seed(0)
            )
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in unet.named_parameters()})
    for name, grad in grads[0].items():
        reference = grads[1][name]
        error = (grad - reference).abs().max() / reference.abs().max().clamp_min(1e-6)
        assert torch.isfinite(grad).all() and error < 0.2, (name, float(error))
