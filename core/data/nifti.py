"""NIfTI reader (nibabel): a 3D .nii/.nii.gz image or mask -> (S, R, C) array + LPS affine.

NIfTI stores voxels (i, j, k) with a RAS affine; we convert to LPS and pick the slice axis:
1. the header's `dim_info` slice dimension when the writer set it;
2. otherwise the voxel axis with the largest spacing, if it is at least 1% larger than
   the others (2D acquisitions have thick slices);
3. otherwise (isotropic or tied spacing, e.g. a 3D acquisition) the last of the tied axes,
   since converters such as dcm2niix store the acquired slices along the third axis (k).
The two remaining axes (a < b) become rows = b, columns = a, which keeps dcm2niix output in
DICOM row/column order. If the slice axis then points against cross(column dir, row dir)
the slices are reversed, so slices ascend along `Volume.normal` exactly as for DICOM.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from core.data.volume import Volume, lps_ras_flip

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Spacing must exceed the next largest by this factor to decide the slice axis alone.
SPACING_MARGIN = 1.01


def is_nifti(path: Path) -> bool:
    """True for .nii and .nii.gz file names."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: Path, *, name: str | None = None) -> Volume:
    """Read a 3D NIfTI image as a float32 `Volume`; ValueError naming the file otherwise.

    `name` is how error messages refer to the file (default: its path).
    """
    image, data = _load(path, name=name or str(path))
    axis = slice_axis(image)
    array, affine = _to_slices(
        data.astype(np.float32, copy=False), affine_lps=lps_ras_flip() @ image.affine, axis=axis
    )
    spacing = tuple(float(np.linalg.norm(affine[:3, i])) for i in range(3))
    return Volume(
        array=np.ascontiguousarray(array, dtype=np.float32),
        affine=affine,
        spacing=spacing,  # type: ignore[arg-type]
        normal=_normal(affine),
        source=str(path),
        series_uid=None,
        description=_description(image),
    )


def read_mask(path: Path, *, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a segmentation mask: (int32 labels (S, R, C), affine (s, r, c) -> LPS mm).

    Uses the same axis rules as `read_nifti`, so a mask saved with its image's header lands
    on the image's (S, R, C) grid; compare the affines to detect a mismatch.
    """
    name = name or str(path)
    image, data = _load(path, name=name, scaled=False)
    if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
        raise ValueError(f"{name}: mask holds non-integer values; save label numbers only")
    if data.size and data.min() < 0:
        raise ValueError(f"{name}: mask holds negative labels")
    labels, affine = _to_slices(
        data.astype(np.int32), affine_lps=lps_ras_flip() @ image.affine, axis=slice_axis(image)
    )
    return np.ascontiguousarray(labels), affine


def _description(image: nib.Nifti1Image) -> str:
    try:
        raw = np.asarray(image.header["descrip"]).tobytes()
    except (KeyError, ValueError):
        return ""
    return raw.decode("latin-1").strip("\x00 ")


def _load(path: Path, *, name: str, scaled: bool = True) -> tuple[nib.Nifti1Image, np.ndarray]:
    """The image and its 3D data; ValueError for unreadable, 2D or 4D files."""
    try:
        image = nib.load(str(path))
        data = image.get_fdata(dtype=np.float32) if scaled else np.asanyarray(image.dataobj)
    except Exception as err:  # nibabel raises many types for damaged or foreign files
        raise ValueError(f"{name}: cannot read NIfTI file ({type(err).__name__}: {err})") from None
    shape = data.shape
    while len(shape) > 3 and shape[-1] == 1:
        data = data[..., 0]
        shape = data.shape
    if len(shape) > 3:
        raise ValueError(
            f"{name}: 4D image with {int(np.prod(shape[3:]))} volumes is not "
            "supported; export one 3D volume per series"
        )
    if len(shape) < 3 or min(shape) < 2:
        raise ValueError(f"{name}: image is {shape}, not a 3D volume")
    return image, np.asarray(data)


def slice_axis(image: nib.Nifti1Image) -> int:
    """Voxel axis (0, 1, 2) holding the slices; see the module docstring for the rules."""
    header = image.header
    if hasattr(header, "get_dim_info"):
        dim_slice = header.get_dim_info()[2]
        if dim_slice is not None and 0 <= dim_slice < 3:
            return int(dim_slice)
    spacing = np.linalg.norm(image.affine[:3, :3], axis=0)
    largest = float(spacing.max())
    tied = [i for i in range(3) if spacing[i] * SPACING_MARGIN >= largest]
    return tied[-1]


def _to_slices(
    data: np.ndarray, *, affine_lps: np.ndarray, axis: int
) -> tuple[np.ndarray, np.ndarray]:
    """Transpose voxel axes to (slice, row, column) and adjust the affine to match."""
    a, b = (i for i in range(3) if i != axis)
    order = (axis, b, a)
    array = np.transpose(data, order)
    affine = np.eye(4)
    affine[:3, :3] = affine_lps[:3, list(order)]
    affine[:3, 3] = affine_lps[:3, 3]
    if float(np.dot(affine[:3, 0], _normal(affine))) < 0:
        array = array[::-1]
        affine[:3, 3] = affine[:3, 3] + affine[:3, 0] * (array.shape[0] - 1)
        affine[:3, 0] = -affine[:3, 0]
    return array, affine


def _normal(affine: np.ndarray) -> np.ndarray:
    """Unit cross(column direction, row direction): the DICOM slice normal of this grid."""
    col_dir = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    row_dir = affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    normal = np.cross(col_dir, row_dir)
    return normal / np.linalg.norm(normal)
