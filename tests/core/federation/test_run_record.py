"""RUN_DIR/run.json: a resumed federation must have the configuration it started with
(issue 15, defect 2), and its run key stays the same across resumptions (defect 4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.federation.experiment import load_experiment
from core.federation.model_state import model_config_for
from core.federation.run_record import (
    RUN_RECORD,
    check_run,
    read_record,
    resolved_config,
    write_record,
)
from core.federation.rundir import RunDir

DEMO = Path(__file__).resolve().parents[3] / "configs" / "experiments" / "demo.yaml"


def _config(*overrides: str, model: tuple[str, ...] = ()) -> dict:
    experiment = load_experiment(DEMO, overrides=list(overrides))
    experiment.model_overrides += list(model)  # (a dotlist cannot hold nested brackets)
    return resolved_config(experiment, model_config=model_config_for(experiment))


def _started(root: Path, *overrides: str) -> RunDir:
    """A run dir as the ServerApp leaves it once the run started (record, no round yet)."""
    run = RunDir(root)
    write_record(root, check_run(run, config=_config(*overrides), resume=False))
    return run


def _finish(run: RunDir) -> None:
    run.save_round(
        index=1,
        state={"backbone.axial.b": np.zeros(2, np.float32)},
        manifest={},
        history_record={"phase": "evaluate", "round": 1, "index": 1},
        server_state={},
    )


def test_resume_with_the_same_configuration_keeps_the_run_key(tmp_path):
    run = _started(tmp_path)
    stored = read_record(tmp_path)
    assert len(stored.run_key) == 32 and stored.config["model.backbone.channels"] == [8, 16, 32]
    resumed = check_run(run, config=_config(), resume=True)
    assert resumed.run_key == stored.run_key and resumed.digest == stored.digest


def test_resume_with_another_model_is_refused_naming_the_keys(tmp_path):
    run = _started(tmp_path)
    changed = _config(model=("backbone.channels=[8,16,64]",))
    with pytest.raises(ValueError) as err:
        check_run(run, config=changed, resume=True)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"--resume: {tmp_path} was started with another")
    assert "model.backbone.channels [8, 16, 32] -> [8, 16, 64]" in text
    assert RUN_RECORD in text and "--run-dir" in text


def test_a_run_from_before_seg_timestep_refuses_to_resume_onto_t2_features(tmp_path):
    # its run.json has no model.heads.seg_timestep (its heads read t = 10): resuming it under
    # the presets' t = 2 would train those heads on other features, so it is refused
    older = {k: v for k, v in _config().items() if k != "model.heads.seg_timestep"}
    write_record(tmp_path, check_run(RunDir(tmp_path), config=older, resume=False))
    with pytest.raises(ValueError, match=r"model.heads.seg_timestep \(absent\) -> 2"):
        check_run(RunDir(tmp_path), config=_config(), resume=True)


def test_a_finished_run_refuses_another_configuration(tmp_path):
    run = _started(tmp_path)
    _finish(run)
    with pytest.raises(ValueError, match=r"finetune\.train\.lr 0\.005 -> 0\.01"):
        check_run(run, config=_config("finetune.train.lr=0.01"), resume=True)
    assert run.latest()["index"] == 1  # nothing was touched


def test_only_waiting_and_tracking_may_change_on_resume(tmp_path):
    run = _started(tmp_path)
    waiting = _config("pretrain.timeout_s=5", "evaluate.timeout_s=9", "tracking=tensorboard")
    assert check_run(run, config=waiting, resume=True).run_key == read_record(tmp_path).run_key
    with pytest.raises(ValueError, match=r"pretrain\.min_sites 2 -> 3"):
        check_run(run, config=_config("pretrain.min_sites=3"), resume=True)


@pytest.mark.parametrize("content", [None, "junk"])
def test_resume_of_a_folder_without_a_started_run_fails_clearly(tmp_path, content):
    root = tmp_path / "runs" / "dmeo"  # a mistyped --run-dir
    if content is not None:
        root.mkdir(parents=True)
        (root / "notes.txt").write_text(content)
    with pytest.raises(ValueError, match="holds no started federation .*leave out --resume"):
        check_run(RunDir(root), config=_config(), resume=True)


def test_a_new_run_refuses_a_started_folder(tmp_path):
    run = _started(tmp_path)  # started, but no round completed yet
    with pytest.raises(ValueError, match="already holds a run: pass --resume"):
        check_run(run, config=_config(), resume=False)
    assert check_run(run, config=_config(), resume=True).run_key == read_record(tmp_path).run_key


def test_each_new_run_gets_its_own_key(tmp_path):
    keys = {check_run(RunDir(tmp_path / "a"), config=_config(), resume=False).run_key}
    keys.add(check_run(RunDir(tmp_path / "b"), config=_config(), resume=False).run_key)
    assert len(keys) == 2
    assert not (tmp_path / "a").exists()  # checking writes nothing


def test_a_run_from_before_run_records_is_adopted(tmp_path):
    run = RunDir(tmp_path)
    _finish(run)
    record = check_run(run, config=_config(), resume=True)
    assert record.config == _config() and not (tmp_path / RUN_RECORD).exists()


def test_a_damaged_record_is_a_clear_error(tmp_path):
    (tmp_path / RUN_RECORD).write_text("{not json")
    with pytest.raises(ValueError, match="damaged run record"):
        check_run(RunDir(tmp_path), config=_config(), resume=True)


def test_record_is_plain_json(tmp_path):
    _started(tmp_path)
    data = json.loads((tmp_path / RUN_RECORD).read_text())
    assert set(data) == {"format", "run_key", "config_digest", "config"}
    assert data["config"]["pretrain.train.batch_size"] == 2


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_dir_naming_a_file_is_one_line_before_anything(tmp_path, resume):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="--run-dir .* is a file"):
        check_run(RunDir(blocker / "demo"), config={"a": 1}, resume=resume)
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("key", ["model.heads.pool_grid", "model.heads.seg_stem_kernel"])
def test_a_run_from_before_a_key_with_the_old_behaviour_as_default_resumes(tmp_path, key):
    # these keys were added with defaults that build the same heads as before: a run recorded
    # without one resumes, keeping its run key
    older = {k: v for k, v in _config().items() if k != key}
    write_record(tmp_path, check_run(RunDir(tmp_path), config=older, resume=False))
    stored = read_record(tmp_path)
    assert key not in stored.config
    assert check_run(RunDir(tmp_path), config=_config(), resume=True).run_key == stored.run_key


def test_a_run_from_before_pool_grid_refuses_another_pool_grid(tmp_path):
    older = {k: v for k, v in _config().items() if k != "model.heads.pool_grid"}
    write_record(tmp_path, check_run(RunDir(tmp_path), config=older, resume=False))
    with pytest.raises(ValueError, match=r"model.heads.pool_grid 0 -> 2"):
        check_run(RunDir(tmp_path), config=_config(model=("heads.pool_grid=2",)), resume=True)
