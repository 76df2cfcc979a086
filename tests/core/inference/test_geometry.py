"""Label maps between the model grid and the series grid."""

import numpy as np
import pytest

from core.config import PreprocessConfig
from core.data.nifti import read_mask
from core.data.transforms import preprocess_volume, preprocess_with_affine
from core.data.volume import Volume, slice_affine, standard_orientation
from core.inference.geometry import nifti_layout, resample_nearest, to_series_grid
from core.views import VIEWS, View


def _volume(view: View, shape=(10, 20, 24), spacing=(3.0, 0.8, 0.7)):
    row, col = standard_orientation(view)
    normal = np.cross(row, col)
    return Volume(
        array=np.random.default_rng(0).random(shape, dtype=np.float32),
        affine=slice_affine(
            origin=np.array([5.0, -3.0, 8.0]), row_cosines=row, col_cosines=col, spacing=spacing
        ),
        spacing=spacing,
        normal=normal,
        source="x",
    )


def test_identity_and_outside_is_zero():
    labels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    same = resample_nearest(
        labels, source_affine=np.eye(4), target_affine=np.eye(4), target_shape=(2, 3, 4)
    )
    np.testing.assert_array_equal(same, labels)
    shifted = np.eye(4)
    shifted[0, 3] = 1.0  # target slice k sits at source slice k + 1
    out = resample_nearest(
        labels, source_affine=np.eye(4), target_affine=shifted, target_shape=(2, 3, 4)
    )
    np.testing.assert_array_equal(out[0], labels[1])
    assert out[1].max() == 0


@pytest.mark.parametrize("view", VIEWS)
def test_preprocessing_at_the_series_own_size_maps_back_exactly(view):
    volume = _volume(view, shape=(10, 24, 24), spacing=(3.0, 0.7, 0.7))
    config = PreprocessConfig(slices=10, size=24)
    array, affine = preprocess_with_affine(volume, view=view, config=config)
    np.testing.assert_array_equal(array, preprocess_volume(volume, view=view, config=config))
    labels = (np.arange(array[0].size) % 7).reshape(array[0].shape).astype(np.uint8)
    back = to_series_grid(labels, model_affine=affine, volume=volume)
    again = resample_nearest(
        back, source_affine=volume.affine, target_affine=affine, target_shape=labels.shape
    )
    np.testing.assert_array_equal(again, labels)


@pytest.mark.parametrize("view", VIEWS)
def test_cropped_slices_map_to_background(view):
    volume = _volume(view)
    array, affine = preprocess_with_affine(
        volume, view=view, config=PreprocessConfig(slices=6, size=16)
    )
    back = to_series_grid(np.ones(array[0].shape, np.uint8), model_affine=affine, volume=volume)
    assert back.shape == volume.shape
    covered = back.reshape(volume.slices, -1).max(axis=1)
    np.testing.assert_array_equal(covered, [0, 0, 1, 1, 1, 1, 1, 1, 0, 0])  # central 6 of 10


@pytest.mark.parametrize("view", VIEWS)
def test_nifti_layout_reads_back_onto_the_series_grid(view, tmp_path):
    import nibabel as nib

    volume = _volume(view)
    labels = (volume.array * 5).astype(np.uint8)
    array, affine = nifti_layout(labels, volume=volume)
    image = nib.Nifti1Image(array, affine)
    image.header.set_dim_info(slice=2)
    nib.save(image, tmp_path / "m.nii.gz")
    read, read_affine = read_mask(tmp_path / "m.nii.gz")
    np.testing.assert_array_equal(read, labels)
    np.testing.assert_allclose(read_affine, volume.affine, atol=1e-5)
