"""Signed distances of the shapes on points laid out coordinates-first (3, n)."""

import numpy as np

from core.data.phantom.shapes import Column, Ellipsoid, Intersection, Slab, Tube, Union


def _points(n=2000, seed=0):
    return np.random.default_rng(seed).uniform(-40, 40, (3, n)).astype(np.float32)


def test_sphere_and_round_tube_are_exact_distances():
    p = _points()
    c = np.array([2.0, -3.0, 1.0], np.float32)
    sphere = Ellipsoid(center=c, radii=np.full(3, 10.0, np.float32))
    np.testing.assert_allclose(
        sphere.sdf(p), np.linalg.norm(p - c[:, None], axis=0) - 10.0, atol=1e-3
    )
    a, b = np.array([-20.0, 0, 0], np.float32), np.array([20.0, 5, 0], np.float32)
    tube = Tube(points=np.stack([a, b]), radii=np.array([4.0, 4.0], np.float32))
    t = np.clip(((p.T - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    exact = np.linalg.norm(p.T - (a + t[:, None] * (b - a)), axis=1) - 4.0
    np.testing.assert_allclose(tube.sdf(p), exact, atol=1e-3)


def test_polyline_tube_is_min_over_segments_and_never_overestimates():
    p = _points(seed=1)
    pts = np.array([[-30, 0, 0], [0, 10, 0], [30, 0, 5]], np.float32)
    band = Tube(points=pts, radii=np.array([6.0, 2.0], np.float32))
    parts = [Tube(points=pts[i : i + 2], radii=np.array([6.0, 2.0], np.float32)) for i in (0, 1)]
    np.testing.assert_allclose(band.sdf(p), np.minimum(*(t.sdf(p) for t in parts)), atol=1e-5)
    centre_line = np.min(
        [np.linalg.norm(p.T - q, axis=1) for q in np.linspace(pts[0], pts[1], 200)], axis=0
    )
    assert np.all(band.sdf(p) <= centre_line + 1e-3)  # a lower bound outside: slope <= 1


def test_union_blend_and_intersection():
    p = _points(seed=2)
    a = Ellipsoid(center=np.zeros(3, np.float32), radii=np.array([12, 8, 10], np.float32))
    b = Ellipsoid(center=np.array([10, 0, 0], np.float32), radii=np.full(3, 6, np.float32))
    hard, soft = Union((a, b)), Union((a, b), blend=4.0)
    lo = np.minimum(a.sdf(p), b.sdf(p))
    np.testing.assert_allclose(hard.sdf(p), lo, atol=1e-6)
    assert np.all(soft.sdf(p) <= lo + 1e-5) and np.all(soft.sdf(p) >= lo - 1.0 - 1e-5)
    assert np.any(soft.sdf(p) < lo - 0.1)  # the blend really rounds the crease
    slab = Slab(point=np.zeros(3), normal=np.array([0, 0, 1.0]), thickness=4.0)
    np.testing.assert_allclose(
        Intersection((a, slab)).sdf(p), np.maximum(a.sdf(p), np.abs(p[2]) - 2.0), atol=1e-5
    )


def test_column_follows_its_profile_and_ends():
    col = Column(
        z=np.array([-10.0, 10.0]),
        cx=np.array([0.0, 4.0]),
        cy=np.zeros(2),
        rx=np.array([5.0, 5.0]),
        ry=np.array([5.0, 5.0]),
    )
    p = np.array([[0.0, 9.0, 2.0, 0.0], [0, 0, 0, 0], [-8.0, 10.0, 0.0, 15.0]], np.float32)
    np.testing.assert_allclose(col.sdf(p), [-2.0, 0.0, -5.0, 5.0], atol=1e-5)
