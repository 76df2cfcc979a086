"""Coordinator commands refuse collisions and conflicts in one line (issue 15, defects 6 and
10): `federate --run-dir` naming a file or `--cpus-per-site` beyond the machine; `superlink
--certs X --insecure`; a plaintext SuperLink listens on loopback unless --host says otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fl_server import deploy_commands
from fl_server.cli import build_full_app


@pytest.fixture
def started(monkeypatch):
    """The Flower command each `superlink` would exec (nothing is started)."""
    commands: list[list[str]] = []
    monkeypatch.setattr(deploy_commands, "_exec", commands.append)
    return commands


def test_federate_run_dir_naming_a_file_is_one_line(tmp_path):
    sites = [tmp_path / "s1", tmp_path / "s2"]
    for site in sites:
        site.mkdir()
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"name: t\njoints: [knee]\nsites: [{sites[0]}, {sites[1]}]\n")
    taken = tmp_path / "taken"
    taken.write_text("keep")
    for run_dir in (taken, taken / "run"):
        args = ["federate", "--config", str(exp), "--run-dir", str(run_dir)]
        result = CliRunner().invoke(build_full_app(), args)
        assert result.exit_code == 2, result.output
        assert "--run-dir" in result.output and f"{taken} is a file" in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert taken.read_text() == "keep"


@pytest.mark.parametrize("cpus", ["0", "100000"])
def test_federate_cpus_per_site_beyond_the_machine_is_one_line(tmp_path, cpus):
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"name: t\njoints: [knee]\nsites: [{tmp_path / 's1'}, {tmp_path / 's2'}]\n")
    args = ["federate", "--config", str(exp), "--run-dir", str(tmp_path / "run")]
    result = CliRunner().invoke(build_full_app(), [*args, "--cpus-per-site", cpus])
    assert result.exit_code == 2, result.output
    assert "--cpus-per-site must be between 1 and the" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before Ray or the run dir


def test_superlink_refuses_certs_with_insecure(tmp_path, started):
    args = ["superlink", "--certs", str(tmp_path), "--insecure", "--no-auth"]
    result = CliRunner().invoke(build_full_app(), args)
    assert result.exit_code == 2, result.output
    assert f"--certs {tmp_path} and --insecure conflict" in result.output
    assert started == []


def test_plaintext_superlink_stays_on_loopback_unless_told(started):
    app = build_full_app()
    assert CliRunner().invoke(app, ["superlink", "--insecure"]).exit_code == 0
    args = ["superlink", "--insecure", "--host", "0.0.0.0"]
    assert CliRunner().invoke(app, args).exit_code == 0
    hosts = [cmd[cmd.index("--host") + 1] for cmd in started]
    assert hosts == ["127.0.0.1", "0.0.0.0"]


def test_flowers_run_simulation_deprecation_is_filtered_and_nothing_else():
    import logging

    from fl_server.simulation import KnownDeprecation

    def record(message: str, *args) -> logging.LogRecord:
        return logging.LogRecord("flwr", logging.WARNING, __file__, 1, message, args, None)

    keep = KnownDeprecation()
    assert not keep.filter(
        record("DEPRECATED FEATURE: %s", "The `run_simulation` function is deprecated and ...")
    )
    assert keep.filter(record("DEPRECATED FEATURE: %s", "something else"))
    assert keep.filter(record("node %s did not answer", 3))


def test_certs_with_a_site_listed_twice_writes_nothing(tmp_path):
    out = tmp_path / "pki"
    result = CliRunner().invoke(build_full_app(), ["certs", "--out", str(out), "--sites", "a,b,a"])
    assert result.exit_code == 2, result.output
    assert "--sites lists a more than once" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_register_names_a_file_that_is_not_a_public_key(tmp_path):
    junk = tmp_path / "knee-a.pub"
    junk.write_text("ssh-rsa not-a-key\n")
    args = ["register", "--superlink", "127.0.0.1:9", "--insecure", str(junk)]
    result = CliRunner().invoke(build_full_app(), args)
    assert result.exit_code == 2, result.output
    assert f"{junk}: not an OpenSSH elliptic-curve public key" in " ".join(result.output.split())


def test_the_command_line_starts_without_torch():
    # docs/architecture.md: function-level imports keep `orthofed --help` free of torch/MONAI
    import subprocess
    import sys

    probe = (
        "import sys; from fl_server.cli import build_full_app; build_full_app(); "
        "print(sorted(m for m in ('torch', 'monai', 'opacus') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_federate_help_explains_overrides_and_run_dir():
    result = CliRunner().invoke(build_full_app(), ["federate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    # click 8.5 drops the help text of Typer 0.20's positional arguments (pyproject pins <8.5)
    assert "Dotted key=value overrides, e.g. pretrain.rounds=3." in text
    assert "(default: runs/ and the experiment's name)" in text
