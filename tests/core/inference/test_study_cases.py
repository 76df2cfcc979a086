"""Unusual studies: oblique or shuffled series, a missing view, a corrupt file, a CT series,
another joint. Each is predicted with a warning or fails with one line; none is written to."""

import json
import re
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.valuerep import DSfloat
from scipy.spatial.transform import Rotation

from core.inference.model import load_predictor
from core.inference.pipeline import predict_study
from core.views import Joint
from tests.core.inference.conftest import series_folder, tree_digest


def _predict(checkpoints, study, out, *, joint=Joint.KNEE):
    before = tree_digest(study)
    result = predict_study(load_predictor(checkpoints[joint]), study, out_root=out)
    assert tree_digest(study) == before  # nothing written into the study
    return result


def _rewrite(folder, change):
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path)


def _rotate(folder, *, degrees):
    """Tilt a whole series rigidly about its centre (positions and orientations together)."""
    files = sorted(folder.glob("*.dcm"))
    positions = np.array([pydicom.dcmread(p).ImagePositionPatient for p in files], dtype=float)
    centre = positions.mean(axis=0)
    rotation = Rotation.from_rotvec(np.radians(degrees) * np.array([0.0, 0.0, 1.0]))

    def tilt(ds):
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        turned = np.concatenate([rotation.apply(iop[:3]), rotation.apply(iop[3:])])
        position = centre + rotation.apply(np.array(ds.ImagePositionPatient, float) - centre)
        ds.ImageOrientationPatient = [DSfloat(v, auto_format=True) for v in turned]
        ds.ImagePositionPatient = [DSfloat(v, auto_format=True) for v in position]

    _rewrite(folder, tilt)


def test_oblique_series_is_predicted_with_a_warning(
    phantom_sites, checkpoints, study_copy, tmp_path
):
    study = study_copy(Joint.KNEE)
    _rotate(study / series_folder(phantom_sites[Joint.KNEE], "coronal"), degrees=22)
    result = _predict(checkpoints, study, tmp_path / "out")
    assert result.ok, result.error
    # the phantom's own series are up to 10 degrees oblique; the tilt adds 22 about z
    angles = [re.search(r"coronal series is oblique \((\d+) degrees", w) for w in result.warnings]
    assert [int(m.group(1)) for m in angles if m] and all(
        15 < int(m.group(1)) <= 30 for m in angles if m
    )


def test_series_oblique_beyond_the_limit_fails(phantom_sites, checkpoints, study_copy, tmp_path):
    study = study_copy(Joint.KNEE)
    _rotate(study / series_folder(phantom_sites[Joint.KNEE], "sagittal"), degrees=45)
    result = _predict(checkpoints, study, tmp_path / "out")
    assert not result.ok and "ambiguous orientation" in result.error
    assert not (tmp_path / "out" / "study-a").exists()


def test_shuffled_files_give_the_same_prediction(checkpoints, study_copy, tmp_path):
    plain = study_copy(Joint.ANKLE, name="plain")
    shuffled = study_copy(Joint.ANKLE, name="shuffled")
    files = sorted(shuffled.rglob("*.dcm"))
    rng = np.random.default_rng(1)
    for i, k in enumerate(rng.permutation(len(files))):
        target = shuffled / f"d{k % 3}" / f"x{k % 2}" / f"{i:03d}"
        target.parent.mkdir(parents=True, exist_ok=True)
        files[k].rename(target)  # all series mixed, no suffix, names carry no order
    for folder in [p for p in shuffled.iterdir() if p.name.startswith("SE")]:
        shutil.rmtree(folder)
    _rewrite(shuffled, lambda ds: setattr(ds, "InstanceNumber", int(rng.integers(1, 99))))
    a = _predict(checkpoints, plain, tmp_path / "out", joint=Joint.ANKLE)
    b = _predict(checkpoints, shuffled, tmp_path / "out", joint=Joint.ANKLE)
    assert a.ok and b.ok, (a.error, b.error)
    pa = json.loads((tmp_path / "out" / "plain" / "prediction.json").read_text())
    pb = json.loads((tmp_path / "out" / "shuffled" / "prediction.json").read_text())
    assert pa == pb


def test_missing_view_is_a_warning(phantom_sites, checkpoints, study_copy, tmp_path):
    study = study_copy(Joint.SHOULDER)
    shutil.rmtree(study / series_folder(phantom_sites[Joint.SHOULDER], "axial"))
    result = _predict(checkpoints, study, tmp_path / "out", joint=Joint.SHOULDER)
    assert result.ok, result.error
    assert result.views == ["sagittal", "coronal"]
    assert any(w.startswith("no axial series found") for w in result.warnings)


def test_corrupt_file_fails_the_study(phantom_sites, checkpoints, study_copy, tmp_path):
    study = study_copy(Joint.KNEE)
    victim = sorted((study / series_folder(phantom_sites[Joint.KNEE], "axial")).glob("*.dcm"))[3]
    victim.write_bytes(victim.read_bytes()[:300])
    result = _predict(checkpoints, study, tmp_path / "out")
    assert not result.ok
    assert result.error.startswith("cannot read the study") and victim.name in result.error
    assert "\n" not in result.error


def test_ct_series_is_refused(phantom_sites, checkpoints, study_copy, tmp_path):
    study = study_copy(Joint.KNEE)
    _rewrite(
        study / series_folder(phantom_sites[Joint.KNEE], "coronal"),
        lambda ds: setattr(ds, "Modality", "CT"),
    )
    result = _predict(checkpoints, study, tmp_path / "out")
    assert not result.ok and "is CT, not MR" in result.error


@pytest.mark.parametrize("joint", [Joint.ANKLE, Joint.SHOULDER])
def test_study_of_another_joint_is_refused(joint, checkpoints, study_copy, tmp_path):
    result = _predict(checkpoints, study_copy(joint), tmp_path / "out", joint=Joint.KNEE)
    assert not result.ok
    assert f"BodyPartExamined '{joint.value.upper()}'" in result.error
    assert "for the knee" in result.error


def test_unknown_body_part_is_a_warning(phantom_sites, checkpoints, study_copy, tmp_path):
    study = study_copy(Joint.KNEE)
    _rewrite(study, lambda ds: setattr(ds, "BodyPartExamined", "EXTREMITY"))
    result = _predict(checkpoints, study, tmp_path / "out")
    assert result.ok, result.error
    assert any("'EXTREMITY', which names no joint" in w for w in result.warnings)


def test_folder_without_images_fails(checkpoints, tmp_path):
    study = tmp_path / "empty-study"
    study.mkdir()
    (study / "notes.txt").write_text("no images here")
    result = _predict(checkpoints, study, tmp_path / "out")
    assert not result.ok and "no usable image series" in result.error
