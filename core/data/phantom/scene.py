"""A joint's anatomy as an ordered list of painted parts, and its rasterisation on a grid.

Parts are painted in order (later parts win), so a bone paints its cortex then its marrow,
cartilage is a dilated bone painted before the bone, and lesions are painted last.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.data.phantom.geometry import ViewGeometry
from core.data.phantom.profiles import Tissue
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


TILE = 4  # in-plane tile size (pixels) of the coarse pass
_SAFETY = 1.4  # our distances are approximate: widen the "surely inside/outside" margin


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
    tissue = np.zeros((n_sub, *geom.shape), np.uint8)
    labels = np.zeros((n_sub, *geom.shape), np.uint8)
    blocks = [geom.block(*p.bounds()) for p in parts]
    masks = _shared_masks(parts, blocks, geom, n_sub)
    for i, (part, block) in enumerate(zip(parts, blocks, strict=True)):
        if block is None:
            continue
        inside = masks[i]
        if part.clip is not None and inside.any():
            inside = inside & inside_mask(part.clip.sdf, [0.0], block=block, geom=geom,
                                          n_sub=n_sub)[0]
        sub = (slice(None), *block)
        tissue[sub][inside] = int(part.tissue)
        labels[sub][inside] = part.label
    return tissue, labels[n_sub // 2]


def _shared_masks(parts, blocks, geom, n_sub) -> dict[int, np.ndarray]:
    """Inside masks per part index, one evaluation per distinct shape on its widest block."""
    groups: dict[int, list[int]] = {}
    for i, (p, b) in enumerate(zip(parts, blocks, strict=True)):
        if b is not None:
            groups.setdefault(id(p.shape), []).append(i)
    masks = {}
    for idx in groups.values():
        sl = [blocks[i] for i in idx]
        big = tuple(slice(min(b[a].start for b in sl), max(b[a].stop for b in sl))
                    for a in range(3))
        levels = [-parts[i].inset for i in idx]
        found = inside_mask(parts[idx[0]].shape.sdf, levels, block=big, geom=geom, n_sub=n_sub)
        for i, m in zip(idx, found, strict=True):
            b = blocks[i]
            crop = tuple(slice(b[a].start - big[a].start, b[a].stop - big[a].start)
                         for a in range(3))
            masks[i] = m[(slice(None), *crop)]
    return masks


def inside_mask(sdf, levels: list[float], *, block, geom: ViewGeometry,
                n_sub: int) -> list[np.ndarray]:
    """Where `sdf <= level`, per level, at the sub-slice samples of `block` (n_sub, k, r, c).

    Coarse-to-fine: the distance at each tile centre decides whole tiles that are surely
    inside or outside; only tiles near a surface are evaluated at every sample.
    """
    ks, rs, cs = block
    nk, nr, nc = ks.stop - ks.start, rs.stop - rs.start, cs.stop - cs.start
    ti, tj = -(-nr // TILE), -(-nc // TILE)
    k = np.arange(ks.start, ks.stop, dtype=np.float32)
    along = (k[None, :] * geom.slice_spacing + geom.sub_offsets(n_sub)[:, None]).reshape(-1)
    half = (TILE - 1) / 2
    rows = (rs.start + half + TILE * np.arange(ti, dtype=np.float32))
    cols = (cs.start + half + TILE * np.arange(tj, dtype=np.float32))
    d = sdf(_points(geom, along[:, None, None], rows[None, :, None], cols[None, None, :]))
    margin = _SAFETY * (TILE / 2) * max(geom.pixel_spacing) * np.sqrt(2) + 0.3
    lv = np.asarray(levels, np.float32)[:, None, None, None]
    near = np.any(np.abs(d[None] - lv) <= margin, axis=0)
    pp, ii, jj = np.nonzero(near)
    fine = None
    offs = np.arange(TILE)
    if len(pp):
        r_idx = (rs.start + TILE * ii[:, None] + offs[None]).astype(np.float32)
        c_idx = (cs.start + TILE * jj[:, None] + offs[None]).astype(np.float32)
        fine = sdf(_points(geom, along[pp][:, None, None], r_idx[:, :, None], c_idx[:, None, :]))
    rr, cc = TILE * ii[:, None] + offs[None], TILE * jj[:, None] + offs[None]
    valid = (rr[:, :, None] < nr) & (cc[:, None, :] < nc)
    b, x, y = np.nonzero(valid)
    out = []
    for level in levels:
        coarse = np.repeat(np.repeat(d <= level, TILE, axis=1), TILE, axis=2)[:, :nr, :nc]
        if fine is not None:
            coarse[pp[b], rr[b, x], cc[b, y]] = fine[b, x, y] <= level
        out.append(coarse.reshape(n_sub, nk, nr, nc))
    return out


def _points(geom: ViewGeometry, along, r, c) -> np.ndarray:
    """Points (..., 3) at offsets `along` the normal (mm) and fractional row/column indices."""
    n, rd, cd = (np.asarray(v, np.float32) for v in (geom.normal, geom.row_dir, geom.col_dir))
    out = np.asarray(geom.origin, np.float32) + np.asarray(along, np.float32)[..., None] * n
    out = out + (np.asarray(r, np.float32)[..., None] * geom.pixel_spacing[0]) * cd
    return out + (np.asarray(c, np.float32)[..., None] * geom.pixel_spacing[1]) * rd
