import math

import numpy as np
import pytest
import torch

from core.checkpoint import save_checkpoint
from core.config import FinetuneConfig, FinetuneRunConfig, load_config, to_dict
from core.models.backbone import decoder_parameters, encoder_parameters
from core.models.loading import model_from_checkpoint
from core.models.predict import evaluate
from core.models.registry import build_model
from core.train.finetune import finetune, select_training_cases
from core.train.loops import run_finetuning
from core.views import KNEE_STRUCTURES, LABELS, VIEWS, Joint
from tests.core.tiny_model import TINY_MODEL, random_case


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params):
    return [not torch.equal(b, p) for b, p in zip(before, params, strict=True)]


def test_linear_mode_freezes_backbones_and_trains_heads(tiny_config, knee_cases):
    model = build_model(tiny_config, joint="knee")
    backbone = _snapshot(model.backbone.parameters())
    heads = _snapshot(model.head.parameters())
    result = finetune(model, knee_cases, config=FinetuneConfig(epochs=1, batch_size=4))
    assert not any(_changed(backbone, model.backbone.parameters()))
    assert any(_changed(heads, model.head.parameters()))
    assert all(math.isfinite(x) for x in result.epoch_losses)


def test_partial_mode_trains_encoder_but_not_decoder(tiny_config, knee_cases):
    model = build_model(tiny_config, joint="knee")
    unet = model.backbone["sagittal"]
    encoder, decoder = _snapshot(encoder_parameters(unet)), _snapshot(decoder_parameters(unet))
    finetune(model, knee_cases, config=FinetuneConfig(mode="partial", epochs=1, batch_size=8))
    assert not any(_changed(decoder, decoder_parameters(unet)))
    assert any(_changed(encoder, encoder_parameters(unet)))


def test_unknown_mode_is_rejected(tiny_config, knee_cases):
    with pytest.raises(ValueError, match="unknown fine-tuning mode 'half'"):
        finetune(
            build_model(tiny_config, joint="knee"), knee_cases, config=FinetuneConfig(mode="half")
        )


def test_training_cases_exclude_heldout_and_unannotated(tiny_config):
    rng = np.random.default_rng(1)
    cases = [random_case(f"c{i}", joint=Joint.ANKLE, rng=rng, heldout=i < 2) for i in range(6)]
    cases[2] = cases[2].__class__(**{**cases[2].__dict__, "labels": None})
    model = build_model(tiny_config, joint="ankle")
    chosen = select_training_cases(cases, model=model, config=FinetuneConfig())
    assert [c.case_id for c in chosen] == ["c3", "c4", "c5"]
    with pytest.raises(ValueError, match="no labeled training cases"):
        select_training_cases(cases[:3], model=model, config=FinetuneConfig())


@pytest.mark.parametrize("joint", [Joint.KNEE, Joint.SHOULDER])
def test_finetune_checkpoint_then_evaluate(tmp_path, tiny_config, joint):
    rng = np.random.default_rng(2)
    cases = [
        random_case(
            f"c{i}", joint=joint, rng=rng, heldout=i >= 6, missing=(VIEWS[i % 3],) if i % 2 else ()
        )
        for i in range(10)
    ]
    init = tmp_path / "pre" / "checkpoint.safetensors"
    pretrained = build_model(tiny_config, joint="knee")  # knee backbones transfer to any joint
    save_checkpoint(
        init,
        tensors={k: v for k, v in pretrained.state_dict().items() if k.startswith("backbone")},
        config={"model": to_dict(tiny_config)},
        preset="test",
        preprocess_key="k",
    )
    config = load_config(
        FinetuneRunConfig, data={"model": TINY_MODEL, "train": {"epochs": 2, "batch_size": 4}}
    )
    result = run_finetuning(
        cases,
        init=init,
        config=config,
        joint=joint.value,
        run_dir=tmp_path / "ft",
        preprocess_key="k",
    )
    assert result.num_examples == 6 and len(result.epoch_losses) == 2
    model, checkpoint = model_from_checkpoint(result.checkpoint, require_heads=True)
    assert checkpoint.manifest["joint"] == joint.value
    assert torch.equal(
        model.backbone["axial"].conv_in.conv.weight,
        pretrained.backbone["axial"].conv_in.conv.weight,
    )
    report = evaluate(model, cases)
    assert report["joint"] == joint.value and report["n_cases"] == 4
    assert list(report["auc"]) == list(LABELS[joint])
    assert all(v is None or 0.0 <= v <= 1.0 for v in report["auc"].values())
    if joint == Joint.KNEE:
        assert list(report["dice"]) == list(KNEE_STRUCTURES)
        assert 0.0 <= report["mean_dice"] <= 1.0
    else:
        assert "dice" not in report


def test_pretrained_checkpoint_without_heads_cannot_be_evaluated(tmp_path, tiny_config):
    model = build_model(tiny_config, joint="knee")
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(
        path,
        tensors={k: v for k, v in model.state_dict().items() if k.startswith("backbone")},
        config={"model": to_dict(tiny_config)},
        preset="test",
        preprocess_key="k",
        extra={"joint": "knee"},
    )
    with pytest.raises(ValueError, match="no knee heads in this checkpoint"):
        model_from_checkpoint(path, require_heads=True)


def test_subset_seed_keeps_the_label_subset_while_the_seed_changes(tiny_config, knee_cases):
    model = build_model(tiny_config, joint="knee")
    picks = {
        tuple(
            c.case_id
            for c in select_training_cases(
                knee_cases,
                model=model,
                config=FinetuneConfig(label_fraction=0.5, seed=seed),
                subset_seed=7,
            )
        )
        for seed in range(5)
    }
    assert len(picks) == 1
