"""A joint's anatomy as an ordered list of painted parts, and its rasterisation on a grid.

Parts are painted in order (later parts win), so a bone paints its cortex then its marrow,
cartilage is a dilated bone painted before the bone, and lesions are painted last.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.data.phantom.geometry import ViewGeometry
from core.data.phantom.profiles import Tissue
from core.data.phantom.raster import Coverage, Member
from core.data.phantom.shapes import Shape
from core.views import View


@dataclass(frozen=True)
class Part:
    """Region `shape.sdf <= -inset` (inside `clip` when given) painted with `tissue`.

    `inset` > 0 erodes the shape (marrow inside cortex), < 0 dilates it (cartilage on bone).
    `label` is the knee structure value written to the mask (0 = none).
    """

    name: str
    tissue: Tissue
    shape: Shape
    inset: float = 0.0
    clip: Shape | None = None
    label: int = 0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.shape.bounds()
        grow = max(0.0, -self.inset)
        lo, hi = lo - grow, hi + grow
        if self.clip is not None:
            clo, chi = self.clip.bounds()
            lo, hi = np.maximum(lo, clo), np.minimum(hi, chi)
        return lo, hi


@dataclass(frozen=True)
class LesionRegion:
    """Where a lesion may change the image (local anatomy frame, mm)."""

    centre: np.ndarray
    radius: float


@dataclass
class Scene:
    """Anatomy of one case in its local frame plus where each view is centred."""

    parts: list[Part]
    view_centres: dict[View, np.ndarray]
    lesion_regions: dict[str, LesionRegion] = field(default_factory=dict)
    lesion_params: dict[str, dict] = field(default_factory=dict)


def rasterise(
    parts: list[Part], geom: ViewGeometry, *, n_sub: int
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue classes (n_sub, k, r, c) at sub-slice samples and labels (k, r, c) at centres.

    `geom` must be expressed in the parts' frame. `n_sub` is odd so the middle sample lies on
    the slice centre, which is where the label volume is sampled. Parts sharing a shape (a
    bone's cartilage, cortex and marrow) evaluate it once.
    """
    if n_sub % 2 != 1:
        raise ValueError(f"supersample must be odd, got {n_sub}")
    coverage = Coverage(geom=geom, n_sub=n_sub, n_owners=len(parts))
    for shape, members, block in _shape_groups(parts, geom):
        coverage.paint(shape.sdf, members, block=block)
    owners = coverage.owners()
    tissue = np.array([0, *(int(p.tissue) for p in parts)], np.uint8)
    labels = np.array([0, *(p.label for p in parts)], np.uint8)
    return tissue[owners], labels[owners[n_sub // 2]]


def _shape_groups(parts: list[Part], geom: ViewGeometry):
    """(shape, members, block) per distinct shape, block covering every member's bounds."""
    groups: dict[int, tuple[Shape, list[Member], list]] = {}
    for i, part in enumerate(parts):
        block = geom.block(*part.bounds())
        if block is None:
            continue
        clip = part.clip.sdf if part.clip is not None else None
        entry = groups.setdefault(id(part.shape), (part.shape, [], []))
        entry[1].append((i + 1, -part.inset, clip))
        entry[2].append(block)
    for shape, members, blocks in groups.values():
        big = tuple(
            slice(min(b[a].start for b in blocks), max(b[a].stop for b in blocks)) for a in range(3)
        )
        yield shape, members, big
