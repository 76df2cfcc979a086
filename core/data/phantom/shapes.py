"""Smooth parametric shapes as (approximate) signed distance functions in millimetres.

Every shape maps points `p` of shape (..., 3) to a float32 array (...) that is negative inside,
positive outside and roughly the distance to the surface near it, and reports an axis-aligned
bounding box so a renderer only evaluates it where it can be non-empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_BIG = 1e6
Bounds = tuple[np.ndarray, np.ndarray]


def _vec(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float32).reshape(3)


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

    def sdf(self, p):
        axes = np.asarray(self.axes, np.float32)
        r = _vec(self.radii)
        q = np.asarray(p, np.float32) - _vec(self.center)
        if not np.allclose(axes, np.eye(3)):
            q = q @ axes
        a = q * (1.0 / r)
        k0 = np.sqrt(np.einsum("...i,...i->...", a, a))
        a *= 1.0 / r
        k1 = np.sqrt(np.einsum("...i,...i->...", a, a)) + 1e-9
        return np.where(k0 < 1e-4, -float(r.min()), k0 * (k0 - 1.0) / k1)

    def bounds(self):
        c, m = _vec(self.center), float(np.max(self.radii))
        return c - m, c + m


@dataclass(frozen=True)
class Tube(Shape):
    """Tube along a polyline with an elliptic cross-section and radii varying per point.

    `radii` is (n_points, 2): semi-axis along `width_dir` (projected off the segment) and the
    one across it; a band (tendon, collateral ligament) is a tube with unequal radii.
    """

    points: np.ndarray
    radii: np.ndarray
    width_dir: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))

    def sdf(self, p):
        pts = np.asarray(self.points, np.float32)
        rad = np.broadcast_to(np.asarray(self.radii, np.float32), (len(pts), 2))
        flat = p.reshape(-1, 3)
        out = np.full(len(flat), _BIG, np.float32)
        for i in range(len(pts) - 1):
            reach = float(max(rad[i].max(), rad[i + 1].max()))
            lo = np.minimum(pts[i], pts[i + 1]) - reach - 6.0
            hi = np.maximum(pts[i], pts[i + 1]) + reach + 6.0
            near = np.nonzero(np.all((flat >= lo) & (flat <= hi), axis=1))[0]
            if len(near):
                seg = self._segment(flat[near], pts[i], pts[i + 1], rad[i], rad[i + 1])
                out[near] = np.minimum(out[near], seg)
        # far from every segment: a lower bound is enough for inside/outside decisions
        return out.reshape(p.shape[:-1])

    def _segment(self, p, a, b, ra, rb):
        ab = b - a
        length2 = float(ab @ ab) + 1e-9
        t = np.clip(((p - a) @ ab) / length2, 0.0, 1.0)
        d = p - (a + t[..., None] * ab)
        axis = ab / np.sqrt(length2)
        u = _vec(self.width_dir) - (_vec(self.width_dir) @ axis) * axis
        u = u / (np.linalg.norm(u) + 1e-9)
        v = np.cross(axis, u).astype(np.float32)
        r_u = ra[0] + t * (rb[0] - ra[0])
        r_v = ra[1] + t * (rb[1] - ra[1])
        r_min = np.minimum(r_u, r_v)
        k = np.sqrt((d @ u / r_u) ** 2 + (d @ v / r_v) ** 2 + (d @ axis / r_min) ** 2)
        return (k - 1.0) * r_min

    def bounds(self):
        pts = np.asarray(self.points, np.float32)
        m = float(np.max(self.radii))
        return pts.min(axis=0) - m, pts.max(axis=0) + m


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
        z = p[..., 2]
        cx, cy = np.interp(z, self.z, self.cx), np.interp(z, self.z, self.cy)
        rx, ry = np.interp(z, self.z, self.rx), np.interp(z, self.z, self.ry)
        k = np.sqrt(((p[..., 0] - cx) / rx) ** 2 + ((p[..., 1] - cy) / ry) ** 2)
        side = (k - 1.0) * np.minimum(rx, ry)
        ends = np.maximum(self.z[0] - z, z - self.z[-1])
        return np.maximum(side, ends).astype(np.float32)

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
        return np.abs((p - _vec(self.point)) @ n) - self.thickness / 2

    def bounds(self):
        return np.full(3, -_BIG, np.float32), np.full(3, _BIG, np.float32)


@dataclass(frozen=True)
class HalfSpace(Shape):
    """Points on the side of the plane through `point` that `normal` points away from."""

    point: np.ndarray
    normal: np.ndarray

    def sdf(self, p):
        n = _vec(self.normal) / np.linalg.norm(self.normal)
        return (p - _vec(self.point)) @ n

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
        rho = np.sqrt(((p[..., 0] - c[0]) / a) ** 2 + ((p[..., 1] - c[1]) / b) ** 2)
        s = (1.0 - rho) * (a + b) / 2  # depth inward from the rim, mm
        h = p[..., 2] - (self.base_z - self.slope * p[..., 1])
        top = h - self.height * (1.0 - s / self.width)
        return np.maximum.reduce([-s, s - self.width, -h, top])

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
                out = np.minimum(out, d)
            else:
                h = np.clip(0.5 + 0.5 * (d - out) / k, 0.0, 1.0)
                out = d + (out - d) * h - k * h * (1.0 - h)
        return out

    def bounds(self):
        los, his = zip(*(s.bounds() for s in self.shapes), strict=True)
        return np.min(los, axis=0) - self.blend, np.max(his, axis=0) + self.blend


@dataclass(frozen=True)
class Intersection(Shape):
    shapes: tuple[Shape, ...]

    def sdf(self, p):
        return np.maximum.reduce([s.sdf(p) for s in self.shapes])

    def bounds(self):
        los, his = zip(*(s.bounds() for s in self.shapes), strict=True)
        return np.max(los, axis=0), np.min(his, axis=0)


@dataclass(frozen=True)
class Difference(Shape):
    """`base` minus `cut`."""

    base: Shape
    cut: Shape

    def sdf(self, p):
        return np.maximum(self.base.sdf(p), -self.cut.sdf(p))

    def bounds(self):
        return self.base.bounds()


@dataclass(frozen=True)
class Offset(Shape):
    """`shape` eroded by `amount` mm (negative: dilated)."""

    shape: Shape
    amount: float

    def sdf(self, p):
        return self.shape.sdf(p) + self.amount

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
