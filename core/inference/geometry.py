"""Label maps between grids: the model's preprocessed grid and the original series' grid.

A grid is a shape plus an affine from voxel index to patient millimetres (DICOM LPS, as
`core.data.volume`). Resampling is nearest neighbour by index: each target voxel takes the
label of the source voxel its centre falls in, 0 outside the source (e.g. slices the model
did not read).
"""

from __future__ import annotations

import numpy as np

from core.data.volume import Volume, lps_ras_flip

# (s, r, c) -> (column, row, slice): the voxel layout seg.nii.gz is written in, as the
# phantom masks and dcm2niix store a series (i = columns, j = rows, k = slices).
NIFTI_AXES = (2, 1, 0)
# Voxel-index margin by which ties are broken upwards (well above float32 affine noise).
TIE_MARGIN = 1e-4


def resample_nearest(
    labels: np.ndarray,
    *,
    source_affine: np.ndarray,
    target_affine: np.ndarray,
    target_shape: tuple[int, ...],
) -> np.ndarray:
    """`labels` (on the grid of `source_affine`) resampled onto the target grid (uint8)."""
    if labels.ndim != 3 or len(target_shape) != 3:
        raise ValueError(f"label maps must be 3D, got {labels.shape} -> {tuple(target_shape)}")
    grid = np.indices(target_shape, dtype=np.float64).reshape(3, -1)
    homogeneous = np.vstack([grid, np.ones((1, grid.shape[1]))])
    to_source = np.linalg.inv(source_affine) @ target_affine
    # round half up, with a margin so that float noise in the affines (NIfTI stores float32)
    # cannot split a voxel centre that falls exactly between two source voxels
    index = np.floor((to_source @ homogeneous)[:3] + 0.5 + TIE_MARGIN).astype(np.int64)
    inside = np.all((index >= 0) & (index < np.array(labels.shape)[:, None]), axis=0)
    out = np.zeros(grid.shape[1], dtype=np.uint8)
    out[inside] = labels[index[0, inside], index[1, inside], index[2, inside]]
    return out.reshape(target_shape)


def to_series_grid(labels: np.ndarray, *, model_affine: np.ndarray, volume: Volume) -> np.ndarray:
    """A label map on the model grid -> the original series' (S, R, C) grid."""
    return resample_nearest(
        labels, source_affine=model_affine, target_affine=volume.affine, target_shape=volume.shape
    )


def nifti_layout(labels: np.ndarray, *, volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """(array (columns, rows, slices), RAS affine) of a label map on `volume`'s grid."""
    if labels.shape != volume.shape:
        raise ValueError(f"label map {labels.shape} is not on the series grid {volume.shape}")
    affine = np.eye(4)
    affine[:3, :3] = volume.affine[:3, list(NIFTI_AXES)]
    affine[:3, 3] = volume.affine[:3, 3]
    return np.ascontiguousarray(labels.transpose(NIFTI_AXES)), lps_ras_flip() @ affine
