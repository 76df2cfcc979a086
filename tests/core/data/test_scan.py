"""Case scan: views from geometry, conflicts, ambiguous obliques, NIfTI cases, empty cases."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from core.config import DataConfig
from core.data.scan import scan_case
from core.data.volume import lps_ras_flip, slice_affine, standard_orientation
from core.views import VIEWS, View
from tests.core.data import dicom_factory as factory

CONFIG = DataConfig(min_slices=8, max_obliquity_deg=30.0, spacing_tolerance=0.1)


@pytest.mark.parametrize("tilt", [0.0, 10.0, 25.0])
def test_three_tilted_views_are_assigned_by_geometry(tmp_path, tilt):
    case = tmp_path / "case-0001"
    # Folder names lie on purpose: the view must come from the geometry.
    written = {
        view: factory.write_series(
            case / f"series{i}" / "x",
            view=view.value,
            tilt_deg=tilt,
            prefix=f"S{i}",
            seed=i,
            description=f"wrong name {i}",
        )
        for i, view in enumerate(reversed(VIEWS))
    }
    scan = scan_case(case, config=CONFIG)
    assert scan.problems == [] and scan.ok
    assert scan.case_id == "case-0001"
    assert set(scan.views) == set(VIEWS) and scan.missing_views == []
    for view, series in written.items():
        np.testing.assert_array_equal(scan.views[view].array, series.array)


@pytest.mark.parametrize("view", [v.value for v in VIEWS])
def test_two_series_claiming_one_view_are_named(tmp_path, view):
    factory.write_series(tmp_path / "a", view=view, description="PD", seed=1)
    factory.write_series(tmp_path / "b", view=view, tilt_deg=20.0, description="T2 FS", seed=2)
    scan = scan_case(tmp_path, config=CONFIG)
    assert f"two series claim the {view} view: a ('PD') and b ('T2 FS')" in scan.problems
    assert View(view) not in scan.views and View(view) not in scan.missing_views
    assert "no usable image series (24 files looked at, 2 readable series)" in scan.problems


def test_ambiguous_45_degree_series_is_a_problem(tmp_path):
    factory.write_series(tmp_path / "obl", view="axial", tilt_deg=45.0, description="oblique")
    factory.write_series(tmp_path / "sag", view="sagittal", seed=4)
    scan = scan_case(tmp_path, config=CONFIG)
    assert scan.problems == [
        "obl ('oblique'): ambiguous orientation: slice normal is 45 degrees from the nearest "
        "patient axis (limit 30)"
    ]
    assert list(scan.views) == [View.SAGITTAL]
    assert scan.missing_views == [View.CORONAL, View.AXIAL]


def test_missing_view_is_listed_not_a_problem(tmp_path):
    factory.write_series(tmp_path / "cor", view="coronal")
    scan = scan_case(tmp_path, config=CONFIG)
    assert scan.ok and list(scan.views) == [View.CORONAL]
    assert scan.missing_views == [View.SAGITTAL, View.AXIAL]


def _write_nifti(path, view: str, *, slices: int = 10):
    row, col = standard_orientation(view)
    affine = slice_affine(
        origin=np.zeros(3), row_cosines=row, col_cosines=col, spacing=(3.0, 0.5, 0.5)
    )
    data = np.random.default_rng(0).random((slices, 12, 12)).astype(np.float32)
    ijk = np.transpose(data, (2, 1, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(ijk, lps_ras_flip() @ affine[:, [2, 1, 0, 3]]), path)
    return data


def test_nifti_and_dicom_mixed_in_a_case(tmp_path):
    sag = _write_nifti(tmp_path / "nested" / "sag.nii.gz", "sagittal")
    factory.write_series(tmp_path / "dicom", view="axial")
    _write_nifti(tmp_path / "thin.nii", "coronal", slices=4)
    scan = scan_case(tmp_path, config=CONFIG)
    np.testing.assert_array_equal(scan.views[View.SAGITTAL].array, sag)
    assert set(scan.views) == {View.SAGITTAL, View.AXIAL}
    assert scan.problems == ["thin.nii: too few slices (4, at least 8 needed)"]


def test_case_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    factory.write_garbage(tmp_path / "x.dcm")
    scan = scan_case(tmp_path, config=CONFIG)
    assert scan.problems == [
        "x.dcm: damaged DICOM file (no DICOM header found)",
        "no usable image series (2 files looked at, 0 readable series)",
    ]
    assert scan.notes == ["readme.txt: skipped, not a DICOM file"]
    assert scan.missing_views == list(VIEWS)


def test_conflicting_series_in_one_folder_get_uid_tails(tmp_path):
    first = factory.write_series(tmp_path, view="axial", prefix="A", seed=1)
    second = factory.write_series(tmp_path, view="axial", prefix="B", tilt_deg=5.0, seed=2)
    scan = scan_case(tmp_path, config=CONFIG)
    conflict = next(p for p in scan.problems if p.startswith("two series claim the axial view"))
    assert first.series_uid[-8:] in conflict and second.series_uid[-8:] in conflict
