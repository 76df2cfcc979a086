"""Resumable cells: each unit of work (a federation, a pretraining, one fine-tune + evaluation)
caches its result as `<cells dir>/<key>.json`, written atomically once it is complete.

A rerun skips every cell whose file exists, so a crash or a kill loses at most the cell in
progress. A failed cell is reported and the run goes on with the cells that do not need it.
One progress line per cell: its index, key, summary, its own and the total elapsed time.
"""

from __future__ import annotations

import json
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from core.atomic import write_json_atomic

KEY = re.compile(r"^[a-z0-9][a-z0-9._=-]*$")


@dataclass
class Cell:
    """A unit of work: `run()` returns a JSON-able dict; `needs` are keys of earlier cells."""

    key: str
    run: Callable[[], dict[str, Any]]
    row: str = ""  # "" for intermediate results (federations, pretrainings)
    setting: str = ""
    seed: int | None = None
    needs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not KEY.match(self.key):
            raise ValueError(f"cell key {self.key!r}: use lowercase letters, digits, . _ = -")


class CellCache:
    """The folder of finished cells."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(key).read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # cannot happen with atomic writes; redo the cell
            return None

    def put(self, key: str, result: dict[str, Any]) -> None:
        write_json_atomic(self.path(key), result)

    def need(self, key: str) -> dict[str, Any]:
        result = self.get(key)
        if result is None:
            raise ValueError(f"cell {key} has no result (it failed or has not run)")
        return result


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def summary_of(result: dict[str, Any]) -> str:
    """A few words about a result for the progress line."""
    metrics = result.get("metrics") or {}
    parts = []
    for name in ("macro_auc", "mean_dice"):
        value = metrics.get(name)
        if name in metrics:
            parts.append(f"{name} {value:.3f}" if isinstance(value, float) else f"{name} -")
    if "epsilon" in result:
        parts.append(f"epsilon {result['epsilon']:.2f}")
    return ", ".join(parts) or result.get("summary", "done")


@dataclass
class RunOutcome:
    done: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def run_cells(
    cells: list[Cell], *, cache: CellCache, out: TextIO = sys.stdout, log: Path | None = None
) -> RunOutcome:
    """Run every cell not cached yet, in order; failures are recorded (with the traceback in
    `log` when given) and skip the cells that need them."""
    started, outcome, width = time.perf_counter(), RunOutcome(), len(str(len(cells)))
    for number, cell in enumerate(cells, start=1):
        prefix = f"[{number:{width}d}/{len(cells)}] {cell.key}"
        cached = cache.get(cell.key)
        if cached is not None:
            outcome.cached.append(cell.key)
            print(f"{prefix}: cached ({summary_of(cached)})", file=out, flush=True)
            continue
        missing = [k for k in cell.needs if k in outcome.failed or cache.get(k) is None]
        if missing:
            outcome.failed[cell.key] = f"skipped: needs {', '.join(missing)}"
            print(f"{prefix}: skipped (needs {', '.join(missing)})", file=out, flush=True)
            continue
        begin = time.perf_counter()
        try:
            result = cell.run()
        except Exception as err:  # noqa: BLE001 - one failed cell must not stop the others
            outcome.failed[cell.key] = f"{type(err).__name__}: {err}"
            if log is not None:
                with log.open("a") as handle:
                    handle.write(f"--- {cell.key}\n{traceback.format_exc()}\n")
            print(
                f"{prefix}: FAILED {type(err).__name__}: {err} "
                f"(elapsed {_clock(time.perf_counter() - started)})",
                file=out,
                flush=True,
            )
            continue
        seconds = time.perf_counter() - begin
        result = {
            "key": cell.key,
            "row": cell.row,
            "setting": cell.setting,
            "seed": cell.seed,
            **result,
            "seconds": round(seconds, 2),
        }
        cache.put(cell.key, result)
        outcome.done.append(cell.key)
        print(
            f"{prefix}: {summary_of(result)} ({seconds:.1f} s, elapsed "
            f"{_clock(time.perf_counter() - started)})",
            file=out,
            flush=True,
        )
    return outcome
