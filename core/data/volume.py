"""One MRI series as a 3D array with its patient geometry (the common output of all readers).

Conventions (shared by the DICOM, NIfTI and MRNet readers):
- `array` is float32 with shape (S, R, C): slices, rows, columns.
- `affine` maps a voxel index (s, r, c) to patient coordinates in millimetres, DICOM LPS
  (x: right -> left, y: anterior -> posterior, z: inferior -> superior).
- Moving along r follows the DICOM column cosines, along c the DICOM row cosines, and the
  slice direction is `normal = cross(row cosines, column cosines)`: slices are ordered by
  ascending position along `normal`, exactly as a DICOM stack sorted by its geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.views import View

# Diagonal that flips LPS <-> RAS (x and y change sign); a tuple so it cannot be mutated.
_LPS_RAS_FLIP = (-1.0, -1.0, 1.0, 1.0)

# Standard DICOM (row cosines, column cosines) per view: sagittal [0,1,0 / 0,0,-1],
# coronal [1,0,0 / 0,0,-1], axial [1,0,0 / 0,1,0]. Their normals are -x, +y, +z.
_STANDARD_ORIENTATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
}


def lps_ras_flip() -> np.ndarray:
    """4x4 matrix converting LPS patient coordinates to RAS (and back: it is its own inverse)."""
    return np.diag(_LPS_RAS_FLIP)


def standard_orientation(view: View | str) -> tuple[np.ndarray, np.ndarray]:
    """DICOM (row cosines, column cosines) of an axis-aligned series of `view`."""
    row, col = _STANDARD_ORIENTATION[View(view).value]
    return np.array(row), np.array(col)


def slice_affine(
    *,
    origin: np.ndarray,
    row_cosines: np.ndarray,
    col_cosines: np.ndarray,
    spacing: tuple[float, float, float],
) -> np.ndarray:
    """Affine (s, r, c) -> LPS mm of a stack whose first slice centre voxel sits at `origin`.

    `spacing` is (slice gap, row spacing, column spacing) as in `Volume.spacing`; the
    slice axis follows cross(row_cosines, col_cosines).
    """
    row = np.asarray(row_cosines, dtype=float)
    col = np.asarray(col_cosines, dtype=float)
    normal = np.cross(row, col)
    affine = np.eye(4)
    affine[:3, 0] = normal / np.linalg.norm(normal) * spacing[0]
    affine[:3, 1] = col * spacing[1]
    affine[:3, 2] = row * spacing[2]
    affine[:3, 3] = np.asarray(origin, dtype=float)
    return affine


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D MRI series in (S, R, C) order with its LPS geometry; see the module docstring."""

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    normal: np.ndarray
    source: str
    series_uid: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"{self.source}: volume must be 3D (S, R, C), got {self.array.shape}")
        if self.array.dtype != np.float32:
            raise ValueError(f"{self.source}: volume array must be float32, got {self.array.dtype}")
        if np.asarray(self.affine).shape != (4, 4):
            raise ValueError(f"{self.source}: affine must be 4x4")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"{self.source}: spacing must be three positive numbers")
        if abs(float(np.linalg.norm(self.normal)) - 1.0) > 1e-3:
            raise ValueError(f"{self.source}: slice normal must be a unit vector")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def slices(self) -> int:
        return int(self.array.shape[0])

    def to_ras_affine(self) -> np.ndarray:
        """Affine (s, r, c) -> RAS mm (NIfTI/nibabel convention)."""
        return lps_ras_flip() @ self.affine

    def world_position(self, index: tuple[float, float, float]) -> np.ndarray:
        """LPS position in mm of voxel `index` (s, r, c)."""
        return (self.affine @ np.array([*index, 1.0]))[:3]
