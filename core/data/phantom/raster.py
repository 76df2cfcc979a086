"""Coarse-to-fine painting of signed distance functions on a view's sample grid.

A view samples `n_sub` planes per slice (spread over the slice thickness) on a rows x columns
grid. Instead of evaluating a shape at every sample, square tiles of samples are evaluated at
their centre: a tile whose distance is farther from the level than its own radius (times a
safety factor for our approximate distances) is decided whole, the others are split into
smaller tiles, down to single samples. Tiles are aligned to the whole view grid, so a sample's
outcome does not depend on which part of the view a shape's bounding box covers.

Painting keeps, per tile size, the highest owner (painting order) decided inside each tile;
composing the sizes from coarse to fine (maximum) gives, per sample, the last part painted
there, at the cost of about one pass over the view however many parts there are.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core.data.phantom.geometry import ViewGeometry

SAFETY = 1.4  # our distances are approximate: widen the "surely inside/outside" margin
MARGIN_MM = 0.3
MAX_MARGIN_MM = 10.0  # margin of the coarsest tiles
GROUP_MIN_TILE = 4  # tiles this large span all sub-slice samples of their slice

Block = tuple[slice, slice, slice]
Sdf = Callable[[np.ndarray], np.ndarray]
Member = tuple[int, float, Sdf | None]  # (owner >= 1, level, clip): owner where sdf<=level, clip<=0


def tile_schedule(geom: ViewGeometry, n_sub: int) -> list[int]:
    """Tile sizes (pixels, halving) from coarse to fine; the top one within MAX_MARGIN_MM."""
    sizes = [1]
    while margin_mm(geom, n_sub, sizes[-1] * 2) <= MAX_MARGIN_MM:
        sizes.append(sizes[-1] * 2)
    return sizes[::-1]


def margin_mm(geom: ViewGeometry, n_sub: int, tile: int) -> float:
    """How far (mm) a tile's centre distance must be from a level to decide the whole tile."""
    half = (tile - 1) / 2
    along = float(np.max(np.abs(geom.sub_offsets(n_sub)))) if tile >= GROUP_MIN_TILE else 0.0
    radius = float(
        np.sqrt(
            (half * geom.pixel_spacing[0]) ** 2 + (half * geom.pixel_spacing[1]) ** 2 + along**2
        )
    )
    return SAFETY * radius + MARGIN_MM if radius > 0 else 0.0


def sample_points(geom: ViewGeometry, *, along, rows, cols) -> np.ndarray:
    """Points (3, n) float32 at offsets `along` the normal (mm) and fractional row/col indices."""
    return _points(_frame(geom), along=along, rows=rows, cols=cols)


def _frame(geom: ViewGeometry) -> np.ndarray:
    """Origin, unit normal, one-row step and one-column step (4, 3) float32 of a view grid."""
    return np.array(
        [
            geom.origin,
            geom.normal,
            geom.col_dir * geom.pixel_spacing[0],
            geom.row_dir * geom.pixel_spacing[1],
        ],
        np.float32,
    )


def _points(frame: np.ndarray, *, along, rows, cols) -> np.ndarray:
    along, rows, cols = (np.asarray(v, np.float32).ravel() for v in (along, rows, cols))
    o, n, step_r, step_c = frame
    out = np.empty((3, along.size), np.float32)
    for a in range(3):
        x = out[a]
        np.multiply(along, n[a], out=x)
        x += o[a]
        x += rows * step_r[a]
        x += cols * step_c[a]
    return out


def dense_inside(
    sdf: Sdf, level: float, *, geom: ViewGeometry, n_sub: int, clip: Sdf | None = None
) -> np.ndarray:
    """Reference for `Coverage`: `sdf <= level` (and `clip <= 0`) at every sample of the view."""
    s, k, r, c = np.meshgrid(*(np.arange(n) for n in (n_sub, *geom.shape)), indexing="ij")
    p = sample_points(
        geom, along=k * geom.slice_spacing + geom.sub_offsets(n_sub)[s], rows=r, cols=c
    )
    inside = sdf(p) <= np.float32(level)
    if clip is not None:
        inside &= clip(p) <= 0
    return inside.reshape(s.shape)


class Coverage:
    """Which owner (painting order, 1 = first) was painted last at every sample of a view."""

    def __init__(self, *, geom: ViewGeometry, n_sub: int, n_owners: int):
        self.geom, self.n_sub = geom, n_sub
        self._frame = _frame(geom)
        self._offsets = geom.sub_offsets(n_sub).astype(np.float32)
        self.sizes = tile_schedule(geom, n_sub)
        top = self.sizes[0]
        k, r, c = geom.shape
        self._rows, self._cols = -(-r // top) * top, -(-c // top) * top
        dtype = np.uint8 if n_owners < 255 else np.uint16
        self.grids = {
            t: np.zeros(
                (1 if t >= GROUP_MIN_TILE else n_sub, k, self._rows // t, self._cols // t), dtype
            )
            for t in self.sizes
        }

    def paint(self, sdf: Sdf, members: list[Member], *, block: Block) -> None:
        """Paint each member where `sdf <= level` and its clip <= 0, within tiles near `block`."""
        levels = np.asarray([lv for _, lv, _ in members], np.float32)[:, None]
        cells = self._top_cells(block)
        for i, tile in enumerate(self.sizes):
            p = self._centres(cells, tile)
            d = sdf(p)
            m = np.float32(margin_mm(self.geom, self.n_sub, tile))
            v = d[None] - levels
            for j, (_, _, clip) in enumerate(members):
                if clip is not None:
                    np.maximum(v[j], clip(p), out=v[j])
            refine = np.any((v > -m) & (v <= m), axis=0)
            lin = self._linear(cells, tile)
            flat = self.grids[tile].reshape(-1)
            for (owner, _, _), vj in zip(members, v, strict=True):
                hit = lin[(vj <= -m) & ~refine]
                flat[hit] = np.maximum(flat[hit], owner)
            if i + 1 == len(self.sizes) or not refine.any():
                return
            cells = self._children(
                [a if a is None else a[refine] for a in cells],
                tile=tile,
                child=self.sizes[i + 1],
                block=block,
            )

    def owners(self) -> np.ndarray:
        """Owner per sample (n_sub, slices, rows, columns); 0 where nothing was painted."""
        out = self.grids[self.sizes[0]]
        for fine in self.sizes[1:]:
            out = np.maximum(_double(out), self.grids[fine])
        return out[:, :, : self.geom.shape[1], : self.geom.shape[2]]

    def _top_cells(self, block: Block):
        """Top tiles overlapping `block` as (slice, sub-sample or None, tile row, tile col)."""
        top = self.sizes[0]
        ks, rs, cs = block
        axes = (
            np.arange(ks.start, ks.stop, dtype=np.int32),
            np.arange(rs.start // top, -(-rs.stop // top), dtype=np.int32),
            np.arange(cs.start // top, -(-cs.stop // top), dtype=np.int32),
        )
        k, r, c = (g.ravel() for g in np.meshgrid(*axes, indexing="ij"))
        if top >= GROUP_MIN_TILE:
            return k, None, r, c
        s = np.repeat(np.arange(self.n_sub, dtype=np.int32), len(k))
        return np.tile(k, self.n_sub), s, np.tile(r, self.n_sub), np.tile(c, self.n_sub)

    def _centres(self, cells, tile: int) -> np.ndarray:
        k, s, r, c = cells
        along = k * np.float32(self.geom.slice_spacing)
        if s is not None:
            along = along + self._offsets[s]
        half = (tile - 1) / 2
        return _points(self._frame, along=along, rows=r * tile + half, cols=c * tile + half)

    def _linear(self, cells, tile: int) -> np.ndarray:
        k, s, r, c = cells
        _, nk, nr, nc = self.grids[tile].shape
        lin = (k.astype(np.intp) * nr + r) * nc + c
        if s is not None:
            lin += s.astype(np.intp) * (nk * nr * nc)
        return lin

    def _children(self, cells, *, tile: int, child: int, block: Block):
        """The child tiles of `cells` that overlap `block` (one per sub-sample when ungrouping)."""
        k, s, r, c = cells
        f = tile // child
        dr, dc = (
            a.ravel() for a in np.meshgrid(*[np.arange(f, dtype=np.int32)] * 2, indexing="ij")
        )
        ungroup = s is None and child < GROUP_MIN_TILE
        if ungroup:
            ds = np.tile(np.arange(self.n_sub, dtype=np.int32), f * f)
            dr, dc = np.repeat(dr, self.n_sub), np.repeat(dc, self.n_sub)
        n = len(dr)
        r = (r[:, None] * f + dr).reshape(-1)
        c = (c[:, None] * f + dc).reshape(-1)
        k = np.repeat(k, n)
        if s is not None:
            s = np.repeat(s, n)
        elif ungroup:
            s = np.broadcast_to(ds, (len(k) // n, n)).reshape(-1)
        _, rs, cs = block
        keep = (
            (r * child < rs.stop)
            & ((r + 1) * child > rs.start)
            & (c * child < cs.stop)
            & ((c + 1) * child > cs.start)
        )
        if keep.all():
            return k, s, r, c
        return k[keep], (None if s is None else s[keep]), r[keep], c[keep]


def _double(grid: np.ndarray) -> np.ndarray:
    """Each cell of `grid` (.., rows, columns) as 2 x 2 cells (byte-duplicating multiply)."""
    wide, ones = {
        np.dtype(np.uint8): (np.uint16, 0x0101),
        np.dtype(np.uint16): (np.uint32, 0x00010001),
    }[grid.dtype]
    cols = (grid.astype(wide) * wide(ones)).view(grid.dtype)
    return np.repeat(cols, 2, axis=-2)
