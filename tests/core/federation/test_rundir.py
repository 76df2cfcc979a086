import json

import numpy as np
import pytest

from core.federation.rundir import RunDir


def _state(value: float) -> dict[str, np.ndarray]:
    # deliberately not in sorted order: the key order must survive a round trip
    return {
        "head.knee.cls.w": np.full((2, 3), value, np.float32),
        "backbone.axial.b": np.arange(4.0),
    }


def _save(run: RunDir, index: int, value: float) -> None:
    run.save_round(
        index=index,
        state=_state(value),
        manifest={"phase": "pretrain"},
        history_record={"phase": "pretrain", "round": index, "index": index},
        server_state={"rng": index},
    )


def test_resume_returns_last_completed_round(tmp_path):
    run = RunDir(tmp_path)
    _save(run, 1, 1.0)
    _save(run, 2, 2.0)
    point = run.resume_point()
    assert (point.index, point.phase, point.round) == (2, "pretrain", 2)
    assert list(point.state) == ["head.knee.cls.w", "backbone.axial.b"]
    np.testing.assert_array_equal(point.state["head.knee.cls.w"], np.full((2, 3), 2.0))
    assert point.server_state == {"rng": 2}


def test_crash_after_history_before_latest_is_rolled_back(tmp_path):
    run = RunDir(tmp_path)
    _save(run, 1, 1.0)
    # round 2 got as far as its checkpoint and history line, then the server died
    run.save_round  # noqa: B018 (documenting the order)
    from core.atomic import save_arrays_atomic

    save_arrays_atomic(run.checkpoint_path(2), _state(2.0))
    run.append_history({"phase": "pretrain", "round": 2, "index": 2})
    with open(run.history_path, "a") as handle:
        handle.write('{"torn": ')  # a torn line from a kill mid-write
    point = run.resume_point()
    assert point.index == 1
    assert [r["index"] for r in run.read_history()] == [1]
    assert not run.checkpoint_path(2).exists()
    lines = run.history_path.read_text().splitlines()
    assert all(json.loads(line) for line in lines)


def test_fresh_run_has_no_resume_point(tmp_path):
    assert RunDir(tmp_path / "new").resume_point() is None


def test_damaged_latest_is_a_clear_error(tmp_path):
    run = RunDir(tmp_path)
    _save(run, 1, 1.0)
    (tmp_path / "latest.json").write_text("{not json")
    with pytest.raises(ValueError, match="latest.json"):
        run.resume_point()
