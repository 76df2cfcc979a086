"""Output paths (issue 15, defect 6): a file where a folder is needed, or the reverse, is one
line naming the path and the fix, checked up front or caught by the commands' error net."""

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from core.atomic import write_bytes_atomic
from core.commands.common import user_errors
from core.paths import check_out_file, check_out_folder


def test_out_folder_refuses_a_file_or_a_file_above_it(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("x")
    assert check_out_folder(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert check_out_folder(tmp_path) == tmp_path
    with pytest.raises(ValueError, match=r"--run-dir .*taken is a file, not a folder: choose"):
        check_out_folder(taken, option="--run-dir")
    with pytest.raises(ValueError, match=r"taken/sub: .*taken is a file, not a folder"):
        check_out_folder(taken / "sub")


def test_out_file_refuses_a_folder_and_suggests_a_name(tmp_path):
    assert check_out_file(tmp_path / "r.html", example="report.html") == tmp_path / "r.html"
    with pytest.raises(ValueError, match=r"is a folder, not a file: give a file name, e\.g\. "):
        check_out_file(tmp_path, example="report.html")
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ValueError, match="taken is a file, not a folder"):
        check_out_file(tmp_path / "taken" / "r.html", example="report.html")


def _app(action) -> typer.Typer:
    app = typer.Typer()

    @app.command("go")
    @user_errors
    def go(path: Path) -> None:
        action(path)

    @app.command("noop")
    def noop() -> None:
        pass

    return app


@pytest.mark.parametrize(
    ("action", "target", "expected"),
    [
        (lambda p: p.mkdir(parents=True, exist_ok=True), "taken", "taken is a file where a folder"),
        (lambda p: p.mkdir(parents=True), "taken/sub", "taken is a file where a folder"),
        (lambda p: write_bytes_atomic(p, b"x"), "folder", "folder is a folder where a file"),
    ],
)
def test_unchecked_collisions_are_one_line_not_a_traceback(tmp_path, action, target, expected):
    (tmp_path / "taken").write_text("x")
    (tmp_path / "folder").mkdir()
    result = CliRunner().invoke(_app(action), ["go", str(tmp_path / target)])
    assert result.exit_code == 2, result.output
    assert expected in result.output and len(result.output.strip().splitlines()) == 1
    assert (tmp_path / "taken").read_text() == "x" and not any((tmp_path / "folder").iterdir())
