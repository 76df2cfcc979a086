"""NIfTI reader: slice axis choice, (S, R, C) layout, LPS geometry, masks, bad files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from core.data.nifti import read_mask, read_nifti
from core.data.volume import lps_ras_flip, slice_affine
from core.views import VIEWS, view_from_normal
from tests.core.data.dicom_factory import tilted_orientation


def _reference(view: str, *, tilt: float = 0.0, spacing=(3.0, 0.5, 0.6), seed: int = 0):
    """An (S, R, C) array and its LPS affine, as the DICOM reader would produce them."""
    row, col = tilted_orientation(view, degrees=tilt)
    affine = slice_affine(
        origin=np.array([10.0, -5.0, 3.0]), row_cosines=row, col_cosines=col, spacing=spacing
    )
    array = np.random.default_rng(seed).random((9, 12, 14)).astype(np.float32)
    return array, affine


def _save(path, data, affine_lps, **header):
    image = nib.Nifti1Image(data, lps_ras_flip() @ affine_lps)
    for key, value in header.items():
        image.header[key] = value
    nib.save(image, path)
    return path


def _as_ijk(array, affine):
    """dcm2niix-like storage: voxel (i, j, k) = (c, r, s)."""
    return np.transpose(array, (2, 1, 0)).copy(), affine[:, [2, 1, 0, 3]]


@pytest.mark.parametrize("view", [v.value for v in VIEWS])
def test_round_trip_of_dcm2niix_layout(tmp_path, view):
    array, affine = _reference(view, tilt=15.0)
    data, ijk_affine = _as_ijk(array, affine)
    volume = read_nifti(_save(tmp_path / "x.nii.gz", data, ijk_affine))
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-4)
    assert volume.spacing == pytest.approx((3.0, 0.5, 0.6), rel=1e-5)
    assert view_from_normal(volume.normal) == view


def _world_values_match(volume, data, affine_ijk):
    """Every voxel of `volume` holds the value found at the same LPS point in `data`."""
    s, r, c = np.meshgrid(*(np.arange(n) for n in volume.shape), indexing="ij")
    index = np.stack([s.ravel(), r.ravel(), c.ravel(), np.ones(s.size)])
    world = volume.affine @ index
    ijk = np.rint(np.linalg.solve(affine_ijk, world)[:3]).astype(int)
    np.testing.assert_array_equal(volume.array.ravel(), data[tuple(ijk)])


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_thickest_axis_becomes_the_slice_axis(tmp_path, slice_axis):
    spacing = [0.5, 0.5, 0.5]
    spacing[slice_axis] = 4.0
    affine_ijk = np.diag([*spacing, 1.0])
    affine_ijk[:3, 3] = [1.0, 2.0, 3.0]
    data = np.random.default_rng(1).random((10, 11, 12)).astype(np.float32)
    volume = read_nifti(_save(tmp_path / "t.nii", data, affine_ijk))
    assert volume.shape[0] == data.shape[slice_axis]
    assert volume.spacing[0] == pytest.approx(4.0)
    assert abs(volume.normal[slice_axis]) == pytest.approx(1.0)
    _world_values_match(volume, data, affine_ijk)
    positions = [volume.world_position((k, 0, 0)) @ volume.normal for k in range(volume.slices)]
    assert positions == sorted(positions)


def test_reversed_slice_storage_is_reordered(tmp_path):
    array, affine = _reference("axial")
    data, ijk_affine = _as_ijk(array, affine)
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, data.shape[2] - 1
    volume = read_nifti(_save(tmp_path / "r.nii", data[:, :, ::-1].copy(), ijk_affine @ flip))
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-4)


def test_isotropic_tie_picks_last_axis_and_dim_info_wins(tmp_path):
    data = np.random.default_rng(2).random((8, 9, 10)).astype(np.float32)
    affine = np.diag([0.7, 0.7, 0.7, 1.0])
    assert read_nifti(_save(tmp_path / "iso.nii", data, affine)).shape[0] == 10
    image = nib.Nifti1Image(data, lps_ras_flip() @ affine)
    image.header.set_dim_info(slice=1)
    nib.save(image, tmp_path / "dim.nii")
    assert read_nifti(tmp_path / "dim.nii").shape[0] == 9


def test_singleton_fourth_dimension_is_accepted(tmp_path):
    data = np.random.default_rng(3).random((6, 7, 8, 1)).astype(np.float32)
    volume = read_nifti(_save(tmp_path / "s.nii.gz", data, np.eye(4)))
    assert volume.shape == (8, 7, 6)


@pytest.mark.parametrize(
    ("shape", "message"), [((6, 7, 8, 3), "4D image with 3 volumes"), ((6, 7), "not a 3D volume")]
)
def test_bad_dimensions_raise_naming_the_file(tmp_path, shape, message):
    path = _save(tmp_path / "bad.nii.gz", np.zeros(shape, dtype=np.float32), np.eye(4))
    with pytest.raises(ValueError, match=message) as err:
        read_nifti(path, name="case/bad.nii.gz")
    assert str(err.value).startswith("case/bad.nii.gz: ")


def test_damaged_file_raises_value_error(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"not a nifti file at all" * 10)
    with pytest.raises(ValueError, match="broken.nii.gz: cannot read NIfTI file"):
        read_nifti(path)


def test_mask_lands_on_the_image_grid(tmp_path):
    array, affine = _reference("sagittal", tilt=10.0)
    labels = (np.arange(array.size).reshape(array.shape) % 12).astype(np.uint8)
    data, ijk_affine = _as_ijk(labels, affine)
    mask, mask_affine = read_mask(_save(tmp_path / "m.nii.gz", data, ijk_affine))
    assert mask.dtype == np.int32
    np.testing.assert_array_equal(mask, labels)
    image = read_nifti(_save(tmp_path / "i.nii.gz", *_as_ijk(array, affine)))
    np.testing.assert_allclose(mask_affine, image.affine, atol=1e-6)


@pytest.mark.parametrize(("values", "message"), [(0.5, "non-integer"), (-1.0, "negative")])
def test_bad_mask_values_raise(tmp_path, values, message):
    data = np.zeros((5, 6, 7), dtype=np.float32)
    data[1, 2, 3] = values
    path = _save(tmp_path / "m.nii.gz", data, np.eye(4))
    with pytest.raises(ValueError, match=message):
        read_mask(path)
