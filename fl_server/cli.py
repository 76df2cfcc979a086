"""The full `orthofed` command: core's commands plus the federation ones.

This is the composition root: `core` stays free of Flower (a test walks its imports), so the
commands that start Flower are added here, in the Flower layer.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from core.cli import build_app
from core.commands.common import user_errors
from fl_server.deploy_commands import register_deploy_commands


@user_errors
def federate(
    config: Path = typer.Option(
        ..., "--config", help="Experiment YAML, e.g. configs/experiments/demo.yaml."
    ),
    run_dir: Path | None = typer.Option(
        None,
        "--run-dir",
        help="Where the run's files go (default: runs/ and the experiment's name).",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue after the last completed round of --run-dir."
    ),
    cpus_per_site: int | None = typer.Option(
        None,
        "--cpus-per-site",
        help="Cores per site (default: all, so sites train one after another; 1 on a machine "
        "with a core per site trains them all at once).",
    ),
    overrides: list[str] = typer.Argument(
        None, help="Dotted key=value overrides, e.g. pretrain.rounds=3."
    ),
) -> None:
    """Run a whole federation on this machine in Flower's simulation engine.

    One simulated SuperNode per site folder listed in the experiment; the real ServerApp and
    ClientApps. Writes global/round-NNNN.safetensors, history.jsonl, metrics.json.
    """
    # torch/MONAI and Flower: `orthofed --help` and the other commands must not pay for them
    from core.federation.experiment import load_experiment
    from fl_server.simulation import run_embedded

    experiment = load_experiment(config, overrides=list(overrides or []))
    target = run_dir or Path("runs") / experiment.name
    try:
        run_embedded(
            experiment_path=str(config),
            run_dir=str(target),
            resume=resume,
            overrides=list(overrides or []),
            cpus_per_site=cpus_per_site,
        )
    except RuntimeError as err:
        typer.secho(f"error: federation stopped: {err}", fg="red", err=True)
        typer.secho(
            f"the completed rounds are kept; continue with --resume --run-dir {target}", err=True
        )
        raise typer.Exit(1) from None
    typer.echo(
        f"federation finished: {target}/history.jsonl, {target}/metrics.json, {target}/report.html"
    )


def build_full_app() -> typer.Typer:
    app = build_app()
    app.command("federate")(federate)
    register_deploy_commands(app)
    return app


def main() -> None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    try:
        build_full_app()()
    except ValueError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
