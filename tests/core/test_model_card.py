"""Thresholds stored with a checkpoint and the model card read from its manifest."""

import json

import pytest

from core.eval.thresholds import DEFAULT_THRESHOLD
from core.model_card import (
    card_text,
    federated_training,
    model_card,
    record_evaluation,
    record_thresholds,
    stored_thresholds,
    thresholds_entry,
)
from core.views import LABELS, Joint


@pytest.mark.parametrize("joint", list(Joint))
def test_without_stored_thresholds_every_label_decides_at_default(joint):
    labels = LABELS[joint]
    values, source = stored_thresholds({}, joint=joint.value, labels=labels)
    assert values == dict.fromkeys(labels, DEFAULT_THRESHOLD)
    assert "stores no" in source and "orthofed evaluate" in source


@pytest.mark.parametrize("joint", list(Joint))
def test_recorded_thresholds_are_read_back_and_other_joints_kept(tmp_path, joint):
    path = tmp_path / "checkpoint.json"
    path.write_text(json.dumps({"format": "x", "thresholds": {"other": {"values": {}}}}))
    labels = LABELS[joint]
    chosen = {name: 0.1 * (i + 1) for i, name in enumerate(labels[:-1])}  # last one missing
    entry = thresholds_entry(
        thresholds=chosen, methods=dict.fromkeys(chosen, "youden"), source="site a"
    )
    record_thresholds(path, joint=joint.value, entry=entry)
    manifest = json.loads(path.read_text())
    assert set(manifest["thresholds"]) == {"other", joint.value}
    values, source = stored_thresholds(manifest, joint=joint.value, labels=labels)
    assert values == {**chosen, labels[-1]: DEFAULT_THRESHOLD}
    assert source.startswith("site a") and labels[-1] in source


def _record(phase, sites, groups, **extra):
    return {"phase": phase, "sampled": sites, "groups": groups, "metrics": {}, **extra}


def test_federated_training_summarises_rounds_sites_groups_and_epsilon():
    sag = "backbone.sagittal"
    history = [
        _record("pretrain", ["a", "b"], {sag: {"sites": ["a", "b"], "examples": 10}}),
        _record(
            "pretrain",
            ["a", "c"],
            {sag: {"sites": ["a", "c"], "examples": 12}},
            epsilon={"sites": {"a": 1.5}, "groups": {sag: 0.7}},
        ),
        _record("finetune", ["a"], {"head.knee.cls": {"sites": ["a"], "examples": 4}}),
        _record("evaluate", ["a"], {}, metrics={"a": {"macro_auc": 0.7, "auc/x": 0.1}}),
    ]
    summary = federated_training(history)
    assert summary["rounds"] == {"pretrain": 2, "finetune": 1, "evaluate": 1}
    assert summary["sites"] == ["a", "b", "c"]
    assert summary["groups"][sag] == {"sites": ["a", "b", "c"], "rounds": 2, "examples": 12}
    assert summary["epsilon"] == {"sites": {"a": 1.5}, "groups": {sag: 0.7}}
    assert summary["evaluation"] == {"a": {"macro_auc": 0.7}}


def test_card_of_a_federated_manifest(tmp_path):
    path = tmp_path / "round.json"
    manifest = {
        "kind": "federated",
        "experiment": "demo",
        "phase": "finetune",
        "round": 2,
        "preset": "tiny",
        "config": {"model": {"input_slices": 16, "input_size": 64}},
        "joints": ["knee", "ankle"],
        "groups": ["backbone.sagittal", "head.knee.cls", "head.knee.seg"],
        "training": federated_training(
            [_record("pretrain", ["s1"], {"backbone.sagittal": {"sites": ["s1"]}})]
        ),
    }
    path.write_text(json.dumps(manifest))
    record_evaluation(path, joint="knee", site_id="s1", report={"macro_auc": 0.8, "n_cases": 6})
    card = model_card(json.loads(path.read_text()))
    assert card["joints"]["knee"]["segmentation"] and not card["joints"]["ankle"]["heads"]
    assert card["training"]["rounds"] == {"pretrain": 1}
    assert card["evaluations"]["knee/s1"]["macro_auc"] == 0.8
    text = card_text(card)
    assert "input 16 slices x 64^2" in text and "joint ankle: no heads yet" in text
    assert "thresholds: none stored" in text
