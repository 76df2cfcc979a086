"""Site check: the JSON contract, site/case problems, masks, and a read-only guarantee."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
from rich.console import Console

from core.config import DataConfig
from core.data.check import check_site, format_check_table, problem_lines
from core.data.manifest import load_site
from tests.core.data import dicom_factory as factory

CONFIG = DataConfig(min_slices=6, max_obliquity_deg=30.0, spacing_tolerance=0.1)
SMALL = {"n_slices": 6, "rows": 8, "cols": 8}


def _site(tmp_path, *, labels: str | None = "case_id,acl_tear,pcl_tear\ncase-0001,1,0\n"):
    """case-0001: sagittal + axial; case-0002: coronal only."""
    root = tmp_path / "site"
    factory.write_series(root / "case-0001" / "sag", view="sagittal", seed=1, **SMALL)
    factory.write_series(root / "case-0001" / "ax", view="axial", tilt_deg=15, seed=2, **SMALL)
    factory.write_series(root / "case-0002" / "dicom", view="coronal", seed=3, **SMALL)
    if labels is not None:
        (root / "labels.csv").write_text(labels)
    return root


def _check(root):
    return check_site(load_site(root, joint="knee"), config=CONFIG)


def _fingerprint(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_clean_site_report_contract(tmp_path):
    calls = []
    root = _site(tmp_path)
    report = check_site(
        load_site(root, joint="knee"),
        config=CONFIG,
        progress=lambda done, total, case: calls.append((done, total, case)),
    )
    assert calls == [(1, 2, "case-0001"), (2, 2, "case-0002")]
    assert json.loads(json.dumps(report)) == report  # plain JSON types only
    assert set(report) == {"ok", "joint", "problems", "cases"}
    assert report["ok"] is True and report["joint"] == "knee" and report["problems"] == []
    first, second = report["cases"]
    assert set(first) == {"case_id", "ok", "views", "missing_views", "labels", "problems"}
    assert first["case_id"] == "case-0001" and first["ok"] is True
    assert first["views"]["sagittal"] == {
        "shape": [6, 8, 8],
        "spacing": [3.0, 0.5, 0.6],
        "slices": 6,
    }
    assert set(first["views"]) == {"sagittal", "axial"}
    assert first["missing_views"] == ["coronal"]
    assert first["labels"] == {"acl_tear": 1, "pcl_tear": 0}
    assert second["labels"] is None and second["missing_views"] == ["sagittal", "axial"]


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        (
            "case_id,acl_tear\ncase-0001,1\ncase-0099,0\n",
            "labels.csv: labels for unknown case 'case-0099' (no case folder with that name)",
        ),
        (
            "case_id,acl_tear\ncase-0002,2\n",
            "labels.csv line 2 (case 'case-0002'): column acl_tear: value '2' is not 0 or 1",
        ),
        (
            "case_id,acl_tear,cartilage_loss\ncase-0001,1,0\n",
            "labels.csv: unknown label column 'cartilage_loss'",
        ),
        ("case,acl_tear\ncase-0001,1\n", "labels.csv: no 'case_id' column"),
        (
            "case_id,acl_tear\ncase-0001,1\ncase-0001,1\n",
            "labels.csv line 3: duplicate row for case 'case-0001' (first row kept)",
        ),
    ],
)
def test_label_problems_are_site_problems(tmp_path, labels, problem):
    report = _check(_site(tmp_path, labels=labels))
    assert report["ok"] is False
    assert any(p.startswith(problem) for p in report["problems"]), report["problems"]
    assert all(case["ok"] for case in report["cases"])


def test_case_problems_and_problem_lines(tmp_path):
    root = _site(tmp_path, labels=None)
    factory.write_series(
        root / "case-0002" / "second-cor",
        view="coronal",
        tilt_deg=12,
        description="cor T2",
        seed=9,
        **SMALL,
    )
    factory.write_garbage(root / "case-0001" / "sag" / "junk.dcm")
    report = _check(root)
    case1, case2 = report["cases"]
    assert report["ok"] is False and report["problems"] == []
    assert case1["problems"] == ["sag/junk.dcm: damaged DICOM file (no DICOM header found)"]
    assert case1["ok"] is False and set(case1["views"]) == {"sagittal", "axial"}
    assert case2["problems"][0] == (
        "two series claim the coronal view: dicom and second-cor ('cor T2')"
    )
    lines = list(problem_lines(report))
    assert lines[0] == "case-0001: sag/junk.dcm: damaged DICOM file (no DICOM header found)"
    assert lines[1].startswith("case-0002: two series claim the coronal view")
    assert len(lines) == len(case1["problems"]) + len(case2["problems"])


def _save_mask(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)


def test_mask_problems(tmp_path):
    root = _site(tmp_path)
    _save_mask(root / "masks" / "case-0001.nii.gz", np.ones((8, 8, 6), dtype=np.uint8))
    _save_mask(root / "masks" / "ghost.nii.gz", np.ones((8, 8, 6), dtype=np.uint8))
    factory.write_garbage(root / "masks" / "case-0002.nii.gz")
    (root / "masks" / "notes.txt").write_text("x")
    report = _check(root)
    assert report["problems"] == [
        "masks/ghost.nii.gz: mask for unknown case 'ghost' (no case folder with that name)",
        "masks/notes.txt: not a mask file (expected masks/<case_id>.nii.gz)",
    ]
    case1, case2 = report["cases"]
    assert case1["ok"] is True
    assert len(case2["problems"]) == 1
    assert case2["problems"][0].startswith("masks/case-0002.nii.gz: cannot read NIfTI file")


def test_knee_mask_label_out_of_range(tmp_path):
    root = _site(tmp_path)
    _save_mask(root / "masks" / "case-0001.nii.gz", np.full((8, 8, 6), 12, dtype=np.uint8))
    case1 = _check(root)["cases"][0]
    assert case1["problems"] == [
        "masks/case-0001.nii.gz: label 12 is not a knee structure (1...11, 0 = background)"
    ]


def test_check_never_modifies_the_site(tmp_path):
    root = _site(tmp_path, labels="case_id,acl_tear\ncase-0001,2\nghost,1\n")
    factory.write_garbage(root / "case-0002" / "bad.dcm")
    _save_mask(root / "masks" / "case-0001.nii.gz", np.ones((8, 8, 6), dtype=np.uint8))
    before = _fingerprint(tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    report = _check(root)
    assert report["ok"] is False
    assert _fingerprint(tmp_path) == before
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == mtimes


def test_table_shows_every_case(tmp_path):
    report = _check(_site(tmp_path))
    console = Console(record=True, width=160)
    console.print(format_check_table(report))
    text = console.export_text()
    assert "case-0001" in text and "case-0002" in text
    assert "6x8x8" in text and "1/2 positive" in text and "unlabeled" in text
