import json
import math

import numpy as np
import pytest
import torch

from core.checkpoint import load_checkpoint
from core.config import PretrainRunConfig, load_config
from core.train.ema import create_ema
from core.train.loops import run_pretraining
from core.train.pretrain import Pretrainer, training_volumes
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
    assert (tmp_path / "a" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_log_reader_and_running_mean(tmp_path):
    from core.reporting.pretrain_plot import read_loss_log, running_mean, write_loss_plot

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "view": "axial", "loss": 2.0}\n{"torn line\n')
    assert read_loss_log(log) == {"axial": [(1, 2.0)]}
    assert running_mean([1.0, 3.0, 5.0, 7.0], window=2).tolist() == [1.0, 2.0, 4.0, 6.0]
    assert write_loss_plot(tmp_path / "missing.jsonl", tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


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


def test_learning_rate_warms_up_then_follows_the_schedule():
    import math

    from core.config import LrSchedule, PretrainConfig
    from core.train.pretrain import COSINE_FLOOR, learning_rate

    constant = PretrainConfig(steps=100, lr=1e-3, warmup_steps=10)
    assert learning_rate(constant, step=0) == pytest.approx(1e-4)
    assert learning_rate(constant, step=9) == pytest.approx(1e-3)
    assert learning_rate(constant, step=99) == pytest.approx(1e-3)
    cosine = PretrainConfig(steps=100, lr=1e-3, lr_schedule=LrSchedule.cosine)
    assert learning_rate(cosine, step=0) == pytest.approx(1e-3)
    assert learning_rate(cosine, step=50) == pytest.approx(1e-3 * (1 + COSINE_FLOOR) / 2)
    assert learning_rate(cosine, step=100) == pytest.approx(1e-3 * COSINE_FLOOR)
    assert learning_rate(cosine, step=500) == pytest.approx(1e-3 * COSINE_FLOOR)
    federated = PretrainConfig(steps=10, lr=1e-3, lr_schedule="cosine", lr_decay_steps=40)
    half = 1e-3 * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert learning_rate(federated, step=10) == pytest.approx(half)


@pytest.mark.parametrize(
    ("override", "key"),
    [("steps=-1", "train.steps"), ("batch_size=0", "train.batch_size"), ("lr=-1", "train.lr"),
     ("warmup_steps=-5", "train.warmup_steps"), ("ema_decay=1.5", "train.ema_decay")],
)  # fmt: skip
def test_wrong_pretraining_values_are_named(override, key):
    from core.config import PretrainConfig, load_config
    from core.train.pretrain import check_pretrain_config

    with pytest.raises(ValueError, match=key):
        check_pretrain_config(load_config(PretrainConfig, overrides=[override]))


def test_resumed_trainer_continues_on_the_same_learning_rate_curve(tiny_config):
    from core.config import PretrainConfig, PretrainRunConfig
    from core.train.pretrain import Pretrainer
    from core.views import View

    rng = np.random.default_rng(0)
    volumes = {View("axial"): [rng.uniform(-1, 1, (1, 8, 32, 32)).astype(np.float16)] * 2}
    train = PretrainConfig(steps=4, batch_size=1, lr=1e-3, warmup_steps=3, precision="fp32")
    config = PretrainRunConfig(model=tiny_config, train=train)
    first = Pretrainer(config=config, volumes=volumes)
    first.train_step()
    second = Pretrainer(config=config, volumes=volumes)
    tensors, meta = first.state()  # copied, as a saved state file would be
    second.restore(step=first.step, tensors={k: t.clone() for k, t in tensors.items()}, meta=meta)
    for trainer in (first, second):
        trainer.train_step()
    assert second.optimizers[View("axial")].param_groups[0]["lr"] == pytest.approx(2e-3 / 3)
    a, b = first.backbone_weights(ema=False), second.backbone_weights(ema=False)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_trainer_hands_out_cpu_tensors_whatever_its_device(knee_cases, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = _config(1)
    trainer = Pretrainer(config=config, volumes=training_volumes(knee_cases, config=config.model))
    assert trainer.device == "cpu"  # auto without a GPU
    trainer.train_step()
    tensors, _ = trainer.state()
    weights = trainer.backbone_weights()
    assert {t.device.type for t in [*tensors.values(), *weights.values()]} == {"cpu"}
