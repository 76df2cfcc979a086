"""pretrain/finetune/evaluate/report refuse bad output paths and settings in one line, before
the site is read and without writing anything (issue 15, defects 6, 8 and 10)."""

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from core.commands import data as data_commands
from core.commands import model as model_commands
from core.commands import report as report_commands
from core.config import PreprocessConfig
from core.data.manifest import SiteManifest, load_site, write_manifest
from core.views import Joint
from tests.core.tiny_model import model_overrides, random_case

TINY = model_overrides()


@pytest.fixture
def site(tmp_path):
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    write_manifest(SiteManifest(joint="knee", site_id="s1"), site_dir / "site.yaml")
    return site_dir


@pytest.fixture
def cli():
    app = typer.Typer()
    model_commands.register(app)
    report_commands.register(app)
    data_commands.register(app)
    return app


@pytest.fixture
def no_reading(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the site was read")

    monkeypatch.setattr(model_commands, "_site_cases", refuse)


def _one_line_error(result, *, expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert expected in result.output, result.output


def _command(name: str, site, out) -> list[str]:
    return {
        "pretrain": ["pretrain", "--site", str(site), "--out", str(out), "--steps", "0"],
        "finetune": ["finetune", "--site", str(site), "--init", "none.safetensors"]
        + ["--out", str(out)],
        "evaluate": ["evaluate", "--site", str(site), "--checkpoint", "none.safetensors"]
        + ["--out", str(out)],
    }[name]


@pytest.mark.parametrize("name", ["pretrain", "finetune", "evaluate"])
@pytest.mark.parametrize("under", [False, True])
def test_out_naming_a_file_is_refused_up_front(cli, site, tmp_path, no_reading, name, under):
    taken = tmp_path / "taken"
    taken.write_text("keep")
    out = taken / "run" if under else taken
    result = CliRunner().invoke(cli, _command(name, site, out))
    _one_line_error(result, expected=f"{taken} is a file, not a folder")
    assert taken.read_text() == "keep"


def test_report_out_naming_a_folder_is_refused(cli, tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "run"), "--out", str(folder)])
    _one_line_error(result, expected=f"--out {folder} is a folder, not a file")
    assert "report.html" in result.output and not any(folder.iterdir())


def test_finetune_refuses_an_existing_checkpoint_unless_forced(cli, site, tmp_path, no_reading):
    out = tmp_path / "ft"
    out.mkdir()
    (out / "checkpoint.safetensors").write_bytes(b"earlier run")
    args = _command("finetune", site, out)
    result = CliRunner().invoke(cli, args)
    _one_line_error(result, expected="already holds a checkpoint")
    assert "--force" in result.output
    assert (out / "checkpoint.safetensors").read_bytes() == b"earlier run"
    forced = CliRunner().invoke(cli, [*args, "--force"])  # past the check: the --init is missing
    _one_line_error(forced, expected="none.safetensors")


def test_finetune_refuses_model_overrides(cli, site, tmp_path, no_reading):
    args = [*_command("finetune", site, tmp_path / "ft"), "train.lr=1e-3", "model.input_size=64"]
    result = CliRunner().invoke(cli, args)
    _one_line_error(
        result, expected="model.input_size=64: finetune takes the model from the --init"
    )
    assert not (tmp_path / "ft").exists()


@pytest.fixture
def pretrained(cli, site, tmp_path, monkeypatch):
    """A step-0 tiny checkpoint (the initialisation: no training)."""
    rng = np.random.default_rng(0)
    cases = [random_case(f"c{i}", joint=Joint.KNEE, rng=rng) for i in range(2)]

    def fake_site_cases(site_path, *, model_config):
        return load_site(site_path), cases, PreprocessConfig(slices=8, size=32).key()

    monkeypatch.setattr(model_commands, "_site_cases", fake_site_cases)
    args = [*_command("pretrain", site, tmp_path / "pre"), *TINY]
    assert CliRunner().invoke(cli, args).exit_code == 0
    return tmp_path / "pre" / "checkpoint.safetensors"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lr=-1", "train.lr must be > 0, got -1.0"),
        ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
        ("train.val_fraction=1.0", "train.val_fraction must be in [0, 1), got 1.0"),
    ],
)
def test_finetune_train_values_are_checked_before_reading(
    cli, site, tmp_path, pretrained, no_reading, override, expected
):
    out = tmp_path / "ft"
    args = ["finetune", "--site", str(site), "--init", str(pretrained), "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, override])
    assert result.output.strip() == f"error: {expected}"
    assert result.exit_code == 2 and not out.exists()


def test_pretrain_leaves_no_empty_run_folder(cli, site, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    heldout = [random_case("c0", joint=Joint.KNEE, rng=rng, heldout=True)]

    def fake_site_cases(site_path, *, model_config):
        return load_site(site_path), heldout, PreprocessConfig(slices=8, size=32).key()

    monkeypatch.setattr(model_commands, "_site_cases", fake_site_cases)
    out = tmp_path / "pre"
    result = CliRunner().invoke(cli, [*_command("pretrain", site, out), *TINY])
    _one_line_error(result, expected="no training volumes")
    assert not out.exists()


def test_pretrain_refuses_a_saved_run_before_reading(cli, site, tmp_path, no_reading):
    out = tmp_path / "pre"
    out.mkdir()
    (out / "state.json").write_text("{}")
    result = CliRunner().invoke(cli, _command("pretrain", site, out))
    _one_line_error(result, expected="already holds a training state: pass --resume")


@pytest.mark.parametrize(
    ("option", "expected"),
    [("--slices=0", "--slices must be >= 1, got 0"), ("--size=4", "--size must be >= 8, got 4")],
)
def test_data_prepare_names_the_wrong_value(cli, site, option, expected):
    result = CliRunner().invoke(cli, ["data", "prepare", str(site), option])
    assert result.exit_code == 2 and result.output.strip() == f"error: {expected}"
