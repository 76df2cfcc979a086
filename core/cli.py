"""The `orthofed` command: one typer app, subcommands registered from `core.commands.*`.

User errors (ValueError, missing files) print one red line and exit 2 (usage) or 1;
tracebacks are for bugs only.
"""

from __future__ import annotations

import os
import sys

import typer

from core.commands import register_all

HELP = """Federated OrthoDiffusion for musculoskeletal MRI.

Sites generate or check their data and train locally; coordinators run federations;
anyone evaluates a checkpoint on held-out data. Run `orthofed COMMAND --help` for details."""


def build_app() -> typer.Typer:
    app = typer.Typer(
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="markdown",
    )
    register_all(app)
    return app


def main() -> None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    app = build_app()
    try:
        app()
    except ValueError as err:  # user error raised outside a command's own handling
        typer.secho(f"error: {err}", fg="red", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
