"""`orthofed report RUN_DIR`: the federation report of a run folder, at any time."""

from __future__ import annotations

from pathlib import Path

import typer

from core.commands.common import user_errors
from core.paths import check_out_file

REPORT_HELP = (
    "Write a federation run's report: one self-contained HTML file (RUN_DIR/report.html).\n\n"
    "Per-round diffusion and fine-tune losses per site, final task metrics per site, which "
    "sites sent which parameter groups, rejected updates and missing sites, privacy budget "
    "spent, megabytes and time per round, and the cross-site matrix when cross_site.json "
    "exists.\n\n"
    "Works on a finished run and on one still in progress (it shows the completed rounds); "
    "`orthofed federate` writes it at the end of every run."
)


@user_errors
def report(
    run_dir: Path = typer.Argument(
        ..., help="Run folder written by `orthofed federate` (--run-dir)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write the HTML (default RUN_DIR/report.html)."
    ),
) -> None:
    """Write a federation run's report: one self-contained HTML file."""
    # matplotlib: imported here so that `orthofed --help` does not load it
    from core.reporting.federation_report import REPORT, write_federation_report

    if out is not None:
        check_out_file(out, example=REPORT)
    path = write_federation_report(run_dir, out=out)
    typer.echo(f"report written: {path}")


def register(app: typer.Typer) -> None:
    app.command("report", help=REPORT_HELP)(report)
