"""Slice geometry of one acquired series: voxel centres in patient coordinates (DICOM LPS, mm).

Voxel (slice k, row r, column c) sits at
    origin + c * col_spacing * row_dir + r * row_spacing * col_dir + k * slice_spacing * normal
with `row_dir`/`col_dir` the two triplets of DICOM ImageOrientationPatient and
`normal = row_dir x col_dir`; images are arrays indexed [slice, row, column].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.data.phantom.shapes import rotation
from core.views import View

# (row_dir, col_dir) of the un-tilted series per view.
BASE_FRAMES: dict[View, tuple[tuple[float, ...], tuple[float, ...]]] = {
    View.SAGITTAL: ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    View.CORONAL: ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    View.AXIAL: ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
}


@dataclass(frozen=True)
class ViewGeometry:
    view: View
    origin: np.ndarray  # centre of voxel [0, 0, 0]
    row_dir: np.ndarray  # direction of increasing column index
    col_dir: np.ndarray  # direction of increasing row index
    pixel_spacing: tuple[float, float]  # (between rows, between columns), DICOM order
    slice_thickness: float
    slice_spacing: float  # centre to centre (thickness + gap)
    shape: tuple[int, int, int]  # (slices, rows, columns)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    def index_to_patient(self) -> np.ndarray:
        """4x4 matrix mapping (column, row, slice, 1) to LPS millimetres."""
        m = np.eye(4)
        m[:3, 0] = self.row_dir * self.pixel_spacing[1]
        m[:3, 1] = self.col_dir * self.pixel_spacing[0]
        m[:3, 2] = self.normal * self.slice_spacing
        m[:3, 3] = self.origin
        return m

    def slice_positions(self) -> np.ndarray:
        """ImagePositionPatient of each slice (k, 3)."""
        k = np.arange(self.shape[0])[:, None]
        return self.origin[None] + k * self.slice_spacing * self.normal[None]

    def to_local(self, rot: np.ndarray, shift: np.ndarray) -> ViewGeometry:
        """The same grid seen from a frame where patient p = rot @ q + shift."""
        return ViewGeometry(
            view=self.view,
            origin=rot.T @ (self.origin - shift),
            row_dir=rot.T @ self.row_dir,
            col_dir=rot.T @ self.col_dir,
            pixel_spacing=self.pixel_spacing,
            slice_thickness=self.slice_thickness,
            slice_spacing=self.slice_spacing,
            shape=self.shape,
        )

    def sub_offsets(self, n_sub: int) -> np.ndarray:
        """Offsets (mm, along the normal) of `n_sub` samples spread over the slice thickness."""
        return self.slice_thickness * ((np.arange(n_sub) + 0.5) / n_sub - 0.5)

    def block(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index ranges (slice, row, column) whose slabs may touch the box [lo, hi]."""
        corners = np.array(np.meshgrid(*zip(lo, hi, strict=True), indexing="ij")).reshape(3, -1)
        inv = np.linalg.inv(self.index_to_patient())
        idx = (inv[:3, :3] @ corners) + inv[:3, 3:4]
        pad = np.array([1.0, 1.0, 1.0 + self.slice_thickness / 2 / self.slice_spacing])
        start = np.floor(idx.min(axis=1) - pad).astype(int)
        stop = np.ceil(idx.max(axis=1) + pad).astype(int) + 1
        size = np.array(self.shape)[::-1]  # columns, rows, slices
        start, stop = np.clip(start, 0, size), np.clip(stop, 0, size)
        if np.any(stop <= start):
            return None
        return (slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0]))

    def points(self, block: tuple[slice, slice, slice], n_sub: int) -> np.ndarray:
        """Sample points (n_sub, k, r, c, 3) float32 of the index block."""
        k = np.arange(block[0].start, block[0].stop, dtype=np.float32)
        r = np.arange(block[1].start, block[1].stop, dtype=np.float32)
        c = np.arange(block[2].start, block[2].stop, dtype=np.float32)
        along = k[None, :] * self.slice_spacing + self.sub_offsets(n_sub)[:, None]
        n, rd, cd = (np.asarray(v, np.float32) for v in (self.normal, self.row_dir, self.col_dir))
        out = np.asarray(self.origin, np.float32) + along[:, :, None, None, None] * n
        out = out + (r[:, None, None] * self.pixel_spacing[0]) * cd
        return out + (c[:, None] * self.pixel_spacing[1]) * rd

    def centres(self) -> np.ndarray:
        """Voxel centres (k, r, c, 3) in patient coordinates."""
        full = tuple(slice(0, n) for n in self.shape)
        return self.points(full, 1)[0]


def make_geometry(
    *,
    view: View,
    centre: np.ndarray,
    size: int,
    fov_mm: float,
    slices: int,
    thickness: float,
    gap: float,
    max_obliquity_deg: float,
    max_offset_mm: float,
    rng: np.random.Generator,
) -> ViewGeometry:
    """A series centred near `centre`, tilted by up to `max_obliquity_deg` about a random axis."""
    axis = rng.normal(size=3)
    tilt = rotation(axis, rng.uniform(0.0, max_obliquity_deg))
    row, col = (tilt @ np.array(v) for v in BASE_FRAMES[view])
    centre = np.asarray(centre, float) + rng.uniform(-max_offset_mm, max_offset_mm, size=3)
    px = fov_mm / size
    spacing = thickness + gap
    normal = np.cross(row, col)
    origin = centre - (size - 1) / 2 * px * (row + col) - (slices - 1) / 2 * spacing * normal
    return ViewGeometry(
        view=view,
        origin=origin,
        row_dir=row,
        col_dir=col,
        pixel_spacing=(px, px),
        slice_thickness=thickness,
        slice_spacing=spacing,
        shape=(slices, size, size),
    )
