"""DICOM SEG writing on series the phantom does not make: shuffled single-frame files and an
Enhanced MR multi-frame file whose frames are stored out of order."""

import highdicom as hd
import numpy as np
import pytest

from core.config import DataConfig
from core.data.scan import scan_case
from core.inference.dicom_seg import Algorithm, source_images, write_dicom_seg
from core.inference.headers import study_files, survey_series
from core.views import View
from tests.core.data.dicom_factory import write_enhanced_series, write_series

ALGORITHM = Algorithm(version="0.0-test", model="knee model, preset test", serial="abc")


def _patient(paths):
    import pydicom

    for path in paths:
        ds = pydicom.dcmread(path)
        ds.FrameOfReferenceUID = "1.2.3.4.5"
        ds.PatientName, ds.StudyID, ds.AccessionNumber = "TEST^P", "1", "A1"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "", "", ""
        ds.ReferringPhysicianName = ""
        ds.save_as(path)


def _labels(shape):
    labels = np.zeros(shape, np.uint8)
    labels[1:4, 2:9, 3:7] = 1
    labels[2:5, 10:14, 5:12] = 10  # acl
    return labels


@pytest.mark.parametrize("kind", ["single-frame", "multi-frame"])
def test_frames_follow_the_source_slices(kind, tmp_path):
    study = tmp_path / "study"
    if kind == "single-frame":
        written = write_series(study / "sag", view="sagittal", n_slices=8, rows=16, cols=16)
    else:
        written = write_enhanced_series(study / "sag.dcm", view="sagittal", n_frames=8)
    _patient(written.files)
    volume = scan_case(study, config=DataConfig()).views[View.SAGITTAL]
    np.testing.assert_array_equal(volume.array, written.array)
    facts = next(iter(survey_series(study_files(study)).values()))
    assert facts.modality == "MR" and sorted(facts.files) == sorted(written.files)
    sources, indices = source_images(facts.files, volume=volume)
    if kind == "single-frame":
        assert indices.tolist() == list(range(8))
        positions = [float(np.dot(d.ImagePositionPatient, volume.normal)) for d in sources]
        assert positions == sorted(positions)
    else:
        assert sorted(indices.tolist()) == list(range(8)) and indices.tolist() != list(range(8))
    labels = _labels(volume.shape)
    write_dicom_seg(
        tmp_path / "seg.dcm", labels, volume=volume, files=facts.files, algorithm=ALGORITHM
    )
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    if kind == "single-frame":
        frames = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[d.SOPInstanceUID for d in sources], combine_segments=True
        )
        np.testing.assert_array_equal(frames, labels)
    else:
        frames = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=sources[0].SOPInstanceUID,
            source_frame_numbers=list(range(1, 9)),
            assert_missing_frames_are_empty=True,
            combine_segments=True,
        )
        np.testing.assert_array_equal(frames, labels[indices])
    assert seg.ContentLabel == "ORTHOFED_KNEE" and seg.DeviceSerialNumber == "abc"


def test_files_that_miss_slices_are_refused(tmp_path):
    written = write_series(tmp_path / "study" / "sag", view="sagittal", n_slices=8)
    volume = scan_case(tmp_path / "study", config=DataConfig()).views[View.SAGITTAL]
    with pytest.raises(ValueError, match="one to one"):
        source_images(written.files[:-1], volume=volume)
