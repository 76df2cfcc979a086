"""The files a federation run writes (`runs/<name>/`), and resuming from them.

Flower has no checkpoint/resume (rounds restart at 1), so the server owns it. A round counts
as completed only once `latest.json` names it; the write order per round is
checkpoint (.safetensors, then .json manifest) -> history line -> latest.json, each atomic.
On resume, history lines and checkpoints after the latest completed round are dropped (and
temp files of interrupted writes removed), so a kill at any moment (mid-round or
mid-checkpoint) leaves a consistent run to continue. A write that fails (a full disk: an
OSError naming the file) undoes the round's files before it propagates; the previous round
stays the latest. `Phase` names a round's phase, in these files and in the sites'
instructions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import (
    append_bytes_durable,
    leftover_temp_files,
    load_arrays,
    save_arrays_atomic,
    write_bytes_atomic,
    write_json_atomic,
)

LATEST = "latest.json"
HISTORY = "history.jsonl"


class Phase(StrEnum):
    """A round's phase: the `phase` of history.jsonl records and of the sites' instructions
    (the values are that external contract: never change them)."""

    PRETRAIN = "pretrain"
    FINETUNE = "finetune"
    EVALUATE = "evaluate"
    LOCAL_ONLY = "local-only"  # each site trains its local-only model (cross-site matrix)


TRAINING_PHASES: tuple[Phase, ...] = (Phase.PRETRAIN, Phase.FINETUNE)  # experiment sections


def parse_phase(value: object, *, choices: Iterable[Phase] = tuple(Phase)) -> Phase:
    """Return the Phase named by `value` (exactly, as on the wire) if it is one of `choices`,
    or raise a ValueError naming the value and the choices."""
    allowed = tuple(choices)
    try:
        phase: Phase | None = Phase(value)
    except ValueError:
        phase = None
    if phase is None or phase not in allowed:
        names = ", ".join(p.value for p in allowed)
        raise ValueError(f"unknown phase {value!r}: choose one of {names}")
    return phase


@dataclass(frozen=True)
class ResumePoint:
    index: int  # global round index (1-based, across phases)
    phase: Phase
    round: int  # round within its phase
    state: dict[str, np.ndarray]
    server_state: dict[str, Any]


class RunDir:
    """One federation run's folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def global_dir(self) -> Path:
        return self.root / "global"

    @property
    def history_path(self) -> Path:
        return self.root / HISTORY

    def checkpoint_path(self, index: int) -> Path:
        return self.global_dir / f"round-{index:04d}.safetensors"

    def exists(self) -> bool:
        return (self.root / LATEST).is_file() or self.history_path.is_file()

    def save_round(
        self,
        *,
        index: int,
        state: dict[str, np.ndarray],
        manifest: dict[str, Any],
        history_record: dict[str, Any],
        server_state: dict[str, Any],
    ) -> Path:
        """Persist one completed round (see the module docstring for the write order)."""
        weights = self.checkpoint_path(index)
        history_size = self.history_path.stat().st_size if self.history_path.is_file() else 0
        try:
            save_arrays_atomic(weights, state, metadata={"format": "orthofed-global"})
            full_manifest = {**manifest, "round_index": index, "keys": list(state)}
            write_json_atomic(weights.with_suffix(".json"), full_manifest)
            self.append_history(history_record)
            latest = {
                "index": index,
                "phase": history_record.get("phase"),
                "round": history_record.get("round"),
                "checkpoint": str(weights.relative_to(self.root)),
                "server_state": server_state,
            }
            write_json_atomic(self.root / LATEST, latest)
        except BaseException:
            self._undo_round(index, history_size=history_size)
            raise
        return weights

    def _undo_round(self, index: int, *, history_size: int) -> None:
        """Best effort after a failed `save_round`: unless latest.json made it, the round's
        checkpoint and history line go (resume would drop them anyway)."""
        try:
            if int((self.latest() or {}).get("index", 0)) == index:
                return  # interrupted after the round counted: keep it
        except (ValueError, TypeError, OSError):
            return
        weights = self.checkpoint_path(index)
        for path in (weights.with_suffix(".json"), weights):
            path.unlink(missing_ok=True)
        try:
            if self.history_path.is_file() and self.history_path.stat().st_size > history_size:
                os.truncate(self.history_path, history_size)
        except OSError:
            pass

    def append_history(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=False) + "\n"
        append_bytes_durable(self.history_path, line.encode("utf-8"))

    def read_history(self) -> list[dict[str, Any]]:
        """Complete history lines (a torn last line from a crash is ignored)."""
        if not self.history_path.is_file():
            return []
        records = []
        for line in self.history_path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records

    def latest(self) -> dict[str, Any] | None:
        path = self.root / LATEST
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: damaged ({err}); cannot resume from it") from None

    def resume_point(self) -> ResumePoint | None:
        """The last completed round, with anything written after it removed."""
        latest = self.latest()
        if latest is None:
            self._truncate_after(0)
            return None
        index = int(latest["index"])
        phase = parse_phase(latest["phase"])
        weights = self.root / latest["checkpoint"]
        manifest = json.loads(weights.with_suffix(".json").read_text())
        state = load_arrays(weights, order=manifest["keys"])
        self._truncate_after(index)
        return ResumePoint(
            index=index,
            phase=phase,
            round=int(latest["round"]),
            state=state,
            server_state=latest.get("server_state", {}),
        )

    def _truncate_after(self, index: int) -> None:
        kept = [r for r in self.read_history() if int(r.get("index", 0)) <= index]
        if self.history_path.is_file():
            blob = "".join(json.dumps(r, sort_keys=False) + "\n" for r in kept)
            write_bytes_atomic(self.history_path, blob.encode())
        if self.global_dir.is_dir():
            for path in self.global_dir.glob("round-*"):
                stem = path.name.split(".")[0]
                try:
                    n = int(stem.split("-")[1])
                except (IndexError, ValueError):
                    continue
                if n > index:
                    path.unlink(missing_ok=True)
        for folder in (self.root, self.global_dir):  # what interrupted atomic writes left
            for tmp in leftover_temp_files(folder):
                tmp.unlink(missing_ok=True)
