"""MRNet reader: tiny fake tree, view from folder, synthetic geometry, labels and mapping."""

from __future__ import annotations

import numpy as np
import pytest

from core.data.mrnet import load_mrnet_volume, mrnet_knee_labels, read_mrnet
from core.views import LABELS, VIEWS, Joint, View, view_from_normal


def _fake_mrnet(root, *, labels=None):
    """train: 0000 (3 views), 0001 (sagittal only); valid: 1130 (3 views)."""
    rng = np.random.default_rng(0)
    layout = {"train": {"0000": VIEWS, "0001": (View.SAGITTAL,)}, "valid": {"1130": VIEWS}}
    for split, cases in layout.items():
        for number, views in cases.items():
            for view in views:
                folder = root / split / view.value
                folder.mkdir(parents=True, exist_ok=True)
                slices = 5 + VIEWS.index(view)
                np.save(
                    folder / f"{number}.npy", rng.integers(0, 256, (slices, 8, 8), dtype=np.uint8)
                )
    default = {
        "train-abnormal.csv": "0000,1\n0001,0\n",
        "train-acl.csv": "0000,1\n0001,0\n",
        "train-meniscus.csv": "0000,1\n0001,0\n",
        "valid-abnormal.csv": "1130,1\n",
        "valid-acl.csv": "1130,0\n",
        "valid-meniscus.csv": "1130,0\n",
    }
    for name, text in (labels or default).items():
        (root / name).write_text(text)
    return root


def test_cases_views_and_labels(tmp_path):
    cases = read_mrnet(_fake_mrnet(tmp_path))
    assert [c.case_id for c in cases] == ["train-0000", "train-0001", "valid-1130"]
    first, second, valid = cases
    assert set(first.files) == set(VIEWS) and set(second.files) == {View.SAGITTAL}
    assert first.labels == {"abnormal": 1, "acl": 1, "meniscus": 1}
    assert second.labels == {"abnormal": 0, "acl": 0, "meniscus": 0}
    assert valid.split == "valid" and valid.labels == {"abnormal": 1, "acl": 0, "meniscus": 0}


@pytest.mark.parametrize("view", list(VIEWS))
def test_volume_geometry_follows_the_folder_view(tmp_path, view):
    case = read_mrnet(_fake_mrnet(tmp_path))[0]
    volume = case.volume(view)
    raw = np.load(case.files[view])
    np.testing.assert_array_equal(volume.array, raw.astype(np.float32))
    assert volume.spacing == (1.0, 1.0, 1.0)
    assert view_from_normal(volume.normal, max_obliquity_deg=1.0) == view
    np.testing.assert_allclose(volume.affine[:3, 0], volume.normal)


def test_missing_view_raises(tmp_path):
    case = read_mrnet(_fake_mrnet(tmp_path))[1]
    with pytest.raises(ValueError, match="train-0001 has no coronal volume"):
        case.volume(View.CORONAL)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0000,2\n", "label '2' for case 0000 is not 0 or 1"),
        ("0999,1\n", "case 0999 has no volumes"),
        ("0000;1\n", "expected 'case,label'"),
    ],
)
def test_bad_label_rows_raise_naming_file_and_line(tmp_path, text, message):
    _fake_mrnet(tmp_path, labels={"train-acl.csv": text})
    with pytest.raises(ValueError, match=f"train-acl.csv line 1: .*{message}"):
        read_mrnet(tmp_path)


def test_bad_layout_and_bad_array_raise(tmp_path):
    with pytest.raises(ValueError, match="no MRNet 'train' or 'valid' folder"):
        read_mrnet(tmp_path)
    (tmp_path / "x.npy").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read MRNet array"):
        load_mrnet_volume(tmp_path / "x.npy", view="axial")
    np.save(tmp_path / "flat.npy", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="must be 3D"):
        load_mrnet_volume(tmp_path / "flat.npy", view="axial")


def test_knee_label_mapping():
    knee = LABELS[Joint.KNEE]
    normal = mrnet_knee_labels({"abnormal": 0, "acl": 0, "meniscus": 0})
    assert list(normal) == list(knee) and set(normal.values()) == {0}
    torn = mrnet_knee_labels({"abnormal": 1, "acl": 1, "meniscus": 1})
    assert torn["acl_tear"] == 1
    assert torn["medial_meniscus_tear"] is None and torn["lateral_meniscus_tear"] is None
    assert torn["pcl_tear"] is None
    intact_menisci = mrnet_knee_labels({"abnormal": 1, "acl": 1, "meniscus": 0})
    assert intact_menisci["medial_meniscus_tear"] == 0 == intact_menisci["lateral_meniscus_tear"]
    assert intact_menisci["joint_effusion"] is None
    assert "abnormal" not in intact_menisci
