"""Is a folder given as a site really one case? (`orthofed data` refuses it, since the series
folders of one case would otherwise each be taken for a case.)

A site folder holds one subfolder per case. One case folder instead holds image files itself,
or subfolders that each hold the image files of one series, all of one study.
"""

from __future__ import annotations

from pathlib import Path

import pydicom

from core.data.manifest import Site
from core.data.nifti import is_nifti

_NOT_IMAGES = frozenset({"DICOMDIR"})  # an export's index, found at a site's top as well
_LISTED = 3


def _is_dicom(path: Path) -> bool:
    """A DICOM file by its preamble (128 bytes, then 'DICM'); cheap, reads 132 bytes."""
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _image_files(folder: Path) -> list[Path]:
    """DICOM and NIfTI files directly in `folder` (not below it)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [
        p
        for p in entries
        if p.is_file()
        and not p.name.startswith(".")
        and p.name not in _NOT_IMAGES
        and (is_nifti(p) or _is_dicom(p))
    ]


def _study_uid(path: Path) -> str:
    if is_nifti(path):
        return ""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
    except Exception:  # noqa: BLE001 - an unreadable file only means "no study known"
        return ""
    return str(ds.get("StudyInstanceUID", ""))


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def one_case_reason(site: Site) -> str:
    """Why the site's data folder looks like a single case; '' when it does not."""
    root = site.data_root
    if files := _image_files(root):
        return f"it holds image files itself ({_listed([p.name for p in files])})"
    case_dirs = site.case_dirs()
    series = {d.name: _image_files(d) for d in case_dirs}
    if len(case_dirs) < 2 or not all(series.values()):
        return ""
    studies = {_study_uid(files[0]) for files in series.values()}
    if len(studies) != 1 or "" in studies:
        return ""
    return f"its subfolders {_listed(sorted(series))} hold the series of one study"
