"""Writes small synthetic DICOM MR series (and non-image objects) with pydicom, for tests.

Every series knows the array a correct reader must return: slices in ascending position
along the slice normal, after RescaleSlope/Intercept, float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    BasicTextSRStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import DSfloat
from scipy.spatial.transform import Rotation

from core.data.volume import standard_orientation


@dataclass(frozen=True)
class WrittenSeries:
    """What was written and what a reader must give back."""

    files: list[Path]  # in ascending position order
    array: np.ndarray  # expected float32 (S, R, C)
    series_uid: str
    row_cosines: np.ndarray
    col_cosines: np.ndarray
    normal: np.ndarray
    origin: np.ndarray
    spacing: tuple[float, float, float]


def tilted_orientation(view: str, *, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Standard orientation of `view` rotated `degrees` about an in-plane diagonal.

    The slice normal ends up exactly `degrees` away from the view's patient axis
    (a double-oblique tilt).
    """
    row, col = standard_orientation(view)
    axis = (row + col) / np.linalg.norm(row + col)
    rotation = Rotation.from_rotvec(axis * np.radians(degrees))
    return rotation.apply(row), rotation.apply(col)


def _ds(values) -> list[DSfloat]:
    return [DSfloat(float(v), auto_format=True) for v in values]


def base_dataset(*, sop_class: str = MRImageStorage, modality: str = "MR") -> Dataset:
    """A dataset with file meta and identity, no image."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = "TEST"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = generate_uid()
    return ds


def _set_image(ds: Dataset, pixels: np.ndarray) -> None:
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()


def write_series(
    folder: Path,
    *,
    view: str = "sagittal",
    n_slices: int = 12,
    rows: int = 16,
    cols: int = 16,
    tilt_deg: float = 0.0,
    orientation: tuple[np.ndarray, np.ndarray] | None = None,
    spacing: tuple[float, float, float] = (3.0, 0.5, 0.6),
    origin: tuple[float, float, float] = (-20.0, 10.0, 30.0),
    skip: tuple[int, ...] = (),
    slope: float = 1.0,
    intercept: float = 0.0,
    transfer_syntax: str = ExplicitVRLittleEndian,
    prefix: str = "IM",
    series_number: int = 1,
    description: str = "",
    series_uid: str | None = None,
    seed: int = 0,
) -> WrittenSeries:
    """Write one single-frame MR series with shuffled file names and InstanceNumbers.

    `skip` drops slice indices (a missing slice); positions of the others are unchanged.
    """
    rng = np.random.default_rng(seed)
    if orientation is None:
        orientation = tilted_orientation(view, degrees=tilt_deg)
    row, col = orientation
    normal = np.cross(row, col)
    uid = series_uid or generate_uid()
    pixels = rng.integers(0, 4000, size=(n_slices, rows, cols), dtype=np.uint16)
    kept = [k for k in range(n_slices) if k not in skip]
    names = rng.permutation(len(kept))
    instances = rng.permutation(len(kept)) + 1
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, k in enumerate(kept):
        ds = base_dataset()
        ds.SeriesInstanceUID = uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.InstanceNumber = int(instances[i])
        ds.ImageOrientationPatient = _ds([*row, *col])
        ds.ImagePositionPatient = _ds(np.asarray(origin) + k * spacing[0] * normal)
        ds.PixelSpacing = _ds(spacing[1:])
        ds.SliceThickness = DSfloat(spacing[0], auto_format=True)
        ds.RescaleSlope = DSfloat(slope, auto_format=True)
        ds.RescaleIntercept = DSfloat(intercept, auto_format=True)
        _set_image(ds, pixels[k])
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax, pixels[k], generate_instance_uid=False)
        path = folder / f"{prefix}{int(names[i]):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    expected = (pixels[kept].astype(np.float64) * slope + intercept).astype(np.float32)
    return WrittenSeries(
        files=files,
        array=expected,
        series_uid=uid,
        row_cosines=row,
        col_cosines=col,
        normal=normal,
        origin=np.asarray(origin, dtype=float),
        spacing=spacing,
    )


def write_enhanced_series(
    path: Path,
    *,
    view: str = "coronal",
    n_frames: int = 10,
    rows: int = 16,
    cols: int = 16,
    spacing: tuple[float, float, float] = (2.0, 0.5, 0.5),
    slope: float = 1.0,
    intercept: float = 0.0,
    seed: int = 0,
) -> WrittenSeries:
    """Write one Enhanced MR multi-frame file whose frames are stored in shuffled order."""
    rng = np.random.default_rng(seed)
    row, col = standard_orientation(view)
    normal = np.cross(row, col)
    origin = np.array([5.0, -7.0, 12.0])
    pixels = rng.integers(0, 4000, size=(n_frames, rows, cols), dtype=np.uint16)
    order = rng.permutation(n_frames)
    ds = base_dataset(sop_class=EnhancedMRImageStorage)
    ds.SeriesNumber, ds.SeriesDescription = 7, "enhanced"
    ds.NumberOfFrames = n_frames
    shared = Dataset()
    shared.PlaneOrientationSequence = Sequence([Dataset()])
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = _ds([*row, *col])
    shared.PixelMeasuresSequence = Sequence([Dataset()])
    shared.PixelMeasuresSequence[0].PixelSpacing = _ds(spacing[1:])
    shared.PixelMeasuresSequence[0].SliceThickness = DSfloat(spacing[0], auto_format=True)
    shared.PixelValueTransformationSequence = Sequence([Dataset()])
    shared.PixelValueTransformationSequence[0].RescaleSlope = DSfloat(slope, auto_format=True)
    shared.PixelValueTransformationSequence[0].RescaleIntercept = DSfloat(
        intercept, auto_format=True
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in order:
        group = Dataset()
        group.PlanePositionSequence = Sequence([Dataset()])
        group.PlanePositionSequence[0].ImagePositionPatient = _ds(origin + k * spacing[0] * normal)
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    _set_image(ds, pixels[order])
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    expected = (pixels.astype(np.float64) * slope + intercept).astype(np.float32)
    return WrittenSeries(
        files=[path],
        array=expected,
        series_uid=str(ds.SeriesInstanceUID),
        row_cosines=row,
        col_cosines=col,
        normal=normal,
        origin=origin,
        spacing=spacing,
    )


def write_structured_report(path: Path) -> None:
    """A non-image DICOM object (Basic Text SR)."""
    ds = base_dataset(sop_class=BasicTextSRStorage, modality="SR")
    ds.ContentDate = "20240101"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_secondary_capture(path: Path) -> None:
    """A screenshot-like image object without patient geometry (modality OT)."""
    ds = base_dataset(sop_class=SecondaryCaptureImageStorage, modality="OT")
    _set_image(ds, np.zeros((8, 8), dtype=np.uint16))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_garbage(path: Path, *, size: int = 600, seed: int = 1) -> None:
    """Random bytes under a DICOM-looking name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).bytes(size))


def truncate(path: Path, *, keep_fraction: float = 0.5) -> None:
    """Cut a file short (a copy interrupted mid-way)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


def read_back(path: Path) -> Dataset:
    """Full dataset of a written file (for assertions)."""
    return pydicom.dcmread(path)
