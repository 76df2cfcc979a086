"""First pass of the DICOM reader: headers only (no pixels) -> one `SliceRecord` per 2D image.

Each file is either kept (its slices or frames become records), skipped with a note (not
DICOM, not MR, no geometry, DICOMDIR, secondary capture, structured report ...) or reported
as a problem naming the file (damaged, unreadable, malformed geometry). Nothing raises.
Enhanced (multi-frame) MR is read through its per-frame functional groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

# Suffixes that say "this is meant to be DICOM": failing to parse them is a problem, not a note.
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ".ima"})
MEDIA_DIRECTORY_SOP = "1.2.840.10008.1.3.10"
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
MR_IMAGE_SOPS = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
    }
)
# Header bytes larger than this (private vendor blobs) are not loaded during the header pass.
DEFER_SIZE = "16 KB"


@dataclass(frozen=True)
class SliceRecord:
    """Geometry and identity of one 2D image (a single-frame file or one frame of a file)."""

    path: Path
    frame: int | None
    series_uid: str
    series_number: str
    description: str
    sop_uid: str
    orientation: tuple[float, ...]
    position: tuple[float, float, float]
    pixel_spacing: tuple[float, float]
    rows: int
    cols: int
    slope: float
    intercept: float


@dataclass
class HeaderResult:
    """Outcome for one file: records, or a note (skipped), or a problem (damaged)."""

    records: list[SliceRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_headers(path: Path, *, name: str) -> HeaderResult:
    """Read one file's header and classify it; `name` is how messages refer to the file."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size=DEFER_SIZE)
    except InvalidDicomError:
        if path.suffix.lower() in DICOM_SUFFIXES:
            return HeaderResult(problems=[f"{name}: damaged DICOM file (no DICOM header found)"])
        return HeaderResult(notes=[f"{name}: skipped, not a DICOM file"])
    except Exception as err:  # truncated or garbled files raise many different errors
        return HeaderResult(problems=[f"{name}: damaged DICOM file ({_describe(err)})"])
    skip = _skip_reason(ds, path)
    if skip:
        return HeaderResult(notes=[f"{name}: skipped, {skip}"])
    incomplete = _missing_attributes(ds)
    if incomplete:
        return HeaderResult(
            problems=[
                f"{name}: incomplete MR image, {', '.join(incomplete)} "
                "missing (file damaged or cut short?)"
            ]
        )
    try:
        if _is_multiframe(ds):
            return _frame_records(ds, path=path, name=name)
        return _single_record(ds, path=path, name=name)
    except (ValueError, TypeError, IndexError, AttributeError, KeyError) as err:
        return HeaderResult(problems=[f"{name}: malformed header ({_describe(err)})"])


def _describe(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _sop_class(ds: Dataset) -> str:
    """SOP class from the dataset, else from the file meta (which survives truncation)."""
    media = getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", "")
    return str(ds.get("SOPClassUID", "") or media or "")


def _skip_reason(ds: Dataset, path: Path) -> str:
    """Why a readable DICOM object is not an MR image slice ('' = it claims to be one).

    Objects whose SOP class says MR image are never skipped: if they lack attributes they
    are damaged (see `_missing_attributes`).
    """
    sop = _sop_class(ds)
    if path.name.upper() == "DICOMDIR" or sop == MEDIA_DIRECTORY_SOP:
        return "DICOMDIR (index file, not an image)"
    if sop in MR_IMAGE_SOPS:
        return ""
    modality = str(ds.get("Modality", "") or "").upper()
    if modality != "MR":
        return f"modality {modality or 'missing'} is not MR ({_sop_name(sop)})"
    if sop.startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary capture (screenshot without patient geometry)"
    if sop:
        return f"not an MR image object ({_sop_name(sop)})"
    return ""


def _missing_attributes(ds: Dataset) -> list[str]:
    """Attributes an MR image needs to be placed in space, absent from `ds`."""
    needed = ["Modality", "Rows", "Columns"]
    if not _is_multiframe(ds):
        needed += ["ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"]
    return [k for k in needed if k not in ds or ds[k].value in (None, "")]


def _sop_name(sop: str) -> str:
    if not sop:
        return "no SOP class"
    name = pydicom.uid.UID(sop).name
    return name if name and name != sop else sop


def _is_multiframe(ds: Dataset) -> bool:
    frames = ds.get("NumberOfFrames", 1)
    try:
        many = int(frames or 1) > 1
    except (TypeError, ValueError):
        many = False
    return many or "PerFrameFunctionalGroupsSequence" in ds


def _floats(value: object, *, count: int, what: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    if len(values) != count:
        raise ValueError(f"{what} has {len(values)} values, expected {count}")
    return values


def _common(ds: Dataset, path: Path) -> dict:
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    return {
        "path": path,
        "series_uid": uid or f"(no SeriesInstanceUID) {path.parent}",
        "series_number": str(ds.get("SeriesNumber", "") or ""),
        "description": str(ds.get("SeriesDescription", "") or ""),
        "rows": int(ds.Rows),
        "cols": int(ds.Columns),
    }


def _single_record(ds: Dataset, *, path: Path, name: str) -> HeaderResult:
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return HeaderResult(problems=[f"{name}: colour image, MR series must be greyscale"])
    record = SliceRecord(
        **_common(ds, path),
        frame=None,
        sop_uid=str(ds.get("SOPInstanceUID", "") or name),
        orientation=_floats(ds.ImageOrientationPatient, count=6, what="ImageOrientationPatient"),
        position=_floats(ds.ImagePositionPatient, count=3, what="ImagePositionPatient"),  # type: ignore[arg-type]
        pixel_spacing=_floats(ds.PixelSpacing, count=2, what="PixelSpacing"),  # type: ignore[arg-type]
        slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
        intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
    )
    return HeaderResult(records=[record])


def _group_value(frame_group: Dataset, shared: Dataset, *, sequence: str, keyword: str):
    """A functional-group attribute, per-frame first, then shared; None when absent."""
    for group in (frame_group, shared):
        items = group.get(sequence)
        if items and keyword in items[0]:
            return items[0][keyword].value
    return None


def _frame_records(ds: Dataset, *, path: Path, name: str) -> HeaderResult:
    """Enhanced MR: one record per frame from the per-frame / shared functional groups."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != frames:
        return HeaderResult(
            problems=[
                f"{name}: multi-frame file without per-frame geometry is not supported; "
                "export the series as single-frame images"
            ]
        )
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else Dataset()
    common = _common(ds, path)
    sop = str(ds.get("SOPInstanceUID", "") or name)
    records = []
    for index, group in enumerate(per_frame):
        orientation = _group_value(
            group, shared, sequence="PlaneOrientationSequence", keyword="ImageOrientationPatient"
        )
        position = _group_value(
            group, shared, sequence="PlanePositionSequence", keyword="ImagePositionPatient"
        )
        spacing = _group_value(
            group, shared, sequence="PixelMeasuresSequence", keyword="PixelSpacing"
        )
        if orientation is None or position is None or spacing is None:
            return HeaderResult(problems=[f"{name}: frame {index + 1} has no patient geometry"])
        slope = _group_value(
            group, shared, sequence="PixelValueTransformationSequence", keyword="RescaleSlope"
        )
        intercept = _group_value(
            group, shared, sequence="PixelValueTransformationSequence", keyword="RescaleIntercept"
        )
        records.append(
            SliceRecord(
                **common,
                frame=index,
                sop_uid=f"{sop}#{index + 1}",
                orientation=_floats(orientation, count=6, what="ImageOrientationPatient"),
                position=_floats(position, count=3, what="ImagePositionPatient"),  # type: ignore[arg-type]
                pixel_spacing=_floats(spacing, count=2, what="PixelSpacing"),  # type: ignore[arg-type]
                slope=float(slope if slope is not None else 1.0),
                intercept=float(intercept if intercept is not None else 0.0),
            )
        )
    return HeaderResult(records=records)
