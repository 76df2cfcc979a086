"""Overview picture of a phantom site: central slice of each view for a few cases."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402

from core.views import VIEWS, view_from_normal  # noqa: E402


def read_series(folder: Path) -> np.ndarray:
    """Slices of one series (slices, rows, columns), sorted along the slice normal."""
    sets = [pydicom.dcmread(p) for p in folder.glob("*.dcm")]
    if not sets:
        raise ValueError(f"{folder}: no DICOM files")
    iop = np.array(sets[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    sets.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))
    return np.stack(
        [d.pixel_array.astype(np.float32) * float(getattr(d, "RescaleSlope", 1.0)) for d in sets]
    )


def _series_by_view(case_dir: Path) -> dict:
    out = {}
    for folder in sorted(p for p in case_dir.iterdir() if p.is_dir()):
        first = next(folder.glob("*.dcm"), None)
        if first is None:
            continue
        iop = np.array(
            pydicom.dcmread(first, stop_before_pixels=True).ImageOrientationPatient, float
        )
        out[view_from_normal(np.cross(iop[:3], iop[3:]))] = folder
    return out


def render_overview_png(*, site_dir: Path, out_png: Path, n_cases: int = 4) -> Path:
    """Grid (cases x views) of central slices titled with case, view and labels present."""
    site_dir = Path(site_dir)
    with (site_dir / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))[:n_cases]
    if not rows:
        raise ValueError(f"{site_dir}/labels.csv has no cases")
    fig, axes = plt.subplots(len(rows), 3, figsize=(11, 3.8 * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        cid = row.pop("case_id")
        present = [k for k, v in row.items() if v == "1"] or ["normal"]
        series = _series_by_view(site_dir / cid)
        for j, view in enumerate(VIEWS):
            ax = axes[i][j]
            ax.axis("off")
            if view not in series:
                continue
            vol = read_series(series[view])
            plane = vol[vol.shape[0] // 2]
            ax.imshow(plane, cmap="gray", vmin=0, vmax=float(np.percentile(vol, 99.7)))
            ax.set_title(f"{cid} {view.value}", fontsize=9)
        axes[i][0].text(
            0.0, -0.04, ", ".join(present), transform=axes[i][0].transAxes, fontsize=8, va="top"
        )
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png
