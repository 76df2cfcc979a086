"""What `orthofed predict` needs from DICOM headers beyond the data layer's volumes: each
series' modality and body part (to refuse CT or another joint) and its files (the source
instances a DICOM Segmentation references).

Headers only (no pixels); files pydicom cannot parse are left to the data layer, which
reports them as problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from core.data.nifti import is_nifti

_TAGS = (
    "Modality",
    "BodyPartExamined",
    "SeriesInstanceUID",
    "SeriesDescription",
    "SeriesNumber",
    "SOPInstanceUID",
)


@dataclass
class SeriesFacts:
    """One DICOM series as found in a study folder (any object type, any modality)."""

    uid: str
    modality: str
    body_part: str
    description: str
    number: str
    files: list[Path] = field(default_factory=list)

    @property
    def label(self) -> str:
        """How a radiographer finds the series: number and description, no identifiers."""
        number = f"series {self.number}" if self.number else "series"
        return f"{number} {self.description!r}" if self.description else number


def study_files(study_dir: Path) -> list[Path]:
    """Every file under a study folder, as the data layer reads them (hidden ones skipped)."""
    return sorted(
        p for p in Path(study_dir).rglob("*") if p.is_file() and not p.name.startswith(".")
    )


def survey_series(files: list[Path]) -> dict[str, SeriesFacts]:
    """SeriesInstanceUID -> facts of every DICOM series among `files` (NIfTI ignored)."""
    series: dict[str, SeriesFacts] = {}
    for path in files:
        if is_nifti(path):
            continue
        ds = _header(path)
        if ds is None or not ds.get("SeriesInstanceUID"):
            continue
        uid = str(ds.SeriesInstanceUID)
        facts = series.setdefault(uid, _facts(ds, uid=uid))
        facts.files.append(path)
    return series


def _header(path: Path) -> pydicom.Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_TAGS))
    except Exception:  # not DICOM or damaged: the data layer names such files
        return None


def _facts(ds: pydicom.Dataset, *, uid: str) -> SeriesFacts:
    return SeriesFacts(
        uid=uid,
        modality=str(ds.get("Modality", "") or "").strip().upper(),
        body_part=str(ds.get("BodyPartExamined", "") or "").strip().upper(),
        description=str(ds.get("SeriesDescription", "") or "").strip(),
        number=str(ds.get("SeriesNumber", "") or "").strip(),
    )
