"""The files of one predicted study: `prediction.json` (the contract) and `seg.nii.gz`.

`prediction.json` keys, exactly: `joint`, `labels` (name -> probability, decision at the
threshold, threshold), `views` (those used), `warnings`, `thresholds_source`.
`seg.nii.gz` holds the knee label map (0 = background, k = KNEE_STRUCTURES[k - 1]) on the
original sagittal series' grid: for a DICOM series in (column, row, slice) voxel order with
the series' RAS affine; for a NIfTI series on that file's own voxel grid and affine.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from core.atomic import write_json_atomic
from core.data.volume import Volume, lps_ras_flip
from core.inference.geometry import nifti_layout, resample_nearest
from core.views import VIEWS, Joint, View

PREDICTION_NAME = "prediction.json"
SEG_NIFTI_NAME = "seg.nii.gz"
SEG_DICOM_NAME = "seg.dcm"
REPORT_NAME = "report.html"


def prediction_payload(
    *,
    joint: Joint,
    probabilities: dict[str, float],
    thresholds: dict[str, float],
    views: list[View],
    warnings: list[str],
    thresholds_source: str,
) -> dict:
    """The prediction.json object; decision = probability >= threshold."""
    labels = {
        name: {
            "probability": float(p),
            "decision": bool(p >= thresholds[name]),
            "threshold": float(thresholds[name]),
        }
        for name, p in probabilities.items()
    }
    return {
        "joint": joint.value,
        "labels": labels,
        "views": [v.value for v in VIEWS if v in views],
        "warnings": list(warnings),
        "thresholds_source": thresholds_source,
    }


def write_prediction(out_dir: Path, payload: dict) -> Path:
    path = Path(out_dir) / PREDICTION_NAME
    write_json_atomic(path, payload)
    return path


def write_seg_nifti(path: Path, labels: np.ndarray, *, volume: Volume) -> Path:
    """The label map (on `volume`'s (S, R, C) grid) as NIfTI; see the module docstring."""
    source = Path(volume.source)
    if source.is_file() and source.name.lower().endswith((".nii", ".nii.gz")):
        array, affine = _on_nifti_file_grid(labels, volume=volume, source=source)
        dim_info = None
    else:
        array, affine = nifti_layout(labels, volume=volume)
        dim_info = 2  # the slice axis, so that readers (and core.data.nifti) need not guess
    image = nib.Nifti1Image(array.astype(np.uint8), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    if dim_info is not None:
        image.header.set_dim_info(slice=dim_info)
    nib.save(image, str(path))
    return path


def _on_nifti_file_grid(
    labels: np.ndarray, *, volume: Volume, source: Path
) -> tuple[np.ndarray, np.ndarray]:
    """The label map on the voxel grid of the NIfTI file the series was read from."""
    header = nib.load(str(source))
    shape = tuple(int(n) for n in header.shape[:3])
    affine_ras = np.asarray(header.affine, dtype=np.float64)
    array = resample_nearest(
        labels,
        source_affine=volume.affine,
        target_affine=lps_ras_flip() @ affine_ras,
        target_shape=shape,
    )
    return array, affine_ras
