"""One study in, its output folder out: read and check, preprocess, run the model, write
`prediction.json`, `report.html` and (knee) `seg.nii.gz` + `seg.dcm`.

Outputs are written into a hidden staging folder beside the target and renamed into place,
so `OUT/<study>` is always complete. A study that fails leaves no output folder (one left by
an earlier run is removed, so that no stale prediction sits beside a failed summary row).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from core.data.transforms import preprocess_with_affine
from core.inference.checks import StudyError
from core.inference.dicom_seg import Algorithm, write_dicom_seg
from core.inference.geometry import to_series_grid
from core.inference.model import Predictor, run_model
from core.inference.outputs import (
    PREDICTION_NAME,
    REPORT_NAME,
    SEG_DICOM_NAME,
    SEG_NIFTI_NAME,
    prediction_payload,
    write_prediction,
    write_seg_nifti,
)
from core.inference.report import render_report, segmentation_section
from core.inference.study import Study, read_study
from core.models.registry import SEG_VIEW
from core.views import Joint


@dataclass
class StudyResult:
    """The summary row of one study."""

    study: str
    status: str  # "ok" or "failed"
    joint: str
    decisions: dict[str, bool] = field(default_factory=dict)
    views: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def predict_study(predictor: Predictor, study_dir: Path, *, out_root: Path) -> StudyResult:
    """Predict one study into `out_root/<study folder name>`; never raises for a bad study."""
    name = Path(study_dir).resolve().name
    target = Path(out_root) / name
    staging = Path(out_root) / f".{name}.partial"
    try:
        _check_target(target, study_dir=study_dir)
        study = read_study(study_dir, joint=predictor.joint, preprocess=predictor.preprocess)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        payload = _predict_into(predictor, study, out_dir=staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except Exception as err:  # one bad study must not stop a batch
        shutil.rmtree(staging, ignore_errors=True)
        if _ours(target) and not _overlaps(target, study_dir):
            shutil.rmtree(target)
        return StudyResult(
            study=name, status="failed", joint=predictor.joint.value, error=_line(err)
        )
    return StudyResult(
        study=name,
        status="ok",
        joint=payload["joint"],
        decisions={n: e["decision"] for n, e in payload["labels"].items()},
        views=payload["views"],
        warnings=payload["warnings"],
    )


def _line(err: Exception) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, (StudyError, ValueError, FileNotFoundError)):
        return text
    return f"internal error ({type(err).__name__}): {text}"


def _ours(target: Path) -> bool:
    """An output folder of an earlier run (or an empty one) that may be replaced."""
    return target.is_dir() and ((target / PREDICTION_NAME).is_file() or not any(target.iterdir()))


def _overlaps(target: Path, study_dir: Path) -> bool:
    study, out = Path(study_dir).resolve(), target.resolve()
    return study.is_relative_to(out) or out.is_relative_to(study)


def _check_target(target: Path, *, study_dir: Path) -> None:
    if _overlaps(target, study_dir):
        raise StudyError(f"{target} overlaps the study folder: choose another --out")
    if target.exists() and not _ours(target):
        raise StudyError(
            f"{target} exists and is not an orthofed prediction folder: move it away or "
            "choose another --out"
        )


def _predict_into(predictor: Predictor, study: Study, *, out_dir: Path) -> dict:
    prepared = {
        view: preprocess_with_affine(volume, view=view, config=predictor.preprocess)
        for view, volume in study.views.items()
    }
    output = run_model(predictor, {view: array for view, (array, _) in prepared.items()})
    warnings = list(study.warnings)
    segmentation = ""
    if output.seg is not None:
        labels = to_series_grid(
            output.seg, model_affine=prepared[SEG_VIEW][1], volume=study.views[SEG_VIEW]
        )
        files = _write_segmentation(predictor, study, labels, out_dir=out_dir, warnings=warnings)
        segmentation = segmentation_section(study.views[SEG_VIEW], labels, files=files)
    else:
        warnings += _no_segmentation(predictor, study)
    payload = prediction_payload(
        joint=predictor.joint,
        probabilities=output.probabilities,
        thresholds=predictor.thresholds,
        views=list(study.views),
        warnings=warnings,
        thresholds_source=predictor.thresholds_source,
    )
    write_prediction(out_dir, payload)
    html = render_report(
        study=study.name,
        payload=payload,
        checkpoint=predictor.checkpoint,
        segmentation=segmentation,
    )
    (out_dir / REPORT_NAME).write_text(html)
    return payload


def _no_segmentation(predictor: Predictor, study: Study) -> list[str]:
    if predictor.joint != Joint.KNEE:
        return []
    if not predictor.segments:
        return ["the checkpoint has no knee segmentation head: no segmentation written"]
    return [f"no {SEG_VIEW.value} series: no segmentation written"]


def _write_segmentation(
    predictor: Predictor, study: Study, labels: np.ndarray, *, out_dir: Path, warnings: list[str]
) -> list[str]:
    """seg.nii.gz always, seg.dcm for a DICOM series; returns the names written."""
    volume = study.views[SEG_VIEW]
    write_seg_nifti(out_dir / SEG_NIFTI_NAME, labels, volume=volume)
    facts = study.series.get(SEG_VIEW)
    if facts is None:
        warnings.append(
            f"the {SEG_VIEW.value} series is NIfTI: no DICOM SEG written ({SEG_NIFTI_NAME} only)"
        )
        return [SEG_NIFTI_NAME]
    try:
        write_dicom_seg(
            out_dir / SEG_DICOM_NAME,
            labels,
            volume=volume,
            files=facts.files,
            algorithm=_algorithm(predictor),
        )
    except Exception as err:  # the NIfTI is still useful; say why the SEG is missing
        (out_dir / SEG_DICOM_NAME).unlink(missing_ok=True)
        warnings.append(f"no DICOM SEG written: {' '.join(str(err).split())}")
        return [SEG_NIFTI_NAME]
    return [SEG_NIFTI_NAME, SEG_DICOM_NAME]


def _algorithm(predictor: Predictor) -> Algorithm:
    try:
        version = metadata.version("orthofed")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return Algorithm(
        version=version,
        model=f"{predictor.joint.value} model, preset {predictor.preset}",
        serial=predictor.digest,
    )
