"""Cross-site matrix pieces: local-only models checked like updates, kept as checkpoints,
and the matrix in the shape the federation report reads."""

from __future__ import annotations

import numpy as np
import pytest

from core.federation.cross_site import (
    cross_site_matrix,
    load_local_models,
    local_model_path,
    merge_local_model,
    save_local_model,
    write_cross_site,
)
from core.reporting.federation_run import load_cross_site

INITIAL = {
    "backbone.sagittal.w": np.zeros((2, 3), np.float32),
    "backbone.coronal.w": np.zeros(4, np.float32),
    "head.knee.cls.w": np.zeros(2, np.float32),
}


def _sent(**changes):
    arrays = {
        "backbone.sagittal.w": np.ones((2, 3), np.float32),
        "head.knee.cls.w": np.full(2, 2.0, np.float32),
    }
    arrays.update(changes)
    return arrays


def test_merge_lays_trained_groups_over_initial():
    merged = merge_local_model(
        initial=INITIAL, arrays=_sent(), examples={"backbone.sagittal": 4, "head.knee.cls": 4}
    )
    assert list(merged) == list(INITIAL)  # key order of the global model kept
    assert merged["backbone.sagittal.w"].sum() == 6 and merged["head.knee.cls.w"].sum() == 4
    assert merged["backbone.coronal.w"].sum() == 0  # untrained view keeps its initial value


@pytest.mark.parametrize(
    "arrays, examples, match",
    [
        ({}, {}, "no trained weights"),
        (_sent(), {"backbone.sagittal": 4}, "head.knee.cls"),  # no case count for the head
        (
            _sent(**{"backbone.sagittal.w": np.ones((3, 2), np.float32)}),
            {"backbone.sagittal": 4, "head.knee.cls": 4},
            "wrong shape",
        ),
        (
            _sent(**{"head.knee.cls.w": np.array([np.nan, 0], np.float32)}),
            {"backbone.sagittal": 4, "head.knee.cls": 4},
            "non-finite",
        ),
        ({"head.ankle.cls.w": np.zeros(2, np.float32)}, {"head.ankle.cls": 3}, "unknown group"),
    ],
)
def test_merge_rejects_bad_local_models(arrays, examples, match):
    with pytest.raises(ValueError, match=match):
        merge_local_model(initial=INITIAL, arrays=arrays, examples=examples)


def test_saved_local_models_load_in_global_order(tmp_path):
    state = merge_local_model(
        initial=INITIAL, arrays=_sent(), examples={"backbone.sagittal": 4, "head.knee.cls": 4}
    )
    save_local_model(tmp_path, site="knee a/1", state=state, manifest={"phase": "local-only"})
    assert local_model_path(tmp_path, "knee a/1").name == "knee_a_1.safetensors"
    loaded = load_local_models(tmp_path, sites=["knee a/1", "never-trained"], order=list(INITIAL))
    assert list(loaded) == ["knee a/1"]
    assert list(loaded["knee a/1"]) == list(INITIAL)
    np.testing.assert_array_equal(loaded["knee a/1"]["head.knee.cls.w"], state["head.knee.cls.w"])


def test_matrix_shape_and_report_format(tmp_path):
    metrics = {
        "knee-b": {"macro_auc": 0.6, "cross/knee-a/macro_auc": 0.55, "cross/knee-b/macro_auc": 0.7},
        "knee-a": {"macro_auc": 0.8, "cross/knee-a/macro_auc": 0.9},
        "ankle-c": {"macro_auc": 0.5, "cross/ankle-c/macro_auc": 0.65},
    }
    matrix = cross_site_matrix(
        metrics, local_sites=["ankle-c", "knee-a", "knee-b"], prefix="cross/"
    )
    assert matrix["models"] == ["global", "local ankle-c", "local knee-a", "local knee-b"]
    assert matrix["sites"] == ["ankle-c", "knee-a", "knee-b"]
    assert matrix["macro_auc"] == [
        [0.5, 0.8, 0.6],
        [0.65, None, None],  # an ankle model is not evaluated on knee sites
        [None, 0.9, 0.55],
        [None, None, 0.7],  # knee-a did not report knee-b's model (e.g. undefined AUC)
    ]
    loaded = load_cross_site(write_cross_site(tmp_path, matrix))
    assert loaded == matrix
