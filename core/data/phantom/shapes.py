"""Smooth parametric shapes as (approximate) signed distance functions in millimetres.

Every shape maps points `p`, a float32 array (3, n) of x, y, z rows (coordinates first, so
each coordinate is one contiguous row and every operation is a plain vector operation), to a
float32 array (n,) that is negative inside, positive outside and roughly the distance to the
surface near it. Each shape also reports an axis-aligned bounding box so a renderer only
evaluates it where it can be non-empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

_BIG = 1e6
_CHUNK = 1 << 18  # segment x point evaluations per step of a tube (bounds temporary memory)
Bounds = tuple[np.ndarray, np.ndarray]


def _vec(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float32).reshape(3)


def _dot(n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """n . p for a 3-vector `n` and points (3, m), as three scaled adds (no BLAS threads)."""
    n = np.asarray(n, np.float32)
    out = p[0] * n[0]
    out += p[1] * n[1]
    out += p[2] * n[2]
    return out


def _ellipsoid_distance(terms) -> np.ndarray:
    """Approximate signed distance from offsets along an ellipsoid's axes, [(offset, radius)].

    k0 (k0 - 1) / k1 with k0 = |offset / r| and k1 = |offset / r^2|: exact on the axes and
    close to a true distance off them, even for flat bands.
    """
    k0 = np.zeros_like(terms[0][0])
    k1 = np.zeros_like(k0)
    for off, r in terms:
        q = off / r
        k0 += np.square(q)
        q /= r
        k1 += np.square(q)
    np.sqrt(k0, out=k0)
    np.sqrt(k1, out=k1)
    k1 += 1e-9
    small = k0 < 1e-4
    out = k0 - 1.0
    out *= k0
    out /= k1
    if small.any():
        r_min = np.minimum.reduce([np.broadcast_to(r, k0.shape) for _, r in terms])
        out[small] = -r_min[small]
    return out


def rotation(axis, degrees: float) -> np.ndarray:
    """Rotation matrix about `axis` by `degrees` (right-handed)."""
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    t = np.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


class Shape:
    def sdf(self, p: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def bounds(self) -> Bounds:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Ellipsoid(Shape):
    """Ellipsoid with semi-axes `radii` along the columns of `axes` (identity = patient axes)."""

    center: np.ndarray
    radii: np.ndarray
    axes: np.ndarray = field(default_factory=lambda: np.eye(3, dtype=np.float32))

    @cached_property
    def _rotation(self) -> np.ndarray | None:
        """Columns of `axes` as float32, or None for the identity (no rotation needed)."""
        axes = np.asarray(self.axes, np.float32)
        return None if np.allclose(axes, np.eye(3)) else axes

    def sdf(self, p):
        r = _vec(self.radii)
        q = p - _vec(self.center)[:, None]
        if self._rotation is not None:
            q = np.stack([_dot(self._rotation[:, i], q) for i in range(3)])
        return _ellipsoid_distance([(q[i], np.float32(r[i])) for i in range(3)])

    def bounds(self):
        c, m = _vec(self.center), float(np.max(self.radii))
        return c - m, c + m


@dataclass(frozen=True)
class Tube(Shape):
    """Tube along a polyline with an elliptic cross-section and radii varying per point.

    `radii` is (n_points, 2): semi-axis along `width_dir` (projected off the segment) and the
    one across it; a band (tendon, collateral ligament) is a tube with unequal radii. The
    distance is the minimum over segments, all evaluated at once (in chunks of points).
    """

    points: np.ndarray
    radii: np.ndarray
    width_dir: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))

    @cached_property
    def _segments(self) -> dict[str, np.ndarray]:
        """Per-segment start, direction, frame and radii (n_segments, ...), float32."""
        pts = np.asarray(self.points, np.float64)
        rad = np.broadcast_to(np.asarray(self.radii, np.float64), (len(pts), 2))
        ab = pts[1:] - pts[:-1]
        length2 = np.einsum("ij,ij->i", ab, ab) + 1e-9
        axis = ab / np.sqrt(length2)[:, None]
        w = np.asarray(self.width_dir, np.float64).reshape(3)
        u = w[None] - (axis @ w)[:, None] * axis
        u /= np.linalg.norm(u, axis=1, keepdims=True) + 1e-9
        v = np.cross(axis, u)
        f = {
            "a": pts[:-1],
            "ab": ab,
            "proj": ab / length2[:, None],
            "axis": axis,
            "u": u,
            "v": v,
            "ra": rad[:-1],
            "dr": rad[1:] - rad[:-1],
        }
        return {k: np.asarray(x, np.float32)[..., None] for k, x in f.items()}

    def sdf(self, p):
        out = np.empty(p.shape[1], np.float32)
        step = max(1, _CHUNK // len(self._segments["a"]))
        for i in range(0, p.shape[1], step):
            out[i : i + step] = self._distance(p[:, i : i + step])
        return out

    def _distance(self, p: np.ndarray) -> np.ndarray:
        g = self._segments
        d = [p[i][None] - g["a"][:, i] for i in range(3)]  # (n_segments, n) per axis
        t = sum(d[i] * g["proj"][:, i] for i in range(3))
        np.clip(t, 0.0, 1.0, out=t)
        for i in range(3):
            d[i] -= t * g["ab"][:, i]
        r_u = g["ra"][:, 0] + t * g["dr"][:, 0]
        r_v = g["ra"][:, 1] + t * g["dr"][:, 1]
        r_min = np.minimum(r_u, r_v)
        k = np.zeros_like(t)
        for frame, r in (("u", r_u), ("v", r_v), ("axis", r_min)):
            q = sum(d[i] * g[frame][:, i] for i in range(3))
            q /= r
            k += np.square(q)
        np.sqrt(k, out=k)
        k -= 1.0
        k *= r_min  # a lower bound on the distance outside, with slope at most 1
        return k.min(axis=0)

    def bounds(self):
        pts = np.asarray(self.points, np.float32)
        m = float(np.max(self.radii))
        return pts.min(axis=0) - m, pts.max(axis=0) + m


def _profile_at(knots: np.ndarray, z: np.ndarray, *profiles: np.ndarray) -> list[np.ndarray]:
    """Piecewise-linear profiles at heights `z` (held constant beyond the end knots)."""
    knots = np.asarray(knots, np.float32)
    i = np.clip(np.searchsorted(knots, z) - 1, 0, len(knots) - 2)
    lo = knots[i]
    f = np.clip((z - lo) / (knots[i + 1] - lo), 0.0, 1.0)
    out = []
    for prof in profiles:
        v = np.asarray(prof, np.float32)
        out.append(v[i] + f * (v[i + 1] - v[i]))
    return out


@dataclass(frozen=True)
class Column(Shape):
    """A limb: elliptic cross-section about a vertical axis, both varying along z.

    `z`, `cx`, `cy`, `rx`, `ry` are profiles (one value per knot, z increasing) interpolated
    linearly; cheap enough to cover a whole field of view.
    """

    z: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    rx: np.ndarray
    ry: np.ndarray

    def sdf(self, p):
        z = p[2]
        cx, cy, rx, ry = _profile_at(self.z, z, self.cx, self.cy, self.rx, self.ry)
        k = np.square((p[0] - cx) / rx)
        k += np.square((p[1] - cy) / ry)
        side = np.sqrt(k)
        side -= 1.0
        side *= np.minimum(rx, ry)
        ends = np.maximum(np.float32(self.z[0]) - z, z - np.float32(self.z[-1]))
        return np.maximum(side, ends)

    def bounds(self):
        lo = [np.min(self.cx - self.rx), np.min(self.cy - self.ry), self.z[0]]
        hi = [np.max(self.cx + self.rx), np.max(self.cy + self.ry), self.z[-1]]
        return np.array(lo, np.float32), np.array(hi, np.float32)


@dataclass(frozen=True)
class Slab(Shape):
    """Points within `thickness / 2` of the plane through `point` with normal `normal`."""

    point: np.ndarray
    normal: np.ndarray
    thickness: float

    def sdf(self, p):
        n = _vec(self.normal) / np.linalg.norm(self.normal)
        out = np.abs(_dot(n, p) - float(n @ _vec(self.point)))
        out -= self.thickness / 2
        return out

    def bounds(self):
        return np.full(3, -_BIG, np.float32), np.full(3, _BIG, np.float32)


@dataclass(frozen=True)
class HalfSpace(Shape):
    """Points on the side of the plane through `point` that `normal` points away from."""

    point: np.ndarray
    normal: np.ndarray

    def sdf(self, p):
        n = _vec(self.normal) / np.linalg.norm(self.normal)
        out = _dot(n, p)
        out -= float(n @ _vec(self.point))
        return out

    def bounds(self):
        return np.full(3, -_BIG, np.float32), np.full(3, _BIG, np.float32)


@dataclass(frozen=True)
class WedgeRing(Shape):
    """Meniscus-like ring: a wedge (tall at the rim, thin inside) on the plane z = `base_z`.

    The ring follows an ellipse of semi-axes `outer` (x, y) about `center` (x, y); `width` is
    the radial width and `height` the rim height, in mm.
    """

    center: np.ndarray
    outer: np.ndarray
    base_z: float
    width: float
    height: float
    slope: float = 0.0  # base plane z = base_z - slope * y (posterior tibial slope)

    def sdf(self, p):
        c = np.asarray(self.center, np.float32)
        a, b = (float(v) for v in self.outer)
        rho = np.square((p[0] - c[0]) / a)
        rho += np.square((p[1] - c[1]) / b)
        s = 1.0 - np.sqrt(rho)
        s *= (a + b) / 2  # depth inward from the rim, mm
        h = p[2] - (self.base_z - self.slope * p[1])
        top = h - self.height * (1.0 - s / self.width)
        out = np.maximum(-s, s - self.width)
        np.maximum(out, -h, out=out)
        return np.maximum(out, top, out=out)

    def bounds(self):
        c = np.asarray(self.center, np.float32)
        m = float(max(self.outer))
        dz = abs(self.slope) * (abs(float(c[1])) + m)
        lo = np.array([c[0] - m, c[1] - m, self.base_z - dz], np.float32)
        hi = np.array([c[0] + m, c[1] + m, self.base_z + dz + self.height], np.float32)
        return lo, hi


@dataclass(frozen=True)
class Union(Shape):
    """Smooth union (polynomial smooth-min with blend radius `blend` mm)."""

    shapes: tuple[Shape, ...]
    blend: float = 0.0

    def sdf(self, p):
        out = self.shapes[0].sdf(p)
        k = self.blend
        for s in self.shapes[1:]:
            d = s.sdf(p)
            if k <= 0:
                np.minimum(out, d, out=out)
                continue
            h = d - out
            h *= 0.5 / k
            h += 0.5
            np.clip(h, 0.0, 1.0, out=h)
            out -= d
            out *= h
            out += d
            out -= k * h * (1.0 - h)
        return out

    def bounds(self):
        los, his = zip(*(s.bounds() for s in self.shapes), strict=True)
        return np.min(los, axis=0) - self.blend, np.max(his, axis=0) + self.blend


@dataclass(frozen=True)
class Intersection(Shape):
    shapes: tuple[Shape, ...]

    def sdf(self, p):
        out = self.shapes[0].sdf(p)
        for s in self.shapes[1:]:
            np.maximum(out, s.sdf(p), out=out)
        return out

    def bounds(self):
        los, his = zip(*(s.bounds() for s in self.shapes), strict=True)
        return np.max(los, axis=0), np.min(his, axis=0)


@dataclass(frozen=True)
class Difference(Shape):
    """`base` minus `cut`."""

    base: Shape
    cut: Shape

    def sdf(self, p):
        cut = self.cut.sdf(p)
        np.negative(cut, out=cut)
        return np.maximum(self.base.sdf(p), cut, out=cut)

    def bounds(self):
        return self.base.bounds()


@dataclass(frozen=True)
class Offset(Shape):
    """`shape` eroded by `amount` mm (negative: dilated)."""

    shape: Shape
    amount: float

    def sdf(self, p):
        out = self.shape.sdf(p)
        out += self.amount
        return out

    def bounds(self):
        lo, hi = self.shape.bounds()
        grow = max(0.0, -self.amount)
        return lo - grow, hi + grow


def bezier(ctrl, n: int = 8) -> np.ndarray:
    """`n + 1` points (float32) on the Bezier curve with control points `ctrl` (k, 3)."""
    c = np.asarray(ctrl, dtype=np.float64)
    t = np.linspace(0.0, 1.0, n + 1)[:, None, None]
    pts = np.broadcast_to(c[None], (n + 1, *c.shape))
    while pts.shape[1] > 1:  # de Casteljau
        pts = (1 - t) * pts[:, :-1] + t * pts[:, 1:]
    return pts[:, 0].astype(np.float32)
