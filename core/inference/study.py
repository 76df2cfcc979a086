"""A study folder -> the views the model reads, the facts behind them and the warnings.

Reading is the data layer's (`core.data.scan.scan_case`: any DICOM layout or NIfTI, views by
geometry, slices by position); a study with any reading problem fails as a whole rather than
being predicted from part of its images. Nothing is ever written into the study folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.config import DataConfig, PreprocessConfig
from core.data.nifti import is_nifti
from core.data.scan import scan_case
from core.data.volume import Volume
from core.inference.checks import (
    StudyError,
    check_joint,
    refuse_other_modalities,
    view_warnings,
)
from core.inference.headers import SeriesFacts, study_files, survey_series
from core.views import VIEWS, Joint, View

# Reading problems named in a failure line before summarising the rest.
SHOWN_PROBLEMS = 2


@dataclass
class Study:
    """A readable study: volumes per view, their DICOM facts (None for NIfTI), warnings."""

    name: str
    path: Path
    views: dict[View, Volume]
    series: dict[View, SeriesFacts | None]
    warnings: list[str] = field(default_factory=list)

    def is_dicom(self, view: View) -> bool:
        return self.series.get(view) is not None


def read_study(study_dir: Path, *, joint: Joint, preprocess: PreprocessConfig) -> Study:
    """Read and check one study; StudyError (one line) when it cannot be predicted."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise StudyError(f"{study_dir}: study folder not found")
    files = study_files(study_dir)
    series = survey_series(files)
    refuse_other_modalities(series)
    scan = scan_case(study_dir, config=DataConfig(preprocess=preprocess))
    if scan.problems:
        raise StudyError(_problems_line(scan.problems))
    if not scan.views:
        raise StudyError(f"no usable image series ({len(files)} files looked at)")
    views = {view: scan.views[view] for view in VIEWS if view in scan.views}
    used = {view: _series_of(volume, series) for view, volume in views.items()}
    warnings = check_joint([f for f in used.values() if f is not None], joint=joint)
    if any(f is None for f in used.values()):
        warnings.append(
            "NIfTI series carry no body part: not checked to be a " + joint.value + " exam"
        )
    warnings += view_warnings(views, preprocess=preprocess)
    warnings += _skipped_files(scan.notes)
    return Study(
        name=study_dir.resolve().name, path=study_dir, views=views, series=used, warnings=warnings
    )


def _series_of(volume: Volume, series: dict[str, SeriesFacts]) -> SeriesFacts | None:
    """The DICOM facts of a volume (None for a NIfTI file)."""
    if is_nifti(Path(volume.source)):
        return None
    if volume.series_uid and volume.series_uid in series:
        return series[volume.series_uid]
    raise StudyError(f"{volume.source}: series has no SeriesInstanceUID; cannot trace its files")


def _problems_line(problems: list[str]) -> str:
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    return "cannot read the study: " + shown + (f" (+{more} more problems)" if more > 0 else "")


def _skipped_files(notes: list[str]) -> list[str]:
    """One warning summarising files the reader skipped (non-image objects, copies)."""
    if not notes:
        return []
    first = notes[0]
    more = f" and {len(notes) - 1} more" if len(notes) > 1 else ""
    return [f"files skipped while reading: {first}{more}"]
