"""The `orthofed pretrain|finetune|evaluate` contract, on random cases (site reading mocked)."""

import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from core.commands import model as model_commands
from core.config import PreprocessConfig
from core.data.manifest import SiteManifest, load_site, write_manifest
from core.views import KNEE_STRUCTURES, LABELS, Joint
from tests.core.tiny_model import model_overrides, random_case

TINY = [*model_overrides(), "train.batch_size=2"]  # tests/core/tiny_model.py


@pytest.fixture
def app(tmp_path, monkeypatch):
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    write_manifest(SiteManifest(joint="knee", site_id="s1"), site_dir / "site.yaml")
    rng = np.random.default_rng(0)
    cases = [random_case(f"c{i}", joint=Joint.KNEE, rng=rng, heldout=i >= 5) for i in range(8)]

    def fake_site_cases(site_path, *, model_config):
        assert (model_config.input_slices, model_config.input_size) == (8, 32)
        return load_site(site_path), cases, PreprocessConfig(slices=8, size=32).key()

    monkeypatch.setattr(model_commands, "_site_cases", fake_site_cases)
    cli = typer.Typer()
    model_commands.register(cli)
    return cli, site_dir


def test_pretrain_finetune_evaluate_write_the_contract_files(app, tmp_path):
    cli, site = app
    runner = CliRunner()
    pre = runner.invoke(
        cli,
        ["pretrain", "--site", str(site), "--out", str(tmp_path / "pre"), "--steps", "1", *TINY],
    )
    assert pre.exit_code == 0, pre.output
    ckpt = tmp_path / "pre" / "checkpoint.safetensors"
    assert ckpt.is_file() and ckpt.with_suffix(".json").is_file()
    ft = runner.invoke(
        cli,
        [
            "finetune",
            "--site",
            str(site),
            "--init",
            str(ckpt),
            "--out",
            str(tmp_path / "ft"),
            "--mode",
            "linear",
            "--epochs",
            "1",
            "--label-fraction",
            "0.5",
        ],
    )
    assert ft.exit_code == 0, ft.output
    assert "on 2 cases" in ft.output  # half of the 5 training cases, rounded
    ev = runner.invoke(
        cli,
        [
            "evaluate",
            "--site",
            str(site),
            "--checkpoint",
            str(tmp_path / "ft" / "checkpoint.safetensors"),
            "--out",
            str(tmp_path / "rep"),
        ],
    )
    assert ev.exit_code == 0, ev.output
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["joint"] == "knee" and metrics["n_cases"] == 3
    assert set(metrics["auc"]) == set(LABELS[Joint.KNEE])
    assert set(metrics["dice"]) == set(KNEE_STRUCTURES)
    assert {"macro_auc", "mean_dice"} <= set(metrics)
    _check_cards(cli, runner, pre=ckpt, ft=tmp_path / "ft" / "checkpoint.safetensors")


def _check_cards(cli, runner, *, pre, ft):
    """Thresholds chosen at fine-tuning, replaced by evaluate's; `info` shows both runs."""
    manifest = json.loads(ft.with_suffix(".json").read_text())
    stored = manifest["thresholds"]["knee"]
    assert set(stored["values"]) == set(LABELS[Joint.KNEE])
    assert "evaluate" in stored["source"] and "training cases of site s1" in stored["source"]
    assert manifest["evaluations"]["knee/s1"]["n_cases"] == 3
    card = json.loads(runner.invoke(cli, ["info", str(ft), "--json"]).output)
    assert card["kind"] == "finetune" and card["training"]["site_id"] == "s1"
    assert card["training"]["mode"] == "linear" and card["joints"]["knee"]["segmentation"]
    text = runner.invoke(cli, ["info", str(pre)])
    assert text.exit_code == 0, text.output
    assert "kind: pretrain" in text.output and "step: 1" in text.output
    assert "thresholds: none stored" in text.output
    for case in ("c0", "c1", "c7"):  # no case ids anywhere in the card
        assert f'"{case}"' not in json.dumps(card)


def test_finetune_stores_thresholds_from_its_own_training_cases(app, tmp_path):
    cli, site = app
    runner = CliRunner()
    pre = tmp_path / "pre" / "checkpoint.safetensors"
    args = ["--site", str(site), "--out", str(tmp_path / "pre"), "--steps", "1", *TINY]
    assert runner.invoke(cli, ["pretrain", *args]).exit_code == 0
    ft = runner.invoke(
        cli,
        ["finetune", "--site", str(site), "--init", str(pre), "--out", str(tmp_path / "ft")]
        + ["--epochs", "1", "--label-fraction", "0.5"],
    )
    assert ft.exit_code == 0, ft.output
    stored = json.loads((tmp_path / "ft" / "checkpoint.json").read_text())["thresholds"]
    # the label fraction's 2 cases only, never the 3 held-out ones or unused training labels
    assert (
        "Youden J on 2 labeled training cases of site s1 (orthofed finetune"
        in (stored["knee"]["source"])
    )
    assert all(0.0 <= v <= 1.0 for v in stored["knee"]["values"].values())


def test_user_errors_are_one_line(app, tmp_path):
    cli, site = app
    runner = CliRunner()
    result = runner.invoke(
        cli, ["pretrain", "--site", str(site), "--out", str(tmp_path / "x"), "--preset", "huge"]
    )
    assert result.exit_code == 2
    assert "unknown model preset 'huge'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(
        cli,
        [
            "evaluate",
            "--site",
            str(site),
            "--checkpoint",
            str(tmp_path / "none.safetensors"),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2 and "not found" in result.output


def test_negative_steps_are_refused_before_anything_is_read_or_written(app, tmp_path, monkeypatch):
    cli, site = app

    def no_reading(*_args, **_kwargs):
        raise AssertionError("the site was read")

    monkeypatch.setattr(model_commands, "_site_cases", no_reading)
    out = tmp_path / "pre"
    args = ["pretrain", "--site", str(site), "--out", str(out), "--steps", "-1", *TINY]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert (
        result.output.strip() == "error: train.steps must be >= 0 (0 = the initialisation), got -1"
    )
    assert not out.exists()


def test_cuda_without_a_gpu_is_refused_before_anything_is_read(app, tmp_path, monkeypatch):
    cli, site = app

    def no_reading(*_args, **_kwargs):
        raise AssertionError("the site was read")

    monkeypatch.setattr(model_commands, "_site_cases", no_reading)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "pre"
    args = ["pretrain", "--site", str(site), "--out", str(out), "train.device=cuda", *TINY]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error: train.device=cuda: PyTorch sees no CUDA GPU")
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "epochs"),
    [
        (["train.epochs=2", "train.min_steps=7"], 3),  # 5 training cases, batch 2: 3 steps/epoch
        (["--epochs", "2", "train.min_steps=7"], 3),  # the floor given explicitly still holds
        (["--epochs", "2"], 2),  # an explicit --epochs is the budget: no default floor
    ],
)
def test_finetune_step_floor_and_explicit_epochs(app, tmp_path, extra, epochs):
    cli, site = app
    runner = CliRunner()
    args = ["--site", str(site), "--out", str(tmp_path / "pre"), "--steps", "1", *TINY]
    assert runner.invoke(cli, ["pretrain", *args]).exit_code == 0
    pre = tmp_path / "pre" / "checkpoint.safetensors"
    ft = runner.invoke(
        cli,
        ["finetune", "--site", str(site), "--init", str(pre), "--out", str(tmp_path / "ft")]
        + ["train.val_fraction=0", "train.batch_size=2", *extra],
    )
    assert ft.exit_code == 0, ft.output
    assert f"{epochs} epochs" in ft.output
