"""`evaluate_cases` / `evaluate` on a tiny model: keys, counts, thresholds from training only."""

import dataclasses

import numpy as np
import pytest

from core.config import ModelConfig, load_config
from core.eval.shared_metrics import flatten_metrics
from core.models.predict import evaluate, evaluate_by_group, evaluate_cases, metrics_report
from core.models.registry import build_model
from core.views import KNEE_STRUCTURES, LABELS, VIEWS, Joint
from tests.core.tiny_model import TINY_MODEL, random_case


@pytest.fixture(scope="module")
def config() -> ModelConfig:
    return load_config(ModelConfig, data=TINY_MODEL)


def _site(joint: Joint, *, seed: int = 0, n: int = 10, heldout_from: int = 6) -> list:
    rng = np.random.default_rng(seed)
    cases = [
        random_case(
            f"c{i}",
            joint=joint,
            rng=rng,
            heldout=i >= heldout_from,
            missing=(VIEWS[2],) if i == 7 else (),
        )
        for i in range(n)
    ]
    # One unlabeled case on each side: skipped and counted held-out, ignored in training.
    cases[1] = dataclasses.replace(cases[1], labels=None)
    cases[-1] = dataclasses.replace(cases[-1], labels=None)
    return cases


@pytest.mark.parametrize("joint", [Joint.KNEE, Joint.SHOULDER])
def test_report_keys_counts_and_types(config, joint):
    cases = _site(joint)
    evaluation = evaluate_cases(build_model(config, joint=joint), cases, keep_masks=2)
    report = evaluation.report
    names = list(LABELS[joint])
    assert (report["n_cases"], report["n_labeled"], report["n_unlabeled_skipped"]) == (4, 3, 1)
    assert report["n_threshold_cases"] == 5  # 6 training cases, one unlabeled
    for key in ("auc", "auc_ci", "threshold", "sensitivity", "specificity", "n_positive"):
        assert list(report[key]) == names, key
    for name in names:
        assert report["n_positive"][name] + report["n_negative"][name] == 3
        ci, auc = report["auc_ci"][name], report["auc"][name]
        assert ci is None if auc is None else (ci is None or ci[0] <= auc <= ci[1])
        assert 0.0 <= report["threshold"][name] <= 1.0
    assert 0.0 <= report["calibration_error"] <= 1.0
    if joint == Joint.KNEE:
        assert list(report["hd95"]) == list(KNEE_STRUCTURES) == list(report["dice"])
        assert report["mean_hd95"] > 0 and report["n_masks"] == 4
        assert len(evaluation.heldout.mask_case_ids) == 4
        assert list(evaluation.heldout.seg_examples) == ["c6", "c7"]
        assert evaluation.heldout.seg_examples["c6"].shape == (8, 32, 32)
    else:
        assert not {"dice", "hd95", "n_masks"} & set(report)
    flat = flatten_metrics(report)  # the federated evaluate round's view of the same report
    assert flat["n_cases"] == 4 and f"threshold/{names[0]}" in flat
    assert all(isinstance(v, float) for v in flat.values())
    assert evaluate(build_model(config, joint=joint), cases)["auc"] == report["auc"]


def test_thresholds_ignore_the_heldout_cases(config):
    model = build_model(config, joint=Joint.ANKLE)
    cases = [  # training labels alternate, so every label has both classes there
        dataclasses.replace(c, labels=(np.arange(4) + i) % 2 * np.float32(1))
        if not c.heldout and c.labels is not None
        else c
        for i, c in enumerate(_site(Joint.ANKLE, n=12, heldout_from=8))
    ]
    replaced = _site(Joint.ANKLE, seed=9, n=12, heldout_from=8)  # other held-out images/labels
    other = cases[:8] + replaced[8:]
    first, second = evaluate_cases(model, cases), evaluate_cases(model, other)
    assert not np.allclose(first.heldout.probabilities, second.heldout.probabilities)
    assert first.report["threshold"] == second.report["threshold"]
    assert set(first.report["threshold_source"].values()) == {"youden"}
    # ...while the training cases do decide them: relabel them, and thresholds move.
    flipped = [
        dataclasses.replace(c, labels=1 - c.labels) if not c.heldout and c.labels is not None else c
        for c in cases
    ]
    assert evaluate_cases(model, flipped).report["threshold"] != first.report["threshold"]
    # Reported held-out numbers are the same whichever training predictions are passed in.
    alone = metrics_report(model, first.heldout)
    assert alone["auc"] == first.report["auc"] and alone["n_threshold_cases"] == 0
    assert set(alone["threshold"].values()) == {0.5}


def test_no_heldout_cases_is_a_clear_error(config):
    cases = [dataclasses.replace(c, heldout=False) for c in _site(Joint.ANKLE, n=3)]
    with pytest.raises(ValueError, match="no held-out cases"):
        evaluate_cases(build_model(config, joint=Joint.ANKLE), cases)


@pytest.mark.parametrize("joint", [Joint.KNEE, Joint.ANKLE])
def test_per_group_metrics_match_evaluating_each_group_alone(config, joint):
    """One pass over a pooled case list gives each group (site) the metrics it would get if
    its held-out cases were evaluated alone with the pool's training cases."""
    cases = _site(joint, n=16, heldout_from=6)
    groups = {"a": {f"c{i}" for i in range(0, 16, 2)}, "b": {f"c{i}" for i in range(1, 16, 2)}}
    model = build_model(config, joint=joint)
    pooled, by_group = evaluate_by_group(model, cases, groups=groups)
    assert pooled == evaluate(model, cases)
    assert list(by_group) == ["a", "b"]
    for name, ids in groups.items():
        alone = evaluate(model, [c for c in cases if not c.heldout or c.case_id in ids])
        report = by_group[name]
        assert report["n_cases"] == alone["n_cases"] == 5
        assert report["auc"] == alone["auc"]
        assert report["macro_auc"] == alone["macro_auc"]
        if joint == Joint.KNEE:
            assert report["n_masks"] == alone["n_masks"] and report["dice"] == alone["dice"]


def test_a_group_without_heldout_cases_is_a_clear_error(config):
    cases = _site(Joint.KNEE)
    with pytest.raises(ValueError, match="site-x: none of its cases is held out"):
        evaluate_by_group(
            build_model(config, joint=Joint.KNEE), cases, groups={"site-x": {"c0", "c1"}}
        )
