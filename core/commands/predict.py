"""`orthofed predict`: apply a checkpoint to new exams (see core/inference)."""

from __future__ import annotations

from pathlib import Path

import typer

from core.commands.common import user_errors

# core.inference.* pulls torch/MONAI: imported inside the command, `orthofed --help` must not.

PREDICT_HELP = (
    "Predict findings (and, for the knee, segment structures) on new exams with a checkpoint.\n\n"
    "A STUDY is a folder holding one exam's series: DICOM in any folder layout or NIfTI, "
    "exactly as `orthofed data check` reads a case (views from slice geometry). With --batch "
    "each STUDY is a folder of such study folders.\n\n"
    "Writes, per study, OUT/STUDY/prediction.json (joint; per label probability, threshold "
    "and decision = probability >= threshold; views used; warnings; where the thresholds "
    "came from) and report.html; for a knee model with a segmentation head also seg.nii.gz "
    "(label map on the original sagittal series' grid) and, for a DICOM series, seg.dcm (a "
    "DICOM Segmentation referencing that series, for PACS viewers and 3D Slicer). "
    "OUT/summary.csv has one row per study. Thresholds are those stored in the checkpoint "
    "(chosen on a site's training cases by `orthofed finetune` or `orthofed evaluate`); 0.5 "
    "where none are stored.\n\n"
    "Output folders are named after the study folders as you named them; DICOM patient "
    "names, ids and accession numbers never appear in file names (seg.dcm carries the "
    "source's patient and study modules, as any DICOM object of that patient must). Nothing "
    "is written into study folders, and --out may not lie inside one. A study that cannot be "
    "predicted (unreadable or damaged files, no usable series, another joint, a CT series) "
    "gets one line in the summary, no output folder, and the others go on.\n\n"
    "Exit code 0 when every study was predicted, 1 when any failed, 2 on usage errors."
)


@user_errors
def predict(
    studies: list[Path] = typer.Argument(
        ...,
        help="Study folders (one exam each); with --batch, folders of study folders.",
        metavar="STUDY...",
        show_default=False,
    ),
    checkpoint: Path = typer.Option(
        ...,
        "--checkpoint",
        help="The model: a .safetensors checkpoint with its .json manifest (fine-tuned, so it "
        "has task heads), e.g. runs/knee-ft/checkpoint.safetensors or a federation's "
        "global/round-NNNN.safetensors.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="Output folder: OUT/STUDY/ per study and OUT/summary.csv. Created if needed; "
        "an earlier prediction of the same study is replaced.",
    ),
    joint: str | None = typer.Option(
        None,
        "--joint",
        help="knee, ankle or shoulder: needed only when the checkpoint has heads for several "
        "joints (default: the checkpoint's joint). Studies of another joint fail.",
    ),
    batch: bool = typer.Option(
        False,
        "--batch",
        help="Each STUDY is a folder whose subfolders are the studies.",
    ),
) -> None:
    """Predict findings on new exams with a checkpoint (see `orthofed predict --help`)."""
    from core.inference.batch import check_out_dir, study_dirs
    from core.inference.model import load_predictor

    folders = study_dirs(studies, batch=batch)
    check_out_dir(out, studies=folders, inputs=studies)
    predictor = load_predictor(checkpoint, joint=joint)
    results = _run_with_progress(predictor, folders, out=out)
    failed = [r for r in results if not r.ok]
    for result in failed:
        typer.secho(f"failed {result.study}: {result.error}", fg="yellow", err=True)
    typer.echo(
        f"{len(results)} studies, {len(results) - len(failed)} predicted, {len(failed)} failed "
        f"({predictor.joint.value} model); summary {out / 'summary.csv'}"
    )
    raise typer.Exit(1 if failed else 0)


def _run_with_progress(predictor, folders: list[Path], *, out: Path):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from core.inference.batch import run_studies

    columns = (
        TextColumn("[bold]predicting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[study]}"),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("predict", total=len(folders), study="")

        def done(result) -> None:
            bar.update(task, advance=1, study=f"{result.study}: {result.status}")

        return run_studies(predictor, folders, out=out, on_study=done)


def register(app: typer.Typer) -> None:
    app.command("predict", help=PREDICT_HELP)(predict)
