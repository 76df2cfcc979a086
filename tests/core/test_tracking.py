"""TensorBoard tracking: the scalars of a federation round, the `tracking` setting, and the
local `pretrain`/`finetune` commands writing event files (tiny shapes)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from core import tracking
from core.commands import model as model_commands
from core.config import PreprocessConfig
from core.data.manifest import SiteManifest, load_site, write_manifest
from core.federation.experiment import load_experiment
from core.tracking import (
    TENSORBOARD_DIR,
    NullTracker,
    Tracking,
    history_scalars,
    log_finetune_epoch,
    log_history_record,
    open_tracker,
)
from core.views import Joint
from tests.core.tiny_model import model_overrides, random_case

TINY = [*model_overrides(), "train.batch_size=2"]  # tests/core/tiny_model.py

RECORD = {
    "phase": "pretrain",
    "round": 2,
    "index": 2,
    "sampled": ["ankle-c", "knee-a"],
    "wall_s": 3.5,
    "groups": {
        "backbone.sagittal": {"sites": ["ankle-c", "knee-a"], "examples": 7},
        "backbone.axial": {"sites": ["ankle-c"], "examples": 3},
    },
    "rejected": [{"site": "knee-b", "group": "*", "reason": "no data"}],
    "missing": [],
    "bytes_down": 2000,
    "bytes_up": 1500,
    "metrics": {
        "knee-a": {"loss/sagittal": 0.25, "compute_s": 1.5},
        "ankle-c": {"loss/sagittal": 0.75, "loss/axial": 0.5, "compute_s": 2.0, "epsilon": 1.2},
    },
    "epsilon": {"sites": {"ankle-c": 1.2}, "groups": {"backbone.sagittal": 0.8}},
}


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in `log_dir` as [(step, value)] (purged points dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_history_record_reads_back_from_event_files(tmp_path):
    with open_tracker("tensorboard", log_dir=tmp_path / "tb") as tracker:
        log_history_record(tracker, RECORD)
    scalars = read_scalars(tmp_path / "tb")
    expected = {
        "pretrain/loss/sagittal/knee-a": 0.25,
        "pretrain/loss/sagittal/ankle-c": 0.75,
        "pretrain/loss/sagittal/mean": 0.5,
        "pretrain/loss/axial/ankle-c": 0.5,
        "pretrain/loss/axial/mean": 0.5,
        "round/seconds": 3.5,
        "round/bytes_up": 1500,
        "round/bytes_down": 2000,
        "round/sites": 2,
        "round/rejected": 1,
        "round/missing": 0,
        "round/compute_s/knee-a": 1.5,
        "round/compute_s/ankle-c": 2.0,
        "groups/backbone.sagittal/examples": 7,
        "groups/backbone.sagittal/sites": 2,
        "groups/backbone.axial/examples": 3,
        "groups/backbone.axial/sites": 1,
        "privacy/epsilon/site/ankle-c": 1.2,
        "privacy/epsilon/group/backbone.sagittal": 0.8,
    }
    assert scalars == {tag: [(2, pytest.approx(v))] for tag, v in expected.items()}


def test_evaluate_record_logs_site_and_weighted_metrics():
    record = {
        "phase": "evaluate",
        "index": 4,
        "metrics": {"knee-a": {"macro_auc": 0.8, "n_cases": 3, "auc/acl": float("nan")}},
        "weighted": {"macro_auc": 0.8},
    }
    scalars = history_scalars(record)
    assert scalars["evaluate/macro_auc/knee-a"] == 0.8
    assert scalars["evaluate/macro_auc/weighted"] == 0.8
    assert not any("acl" in tag for tag in scalars)  # non-finite values are not logged


def test_a_resumed_tracker_replaces_points_instead_of_duplicating(tmp_path):
    with open_tracker("tensorboard", log_dir=tmp_path) as tracker:
        for step in (1, 2, 3):
            tracker.scalars({"a/b": float(step)}, step=step)
    with open_tracker("tensorboard", log_dir=tmp_path, purge_step=2) as tracker:
        for step in (2, 3, 4):
            tracker.scalars({"a/b": 10.0 * step}, step=step)
    assert read_scalars(tmp_path)["a/b"] == [(1, 1.0), (2, 20.0), (3, 30.0), (4, 40.0)]


def test_finetune_epoch_tags(tmp_path):
    with open_tracker("tensorboard", log_dir=tmp_path) as tracker:
        log_finetune_epoch(tracker, epoch=1, loss=0.5, validation={"cls": 0.6, "seg": 1.1})
    assert read_scalars(tmp_path) == {
        "finetune/loss": [(1, 0.5)],
        "finetune/val_loss/cls": [(1, pytest.approx(0.6))],
        "finetune/val_loss/seg": [(1, pytest.approx(1.1))],
    }


def test_tracking_none_writes_nothing(tmp_path):
    tracker = open_tracker(Tracking.none, log_dir=tmp_path / "tb")
    assert type(tracker) is NullTracker
    log_history_record(tracker, RECORD)
    assert not (tmp_path / "tb").exists()


def test_missing_tensorboard_is_one_line_telling_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ValueError, match=r"pip install 'orthofed\[tracking\]'") as err:
        open_tracker("tensorboard", log_dir=tmp_path)
    assert "\n" not in str(err.value)
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"orthofed\[tracking\]"):
        tracking.require_tracking("tensorboard")


def test_experiment_refuses_an_unknown_tracking_value(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: t\ntracking: bogus\n")
    with pytest.raises(ValueError, match="tracking") as err:
        load_experiment(path)
    assert "\n" not in str(err.value)
    path.write_text("name: t\n")
    assert load_experiment(path).tracking is Tracking.none
    on = load_experiment(path, overrides=["tracking=tensorboard"])
    assert on.tracking is Tracking.tensorboard


@pytest.fixture
def cli(tmp_path, monkeypatch):
    (tmp_path / "site").mkdir()
    write_manifest(SiteManifest(joint="knee", site_id="s1"), tmp_path / "site" / "site.yaml")
    rng = np.random.default_rng(0)
    cases = [random_case(f"c{i}", joint=Joint.KNEE, rng=rng, heldout=i >= 6) for i in range(7)]

    def fake_site_cases(site_path, *, model_config):
        return load_site(site_path), cases, PreprocessConfig(slices=8, size=32).key()

    monkeypatch.setattr(model_commands, "_site_cases", fake_site_cases)
    app = typer.Typer()
    model_commands.register(app)
    return app


def test_local_pretrain_and_finetune_write_event_files(cli, tmp_path):
    runner = CliRunner()
    site, pre = str(tmp_path / "site"), tmp_path / "pre"
    args = ["pretrain", "--site", site, "--out", str(pre), "--tracking", "tensorboard"]
    result = runner.invoke(cli, [*args, "--steps", "1", *TINY, "train.log_every=1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [*args, "--steps", "2", "--resume", *TINY, "train.log_every=1"])
    assert result.exit_code == 0, result.output
    scalars = read_scalars(pre / TENSORBOARD_DIR)
    assert {"pretrain/loss/sagittal", "pretrain/loss/axial", "pretrain/lr"} <= set(scalars)
    assert [step for step, _ in scalars["pretrain/loss/coronal"]] == [1, 2]
    result = runner.invoke(
        cli,
        ["finetune", "--site", site, "--init", str(pre / "checkpoint.safetensors")]
        + ["--out", str(tmp_path / "ft"), "--epochs", "2", "--tracking", "tensorboard"]
        + ["train.val_fraction=0.4"],
    )
    assert result.exit_code == 0, result.output
    scalars = read_scalars(tmp_path / "ft" / TENSORBOARD_DIR)
    assert set(scalars) == {"finetune/loss", "finetune/val_loss/cls", "finetune/val_loss/seg"}
    assert [step for step, _ in scalars["finetune/loss"]] == [1, 2]


def test_local_tracking_is_off_by_default_and_checked(cli, tmp_path):
    runner = CliRunner()
    out = tmp_path / "pre"
    args = ["pretrain", "--site", str(tmp_path / "site"), "--out", str(out), "--steps", "1"]
    assert runner.invoke(cli, [*args, *TINY]).exit_code == 0
    assert not (out / TENSORBOARD_DIR).exists()
    result = runner.invoke(cli, [*args, "--tracking", "bogus", *TINY])
    assert result.exit_code == 2 and "bogus" in result.output
