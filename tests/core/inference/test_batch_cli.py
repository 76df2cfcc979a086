"""`orthofed predict` on the command line: batch mode, summary.csv, exit codes, refusals."""

import csv
import shutil

import pytest
from typer.testing import CliRunner

from core.cli import build_app
from core.inference.batch import summary_rows
from core.inference.pipeline import StudyResult
from core.views import LABELS, Joint
from tests.core.inference.conftest import CASE, series_folder, tree_digest


def _invoke(*args):
    return CliRunner().invoke(build_app(), ["predict", *map(str, args)])


@pytest.fixture
def batch_folder(phantom_sites, tmp_path):
    """Four knee studies: two good, one with a CT series, one of an ankle."""
    root = tmp_path / "exams"
    knee = phantom_sites[Joint.KNEE] / CASE
    shutil.copytree(knee, root / "knee-1")
    shutil.copytree(knee, root / "knee-2")
    shutil.copytree(phantom_sites[Joint.ANKLE] / CASE, root / "ankle-1")
    shutil.copytree(knee, root / "ct-1")
    import pydicom

    for path in (root / "ct-1" / series_folder(phantom_sites[Joint.KNEE], "axial")).glob("*"):
        ds = pydicom.dcmread(path)
        ds.Modality = "CT"
        ds.save_as(path)
    return root


def test_batch_writes_a_summary_and_exits_1_when_a_study_fails(batch_folder, checkpoints, tmp_path):
    before = tree_digest(batch_folder)
    out = tmp_path / "out"
    result = _invoke("--checkpoint", checkpoints[Joint.KNEE], "--out", out, "--batch", batch_folder)
    assert result.exit_code == 1, result.output
    assert "4 studies, 2 predicted, 2 failed" in result.output
    with (out / "summary.csv").open() as fh:
        rows = {r["study"]: r for r in csv.DictReader(fh)}
    assert list(rows) == ["ankle-1", "ct-1", "knee-1", "knee-2"]
    assert rows["knee-1"]["status"] == rows["knee-2"]["status"] == "ok"
    assert rows["knee-1"]["views"] == "sagittal coronal axial"
    assert all(rows["knee-1"][label] in ("0", "1") for label in LABELS[Joint.KNEE])
    assert rows["ankle-1"]["status"] == "failed" and "BodyPartExamined" in rows["ankle-1"]["error"]
    assert rows["ct-1"]["status"] == "failed" and "CT, not MR" in rows["ct-1"]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["knee-1", "knee-2", "summary.csv"]
    assert {p.name for p in (out / "knee-1").iterdir()} == {
        "prediction.json",
        "report.html",
        "seg.nii.gz",
        "seg.dcm",
    }
    assert tree_digest(batch_folder) == before


def test_several_studies_without_batch_all_good_exit_0(phantom_sites, checkpoints, tmp_path):
    studies = [phantom_sites[j] / CASE for j in (Joint.SHOULDER,)]
    other = tmp_path / "second"
    shutil.copytree(phantom_sites[Joint.SHOULDER] / CASE, other)
    result = _invoke(
        "--checkpoint", checkpoints[Joint.SHOULDER], "--out", tmp_path / "out", *studies, other
    )
    assert result.exit_code == 0, result.output
    with (tmp_path / "out" / "summary.csv").open() as fh:
        assert [r["status"] for r in csv.DictReader(fh)] == ["ok", "ok"]


def test_out_inside_a_study_is_refused(phantom_sites, checkpoints, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(phantom_sites[Joint.ANKLE] / CASE, study)
    before = tree_digest(study)
    result = _invoke("--checkpoint", checkpoints[Joint.ANKLE], "--out", study / "results", study)
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output
    assert tree_digest(study) == before


def test_out_that_would_be_the_study_itself_is_refused(phantom_sites, checkpoints, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(phantom_sites[Joint.ANKLE] / CASE, study)
    result = _invoke("--checkpoint", checkpoints[Joint.ANKLE], "--out", tmp_path, study)
    assert result.exit_code == 2 and "would write into the study" in result.output


def test_several_joints_need_joint(phantom_sites, checkpoints, tmp_path):
    import json

    from core.checkpoint import load_checkpoint, save_checkpoint

    knee = load_checkpoint(checkpoints[Joint.KNEE])
    ankle = load_checkpoint(checkpoints[Joint.ANKLE])
    path = tmp_path / "both.safetensors"
    save_checkpoint(
        path,
        tensors={**knee.tensors, **{k: v for k, v in ankle.tensors.items() if "head." in k}},
        config=knee.manifest["config"],
        preset="test",
        preprocess_key="k",
        extra={"joints": ["knee", "ankle"]},
    )
    study = phantom_sites[Joint.ANKLE] / CASE
    refused = _invoke("--checkpoint", path, "--out", tmp_path / "out", study)
    assert refused.exit_code == 2 and "pass --joint" in refused.output
    chosen = _invoke("--checkpoint", path, "--out", tmp_path / "out", "--joint", "ankle", study)
    assert chosen.exit_code == 0, chosen.output
    payload = json.loads((tmp_path / "out" / CASE / "prediction.json").read_text())
    assert payload["joint"] == "ankle"


def test_missing_checkpoint_is_one_line(phantom_sites, tmp_path):
    result = _invoke(
        "--checkpoint",
        tmp_path / "nope.safetensors",
        "--out",
        tmp_path / "o",
        phantom_sites[Joint.KNEE] / CASE,
    )
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_help_explains_every_option():
    result = CliRunner().invoke(build_app(), ["predict", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--checkpoint", "--out", "--joint", "--batch", "summary.csv", "patient"):
        assert option in result.output


def test_summary_rows_leave_decisions_blank_for_failed_studies():
    labels = LABELS[Joint.ANKLE]
    ok = StudyResult(
        study="a",
        status="ok",
        joint="ankle",
        decisions=dict.fromkeys(labels, True),
        views=["sagittal"],
        warnings=["w"],
    )
    bad = StudyResult(study="b", status="failed", joint="ankle", error="no usable image series")
    header, first, second = summary_rows([ok, bad], labels=labels)
    assert header == ["study", "status", "joint", "views", "warnings", *labels, "error"]
    assert first == ["a", "ok", "ankle", "sagittal", "1", *["1"] * len(labels), ""]
    assert second[-1] == "no usable image series" and second[5:-1] == [""] * len(labels)
