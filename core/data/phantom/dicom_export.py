"""Write a rendered view as a DICOM MR series, the way a hospital PACS export looks.

UIDs are derived from the seed (`generate_uid(entropy_srcs=...)`), so the same seed gives
byte-identical files; file names (IM00017.dcm...) carry no slice order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from core.data.phantom.geometry import ViewGeometry
from core.data.phantom.profiles import SiteProfile
from core.views import Joint, View

STORED_PER_UNIT = 2000.0  # stored value of fluid-like signal 1.0
MAX_STORED = 4095  # 12 bits stored
_SYNTAX = {"explicit": ExplicitVRLittleEndian, "rle": RLELossless, "jpegls": JPEGLSLossless}
_GIVEN = ("ALEX", "SAM", "JORDAN", "MARIA", "LUCA", "NOOR", "KIM", "ELENA", "OMAR", "PRIYA")
_FAMILY = ("MERCER", "OKAFOR", "LINDQVIST", "TANAKA", "ROSSI", "HALVORSEN", "DUBOIS", "NAIR")
_BODY_PART = {Joint.KNEE: "KNEE", Joint.ANKLE: "ANKLE", Joint.SHOULDER: "SHOULDER"}
_SEQUENCE = {"pd_fs": (3000.0, 35.0), "pd": (2800.0, 30.0), "t2_fs": (4000.0, 70.0)}


@dataclass(frozen=True)
class Patient:
    """Fake demographics and study facts for one case."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    study_date: str
    study_time: str
    accession: str


def fake_patient(rng: np.random.Generator) -> Patient:
    """Plausible, clearly fake patient/study identifiers (never equal to the case id)."""
    year = int(rng.integers(1950, 2006))
    study = np.datetime64("2021-01-01") + int(rng.integers(0, 1400))
    return Patient(
        name=f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}",
        patient_id=f"PX{int(rng.integers(10**6, 10**7))}",
        birth_date=f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        sex=str(rng.choice(["F", "M"])),
        study_date=str(study).replace("-", ""),
        study_time=f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}00",
        accession=f"A{int(rng.integers(10**7, 10**8))}",
    )


def uid(*parts: object) -> str:
    """A DICOM UID derived deterministically from `parts`."""
    return generate_uid(entropy_srcs=["orthofed-phantom", *map(str, parts)])


def _ds(v: float) -> DSfloat:
    return DSfloat(float(v), auto_format=True)


def to_stored(image: np.ndarray, *, slope: float | None) -> np.ndarray:
    """Float image (fluid ~ 1) to uint16 stored values (divided by the rescale slope)."""
    scaled = image * STORED_PER_UNIT / (slope or 1.0)
    return np.clip(np.rint(scaled), 0, MAX_STORED).astype(np.uint16)


def write_series(
    *,
    image: np.ndarray,
    geometry: ViewGeometry,
    folder: Path,
    profile: SiteProfile,
    joint: Joint,
    patient: Patient,
    keys: tuple,
    series_number: int,
    file_numbers: list[int],
) -> list[Path]:
    """Write one file per slice into `folder`; `keys` seed the UIDs (seed, case id)."""
    folder.mkdir(parents=True, exist_ok=True)
    stored = to_stored(image, slope=profile.rescale_slope)
    display = stored.astype(float) * (profile.rescale_slope or 1.0)
    lo, hi = np.percentile(display, [1.0, 99.5])
    study_uid, frame_uid = uid(*keys, "study"), uid(*keys, "frame")
    series_uid = uid(*keys, geometry.view, "series")
    paths = []
    for k, position in enumerate(geometry.slice_positions()):
        ds = _base_dataset(profile=profile, joint=joint, patient=patient, view=geometry.view)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SOPInstanceUID = uid(*keys, geometry.view, "image", k)
        ds.SeriesNumber, ds.InstanceNumber = series_number, k + 1
        _geometry_tags(ds, geometry, position)
        ds.WindowCenter, ds.WindowWidth = _ds((lo + hi) / 2), _ds(max(hi - lo, 1.0))
        _pixels(ds, stored[k], profile)
        path = folder / f"IM{file_numbers[k]:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _base_dataset(*, profile: SiteProfile, joint: Joint, patient: Patient, view: View) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.Modality = "MR"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.PatientName, ds.PatientID = patient.name, patient.patient_id
    ds.PatientBirthDate, ds.PatientSex = patient.birth_date, patient.sex
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = patient.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = patient.study_time
    ds.AccessionNumber, ds.StudyID = patient.accession, patient.accession[-4:]
    ds.InstitutionName = profile.institution
    ds.Manufacturer, ds.ManufacturerModelName = profile.manufacturer, profile.model
    ds.MagneticFieldStrength = _ds(profile.field_strength)
    ds.StudyDescription = f"MRI {joint.value.upper()} RIGHT"
    ds.SeriesDescription = profile.series_names.get(view, view.value)
    ds.BodyPartExamined, ds.Laterality = _BODY_PART[joint], "R"
    ds.PatientPosition = "FFS"
    ds.ScanningSequence, ds.SequenceVariant = "SE", "SK"
    tr, te = _SEQUENCE.get(profile.contrast, (3000.0, 35.0))
    ds.RepetitionTime, ds.EchoTime = _ds(tr), _ds(te)
    ds.EchoTrainLength = 8
    return ds


def _geometry_tags(ds: Dataset, g: ViewGeometry, position: np.ndarray) -> None:
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in (*g.row_dir, *g.col_dir)]
    ds.PixelSpacing = [_ds(g.pixel_spacing[0]), _ds(g.pixel_spacing[1])]
    ds.SliceThickness = _ds(g.slice_thickness)
    ds.SpacingBetweenSlices = _ds(g.slice_spacing)
    ds.SliceLocation = _ds(float(np.dot(position, g.normal)))
    ds.Rows, ds.Columns = g.shape[1], g.shape[2]


def _pixels(ds: Dataset, plane: np.ndarray, profile: SiteProfile) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    if profile.rescale_slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = _ds(profile.rescale_slope), _ds(0.0)
        ds.RescaleType = "US"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = np.ascontiguousarray(plane).tobytes()
    syntax = _SYNTAX[profile.transfer_syntax]
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, generate_instance_uid=False)
