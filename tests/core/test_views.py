import numpy as np
import pytest

from core.views import LABELS, VIEWS, Joint, View, parse_joint, view_from_normal

AXES = {View.SAGITTAL: 0, View.CORONAL: 1, View.AXIAL: 2}


def _tilted(axis: int, degrees: float, towards: int) -> np.ndarray:
    n = np.zeros(3)
    n[axis] = np.cos(np.radians(degrees))
    n[towards] = np.sin(np.radians(degrees))
    return n


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("degrees", [0.0, 10.0, 25.0])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_view_from_tilted_normal(view, degrees, sign):
    axis = AXES[view]
    normal = sign * _tilted(axis, degrees, (axis + 1) % 3)
    assert view_from_normal(normal) is view


@pytest.mark.parametrize("view", VIEWS)
def test_near_45_degrees_is_ambiguous(view):
    axis = AXES[view]
    with pytest.raises(ValueError, match="ambiguous"):
        view_from_normal(_tilted(axis, 44.0, (axis + 2) % 3))


def test_zero_normal_rejected():
    with pytest.raises(ValueError, match="zero"):
        view_from_normal(np.zeros(3))


@pytest.mark.parametrize("joint,n", [(Joint.KNEE, 8), (Joint.ANKLE, 4), (Joint.SHOULDER, 8)])
def test_label_sets(joint, n):
    assert len(LABELS[joint]) == n
    assert len(set(LABELS[joint])) == n


def test_parse_joint_message():
    assert parse_joint(" Knee ") is Joint.KNEE
    with pytest.raises(ValueError, match="knee, ankle, shoulder"):
        parse_joint("elbow")
