"""Knee segmentation outputs: seg.nii.gz on the original sagittal grid, seg.dcm (DICOM SEG)
that references the source instances and agrees with the NIfTI, NIfTI studies."""

import json
import shutil

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from core.config import DataConfig
from core.data.nifti import read_mask, read_nifti
from core.data.scan import scan_case
from core.data.transforms import preprocess_mask
from core.inference import pipeline
from core.inference.geometry import nifti_layout
from core.inference.model import ModelOutput, load_predictor
from core.inference.pipeline import predict_study
from core.inference.structures import knee_structures, label_text
from core.views import KNEE_STRUCTURES, LABELS, Joint, View
from tests.core.inference.conftest import CASE, series_folder

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture(scope="module")
def knee_run(phantom_sites, checkpoints, tmp_path_factory):
    """The knee phantom study predicted once: (study folder, output folder)."""
    out = tmp_path_factory.mktemp("knee-out")
    study = phantom_sites[Joint.KNEE] / CASE
    result = predict_study(load_predictor(checkpoints[Joint.KNEE]), study, out_root=out)
    assert result.ok, result.error
    return study, out / CASE


def _sagittal(study):
    return scan_case(study, config=DataConfig()).views[View.SAGITTAL]


def _source_datasets(site):
    folder = site / CASE / series_folder(site, "sagittal")
    datasets = [pydicom.dcmread(p) for p in folder.glob("*.dcm")]
    normal = np.cross(
        np.array(datasets[0].ImageOrientationPatient[:3], float),
        np.array(datasets[0].ImageOrientationPatient[3:], float),
    )
    return sorted(datasets, key=lambda d: float(np.dot(np.array(d.ImagePositionPatient), normal)))


def test_nifti_lands_on_the_source_series_grid(knee_run):
    study, out = knee_run
    volume = _sagittal(study)
    labels, affine = read_mask(out / "seg.nii.gz")
    assert labels.shape == volume.shape
    np.testing.assert_allclose(affine, volume.affine, atol=1e-4)
    assert nib.load(out / "seg.nii.gz").shape == volume.shape[::-1]  # (columns, rows, slices)
    assert labels.max() <= len(KNEE_STRUCTURES)
    assert labels[0].max() == 0 and labels[-1].max() == 0  # slices the model did not read


def test_dicom_seg_references_the_source_and_agrees_with_the_nifti(knee_run, phantom_sites):
    _, out = knee_run
    seg = pydicom.dcmread(out / "seg.dcm")
    sources = _source_datasets(phantom_sites[Joint.KNEE])
    assert seg.SOPClassUID == SEG_STORAGE and seg.Modality == "SEG"
    assert seg.SegmentationType == "BINARY"
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == {
        d.SOPInstanceUID for d in sources
    }
    segments = seg.SegmentSequence
    assert [s.SegmentLabel for s in segments] == [label_text(n) for n in KNEE_STRUCTURES]
    assert all(len(s.RecommendedDisplayCIELabValue) == 3 for s in segments)
    read = hd.seg.segread(out / "seg.dcm")
    frames = read.get_pixels_by_source_instance(
        source_sop_instance_uids=[d.SOPInstanceUID for d in sources], combine_segments=True
    )
    labels, _ = read_mask(out / "seg.nii.gz")
    np.testing.assert_array_equal(frames, labels)


def test_the_true_mask_comes_back_onto_the_original_grid(
    phantom_sites, checkpoints, monkeypatch, tmp_path
):
    """Feeding the phantom's own mask (preprocessed like an image) as the model output must
    give back the mask on the original series: the geometry inverts the preprocessing."""
    site = phantom_sites[Joint.KNEE]
    truth, truth_affine = read_mask(site / "masks" / f"{CASE}.nii.gz")
    volume = _sagittal(site / CASE)
    predictor = load_predictor(checkpoints[Joint.KNEE])
    small = preprocess_mask(
        truth, truth_affine, target=volume, view=View.SAGITTAL, config=predictor.preprocess
    )
    fake = ModelOutput(probabilities=dict.fromkeys(LABELS[Joint.KNEE], 0.5), seg=small)
    monkeypatch.setattr(pipeline, "run_model", lambda predictor, views: fake)
    assert predict_study(predictor, site / CASE, out_root=tmp_path).ok
    labels, _ = read_mask(tmp_path / CASE / "seg.nii.gz")
    inside = slice(1, -1)  # the model reads the central 8 of 10 slices
    for value in (1, 2):  # femur, tibia
        a, b = truth[inside] == value, labels[inside] == value
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.8


def _as_nifti_study(study, target):
    """The study's series rewritten as NIfTI files, rows and columns swapped in the file."""
    target.mkdir(parents=True)
    for view, volume in scan_case(study, config=DataConfig()).views.items():
        array, affine = nifti_layout(volume.array, volume=volume)  # (columns, rows, slices)
        swapped = np.ascontiguousarray(array.transpose(1, 0, 2))
        nib.save(nib.Nifti1Image(swapped, affine[:, [1, 0, 2, 3]]), target / f"{view.value}.nii.gz")
    return target


def test_nifti_study_writes_the_seg_on_the_file_grid_and_no_dicom_seg(
    phantom_sites, checkpoints, knee_run, tmp_path
):
    study = _as_nifti_study(phantom_sites[Joint.KNEE] / CASE, tmp_path / "nifti-study")
    result = predict_study(
        load_predictor(checkpoints[Joint.KNEE]), study, out_root=tmp_path / "out"
    )
    assert result.ok, result.error
    out = tmp_path / "out" / "nifti-study"
    assert not (out / "seg.dcm").exists()
    payload = json.loads((out / "prediction.json").read_text())
    assert any("no DICOM SEG" in w for w in payload["warnings"])
    source = nib.load(study / "sagittal.nii.gz")
    seg = nib.load(out / "seg.nii.gz")
    assert seg.shape == source.shape
    np.testing.assert_allclose(seg.affine, source.affine, atol=1e-5)
    # same images, same answer: the DICOM run's seg in this file's (rows, columns) layout
    dicom_seg = np.asanyarray(nib.load(knee_run[1] / "seg.nii.gz").dataobj)
    np.testing.assert_array_equal(np.asanyarray(seg.dataobj), dicom_seg.transpose(1, 0, 2))
    dicom_payload = json.loads((knee_run[1] / "prediction.json").read_text())
    for name, entry in payload["labels"].items():
        assert entry["probability"] == pytest.approx(
            dicom_payload["labels"][name]["probability"], abs=1e-4
        )


def test_knee_without_a_sagittal_series_has_no_segmentation(
    phantom_sites, checkpoints, study_copy, tmp_path
):
    study = study_copy(Joint.KNEE)
    shutil.rmtree(study / series_folder(phantom_sites[Joint.KNEE], "sagittal"))
    result = predict_study(
        load_predictor(checkpoints[Joint.KNEE]), study, out_root=tmp_path / "out"
    )
    assert result.ok, result.error
    assert result.views == ["coronal", "axial"]
    assert any("no sagittal series: no segmentation" in w for w in result.warnings)
    assert not (tmp_path / "out" / "study-a" / "seg.nii.gz").exists()


def test_structure_table_covers_the_label_table():
    structures = knee_structures()
    assert [s.name for s in structures] == list(KNEE_STRUCTURES)
    assert [s.number for s in structures] == list(range(1, len(KNEE_STRUCTURES) + 1))
    assert len({s.rgb for s in structures}) == len(structures)


def test_nifti_reads_back_like_the_series(knee_run):
    study, out = knee_run
    volume = read_nifti(out / "seg.nii.gz")
    assert volume.shape == _sagittal(study).shape
