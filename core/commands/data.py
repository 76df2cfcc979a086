"""`orthofed data init|check|prepare`: a site's view of its own exports."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from core.commands.common import fail, user_errors
from core.config import DataConfig, PreprocessConfig
from core.views import parse_joint

# core.data.* pulls torch/MONAI: imported inside the commands, `orthofed --help` must not.

data_app = typer.Typer(
    help="Check a site's MRI exports, write its manifest, and build its preprocessing cache.",
    no_args_is_help=True,
)

SITE_HELP = "A site folder (one subfolder per case) or its site.yaml manifest."
JOINT_HELP = "knee, ankle or shoulder: needed only for a folder without site.yaml."
LAYOUT = "a site folder holds one subfolder per case, named by its case id"


def _refuse_one_case(site, *, command: str) -> None:
    """Exit 2 with one line when the folder given as a site looks like one case."""
    from core.data.layout import one_case_reason

    if why := one_case_reason(site):
        fail(
            f"{site.data_root}: this looks like one case ({why}); point data {command} "
            f"at the site folder ({LAYOUT})"
        )


def _refuse_no_cases(site) -> None:
    if not site.case_dirs():
        fail(f"{site.data_root}: no case folders found ({LAYOUT})", code=1)


def _open_site(site_path: Path, *, joint: str | None, command: str):
    from core.data.manifest import load_site

    site = load_site(site_path, joint=joint)
    _refuse_one_case(site, command=command)
    return site


@data_app.command("init")
@user_errors
def init(
    site_dir: Path = typer.Argument(..., help="The site folder to describe."),
    joint: str = typer.Option(..., "--joint", help="knee, ankle or shoulder."),
    site_id: str = typer.Option(
        "", "--site-id", help="Name of the site in a federation (default: folder name)."
    ),
    heldout_fraction: float = typer.Option(
        0.2, help="Fraction of cases held out for evaluation (by case-id hash)."
    ),
    cache_dir: str = typer.Option(
        "", help="Where the preprocessing cache goes (default: beside the site folder)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing site.yaml."),
) -> None:
    """Write site.yaml for a folder of cases (the only command that writes into the site)."""
    from core.data.manifest import MANIFEST_NAME, Site, SiteManifest, load_site, write_manifest

    if not site_dir.is_dir():
        fail(f"{site_dir}: not a folder")
    target = site_dir / MANIFEST_NAME
    if target.exists() and not force:
        fail(f"{target} exists; pass --force to overwrite it")
    if not 0.0 <= heldout_fraction < 1.0:
        fail(f"--heldout-fraction must be in [0, 1), got {heldout_fraction}")
    manifest = SiteManifest(
        joint=parse_joint(joint).value,
        site_id=site_id or site_dir.resolve().name,
        heldout_fraction=heldout_fraction,
        cache_dir=cache_dir,
    )
    planned = Site(root=site_dir, manifest=manifest)
    _refuse_no_cases(planned)
    _refuse_one_case(planned, command="init")
    write_manifest(manifest, target)
    site = load_site(target)
    n = len(site.case_dirs())
    held = sum(site.is_heldout(p.name) for p in site.case_dirs())
    typer.echo(f"wrote {target}: joint {manifest.joint}, {n} case folders, {held} held out")


@data_app.command("check")
@user_errors
def check(
    site_path: Path = typer.Argument(..., help=SITE_HELP),
    joint: str | None = typer.Option(None, "--joint", help=JOINT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Read every case, never write anything, and list each problem with its case and file.

    Exit 0 when there are no problems, 1 when there are, 2 on usage errors.
    """
    from core.data.check import check_site, format_check_table, problem_lines

    site = _open_site(site_path, joint=joint, command="check")
    report = check_site(site, config=DataConfig())
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        console = Console()
        console.print(format_check_table(report))
        for line in problem_lines(report):
            console.print(f"[red]problem[/red] {line}", highlight=False)
        n_bad = sum(not c["ok"] for c in report["cases"])
        verdict = "[green]ok[/green]" if report["ok"] else "[red]problems found[/red]"
        console.print(
            f"{site.site_id}: {len(report['cases'])} cases, {n_bad} with problems: {verdict}"
        )
    raise typer.Exit(0 if report["ok"] else 1)


@data_app.command("prepare")
@user_errors
def prepare(
    site_path: Path = typer.Argument(..., help=SITE_HELP),
    joint: str | None = typer.Option(None, "--joint", help=JOINT_HELP),
    slices: int = typer.Option(16, help="Central slices kept per view (padded when fewer)."),
    size: int = typer.Option(
        256, help="In-plane size after resizing (256 = paper, 64 = tiny preset)."
    ),
) -> None:
    """Build the site's cache of preprocessed view tensors (a re-run is a no-op)."""
    from core.data.cache import prepare_with_progress

    if slices < 1:
        fail(f"--slices must be >= 1, got {slices}")
    if size < 8:
        fail(f"--size must be >= 8, got {size}")
    site = _open_site(site_path, joint=joint, command="prepare")
    _refuse_no_cases(site)
    config = DataConfig(preprocess=PreprocessConfig(slices=slices, size=size))
    summary = prepare_with_progress(site, config=config)
    for case_id, reason in sorted(summary.skipped.items()):
        typer.secho(f"skipped {case_id}: {reason}", fg="yellow", err=True)
    typer.echo(
        f"cache {summary.cache_root}: {len(summary.prepared)} prepared, "
        f"{len(summary.reused)} unchanged, {len(summary.skipped)} skipped"
    )
    if not summary.prepared and not summary.reused:
        fail(
            f"{site.site_id}: nothing usable found: all {len(summary.skipped)} case folders "
            f"were skipped; 'orthofed data check {site_path}' lists each problem",
            code=1,
        )


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
