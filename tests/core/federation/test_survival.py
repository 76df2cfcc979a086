"""The server's run dir survives a SIGKILL in the middle of writing a round and a full disk
(issue 15, "kill -9 during a checkpoint write" and "Disk full"): the previous round stays the
latest and loads, resume works, nothing half-written is left or mistaken for a checkpoint."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from safetensors import SafetensorError

from core.atomic import load_arrays
from core.federation import spool as spool_module
from core.federation.rundir import LATEST, RunDir
from core.federation.spool import UpdateSpool
from tests.core.survival import REPO, disk_full_on, kill_mid_write, temp_files

# 2 MiB of float32 per round: big enough that a write is a real multi-page write.
SHAPE = (512, 1024)


def _state(value: float) -> dict[str, np.ndarray]:
    return {
        "backbone.axial.w": np.full(SHAPE, value, np.float32),
        "head.knee.cls.b": np.full(3, value, np.float32),
    }


def _save(run: RunDir, index: int) -> None:
    run.save_round(
        index=index,
        state=_state(float(index)),
        manifest={"phase": "pretrain"},
        history_record={"phase": "pretrain", "round": index, "index": index},
        server_state={"rng": index},
    )


def _two_rounds(root) -> RunDir:
    run = RunDir(root)
    _save(run, 1)
    _save(run, 2)
    return run


def _assert_resumes_at_round_2(run: RunDir) -> None:
    point = run.resume_point()
    assert (point.index, point.round, point.server_state) == (2, 2, {"rng": 2})
    np.testing.assert_array_equal(point.state["backbone.axial.w"], np.full(SHAPE, 2.0))
    assert [r["index"] for r in run.read_history()] == [1, 2]
    assert all(json.loads(line) for line in run.history_path.read_text().splitlines())
    assert sorted(p.name for p in run.global_dir.iterdir()) == [
        "round-0001.json",
        "round-0001.safetensors",
        "round-0002.json",
        "round-0002.safetensors",
    ]
    assert temp_files(run.root) == []
    # the previous checkpoint is readable on its own, as `orthofed evaluate` would read it
    manifest = json.loads(run.checkpoint_path(2).with_suffix(".json").read_text())
    assert list(load_arrays(run.checkpoint_path(2), order=manifest["keys"])) == list(_state(2))
    # and the run goes on: round 3 saves and becomes the resume point
    _save(run, 3)
    assert RunDir(run.root).resume_point().index == 3


CHILD_SAVES_ROUND_3 = """
    import sys
    from pathlib import Path
    import numpy as np
    from core.federation.rundir import RunDir
    from tests.core.survival import pause_in_write

    root, nth, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    pause_in_write(nth=nth, ready=ready)
    state = {
        "backbone.axial.w": np.full((512, 1024), 3.0, np.float32),
        "head.knee.cls.b": np.full(3, 3.0, np.float32),
    }
    RunDir(Path(root)).save_round(
        index=3, state=state, manifest={"phase": "pretrain"},
        history_record={"phase": "pretrain", "round": 3, "index": 3},
        server_state={"rng": 3},
    )
    raise SystemExit("the write was not interrupted")
"""

# save_round writes, in order: weights, manifest, history line, latest.json
STAGES = {
    1: ".round-0003.safetensors.",
    2: ".round-0003.json.",
    3: "history.jsonl",
    4: ".latest.json.",
}


@pytest.mark.parametrize("nth", list(STAGES))
def test_sigkill_mid_write_keeps_the_previous_round(tmp_path, nth):
    root = tmp_path / "run"
    run = _two_rounds(root)
    latest_before = (root / LATEST).read_bytes()
    written = kill_mid_write(
        CHILD_SAVES_ROUND_3, root, nth, tmp_path / "ready", ready=tmp_path / "ready"
    )
    assert STAGES[nth] in written  # killed inside the write this case is about
    # the kill left its traces: a half-written temp file or a torn history line
    if nth == 3:
        assert not run.history_path.read_text().endswith("\n")
    else:
        (left,) = temp_files(root)
        assert str(left) == written and 0 < left.stat().st_size
    # ... which no reader takes for a checkpoint: latest.json still names round 2
    assert (root / LATEST).read_bytes() == latest_before
    _assert_resumes_at_round_2(RunDir(root))


CHILD_SAVES_IN_A_LOOP = """
    import sys
    from pathlib import Path
    import numpy as np
    from core.federation.rundir import RunDir

    run = RunDir(Path(sys.argv[1]))
    for index in range(1, 10_000):
        state = {"backbone.axial.w": np.full((1024, 1024), float(index), np.float32)}
        run.save_round(
            index=index, state=state, manifest={}, server_state={},
            history_record={"phase": "pretrain", "round": index, "index": index},
        )
"""


@pytest.mark.parametrize("delay_s", [0.0, 0.013, 0.029])
def test_sigkill_at_any_moment_leaves_a_consistent_run(tmp_path, delay_s):
    """No pause: the child writes 4 MiB rounds back to back and dies wherever it is."""
    root = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD_SAVES_IN_A_LOOP), str(root)], cwd=REPO, env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not (root / "global" / "round-0003.safetensors").exists():
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(delay_s)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    run = RunDir(root)
    latest = json.loads((root / LATEST).read_text())
    point = run.resume_point()
    assert point.index == latest["index"] >= 2
    np.testing.assert_array_equal(point.state["backbone.axial.w"], float(point.index))
    assert [r["index"] for r in run.read_history()] == list(range(1, point.index + 1))
    kept = sorted(p.name for p in run.global_dir.iterdir())
    assert kept[-2:] == [f"round-{point.index:04d}.json", f"round-{point.index:04d}.safetensors"]
    assert len(kept) == 2 * point.index and temp_files(root) == []


# --- a full disk ---------------------------------------------------------------------------

FULL_AT = {1: "global/round-0003.safetensors", 2: "global/round-0003.json"}
FULL_AT |= {3: "history.jsonl", 4: "latest.json"}


@pytest.mark.parametrize("nth", list(FULL_AT))
def test_disk_full_mid_round_names_the_file_and_leaves_round_2(tmp_path, monkeypatch, nth):
    root = tmp_path / "run"
    run = _two_rounds(root)
    before = {name: (root / name).read_bytes() for name in ("history.jsonl", LATEST)}
    faulty = disk_full_on(monkeypatch, nth=nth)
    with pytest.raises(OSError) as caught:
        _save(run, 3)
    assert faulty.faulted is not None  # the disk did fill during this file
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(root / FULL_AT[nth])  # the file, not its temp
    # nothing half-written: no temp, no round-3 file, history and latest.json as they were
    assert temp_files(root) == []
    assert not list(run.global_dir.glob("round-0003*"))
    assert {name: (root / name).read_bytes() for name in before} == before
    monkeypatch.undo()  # space again
    _assert_resumes_at_round_2(RunDir(root))


def test_disk_full_while_spooling_an_update_is_an_error_naming_the_folder(
    tmp_path, monkeypatch, make_state, make_update
):
    """The round's spool lives in the run dir too: a full disk there stops the round with an
    OSError naming the folder (never a rejection blamed on the site); the spool goes."""

    def full(arrays, filename):  # safetensors' own writer: its error names no file
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    global_state = make_state(["backbone.axial"])
    monkeypatch.setattr(spool_module, "save_file", full)
    with UpdateSpool(parent=tmp_path, global_state=global_state) as spool:
        folder = spool.directory
        with pytest.raises(OSError) as caught:
            spool.add(make_update("a", make_state(["backbone.axial"], seed=1)))
        assert spool.rejected == []
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(folder)
    assert not folder.exists()


# --- damaged files in a run dir --------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "manifest_lies_about_keys"])
def test_damaged_latest_checkpoint_is_one_clear_error_on_resume(tmp_path, damage):
    run = _two_rounds(tmp_path / "run")
    weights = run.checkpoint_path(2)
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
        expected = "not a readable safetensors file"
    else:
        manifest = weights.with_suffix(".json")
        data = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**data, "keys": [*data["keys"], "backbone.axial.extra"]}))
        expected = "missing 1 arrays"
    with pytest.raises(ValueError, match=expected) as caught:
        run.resume_point()
    assert str(weights) in str(caught.value) and "\n" not in str(caught.value)
