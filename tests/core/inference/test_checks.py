"""Refusals and warnings before the model runs (no images needed)."""

import numpy as np
import pytest

from core.config import PreprocessConfig
from core.data.volume import Volume, slice_affine, standard_orientation
from core.inference.checks import (
    StudyError,
    check_joint,
    joints_named,
    obliquity_deg,
    refuse_other_modalities,
    view_warnings,
)
from core.inference.headers import SeriesFacts
from core.views import VIEWS, Joint, View
from tests.core.data.dicom_factory import tilted_orientation


def _facts(modality="MR", body_part="", description="sag"):
    return SeriesFacts(
        uid="1.2", modality=modality, body_part=body_part, description=description, number="3"
    )


def _volume(view=View.SAGITTAL, *, slices=8, rows=32, cols=32, tilt=0.0, spacing=(3.0, 0.5, 0.5)):
    row, col = tilted_orientation(view.value, degrees=tilt) if tilt else standard_orientation(view)
    affine = slice_affine(origin=np.zeros(3), row_cosines=row, col_cosines=col, spacing=spacing)
    normal = np.cross(row, col)
    return Volume(
        array=np.zeros((slices, rows, cols), np.float32),
        affine=affine,
        spacing=spacing,
        normal=normal / np.linalg.norm(normal),
        source="x",
    )


@pytest.mark.parametrize(
    ("value", "joints"),
    [
        ("KNEE", {Joint.KNEE}),
        ("RIGHT_ANKLE", {Joint.ANKLE}),
        ("foot", {Joint.ANKLE}),
        ("L SHOULDER", {Joint.SHOULDER}),
        ("EXTREMITY", set()),
        ("", set()),
    ],
)
def test_joints_named(value, joints):
    assert joints_named(value) == joints


@pytest.mark.parametrize("joint", list(Joint))
def test_another_joint_is_refused_the_own_accepted(joint):
    assert check_joint([_facts(body_part=joint.value.upper())], joint=joint) == []
    for other in (j for j in Joint if j != joint):
        with pytest.raises(StudyError, match=f"model is for the {joint.value}"):
            check_joint([_facts(body_part=other.value.upper())], joint=joint)


def test_missing_or_vague_body_part_warns():
    warnings = check_joint([_facts(), _facts(body_part="LEG")], joint=Joint.KNEE)
    assert "no BodyPartExamined" in warnings[0] and "'LEG', which names no joint" in warnings[1]


@pytest.mark.parametrize("modality", ["CT", "PT", "US"])
def test_other_imaging_modalities_are_refused(modality):
    with pytest.raises(StudyError, match=f"is {modality}, not MR"):
        refuse_other_modalities({"a": _facts(), "b": _facts(modality=modality)})
    refuse_other_modalities(
        {"a": _facts(), "b": _facts(modality="SEG"), "c": _facts(modality="SR")}
    )


def test_view_warnings_name_missing_views_obliquity_slices_and_stretching():
    config = PreprocessConfig(slices=8, size=32)
    assert view_warnings({v: _volume(v) for v in VIEWS}, preprocess=config) == []
    warnings = view_warnings(
        {
            View.SAGITTAL: _volume(View.SAGITTAL, tilt=20.0, slices=12),
            View.CORONAL: _volume(View.CORONAL, slices=5, rows=32, cols=48),
        },
        preprocess=config,
    )
    assert warnings[0] == "no axial series found: predicted from sagittal, coronal only"
    assert "sagittal series is oblique (20 degrees" in warnings[1]
    assert "12 slices, the model reads the central 8: 4 outer slices cropped" in warnings[2]
    assert "5 slices, padded with 3 empty slices" in warnings[3]
    assert "field of view 16 x 24 mm is stretched" in warnings[4]


def test_obliquity_of_a_tilted_series():
    assert obliquity_deg(_volume(tilt=0.0)) == pytest.approx(0.0, abs=1e-6)
    assert obliquity_deg(_volume(tilt=17.0)) == pytest.approx(17.0, abs=1e-3)
