"""A case folder -> one volume per view, assigned by slice geometry.

Every DICOM series and every NIfTI file under the case folder (any nesting) is read; each
valid volume claims the view its slice normal follows (`core.views.view_from_normal`).
A view claimed by two or more series is a problem naming them all and is left unassigned.
A view nobody claims is only listed in `missing_views`. Messages use paths relative to the
case folder; `core.data.check` prefixes them with the case id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.config import DataConfig
from core.data.dicom import read_dicom_files
from core.data.nifti import is_nifti, read_nifti
from core.data.volume import Volume
from core.views import VIEWS, View, view_from_normal

_COUNT_WORDS = {2: "two", 3: "three", 4: "four"}


@dataclass
class CaseScan:
    """What a case folder holds: volumes per view, views nobody claims, problems, notes."""

    case_id: str
    views: dict[View, Volume] = field(default_factory=dict)
    missing_views: list[View] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def scan_case(case_dir: Path, *, config: DataConfig) -> CaseScan:
    """Read all image series under `case_dir` and assign them to views."""
    case_dir = Path(case_dir)
    scan = CaseScan(case_id=case_dir.name)
    if not case_dir.is_dir():
        scan.problems.append(f"{case_dir}: case folder not found")
        return scan
    files = sorted(p for p in case_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    volumes = _read_volumes(files, case_dir=case_dir, config=config, scan=scan)
    claims: dict[View, list[tuple[str, Volume]]] = {view: [] for view in VIEWS}
    for name, volume in volumes:
        try:
            view = view_from_normal(volume.normal, max_obliquity_deg=config.max_obliquity_deg)
        except ValueError as err:
            scan.problems.append(f"{name}: {err}")
            continue
        claims[view].append((name, volume))
    for view in VIEWS:
        _assign(view, claims[view], scan=scan)
    if not scan.views:
        scan.problems.append(
            f"no usable image series ({len(files)} files looked at, {len(volumes)} readable series)"
        )
    return scan


def _read_volumes(
    files: list[Path], *, case_dir: Path, config: DataConfig, scan: CaseScan
) -> list[tuple[str, Volume]]:
    """(name, volume) for every readable series; reader problems and notes go to `scan`."""
    dicom = read_dicom_files(
        [p for p in files if not is_nifti(p)],
        root=case_dir,
        min_slices=config.min_slices,
        spacing_tolerance=config.spacing_tolerance,
    )
    scan.problems.extend(dicom.problems)
    scan.notes.extend(dicom.notes)
    volumes = _named(dicom.volumes, case_dir=case_dir)
    for path in (p for p in files if is_nifti(p)):
        name = path.relative_to(case_dir).as_posix()
        try:
            volume = read_nifti(path, name=name)
        except ValueError as err:
            scan.problems.append(str(err))
            continue
        if volume.slices < config.min_slices:
            scan.problems.append(
                f"{name}: too few slices ({volume.slices}, at least {config.min_slices} needed)"
            )
            continue
        volumes.append((name, volume))
    return volumes


def _named(volumes: list[Volume], *, case_dir: Path) -> list[tuple[str, Volume]]:
    """Name DICOM volumes by folder (relative to the case) and description; a UID tail is
    added only where two series would otherwise share a name."""
    names = [_dicom_name(v, case_dir=case_dir) for v in volumes]
    return [
        (f"{name} [uid ...{(v.series_uid or '')[-8:]}]" if names.count(name) > 1 else name, v)
        for name, v in zip(names, volumes, strict=True)
    ]


def _dicom_name(volume: Volume, *, case_dir: Path) -> str:
    try:
        folder = Path(volume.source).relative_to(case_dir).as_posix()
    except ValueError:
        folder = volume.source
    return f"{folder} ({volume.description!r})" if volume.description else folder


def _assign(view: View, claimed: list[tuple[str, Volume]], *, scan: CaseScan) -> None:
    if not claimed:
        scan.missing_views.append(view)
    elif len(claimed) == 1:
        scan.views[view] = claimed[0][1]
    else:
        names = [name for name, _ in claimed]
        listed = ", ".join(names[:-1]) + f" and {names[-1]}"
        count = _COUNT_WORDS.get(len(names), str(len(names)))
        scan.problems.append(f"{count} series claim the {view.value} view: {listed}")
