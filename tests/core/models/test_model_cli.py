"""The `orthofed pretrain|finetune|evaluate` contract, on random cases (site reading mocked)."""

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from core.commands import model as model_commands
from core.config import PreprocessConfig
from core.data.manifest import SiteManifest, load_site, write_manifest
from core.views import KNEE_STRUCTURES, LABELS, Joint
from tests.core.tiny_model import random_case

TINY = [
    "model.input_slices=8",
    "model.input_size=32",
    "model.backbone.channels=[8,16]",
    "model.backbone.attention_levels=[false,true]",
    "model.backbone.norm_num_groups=8",
    "model.backbone.num_head_channels=8",
    "model.heads.view_dim=16",
    "model.heads.seg_channels=8",
    "train.batch_size=2",
]


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
