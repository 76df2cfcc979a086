"""Coarse-to-fine painting: same result as evaluating every sample, whatever the block."""

import numpy as np
import pytest

from core.data.phantom.geometry import make_geometry
from core.data.phantom.profiles import get_profile
from core.data.phantom.raster import (
    MAX_MARGIN_MM,
    Coverage,
    dense_inside,
    margin_mm,
    tile_schedule,
)
from core.data.phantom.render import SCENES, case_generators
from core.data.phantom.shapes import (
    Difference,
    Ellipsoid,
    HalfSpace,
    Tube,
    Union,
    bezier,
    rotation,
)
from core.views import LABELS, VIEWS, Joint

N_SUB = 3


def _geom(view, *, size=40, fov=80.0, slices=5, seed=0, centre=(1.0, -2.0, 3.0)):
    return make_geometry(
        view=view,
        centre=np.asarray(centre),
        size=size,
        fov_mm=fov,
        slices=slices,
        thickness=4.0,
        gap=0.5,
        max_obliquity_deg=10.0,
        max_offset_mm=3.0,
        rng=np.random.default_rng(seed),
    )


def _shapes():
    ell = Ellipsoid(
        center=np.array([3.0, -1.0, 2.0], np.float32),
        radii=np.array([22.0, 12.0, 16.0], np.float32),
        axes=rotation([1.0, 2.0, 0.5], 30).astype(np.float32),
    )
    band = Tube(
        points=bezier([[-30, 10, -20], [0, -20, 0], [25, 5, 20]], 8),
        radii=np.array([6.0, 2.5], np.float32),
        width_dir=np.array([0.0, 0.0, 1.0]),
    )
    blob = Union(
        (
            ell,
            Tube(
                points=np.array([[0, 0, -40], [0, 5, 40]], np.float32),
                radii=np.array([7.0, 7.0], np.float32),
            ),
        ),
        blend=6.0,
    )
    notched = Difference(
        blob,
        Ellipsoid(
            center=np.array([0, -12.0, 0], np.float32), radii=np.array([8.0, 8.0, 8.0], np.float32)
        ),
    )
    return {"ellipsoid": ell, "band": band, "blend": blob, "difference": notched}


def _full(geom):
    return tuple(slice(0, n) for n in geom.shape)


def _paint(geom, shape, members, block=None):
    cov = Coverage(geom=geom, n_sub=N_SUB, n_owners=len(members))
    cov.paint(shape.sdf, members, block=block or geom.block(*shape.bounds()))
    return cov.owners()


def test_schedule_is_the_largest_halving_within_the_margin():
    for name in ("tiny", "knee-3t"):
        p = get_profile(name, joint="knee")
        geom = _geom(VIEWS[0], size=p.size, fov=p.fov_mm, slices=p.slices)
        sizes = tile_schedule(geom, p.supersample)
        assert sizes[-1] == 1 and len(sizes) >= 3
        assert all(a == 2 * b for a, b in zip(sizes, sizes[1:], strict=False))
        assert margin_mm(geom, p.supersample, sizes[0]) <= MAX_MARGIN_MM
        assert margin_mm(geom, p.supersample, 2 * sizes[0]) > MAX_MARGIN_MM


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("name", ["ellipsoid", "band", "blend", "difference"])
def test_coverage_matches_dense_evaluation(view, name):
    geom = _geom(view)
    shape = _shapes()[name]
    for level in (2.0, 0.0, -1.5):
        found = _paint(geom, shape, [(1, level, None)]) == 1
        expected = dense_inside(shape.sdf, level, geom=geom, n_sub=N_SUB)
        assert expected.sum() > 20, (name, level)  # the shape is really in view
        np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize("view", VIEWS)
def test_later_members_win_and_clip_cuts(view):
    geom = _geom(view)
    shape = _shapes()["blend"]
    clip = HalfSpace(point=np.zeros(3, np.float32), normal=np.array([1.0, 0.0, 0.2]))
    members = [(1, 2.0, clip.sdf), (2, 0.0, None), (3, -1.5, None)]
    owners = _paint(geom, shape, members)
    dense = [dense_inside(shape.sdf, lv, geom=geom, n_sub=N_SUB, clip=c) for _, lv, c in members]
    expected = np.where(dense[2], 3, np.where(dense[1], 2, np.where(dense[0], 1, 0)))
    np.testing.assert_array_equal(owners, expected)
    assert {0, 1, 2, 3} <= set(np.unique(owners).tolist())


@pytest.mark.parametrize("view", VIEWS)
def test_result_does_not_depend_on_the_block(view):
    """A sample's outcome is the same whether a shape is painted in a tight or a wide block."""
    geom = _geom(view, size=64, fov=128.0)
    shape = _shapes()["band"]
    tight = _paint(geom, shape, [(1, 0.0, None)])
    wide = _paint(geom, shape, [(1, 0.0, None)], block=_full(geom))
    np.testing.assert_array_equal(tight, wide)


@pytest.mark.parametrize(("joint", "view"), list(zip(Joint, VIEWS, strict=True)))
def test_every_part_of_a_scene_matches_dense_evaluation(joint, view):
    g = case_generators(4, 0)
    scene = SCENES[joint](g["anatomy"], g["lesions"], {k: True for k in LABELS[joint]})
    geom = _geom(view, size=48, fov=160.0, slices=6, centre=scene.view_centres[view])
    wrong = total = 0
    for part in scene.parts:
        block = geom.block(*part.bounds())
        if block is None:
            continue
        clip = part.clip.sdf if part.clip is not None else None
        found = _paint(geom, part.shape, [(1, -part.inset, clip)], block=block) == 1
        expected = dense_inside(part.shape.sdf, -part.inset, geom=geom, n_sub=N_SUB, clip=clip)
        wrong += int((found != expected).sum())
        total += found.size
    # our distances are approximate (very flat ellipsoids inside): allow a handful of samples
    assert wrong <= 1e-5 * total, (wrong, total)
