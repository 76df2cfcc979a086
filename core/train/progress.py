"""A rich progress bar on stderr for training loops (a no-op when disabled)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class ProgressBar:
    bar: Any = None
    task: Any = None

    def advance(self, *, steps: int = 1, status: str = "") -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=steps, status=status)


@contextmanager
def training_progress(
    *, title: str, total: int, done: int = 0, enabled: bool = True
) -> Iterator[ProgressBar]:
    """Yield a ProgressBar over `total` steps starting at `done`."""
    if not enabled:
        yield ProgressBar()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn(f"[bold]{title}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(title, total=total, completed=done, status="")
        yield ProgressBar(bar=bar, task=task)
