"""DICOM MR reader: a folder tree of any nesting -> one `Volume` per valid series.

Headers are read first (no pixels, `dicom_headers`), files are grouped by
SeriesInstanceUID (several series mixed in one folder are split), each series is checked
(one orientation, one image size, slices evenly spaced, no duplicates, enough slices) and
only then are its pixels decoded (compressed transfer syntaxes through pydicom's plugins:
RLE, JPEG-LS, JPEG lossless, JPEG 2000) and rescaled (RescaleSlope/Intercept).

Slices are ordered by their position along the slice normal
(ImagePositionPatient . cross(row cosines, column cosines)), never by file name or
InstanceNumber. Nothing raises: damaged files and invalid series become `problems`
naming the file or series; skipped objects become `notes`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom.pixels

from core.data.dicom_headers import SliceRecord, read_headers
from core.data.volume import Volume, slice_affine

# Positions closer than this (mm) along the normal are the same slice.
DUPLICATE_MM = 0.01
# Orientation cosines / pixel spacings that differ by less than this are equal.
GEOMETRY_TOLERANCE = 1e-3
# How many irregular gaps a problem message lists before summarising.
MAX_LISTED_GAPS = 3


@dataclass
class DicomScanResult:
    """Volumes of the valid series, plus problems (each naming a file or series) and notes."""

    volumes: list[Volume] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Series:
    """A series being checked: its records (sorted later) and how messages name it."""

    uid: str
    label: str
    records: list[SliceRecord]


def read_dicom_series(root: Path, *, min_slices: int, spacing_tolerance: float) -> DicomScanResult:
    """Read every DICOM MR series under `root` (any nesting); messages use paths relative to it."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: DICOM folder not found")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    return read_dicom_files(
        files, root=root, min_slices=min_slices, spacing_tolerance=spacing_tolerance
    )


def read_dicom_files(
    files: Iterable[Path], *, root: Path, min_slices: int, spacing_tolerance: float
) -> DicomScanResult:
    """Like `read_dicom_series` for an explicit file list (e.g. a case folder minus its NIfTI)."""
    if min_slices < 1:
        raise ValueError(f"min_slices must be at least 1, got {min_slices}")
    if not 0 < spacing_tolerance < 1:
        raise ValueError(f"spacing_tolerance must be in (0, 1), got {spacing_tolerance}")
    result = DicomScanResult()
    by_series: dict[str, list[SliceRecord]] = defaultdict(list)
    for path in files:
        header = read_headers(path, name=_relative(path, root))
        result.notes.extend(header.notes)
        result.problems.extend(header.problems)
        for record in header.records:
            by_series[record.series_uid].append(record)
    for uid, records in by_series.items():
        series = _Series(uid=uid, label=series_label(records, root=root), records=records)
        volume, problems, notes = _assemble(
            series, root=root, min_slices=min_slices, spacing_tolerance=spacing_tolerance
        )
        result.problems.extend(problems)
        result.notes.extend(notes)
        if volume is not None:
            result.volumes.append(volume)
    return result


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def series_label(records: list[SliceRecord], *, root: Path) -> str:
    """How a radiographer finds the series: its folder, number and description."""
    folders = {r.path.parent for r in records}
    folder = _relative(Path(_common_parent(folders)), root) if folders else "."
    first = records[0]
    parts = [f"series {first.series_number}" if first.series_number else "series"]
    if first.description:
        parts.append(repr(first.description))
    if not first.series_number and not first.description:
        parts.append(first.series_uid[-12:])
    return f"{folder} ({' '.join(parts)})"


def _common_parent(folders: set[Path]) -> Path:
    paths = [p.parts for p in folders]
    common = []
    for items in zip(*paths, strict=False):
        if len(set(items)) != 1:
            break
        common.append(items[0])
    return Path(*common) if common else Path(".")


def _assemble(
    series: _Series, *, root: Path, min_slices: int, spacing_tolerance: float
) -> tuple[Volume | None, list[str], list[str]]:
    """Check one series and decode it: (volume or None, problems, notes)."""
    problem = _consistency_problem(series.records)
    if problem:
        return None, [f"{series.label}: {problem}"], []
    normal = _normal(series.records[0])
    ordered, notes, problems = _order_and_dedupe(series, normal=normal, root=root)
    positions = np.array([np.dot(r.position, normal) for r in ordered])
    problems += [
        f"{series.label}: {p}"
        for p in _stack_problems(
            ordered,
            positions=positions,
            normal=normal,
            limits=(min_slices, spacing_tolerance),
            root=root,
        )
    ]
    if problems:
        return None, problems, notes
    pixels, decode_problems = _decode(ordered, root=root)
    if pixels is None:
        return None, [f"{series.label}: {p}" for p in decode_problems], notes
    return _volume(ordered, pixels=pixels, positions=positions, series=series), [], notes


def _stack_problems(
    ordered: list[SliceRecord],
    *,
    positions: np.ndarray,
    normal: np.ndarray,
    limits: tuple[int, float],
    root: Path,
) -> list[str]:
    """Too few slices, irregular gaps, in-plane shifts; `limits` = (min_slices, tolerance)."""
    min_slices, tolerance = limits
    problems = []
    if len(ordered) < min_slices:
        problems.append(f"too few slices ({len(ordered)}, at least {min_slices} needed)")
    problems += _spacing_problems(ordered, positions=positions, tolerance=tolerance, root=root)
    shift = _inplane_shift(ordered, normal=normal)
    if shift > 0.5 * max(ordered[0].pixel_spacing):
        problems.append(
            f"slices are shifted in-plane by up to {shift:.1f} mm (sheared stack), not supported"
        )
    return problems


def _consistency_problem(records: list[SliceRecord]) -> str:
    first = records[0]
    orientations = np.array([r.orientation for r in records])
    distinct = _count_distinct(orientations)
    if distinct > 1:
        return (
            f"orientation mixed inside series ({distinct} orientations across "
            f"{len(records)} images); export each stack as its own series"
        )
    if len({(r.rows, r.cols) for r in records}) > 1:
        return "image size mixed inside series"
    if _count_distinct(np.array([r.pixel_spacing for r in records])) > 1:
        return "pixel spacing mixed inside series"
    row, col = np.array(first.orientation[:3]), np.array(first.orientation[3:])
    if (
        abs(np.linalg.norm(row) - 1) > 0.01
        or abs(np.linalg.norm(col) - 1) > 0.01
        or abs(float(np.dot(row, col))) > 0.01
    ):
        return "ImageOrientationPatient is not two orthogonal unit vectors"
    if min(first.pixel_spacing) <= 0:
        return "PixelSpacing must be positive"
    return ""


def _count_distinct(values: np.ndarray) -> int:
    distinct: list[np.ndarray] = []
    for v in values:
        if not any(
            np.max(np.abs(v - d)) <= GEOMETRY_TOLERANCE * max(1.0, np.max(np.abs(d)))
            for d in distinct
        ):
            distinct.append(v)
    return len(distinct)


def _normal(record: SliceRecord) -> np.ndarray:
    row, col = np.array(record.orientation[:3]), np.array(record.orientation[3:])
    normal = np.cross(row, col)
    return normal / np.linalg.norm(normal)


def _order_and_dedupe(
    series: _Series, *, normal: np.ndarray, root: Path
) -> tuple[list[SliceRecord], list[str], list[str]]:
    """Sort by position along the normal; drop exact copies (note), report other duplicates."""
    ordered = sorted(
        series.records, key=lambda r: (float(np.dot(r.position, normal)), str(r.path), r.frame or 0)
    )
    kept: list[SliceRecord] = [ordered[0]]
    notes: list[str] = []
    problems: list[str] = []
    for record in ordered[1:]:
        previous = kept[-1]
        gap = float(np.dot(record.position, normal) - np.dot(previous.position, normal))
        if gap >= DUPLICATE_MM:
            kept.append(record)
        elif record.sop_uid == previous.sop_uid:
            notes.append(f"{_name(record, root)}: skipped, copy of {_name(previous, root)}")
        else:
            problems.append(
                f"{series.label}: duplicate slice at {np.dot(record.position, normal):.2f} mm: "
                f"{_name(previous, root)} and {_name(record, root)} (repeated acquisition or "
                "several echoes in one series?)"
            )
    if len(problems) > MAX_LISTED_GAPS:
        extra = len(problems) - MAX_LISTED_GAPS
        problems = problems[:MAX_LISTED_GAPS] + [f"{series.label}: {extra} more duplicate slices"]
    return kept, notes, problems


def _name(record: SliceRecord, root: Path) -> str:
    name = _relative(record.path, root)
    return name if record.frame is None else f"{name} frame {record.frame + 1}"


def _spacing_problems(
    ordered: list[SliceRecord], *, positions: np.ndarray, tolerance: float, root: Path
) -> list[str]:
    """Missing slices (gap ~ k x usual) and uneven spacing (gap off the median by > tolerance)."""
    if len(ordered) < 3:
        return []
    gaps = np.diff(positions)
    usual = float(np.median(gaps))
    bad = [i for i, g in enumerate(gaps) if abs(g - usual) > tolerance * usual]
    messages = []
    for i in bad[:MAX_LISTED_GAPS]:
        ratio = gaps[i] / usual
        between = f"between {_name(ordered[i], root)} and {_name(ordered[i + 1], root)}"
        if round(ratio) >= 2 and abs(ratio - round(ratio)) <= tolerance * round(ratio):
            missing = round(ratio) - 1
            messages.append(
                f"missing slice{'s' if missing > 1 else ''}: gap of {gaps[i]:.2f} mm "
                f"{between} is {round(ratio)} times the usual {usual:.2f} mm "
                f"({missing} slice{'s' if missing > 1 else ''} missing)"
            )
        else:
            messages.append(
                f"uneven slice spacing: gap of {gaps[i]:.2f} mm {between}, usual "
                f"{usual:.2f} mm (tolerance {tolerance:.0%})"
            )
    if len(bad) > MAX_LISTED_GAPS:
        messages.append(f"{len(bad) - MAX_LISTED_GAPS} more irregular slice gaps")
    return messages


def _inplane_shift(ordered: list[SliceRecord], *, normal: np.ndarray) -> float:
    """Largest in-plane offset (mm) between slice positions (0 for a straight stack)."""
    positions = np.array([r.position for r in ordered])
    inplane = positions - np.outer(positions @ normal, normal)
    return float(np.max(np.linalg.norm(inplane - inplane[0], axis=1)))


def _decode(ordered: list[SliceRecord], *, root: Path) -> tuple[np.ndarray | None, list[str]]:
    """Decode and rescale every slice (each file decoded once); problems name the file."""
    decoded: dict[Path, np.ndarray] = {}
    slices = []
    for record in ordered:
        if record.path not in decoded:
            try:
                decoded[record.path] = pydicom.pixels.pixel_array(record.path)
            except Exception as err:  # any decoder failure is a damaged or unsupported file
                return None, [
                    f"{_relative(record.path, root)}: cannot decode pixel data, "
                    f"file damaged or codec missing ({type(err).__name__}: {err})"
                ]
        frames = decoded[record.path]
        frame = frames if frames.ndim == 2 else frames[record.frame or 0]
        if frame.shape != (record.rows, record.cols):
            return None, [
                f"{_name(record, root)}: pixel data shape {frame.shape} does not match "
                f"Rows x Columns {record.rows} x {record.cols}"
            ]
        slices.append(frame.astype(np.float64) * record.slope + record.intercept)
    return np.stack(slices).astype(np.float32), []


def _volume(
    ordered: list[SliceRecord], *, pixels: np.ndarray, positions: np.ndarray, series: _Series
) -> Volume:
    first = ordered[0]
    row, col = np.array(first.orientation[:3]), np.array(first.orientation[3:])
    gap = float(np.median(np.diff(positions))) if len(ordered) > 1 else 1.0
    spacing = (gap, float(first.pixel_spacing[0]), float(first.pixel_spacing[1]))
    affine = slice_affine(
        origin=np.array(first.position), row_cosines=row, col_cosines=col, spacing=spacing
    )
    folders = {r.path.parent for r in ordered}
    return Volume(
        array=pixels,
        affine=affine,
        spacing=spacing,
        normal=_normal(first),
        source=str(_common_parent(folders)),
        series_uid=None if series.uid.startswith("(no SeriesInstanceUID)") else series.uid,
        description=first.description,
    )
