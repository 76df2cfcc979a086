"""Preprocessing and the view cache: shapes/ranges, canonical orientation, no-op re-runs,
changed data re-read, site data untouched, corrupt cases skipped with their reason."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest

from core.config import DataConfig, PreprocessConfig
from core.data.cache import load_site_tensors, prepare_site
from core.data.manifest import SiteManifest, load_site, write_manifest
from core.data.scan import scan_case
from core.data.transforms import preprocess_mask, preprocess_volume
from core.data.volume import lps_ras_flip
from core.views import VIEWS, View
from tests.core.data import dicom_factory as factory

PRE = PreprocessConfig(slices=8, size=16)
CONFIG = DataConfig(min_slices=4, preprocess=PRE)


def _hashes(root):
    return {
        p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _site(tmp_path, *, n_cases=3, n_slices=10):
    root = tmp_path / "site"
    for c in range(n_cases):
        for i, view in enumerate(VIEWS):
            factory.write_series(
                root / f"case-{c}" / f"s{i}",
                view=view.value,
                n_slices=n_slices,
                rows=20,
                cols=24,
                seed=10 * c + i,
                tilt_deg=5.0,
            )
    (root / "labels.csv").write_text(
        "case_id,atfl_injury,cfl_injury,achilles_tendon_rupture,osteochondral_lesion_talus\n"
        "case-0,1,0,0,1\ncase-1,0,0,1,0\n"
    )
    write_manifest(
        SiteManifest(joint="ankle", cache_dir=str(tmp_path / "cache"), heldout_fraction=0.0),
        root / "site.yaml",
    )
    return load_site(root)


@pytest.mark.parametrize("n_slices", [6, 10])  # fewer slices than kept -> padded, more -> cropped
@pytest.mark.parametrize("view", VIEWS)
def test_preprocess_shape_range_and_padding(tmp_path, view, n_slices):
    factory.write_series(tmp_path / "c", view=view.value, n_slices=n_slices, rows=20, cols=24)
    scan = scan_case(tmp_path, config=CONFIG)
    out = preprocess_volume(scan.views[view], view=view, config=PRE)
    assert out.shape == (1, 8, 16, 16) and out.dtype == np.float16
    assert float(out.min()) == -1.0 and float(out.max()) == 1.0
    if n_slices < 8:  # padded slices are background (-1)
        assert np.all(out[0, 0] == -1.0)


def test_mask_follows_the_image_grid(tmp_path):
    written = factory.write_series(tmp_path / "c", view="sagittal", n_slices=8, rows=16, cols=16)
    volume = scan_case(tmp_path, config=CONFIG).views[View.SAGITTAL]
    # the image itself, thresholded, is a mask whose preprocessed version must match
    labels = (volume.array > 2000).astype(np.uint8)
    mask = preprocess_mask(labels, volume.affine, target=volume, view=View.SAGITTAL, config=PRE)
    image = preprocess_volume(
        volume, view=View.SAGITTAL, config=PreprocessConfig(slices=8, size=16)
    )
    assert mask.shape == (8, 16, 16)
    bright = image[0][mask == 1].astype(float).mean()
    dark = image[0][mask == 0].astype(float).mean()
    assert bright > dark + 0.3
    assert written.array.shape == (8, 16, 16)


def test_prepare_then_noop_and_data_untouched(tmp_path):
    site = _site(tmp_path)
    before = _hashes(site.root)
    first = prepare_site(site, config=CONFIG)
    assert sorted(first.prepared) == ["case-0", "case-1", "case-2"] and not first.skipped
    second = prepare_site(site, config=CONFIG)
    assert second.prepared == [] and sorted(second.reused) == ["case-0", "case-1", "case-2"]
    assert _hashes(site.root) == before


def test_changed_case_is_reread_and_labels_loaded(tmp_path):
    site = _site(tmp_path)
    prepare_site(site, config=CONFIG)
    factory.write_series(
        site.root / "case-1" / "s0", view="sagittal", n_slices=10, rows=20, cols=24, seed=99
    )
    again = prepare_site(site, config=CONFIG)
    assert again.prepared == ["case-1"]
    cases = load_site_tensors(site, preprocess=PRE, data_config=CONFIG)
    by_id = {c.case_id: c for c in cases}
    assert set(by_id["case-0"].views) == set(VIEWS)
    assert by_id["case-0"].views[View.AXIAL].shape == (1, 8, 16, 16)
    np.testing.assert_array_equal(by_id["case-0"].labels, [1, 0, 0, 1])
    assert by_id["case-2"].labels is None


def test_corrupt_case_is_skipped_with_reason(tmp_path):
    site = _site(tmp_path)
    factory.write_garbage(site.root / "case-2" / "s0" / "IM9999.dcm")
    summary = prepare_site(site, config=CONFIG)
    assert "case-2" in summary.skipped and "IM9999" in summary.skipped["case-2"]
    ids = [c.case_id for c in load_site_tensors(site, preprocess=PRE, data_config=CONFIG)]
    assert ids == ["case-0", "case-1"]


def test_nifti_mask_is_cached(tmp_path):
    site = _site(tmp_path, n_cases=1)
    volume = scan_case(site.root / "case-0", config=CONFIG).views[View.SAGITTAL]
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[:, 5:10, 5:10] = 3
    site.masks_dir.mkdir()
    # NIfTI stores RAS; the mask is written on the sagittal grid
    nib.save(
        nib.Nifti1Image(labels, lps_ras_flip() @ volume.affine), site.masks_dir / "case-0.nii.gz"
    )
    cases = load_site_tensors(site, preprocess=PRE, data_config=CONFIG)
    assert cases[0].mask is not None and cases[0].mask.shape == (8, 16, 16)
    assert set(np.unique(cases[0].mask)) == {0, 3}


def test_site_opened_by_a_relative_path_with_masks(tmp_path, monkeypatch):
    site = _site(tmp_path, n_cases=1)
    volume = scan_case(site.root / "case-0", config=CONFIG).views[View.SAGITTAL]
    site.masks_dir.mkdir()
    labels = np.ones(volume.array.shape, np.uint8)
    nib.save(
        nib.Nifti1Image(labels, lps_ras_flip() @ volume.affine), site.masks_dir / "case-0.nii.gz"
    )
    monkeypatch.chdir(tmp_path)
    relative = load_site("site")
    cases = load_site_tensors(relative, preprocess=PRE, data_config=CONFIG)
    assert cases[0].mask is not None
    again = load_site_tensors(load_site(tmp_path / "site"), preprocess=PRE, data_config=CONFIG)
    np.testing.assert_array_equal(again[0].mask, cases[0].mask)  # same cache either way
