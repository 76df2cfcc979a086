"""One phantom study per joint through the whole pipeline: prediction.json contract,
thresholds from the checkpoint manifest (or the default), report, nothing written into the
study."""

import json

import pytest

from core.checkpoint import manifest_path
from core.eval.thresholds import DEFAULT_THRESHOLD
from core.inference.model import load_predictor
from core.inference.pipeline import predict_study
from core.model_card import record_thresholds, thresholds_entry
from core.views import LABELS, Joint
from tests.core.inference.conftest import CASE, tree_digest

CONTRACT_KEYS = {"joint", "labels", "views", "warnings", "thresholds_source"}


def _read(out, study="study-a"):
    return json.loads((out / study / "prediction.json").read_text())


@pytest.mark.parametrize("joint", list(Joint))
def test_predict_with_default_thresholds(joint, checkpoints, study_copy, tmp_path):
    study = study_copy(joint)
    before = tree_digest(study)
    result = predict_study(load_predictor(checkpoints[joint]), study, out_root=tmp_path / "out")
    assert result.ok, result.error
    payload = _read(tmp_path / "out")
    assert set(payload) == CONTRACT_KEYS
    assert payload["joint"] == joint.value
    assert list(payload["labels"]) == list(LABELS[joint])
    for entry in payload["labels"].values():
        assert set(entry) == {"probability", "decision", "threshold"}
        assert 0.0 <= entry["probability"] <= 1.0
        assert entry["threshold"] == DEFAULT_THRESHOLD
        assert entry["decision"] == (entry["probability"] >= DEFAULT_THRESHOLD)
    assert payload["views"] == ["sagittal", "coronal", "axial"]
    assert "stores no" in payload["thresholds_source"]
    assert any("central 8" in w for w in payload["warnings"])  # 10 slices, model reads 8
    html = (tmp_path / "out" / "study-a" / "report.html").read_text()
    assert "Findings" in html and LABELS[joint][0] in html and "<script" not in html
    assert tree_digest(study) == before
    assert not list((tmp_path / "out").glob(".*"))  # no staging folder left behind


@pytest.mark.parametrize("joint", list(Joint))
def test_decisions_follow_thresholds_stored_in_the_checkpoint(
    joint, checkpoints, study_copy, tmp_path
):
    checkpoint = tmp_path / "ckpt.safetensors"
    checkpoint.write_bytes(checkpoints[joint].read_bytes())
    manifest_path(checkpoint).write_text(manifest_path(checkpoints[joint]).read_text())
    first = predict_study(load_predictor(checkpoint), study_copy(joint), out_root=tmp_path / "a")
    probabilities = {n: e["probability"] for n, e in _read(tmp_path / "a")["labels"].items()}
    # thresholds just above / below each probability flip every decision of the default run
    chosen = {
        n: (p + 0.01 if first.decisions[n] else max(p - 0.01, 0.0))
        for n, p in probabilities.items()
    }
    entry = thresholds_entry(
        thresholds=chosen, methods=dict.fromkeys(chosen, "youden"), source="site test (unit)"
    )
    record_thresholds(manifest_path(checkpoint), joint=joint.value, entry=entry)
    second = predict_study(
        load_predictor(checkpoint), tmp_path / "studies" / "study-a", out_root=tmp_path / "b"
    )
    payload = _read(tmp_path / "b")
    assert payload["thresholds_source"] == "site test (unit)"
    for name, e in payload["labels"].items():
        assert e["probability"] == pytest.approx(probabilities[name])
        assert e["threshold"] == pytest.approx(chosen[name])
        assert e["decision"] == (e["probability"] >= e["threshold"])
        assert second.decisions[name] != first.decisions[name]


def test_output_folder_is_named_by_the_study_folder_not_patient_ids(
    checkpoints, study_copy, phantom_sites, tmp_path
):
    facts = json.loads((phantom_sites[Joint.SHOULDER] / "phantom.json").read_text())
    patient_id = facts["cases"][CASE]["patient_id"]
    study = study_copy(Joint.SHOULDER, name="exam-7")
    predict_study(load_predictor(checkpoints[Joint.SHOULDER]), study, out_root=tmp_path / "out")
    names = [p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")]
    assert sorted(names) == ["exam-7", "exam-7/prediction.json", "exam-7/report.html"]
    assert patient_id not in (tmp_path / "out" / "exam-7" / "prediction.json").read_text()


def test_rerun_replaces_the_earlier_output(checkpoints, study_copy, tmp_path):
    predictor = load_predictor(checkpoints[Joint.ANKLE])
    study = study_copy(Joint.ANKLE)
    predict_study(predictor, study, out_root=tmp_path / "out")
    (tmp_path / "out" / "study-a" / "stale.txt").write_text("old")
    assert predict_study(predictor, study, out_root=tmp_path / "out").ok
    assert not (tmp_path / "out" / "study-a" / "stale.txt").exists()


def test_a_foreign_folder_in_the_way_is_not_deleted(checkpoints, study_copy, tmp_path):
    foreign = tmp_path / "out" / "study-a"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    result = predict_study(
        load_predictor(checkpoints[Joint.ANKLE]), study_copy(Joint.ANKLE), out_root=tmp_path / "out"
    )
    assert not result.ok and "not an orthofed prediction folder" in result.error
    assert (foreign / "notes.txt").read_text() == "mine"
