"""A site's training state between federated rounds (optimizer moments, step counters).

Kept under `<state dir>/runs/<run key>/` (the run key comes from the server), one file pair per
round index: a restarted site, or a resumed federation that redoes a round, continues from the
state before that round, and a state dir that outlives one federation never restores another
federation's state. Weights are written first and the .json that marks them complete last.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from core.atomic import leftover_temp_files, write_bytes_atomic, write_json_atomic
from core.checkpoint import load_tensors, tensors_to_bytes

STATE_PREFIX = "pretrain-state-"
RUNS_DIR = "runs"  # <state dir>/runs/<run key>/: one federation run's state between rounds
RUN_KEY = re.compile(r"[0-9A-Za-z_-]{1,64}")


def run_state_dir(state_dir: Path, run_key: str) -> Path:
    """Where one federation run keeps its state between rounds at this site. The key comes
    from the server, so it must be a plain name (it becomes a folder name here)."""
    if not RUN_KEY.fullmatch(run_key):
        raise ValueError(
            f"the instruction's run key {run_key[:80]!r} is not a plain name of 1-64 letters, "
            "digits, '-' or '_' (server and site run different orthofed versions?)"
        )
    return Path(state_dir) / RUNS_DIR / run_key


def latest_state(state_dir: Path, *, before: int) -> tuple[int, Path] | None:
    """The newest complete state before round `before`: its .json is written last, so a
    state whose .json is missing was interrupted (a kill between the two writes): skipped."""
    found = []
    for path in state_dir.glob(f"{STATE_PREFIX}*.safetensors"):
        try:
            index = int(path.stem[len(STATE_PREFIX) :])
        except ValueError:
            continue
        if index < before and path.with_suffix(".json").is_file():
            found.append((index, path))
    return max(found) if found else None


def save_state(trainer, *, state_dir: Path, index: int) -> None:
    """Weights, then the .json that marks them complete, each atomic. A failed write (a full
    disk: OSError naming the file) leaves the earlier states as they were."""

    tensors, meta = trainer.state()
    path = state_dir / f"{STATE_PREFIX}{index:04d}.safetensors"
    for tmp in leftover_temp_files(state_dir, prefix=STATE_PREFIX):  # from a killed write
        tmp.unlink(missing_ok=True)
    write_bytes_atomic(path, tensors_to_bytes(tensors))
    try:
        write_json_atomic(path.with_suffix(".json"), {"step": trainer.step, **meta})
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    for old in state_dir.glob(f"{STATE_PREFIX}*"):  # keep the two newest rounds
        try:
            n = int(old.name[len(STATE_PREFIX) :].split(".")[0])
        except ValueError:
            continue
        if n < index - 1:
            old.unlink(missing_ok=True)


def restore_state(trainer, *, state_dir: Path, index: int) -> None:

    latest = latest_state(state_dir, before=index)
    if latest is None:
        return
    meta = json.loads(latest[1].with_suffix(".json").read_text())
    trainer.restore(step=int(meta.pop("step")), tensors=load_tensors(latest[1]), meta=meta)
