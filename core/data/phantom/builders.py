"""Building blocks shared by the joint anatomies: bones, cartilage, tendons and their tears."""

from __future__ import annotations

import numpy as np

from core.data.phantom.profiles import Tissue
from core.data.phantom.scene import LesionRegion, Part
from core.data.phantom.shapes import Ellipsoid, Shape, Tube, bezier


def bone(name: str, shape: Shape, *, cortex: float = 1.5, label: int = 0) -> list[Part]:
    """Dark cortex shell of `cortex` mm around fatty marrow."""
    return [
        Part(f"{name}_cortex", Tissue.CORTEX, shape, label=label),
        Part(f"{name}_marrow", Tissue.MARROW, shape, inset=cortex, label=label),
    ]


def cartilage(
    name: str, bone_shape: Shape, *, thickness: float, clip: Shape, label: int = 0
) -> Part:
    """Cartilage layer: the bone dilated by `thickness`, kept inside `clip` (paint before bone)."""
    return Part(name, Tissue.CARTILAGE, bone_shape, inset=-thickness, clip=clip, label=label)


def curve(ctrl, n: int = 12) -> np.ndarray:
    """Dense points along a smooth curve through/near the control points."""
    return bezier(np.asarray(ctrl, float), n) if len(ctrl) > 2 else np.asarray(ctrl, np.float32)


def _arc(points: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])


def point_at(points: np.ndarray, frac: float) -> np.ndarray:
    """The point at arc-length fraction `frac` of a polyline."""
    s = _arc(points)
    return np.array([np.interp(frac * s[-1], s, points[:, i]) for i in range(3)], np.float32)


def sub_curve(points: np.ndarray, start: float, stop: float) -> np.ndarray:
    """The part of a polyline between arc lengths `start` and `stop` (mm)."""
    s = _arc(points)
    keep = (s > start) & (s < stop)
    ends = [np.array([np.interp(v, s, points[:, i]) for i in range(3)]) for v in (start, stop)]
    return np.vstack([ends[0], points[keep], ends[1]]).astype(np.float32)


def tendon(
    name: str,
    points: np.ndarray,
    radii,
    *,
    width_dir,
    label: int = 0,
    tissue: Tissue = Tissue.TENDON,
) -> Part:
    return Part(
        name,
        tissue,
        Tube(
            points=points,
            radii=np.asarray(radii, np.float32),
            width_dir=np.asarray(width_dir, np.float32),
        ),
        label=label,
    )


def torn_tendon(
    name: str,
    points: np.ndarray,
    radii,
    *,
    width_dir,
    frac: float,
    gap: float,
    label: int = 0,
    swell: float = 1.3,
) -> tuple[list[Part], LesionRegion]:
    """A tendon/ligament interrupted at arc fraction `frac` by a `gap` mm fluid-filled defect.

    The stumps taper (thin, frayed ends) and the surrounding tissue is swollen with edema, so
    the tear reads as a discontinuity with fluid signal at the gap.
    """
    r = np.asarray(radii, np.float32)
    total = float(_arc(points)[-1])
    mid = frac * total
    lo, hi = max(0.5, mid - gap / 2), min(total - 0.5, mid + gap / 2)
    centre = point_at(points, frac)
    fluid_path = sub_curve(points, max(0.0, lo - 2.0), min(total, hi + 2.0))
    stump_a, stump_b = sub_curve(points, 0.0, lo), sub_curve(points, hi, total)
    taper = np.array([[1.0, 1.0], [0.55, 0.7]], np.float32)
    parts = [
        Part(
            f"{name}_edema",
            Tissue.EDEMA,
            Tube(
                points=fluid_path,
                radii=r * swell + 1.5,
                width_dir=np.asarray(width_dir, np.float32),
            ),
        ),
        Part(
            f"{name}_fluid",
            Tissue.FLUID,
            Tube(points=fluid_path, radii=r * 0.9, width_dir=np.asarray(width_dir, np.float32)),
        ),
        Part(
            f"{name}_stump_a",
            Tissue.TENDON,
            Tube(points=_two(stump_a), radii=r * taper, width_dir=np.asarray(width_dir)),
            label=label,
        ),
        Part(
            f"{name}_stump_b",
            Tissue.TENDON,
            Tube(points=_two(stump_b), radii=r * taper[::-1], width_dir=np.asarray(width_dir)),
            label=label,
        ),
    ]
    radius = gap / 2 + float(r.max()) * swell + 12.0 + _reach(stump_a, stump_b)
    return parts, LesionRegion(centre=centre, radius=radius)


def _two(points: np.ndarray) -> np.ndarray:
    """First and last point of a (short) stump: tapered tubes need one segment."""
    return np.vstack([points[0], points[-1]]).astype(np.float32)


def _reach(a: np.ndarray, b: np.ndarray) -> float:
    """Stumps become straight segments: allow for that change along their whole length."""
    return float(max(_arc(a)[-1], _arc(b)[-1]))


def thickened(
    name: str, points: np.ndarray, radii, *, width_dir, factor: float, edema: float, label: int = 0
) -> tuple[list[Part], LesionRegion]:
    """A sprained ligament: thickened, intermediate signal, wrapped in edema."""
    r = np.asarray(radii, np.float32)
    w = np.asarray(width_dir, np.float32)
    parts = [
        Part(
            f"{name}_edema",
            Tissue.EDEMA,
            Tube(points=points, radii=r * factor + edema, width_dir=w),
        ),
        Part(
            f"{name}_thick",
            Tissue.TENDON,
            Tube(points=points, radii=r * factor, width_dir=w),
            label=label,
        ),
    ]
    centre = points.mean(axis=0)
    radius = float(np.max(np.linalg.norm(points - centre, axis=1))) + float(r.max()) * factor
    return parts, LesionRegion(centre=centre, radius=radius + edema + 8.0)


def blob(
    name: str, tissue: Tissue, centre, radii, *, clip: Shape | None = None, label: int = 0
) -> Part:
    return Part(
        name,
        tissue,
        Ellipsoid(center=np.asarray(centre, np.float32), radii=np.asarray(radii, np.float32)),
        clip=clip,
        label=label,
    )


class Jitter:
    """Draws per-case anatomical variation from one generator in a fixed order."""

    def __init__(self, rng: np.random.Generator, scale: float):
        self.rng = rng
        self.scale = scale

    def p(self, x, y, z, sd: float = 1.5) -> np.ndarray:
        """A landmark (mm) scaled by the case size and moved by N(0, sd) per axis."""
        return (np.array([x, y, z]) * self.scale + self.rng.normal(0, sd, 3)).astype(np.float32)

    def r(self, *radii: float, sd: float = 0.06) -> np.ndarray:
        """Radii scaled by the case size and by a log-normal factor per axis."""
        f = np.exp(self.rng.normal(0, sd, len(radii)))
        return (np.array(radii) * self.scale * f).astype(np.float32)

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))
