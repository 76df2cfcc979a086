"""`orthofed phantom`: generate a synthetic hospital site (DICOM series, labels, masks)."""

from __future__ import annotations

from pathlib import Path

import typer

from core.commands.common import fail, user_errors
from core.data.phantom.profiles import DEFAULT_PROFILE, PROFILES
from core.data.phantom.site import generate_site
from core.device import available_cores
from core.views import parse_joint

_PROFILE_HELP = (
    "Site profile (scanner, protocol, contrast, vendor tags): "
    + ", ".join(f"{n} ({p.description})" for n, p in PROFILES.items())
    + ". Default per joint: "
    + ", ".join(f"{j.value}={n}" for j, n in DEFAULT_PROFILE.items())
    + "."
)


def register(app: typer.Typer) -> None:
    app.command(name="phantom")(phantom)


@user_errors
def phantom(
    out: Path = typer.Option(
        ...,
        "--out",
        help="Folder to write the site into (new or empty; "
        "a previous phantom site only with --force).",
    ),
    joint: str = typer.Option(..., "--joint", help="Joint to simulate: knee, ankle or shoulder."),
    cases: int = typer.Option(..., "--cases", min=1, help="Number of cases (exams) to generate."),
    seed: int = typer.Option(
        ..., "--seed", help="Random seed; the same seed gives identical images and labels."
    ),
    profile: str | None = typer.Option(None, "--profile", help=_PROFILE_HELP),
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace a previous phantom site in --out (refused, naming them, if files the "
        "generator did not write are there).",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help="Processes that render cases at once (default: this machine's cores). The files "
        "are the same for any number.",
    ),
) -> None:
    """Generate a synthetic MRI site: one DICOM series per view per case, labels.csv,
    knee masks, site.yaml and phantom.json."""
    j = parse_joint(joint)
    if profile is not None and profile not in PROFILES:
        fail(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    summary = generate_site(
        out_dir=out,
        joint=j,
        n_cases=cases,
        seed=seed,
        profile=profile,
        progress=True,
        force=force,
        workers=workers or available_cores(),
    )
    prevalence = " ".join(f"{k}={v:.2f}" for k, v in summary["prevalence"].items())
    typer.echo(
        f"phantom {summary['joint']} site '{summary['profile']}' in {summary['out_dir']}: "
        f"{summary['n_cases']} cases in {summary['seconds']:.1f} s; prevalence {prevalence}"
    )
