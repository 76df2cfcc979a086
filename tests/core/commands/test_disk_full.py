"""A full disk at the command line (issue 15, "Disk full"): one line naming the file that
could not be written and "no space left", exit code 1, no traceback, nothing half-written."""

from __future__ import annotations

import errno

import numpy as np
import typer
from typer.testing import CliRunner

from core.commands import report as report_commands
from core.commands.common import user_errors
from core.federation.rundir import RunDir
from tests.core.survival import disk_full_on, temp_files


def _one_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_report_on_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    run.save_round(
        index=1,
        state={"backbone.axial.w": np.zeros(3, np.float32)},
        manifest={"phase": "pretrain"},
        history_record={"phase": "pretrain", "round": 1, "index": 1},
        server_state={},
    )
    out = tmp_path / "reports" / "run.html"
    out.parent.mkdir()
    out.write_text("the previous report")
    app = typer.Typer()
    report_commands.register(app)
    disk_full_on(monkeypatch, nth=1)
    result = CliRunner().invoke(app, [str(run.root), "--out", str(out)])  # its only command
    line = _one_line(result)
    assert line.startswith(f"error: {out}: no space left on device"), line
    assert out.read_text() == "the previous report" and temp_files(tmp_path) == []


def test_a_write_error_without_a_file_name_is_still_one_line():
    @user_errors
    def write() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    app = typer.Typer()
    app.command()(write)
    assert _one_line(CliRunner().invoke(app, [])) == (
        "error: no space left on device while writing: free space on that disk and run again"
    )


def test_other_os_errors_are_not_disguised_as_a_full_disk():
    @user_errors
    def write() -> None:
        raise OSError(errno.EIO, "Input/output error", "/data/x")

    app = typer.Typer()
    app.command()(write)
    result = CliRunner().invoke(app, [])
    assert isinstance(result.exception, OSError) and result.exception.errno == errno.EIO
