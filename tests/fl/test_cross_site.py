"""`evaluate.cross_site` in a real Flower simulation: each site trains a local-only model,
every site evaluates the global model and the same-joint local-only models, and the run
writes the models x sites matrix that report.html shows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.atomic import load_arrays
from core.checkpoint import load_checkpoint
from core.reporting.federation_run import load_cross_site
from core.views import VIEWS
from tests.fl.conftest import federate_cli, final_weights, make_site, run_history, write_experiment


@pytest.fixture(scope="module")
def cross_site_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cross")
    sites = [  # enough held-out cases (3) for most labels to have both classes
        make_site(root / "knee-a", joint="knee", site_id="knee-a", seed=11, n_cases=10),
        make_site(
            root / "knee-b", joint="knee", site_id="knee-b", seed=12, n_cases=10, views=VIEWS[:2]
        ),
        make_site(root / "ankle-c", joint="ankle", site_id="ankle-c", seed=13, n_cases=10),
    ]
    exp = write_experiment(root / "exp.yaml", sites=sites, extra="evaluate: {cross_site: true}")
    result = federate_cli(exp, root / "run", "pretrain.rounds=1")
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def test_local_only_round_precedes_evaluation(cross_site_run):
    history = run_history(cross_site_run)
    assert [(r["phase"], r["round"]) for r in history] == [
        ("pretrain", 1),
        ("finetune", 1),
        ("local-only", 1),
        ("evaluate", 1),
    ]
    local = history[2]
    assert set(local["metrics"]) == {"knee-a", "knee-b", "ankle-c"} and not local["rejected"]
    assert local["bytes_up"] > 0
    # the evaluate round reports no cross/ keys per site: they went into the matrix
    assert not any(k.startswith("cross/") for m in history[3]["metrics"].values() for k in m)


def test_matrix_shape_and_values(cross_site_run):
    matrix = load_cross_site(cross_site_run / "cross_site.json")
    sites = ["ankle-c", "knee-a", "knee-b"]
    assert matrix["sites"] == sites
    assert matrix["models"] == ["global", *(f"local {s}" for s in sites)]
    values = matrix["macro_auc"]
    assert len(values) == 4 and all(len(row) == 3 for row in values)
    evaluate = run_history(cross_site_run)[-1]
    assert values[0] == [evaluate["metrics"][s].get("macro_auc") for s in sites]
    joint = {"ankle-c": "ankle", "knee-a": "knee", "knee-b": "knee"}
    for model_site, row in zip(sites, values[1:], strict=True):
        for site, value in zip(sites, row, strict=True):
            if joint[site] != joint[model_site]:
                assert value is None  # a knee model is never scored on an ankle site
            else:
                assert value is not None and 0.0 <= value <= 1.0
    assert (
        json.loads((cross_site_run / "history.jsonl").read_text().splitlines()[-1])["cross_site"]
        == matrix
    )
    assert "Cross-site" in (cross_site_run / "report.html").read_text()


def test_local_models_are_checkpoints_and_differ_from_global(cross_site_run):
    final = final_weights(cross_site_run)
    for site in ("knee-a", "knee-b"):
        path = cross_site_run / "local" / f"{site}.safetensors"
        checkpoint = load_checkpoint(path)  # a full orthofed checkpoint (manifest + weights)
        assert checkpoint.manifest["phase"] == "local-only" and checkpoint.manifest["site"] == site
        local = load_arrays(path)
        assert set(local) == set(final)
        assert not np.allclose(
            local["head.knee.cls.classifier.weight"], final["head.knee.cls.classifier.weight"]
        )
    # knee-b has no axial series: its local model keeps the initial axial backbone
    knee_b = load_arrays(cross_site_run / "local" / "knee-b.safetensors")
    knee_a = load_arrays(cross_site_run / "local" / "knee-a.safetensors")
    axial = [k for k in knee_b if k.startswith("backbone.axial.")]
    assert axial and not all(np.array_equal(knee_a[k], knee_b[k]) for k in axial)
