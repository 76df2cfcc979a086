"""`orthofed --help` and each command's help show every text the code gives them."""

import pytest
from typer.testing import CliRunner

from core.cli import build_app


def _help(*command: str) -> str:
    result = CliRunner().invoke(build_app(), [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("pretrain", "train.lr=1e-3"),
        ("finetune", "the model comes from --init"),
    ],
)
def test_the_overrides_argument_is_explained(command, expected):
    # click 8.5 drops the help text of Typer 0.20's positional arguments (pyproject pins <8.5)
    assert expected in _help(command)


def test_summaries_read_as_prose_and_placeholders_survive():
    top = _help()
    # one paragraph, not the docstring's line breaks
    assert "per view per case, labels.csv, knee masks" in " ".join(top.split())
    assert "OUT/STUDY/prediction.json" in _help("predict")
