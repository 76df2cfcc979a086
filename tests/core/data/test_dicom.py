"""DICOM reader: geometry, slice order, series splitting, codecs, problems and notes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from core.data.dicom import read_dicom_series
from core.views import VIEWS
from tests.core.data import dicom_factory as factory


def _read(root: Path, *, min_slices: int = 8, tolerance: float = 0.1):
    return read_dicom_series(root, min_slices=min_slices, spacing_tolerance=tolerance)


@pytest.mark.parametrize("view", [v.value for v in VIEWS])
@pytest.mark.parametrize("tilt", [0.0, 12.0, 25.0])
def test_geometry_of_tilted_series(tmp_path, view, tilt):
    written = factory.write_series(
        tmp_path / "s", view=view, tilt_deg=tilt, spacing=(3.0, 0.5, 0.6)
    )
    result = _read(tmp_path)
    assert result.problems == []
    (volume,) = result.volumes
    np.testing.assert_array_equal(volume.array, written.array)
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.normal, written.normal, atol=1e-6)
    np.testing.assert_allclose(volume.spacing, written.spacing, rtol=1e-6)
    # Last voxel lands where the last written slice's last pixel is.
    s, r, c = (n - 1 for n in volume.shape)
    expected = (
        written.origin
        + s * 3.0 * written.normal
        + r * 0.5 * written.col_cosines
        + c * 0.6 * written.row_cosines
    )
    np.testing.assert_allclose(volume.world_position((s, r, c)), expected, atol=1e-4)
    angle = np.degrees(np.arccos(np.max(np.abs(volume.normal))))
    assert angle == pytest.approx(tilt, abs=1e-3)


def test_order_ignores_file_names_and_instance_numbers(tmp_path):
    written = factory.write_series(tmp_path, view="axial", n_slices=12, seed=5)
    by_name = sorted(written.files)
    by_instance = sorted(written.files, key=lambda p: int(pydicom.dcmread(p).InstanceNumber))
    assert by_name != written.files and by_instance != written.files  # the test means something
    (volume,) = _read(tmp_path).volumes
    np.testing.assert_array_equal(volume.array, written.array)
    positions = [
        np.dot(pydicom.dcmread(p).ImagePositionPatient, written.normal) for p in written.files
    ]
    assert positions == sorted(positions)


def test_rescale_slope_intercept(tmp_path):
    written = factory.write_series(tmp_path, slope=2.5, intercept=-100.0)
    (volume,) = _read(tmp_path).volumes
    raw = pydicom.dcmread(written.files[0]).pixel_array
    np.testing.assert_allclose(volume.array[0], raw * 2.5 - 100.0)
    np.testing.assert_array_equal(volume.array, written.array)


def test_mixed_series_in_one_folder_are_split(tmp_path):
    sag = factory.write_series(tmp_path, view="sagittal", prefix="A", seed=1)
    axial = factory.write_series(tmp_path, view="axial", prefix="B", n_slices=9, seed=2)
    result = _read(tmp_path)
    assert result.problems == []
    by_uid = {v.series_uid: v for v in result.volumes}
    assert set(by_uid) == {sag.series_uid, axial.series_uid}
    np.testing.assert_array_equal(by_uid[sag.series_uid].array, sag.array)
    np.testing.assert_array_equal(by_uid[axial.series_uid].array, axial.array)


@pytest.mark.parametrize(
    ("syntax", "size"), [(RLELossless, 16), (JPEGLSLossless, 16), (JPEG2000Lossless, 32)]
)
def test_compressed_series_decodes_identically(tmp_path, syntax, size):
    # OpenJPEG's encoder uses 6 wavelet levels and needs at least 32 x 32 pixels.
    written = factory.write_series(tmp_path, transfer_syntax=syntax, rows=size, cols=size)
    assert pydicom.dcmread(written.files[0]).file_meta.TransferSyntaxUID == syntax
    result = _read(tmp_path)
    assert result.problems == []
    np.testing.assert_array_equal(result.volumes[0].array, written.array)


def test_enhanced_multiframe_uses_per_frame_geometry(tmp_path):
    written = factory.write_enhanced_series(
        tmp_path / "enh.dcm", view="coronal", slope=0.5, intercept=3.0
    )
    result = _read(tmp_path)
    assert result.problems == []
    (volume,) = result.volumes
    np.testing.assert_array_equal(volume.array, written.array)
    np.testing.assert_allclose(volume.normal, [0.0, 1.0, 0.0], atol=1e-9)
    assert volume.spacing == pytest.approx((2.0, 0.5, 0.5))


def test_real_pydicom_mr_sample(tmp_path):
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "MR_small.dcm")
    reference = pydicom.dcmread(tmp_path / "MR_small.dcm")
    result = _read(tmp_path, min_slices=1)
    assert result.problems == []
    (volume,) = result.volumes
    assert volume.shape == (1, reference.Rows, reference.Columns)
    expected = reference.pixel_array * float(reference.get("RescaleSlope", 1)) + float(
        reference.get("RescaleIntercept", 0)
    )
    np.testing.assert_allclose(volume.array[0], expected)


def test_nested_folders_are_read(tmp_path):
    written = factory.write_series(tmp_path / "a" / "b" / "c")
    (volume,) = _read(tmp_path).volumes
    np.testing.assert_array_equal(volume.array, written.array)
    assert Path(volume.source) == tmp_path / "a" / "b" / "c"


def test_garbage_dcm_is_a_problem_naming_the_file(tmp_path):
    factory.write_series(tmp_path / "s")
    factory.write_garbage(tmp_path / "s" / "broken.dcm")
    result = _read(tmp_path)
    assert result.problems == ["s/broken.dcm: damaged DICOM file (no DICOM header found)"]
    assert len(result.volumes) == 1


@pytest.mark.parametrize("keep", [0.8, 0.3])  # cut inside the pixels / inside the header
def test_truncated_slice_is_a_problem_naming_the_file(tmp_path, keep):
    written = factory.write_series(tmp_path)
    victim = written.files[4]
    factory.truncate(victim, keep_fraction=keep)
    result = _read(tmp_path)
    assert result.volumes == []
    assert any(victim.name in p and ("damaged" in p or "cut short" in p) for p in result.problems)
    assert result.notes == []


def test_non_dicom_and_non_mr_objects_are_skipped_with_a_note(tmp_path):
    factory.write_series(tmp_path / "s")
    factory.write_structured_report(tmp_path / "report.dcm")
    factory.write_secondary_capture(tmp_path / "screenshot.dcm")
    (tmp_path / "notes.txt").write_text("exported by PACS")
    dicomdir = factory.base_dataset(sop_class="1.2.840.10008.1.3.10", modality="")
    dicomdir.save_as(tmp_path / "DICOMDIR", enforce_file_format=True)
    result = _read(tmp_path)
    assert result.problems == []
    assert len(result.volumes) == 1
    notes = "\n".join(result.notes)
    assert "report.dcm: skipped, modality SR is not MR" in notes
    assert "screenshot.dcm: skipped, modality OT is not MR" in notes
    assert "notes.txt: skipped, not a DICOM file" in notes
    assert "DICOMDIR: skipped, DICOMDIR" in notes


def test_mixed_orientation_inside_series(tmp_path):
    sag = factory.write_series(tmp_path, view="sagittal", n_slices=6, prefix="A")
    factory.write_series(
        tmp_path,
        view="coronal",
        n_slices=6,
        prefix="B",
        series_uid=sag.series_uid,
        description="mixed",
    )
    result = _read(tmp_path)
    assert result.volumes == []
    assert len(result.problems) == 1
    assert "orientation mixed inside series" in result.problems[0]


def test_missing_slice(tmp_path):
    factory.write_series(tmp_path, n_slices=12, skip=(6,), description="sag pd")
    result = _read(tmp_path)
    assert result.volumes == []
    (problem,) = result.problems
    assert problem.startswith(". (series 1 'sag pd'): missing slice: gap of 6.00 mm between")
    assert "(1 slice missing)" in problem


def test_uneven_spacing(tmp_path):
    written = factory.write_series(tmp_path, n_slices=10)
    ds = pydicom.dcmread(written.files[5])
    ds.ImagePositionPatient = [
        pydicom.valuerep.DSfloat(v, auto_format=True)
        for v in np.asarray(ds.ImagePositionPatient, dtype=float) + 1.2 * written.normal
    ]
    ds.save_as(written.files[5])
    result = _read(tmp_path)
    assert result.volumes == []
    assert any("uneven slice spacing: gap of 4.20 mm" in p for p in result.problems)


def test_duplicate_position_is_a_problem_and_exact_copy_a_note(tmp_path):
    written = factory.write_series(tmp_path / "copy", n_slices=10)
    shutil.copy(written.files[0], tmp_path / "copy" / "again.dcm")
    result = _read(tmp_path / "copy")
    assert result.problems == []
    assert [n for n in result.notes if "copy of" in n] == [
        f"again.dcm: skipped, copy of {written.files[0].name}"
    ]
    np.testing.assert_array_equal(result.volumes[0].array, written.array)

    other = factory.write_series(tmp_path / "dup", n_slices=10, seed=3)
    ds = pydicom.dcmread(other.files[0])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(tmp_path / "dup" / "repeat.dcm")
    result = _read(tmp_path / "dup")
    assert result.volumes == []
    assert any("duplicate slice at" in p and "repeat.dcm" in p for p in result.problems)


def test_too_few_slices(tmp_path):
    factory.write_series(tmp_path, n_slices=5)
    result = _read(tmp_path, min_slices=8)
    assert result.volumes == []
    assert result.problems == [". (series 1): too few slices (5, at least 8 needed)"]


def test_invalid_thresholds_raise(tmp_path):
    with pytest.raises(ValueError, match="min_slices"):
        read_dicom_series(tmp_path, min_slices=0, spacing_tolerance=0.1)
    with pytest.raises(ValueError, match="spacing_tolerance"):
        read_dicom_series(tmp_path, min_slices=3, spacing_tolerance=1.5)
    with pytest.raises(ValueError, match="not found"):
        read_dicom_series(tmp_path / "nope", min_slices=3, spacing_tolerance=0.1)


def test_many_duplicates_are_summarised(tmp_path):
    first = factory.write_series(tmp_path, n_slices=8, prefix="A", seed=1)
    factory.write_series(tmp_path, n_slices=8, prefix="B", seed=2, series_uid=first.series_uid)
    problems = _read(tmp_path).problems
    assert len(problems) == 4
    assert problems[-1].endswith("5 more duplicate slices")


def test_sheared_stack_is_a_problem(tmp_path):
    written = factory.write_series(tmp_path, n_slices=10)
    ds = pydicom.dcmread(written.files[3])
    ds.ImagePositionPatient = [
        pydicom.valuerep.DSfloat(v, auto_format=True)
        for v in np.asarray(ds.ImagePositionPatient, dtype=float) + 5.0 * written.row_cosines
    ]
    ds.save_as(written.files[3])
    (problem,) = _read(tmp_path).problems
    assert "slices are shifted in-plane by up to 5.0 mm" in problem
