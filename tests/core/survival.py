"""Fault injection for the survival tests (issue 15): a write through `core.atomic` that stops
partway through one file, then either fails with ENOSPC (a full disk, in this process) or
pauses so the test can SIGKILL the process (a child started by `kill_mid_write`).

The faults sit at the lowest write the atomic writers use: `os.write`, as `core.atomic` sees
it (its module attribute `os` is replaced, nothing else in the process is affected). Files are
counted by the path being written (temp files included), in the order they are first written
(Linux: the path of a descriptor comes from /proc/self/fd; elsewhere the tests are skipped).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import core.atomic

REPO = Path(__file__).resolve().parents[2]


class FaultyWrites:
    """Stands in for `os` inside `core.atomic`. The `nth` file written gets half of its first
    write (a short write, as a filling disk gives), then the fault: `enospc` raises
    OSError(ENOSPC) on its next write; `pause` syncs what was written, writes the path into
    `ready` and sleeps until killed."""

    def __init__(self, *, nth: int, fault: str, ready: Path | None = None) -> None:
        assert fault in ("enospc", "pause")
        self.nth, self.fault, self.ready = nth, fault, ready
        self.paths: list[str] = []
        self.faulted: str | None = None

    def __getattr__(self, name: str):
        return getattr(os, name)

    def write(self, fd: int, data) -> int:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path not in self.paths:
            self.paths.append(path)
        if self.faulted is None and len(self.paths) == self.nth:
            self.faulted = path
            written = os.write(fd, bytes(data[: max(1, len(data) // 2)]))
            if self.fault == "pause":
                os.fsync(fd)
                self.ready.write_text(path)
                time.sleep(600)
            return written
        if self.faulted == path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)


def _needs_proc() -> None:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("fault injection names files via /proc/self/fd (Linux)")


def disk_full_on(monkeypatch, *, nth: int) -> FaultyWrites:
    """The disk fills up halfway through the `nth` file written via `core.atomic`."""
    _needs_proc()
    faulty = FaultyWrites(nth=nth, fault="enospc")
    monkeypatch.setattr(core.atomic, "os", faulty)
    return faulty


def pause_in_write(*, nth: int, ready: str | Path) -> None:
    """For a child process: stop halfway through the `nth` file (see `kill_mid_write`)."""
    core.atomic.os = FaultyWrites(nth=nth, fault="pause", ready=Path(ready))


def kill_mid_write(script: str, *args: object, ready: Path, timeout_s: float = 60.0) -> str:
    """Run `script` (Python; `sys.argv[1:]` = `args`) in a child process, wait until it is
    paused inside a write (the script calls `pause_in_write(..., ready=<ready>)`), SIGKILL it
    and return the path it was writing. Fails if the child ends or never gets there."""
    _needs_proc()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not (ready.is_file() and ready.read_text()):
            if child.poll() is not None:
                out, err = child.communicate()
                raise AssertionError(
                    f"child ended (rc {child.returncode}) before the write:\n{err}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"child did not reach the write within {timeout_s} s")
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL, child.returncode
    return ready.read_text()


def temp_files(root: Path) -> list[Path]:
    """Every temp file an atomic write left anywhere under `root`."""
    return sorted(p for p in Path(root).rglob(".*.tmp") if p.is_file())
