"""Rendering: determinism, localized lesion changes, knee mask versus image."""

import dataclasses

import numpy as np
import pytest

from core.data.phantom.profiles import get_profile
from core.data.phantom.render import render_case
from core.views import KNEE_STRUCTURES, LABELS, VIEWS, Joint, View

TINY = get_profile("tiny", joint="knee")
# The `tiny` pixel and slice spacing on a smaller field of view (every lesion stays in view):
# fine enough for small lesions, cheaper to render two dozen times.
PROFILE = dataclasses.replace(TINY, name="tiny-crop", size=96, fov_mm=120.0, slices=12)
# Determinism needs no resolution.
MICRO = dataclasses.replace(TINY, name="micro", size=40, slices=5)


def _render(joint, *, seed=5, lesions=None, noise=True, profile=PROFILE):
    return render_case(
        joint=joint, seed=seed, case_index=0, profile=profile, lesions=lesions, noise=noise
    )


@pytest.fixture(scope="module")
def normal_cases():
    """Each joint rendered with every lesion off and without noise."""
    return {j: _render(j, lesions={k: False for k in LABELS[j]}, noise=False) for j in Joint}


@pytest.mark.parametrize("joint", list(Joint))
def test_same_seed_same_images_other_seed_differs(joint):
    a, b, c = (_render(joint, seed=seed, profile=MICRO) for seed in (5, 5, 6))
    for view in VIEWS:
        assert a.views[view].image.tobytes() == b.views[view].image.tobytes()
        assert not np.array_equal(a.views[view].image, c.views[view].image)
    assert a.present == b.present


@pytest.mark.parametrize("joint", list(Joint))
def test_views_have_expected_shape_and_geometry(joint, normal_cases):
    rc = normal_cases[joint]
    for view in VIEWS:
        rv = rc.views[view]
        assert rv.image.shape == (PROFILE.slices, PROFILE.size, PROFILE.size)
        assert rv.image.dtype == np.float32
        g = rv.geometry
        assert abs(np.dot(g.row_dir, g.col_dir)) < 1e-9
        base_axis = {View.SAGITTAL: 0, View.CORONAL: 1, View.AXIAL: 2}[view]
        tilt = np.degrees(np.arccos(abs(g.normal[base_axis])))
        assert tilt <= 10.0 + 1e-6
        assert g.slice_spacing > g.slice_thickness  # gap between slices
    assert (rc.views[View.SAGITTAL].labels is not None) == (rc.joint is Joint.KNEE)


def _cases():
    return [(j, label) for j in Joint for label in LABELS[j]]


@pytest.mark.parametrize(("joint", "label"), _cases())
def test_lesion_changes_image_only_near_lesion(joint, label, normal_cases):
    off = normal_cases[joint]
    on = _render(joint, lesions={k: k == label for k in LABELS[joint]}, noise=False)
    region = on.lesion_regions[label]
    changed_total = 0
    for view in VIEWS:
        a, b = off.views[view], on.views[view]
        assert a.geometry.origin.tolist() == b.geometry.origin.tolist()
        diff = np.abs(a.image - b.image)
        dist = np.linalg.norm(b.geometry.centres() - region.centre, axis=-1)
        margin = b.geometry.slice_thickness + 4.0 * max(b.geometry.pixel_spacing)
        outside = dist > region.radius + margin
        assert diff[outside].max(initial=0.0) < 1e-5, (view, float(diff[outside].max()))
        changed_total += int((diff > 1e-3).sum())
    assert changed_total >= 5, f"{label} is invisible in every view"


def test_knee_mask_matches_image(normal_cases):
    rv = normal_cases[Joint.KNEE].views[View.SAGITTAL]
    labels, image = rv.labels, rv.image
    assert labels.shape == image.shape and labels.max() <= len(KNEE_STRUCTURES)
    means = {}
    for value, name in enumerate(KNEE_STRUCTURES, start=1):
        voxels = image[labels == value]
        assert voxels.size >= 3, f"{name} missing from the sagittal mask"
        means[name] = float(voxels.mean())
    # PD fat-sat: cartilage bright, menisci and cruciates dark, marrow in between
    for cart in ("femoral_cartilage", "patellar_cartilage"):
        assert means[cart] > 1.5 * means["medial_meniscus"]
        assert means[cart] > means["femur"]
    for dark in ("medial_meniscus", "lateral_meniscus", "acl", "pcl"):
        assert means[dark] < 0.6 * means["femoral_cartilage"], (dark, means)
    body = image[(labels == 0) & (image > 0.05)].mean()
    assert abs(means["femur"] - body) < 0.3  # marrow intermediate, not fluid-bright
