import json
import math

import pytest
import torch

from core.checkpoint import load_checkpoint
from core.config import PretrainRunConfig, load_config
from core.train.ema import create_ema
from core.train.loops import run_pretraining
from core.train.pretrain import training_volumes
from core.views import View
from tests.core.tiny_model import TINY_MODEL


def _config(steps, **train):
    data = {
        "model": TINY_MODEL,
        "train": {"steps": steps, "batch_size": 2, "log_every": 1, "checkpoint_every": 1, **train},
    }
    return load_config(PretrainRunConfig, data=data)


def test_pretraining_uses_non_heldout_cases_only(knee_cases, tiny_config):
    volumes = training_volumes(knee_cases, config=tiny_config)
    n_train = sum(not c.heldout for c in knee_cases)
    assert len(volumes[View.SAGITTAL]) == n_train
    assert len(volumes[View.AXIAL]) == sum(
        not c.heldout and View.AXIAL in c.views for c in knee_cases
    )
    assert len(volumes[View.AXIAL]) < n_train


def test_wrong_volume_shape_names_the_case(knee_cases, tiny_config):
    tiny_config.input_size = 16
    with pytest.raises(ValueError, match="case c01 sagittal: volume shape"):
        training_volumes(knee_cases, config=tiny_config)


def test_pretrain_then_resume_matches_an_uninterrupted_run(knee_cases, tmp_path):
    first = run_pretraining(
        knee_cases, config=_config(1), run_dir=tmp_path / "a", preprocess_key="k"
    )
    assert first.step == 1 and all(math.isfinite(x) for x in first.losses.values())
    resumed = run_pretraining(
        knee_cases, config=_config(2), run_dir=tmp_path / "a", preprocess_key="k", resume=True
    )
    straight = run_pretraining(
        knee_cases, config=_config(2), run_dir=tmp_path / "b", preprocess_key="k"
    )
    assert resumed.step == 2
    assert resumed.losses == straight.losses
    a, b = load_checkpoint(resumed.checkpoint), load_checkpoint(straight.checkpoint)
    assert a.manifest["step"] == 2 and a.manifest["kind"] == "pretrain"
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in b.tensors)
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 1, 1, 2, 2, 2]
    assert len(list((tmp_path / "a").glob("state-*.safetensors"))) == 1


def test_existing_run_needs_resume_and_same_model(knee_cases, tmp_path):
    run_pretraining(knee_cases, config=_config(1), run_dir=tmp_path, preprocess_key="k")
    with pytest.raises(ValueError, match="--resume"):
        run_pretraining(knee_cases, config=_config(2), run_dir=tmp_path, preprocess_key="k")
    other = _config(2)
    other.model.heads.view_dim = 8
    with pytest.raises(ValueError, match="different model configuration"):
        run_pretraining(knee_cases, config=other, run_dir=tmp_path, preprocess_key="k", resume=True)


def test_ema_copies_first_then_blends():
    layer = torch.nn.Linear(2, 1, bias=False)
    ema = create_ema(layer, decay=0.5, warmup=False)
    layer.weight.data.fill_(2.0)
    ema.update_parameters(layer)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 2.0))
    layer.weight.data.fill_(4.0)
    ema.update_parameters(layer)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 3.0))
    with pytest.raises(ValueError, match="decay"):
        create_ema(layer, decay=1.5)
