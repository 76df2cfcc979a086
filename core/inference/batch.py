"""Many studies: which folders are studies, where their outputs may go, and `summary.csv`.

Output folders are named by the study folder's own name (the user's naming), never by DICOM
patient name, id or accession number. The output folder may be neither inside a study (or
the batch folder) nor hold one.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

from core.atomic import write_bytes_atomic
from core.inference.model import Predictor
from core.inference.pipeline import StudyResult, predict_study

SUMMARY_NAME = "summary.csv"


def study_dirs(paths: list[Path], *, batch: bool) -> list[Path]:
    """The study folders named by `paths` (with `batch`: the subfolders of each path)."""
    if not paths:
        raise ValueError("give at least one study folder")
    for path in paths:
        if not Path(path).is_dir():
            raise ValueError(f"{path}: not a folder")
    if not batch:
        return [Path(p) for p in paths]
    studies = []
    for root in paths:
        children = sorted(
            p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if not children:
            raise ValueError(
                f"{root}: no study folders inside (--batch expects a folder of studies)"
            )
        studies += children
    return studies


def check_out_dir(out: Path, *, studies: list[Path], inputs: list[Path]) -> None:
    """ValueError when writing under `out` could touch a study or an input folder."""
    out_abs = Path(out).resolve()
    names: dict[str, Path] = {}
    for study in studies:
        resolved = study.resolve()
        if resolved.name in names:
            raise ValueError(
                f"two studies are named {resolved.name!r} ({names[resolved.name]} and {study}): "
                "outputs are named by study folder, rename one"
            )
        names[resolved.name] = study
        target = out_abs / resolved.name
        if resolved.is_relative_to(target) or target.is_relative_to(resolved):
            raise ValueError(
                f"--out {out} would write into the study {study}: choose another folder"
            )
    for folder in {p.resolve() for p in [*studies, *inputs]}:
        if out_abs.is_relative_to(folder):
            raise ValueError(f"--out {out} is inside {folder}: predict never writes into studies")


def run_studies(
    predictor: Predictor,
    studies: list[Path],
    *,
    out: Path,
    on_study: Callable[[StudyResult], None] | None = None,
) -> list[StudyResult]:
    """Predict every study (failures recorded, the rest go on); writes OUT/summary.csv."""
    Path(out).mkdir(parents=True, exist_ok=True)
    results = []
    for study in studies:
        result = predict_study(predictor, study, out_root=Path(out))
        results.append(result)
        if on_study is not None:
            on_study(result)
    write_summary(Path(out) / SUMMARY_NAME, results, labels=predictor.labels)
    return results


def summary_rows(results: list[StudyResult], *, labels: tuple[str, ...]) -> list[list[str]]:
    """Header + one row per study: status, joint, views, warnings, 1/0 per label, error."""
    header = ["study", "status", "joint", "views", "warnings", *labels, "error"]
    rows = [header]
    for r in results:
        decisions = [str(int(r.decisions[n])) if n in r.decisions else "" for n in labels]
        views = " ".join(r.views)
        rows.append([r.study, r.status, r.joint, views, str(len(r.warnings)), *decisions, r.error])
    return rows


def write_summary(path: Path, results: list[StudyResult], *, labels: tuple[str, ...]) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(summary_rows(results, labels=labels))
    write_bytes_atomic(path, buffer.getvalue().encode())
    return path
