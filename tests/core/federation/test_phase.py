"""Round phases (core/federation/rundir.py `Phase`): wire values, and unknown ones refused."""

import json

import numpy as np
import pytest

from core.federation.rundir import Phase, RunDir, parse_phase
from core.train import site_task


def test_phase_values_are_the_history_and_message_strings():
    assert [p.value for p in Phase] == ["pretrain", "finetune", "evaluate", "local-only"]
    assert json.dumps({"phase": Phase.LOCAL_ONLY}) == '{"phase": "local-only"}'
    assert f"{Phase.PRETRAIN}/loss" == "pretrain/loss"
    assert parse_phase("finetune") is Phase.FINETUNE


@pytest.mark.parametrize("value", ["train", "Pretrain", "", None, 3])
def test_unknown_phase_is_refused_naming_it_and_the_choices(value):
    with pytest.raises(ValueError) as err:
        parse_phase(value)
    assert str(err.value) == (
        f"unknown phase {value!r}: choose one of pretrain, finetune, evaluate, local-only"
    )


def test_a_phase_outside_the_choices_is_refused():
    with pytest.raises(ValueError, match="'evaluate': choose one of pretrain, finetune$"):
        parse_phase("evaluate", choices=(Phase.PRETRAIN, Phase.FINETUNE))


@pytest.mark.parametrize("phase", ["train", "evaluate"])
def test_site_refuses_an_instruction_of_unknown_phase_before_any_work(tmp_path, phase):
    with pytest.raises(ValueError, match="choose one of pretrain, finetune, local-only"):
        site_task.train_round(
            site_dir=tmp_path / "no-site",  # never read: the phase is checked first
            state_dir=tmp_path / "state",
            site_id="knee-a",
            phase=phase,
            index=1,
            seed=0,
            run_key="",
            model_json={},
            train_json={},
            global_arrays={},
        )
    assert not (tmp_path / "state").exists()


def test_resume_refuses_a_latest_json_of_unknown_phase(tmp_path):
    run = RunDir(tmp_path)
    record = {"phase": "pretrain", "round": 1, "index": 1}
    state = {"backbone.axial.b": np.arange(4.0)}
    run.save_round(index=1, state=state, manifest={}, history_record=record, server_state={})
    assert run.resume_point().phase is Phase.PRETRAIN
    latest = json.loads((tmp_path / "latest.json").read_text())
    (tmp_path / "latest.json").write_text(json.dumps({**latest, "phase": "warmup"}))
    with pytest.raises(ValueError, match="unknown phase 'warmup'"):
        run.resume_point()
