"""The real ServerApp and ClientApps in Flower's simulation engine (no mocks):
history contract, per-group participation, resume after SIGKILL, refusals (faulty and
hanging sites and the soak: test_simulation_faults.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from core.atomic import load_arrays
from tests.fl.conftest import (
    REPO,
    federate_cli,
    federate_command,
    federate_refused,
    federation_env,
    final_weights,
    run_history,
    write_experiment,
)

HISTORY_KEYS = {
    "phase",
    "round",
    "wall_s",
    "groups",
    "rejected",
    "bytes_down",
    "bytes_up",
    "metrics",
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, fed_sites):
    root = tmp_path_factory.mktemp("run")
    exp = write_experiment(root / "exp.yaml", sites=fed_sites, extra="tracking: tensorboard")
    result = federate_cli(exp, root / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    return exp, root / "run"


def test_history_contract_and_per_group_participation(finished_run):
    _, run_dir = finished_run
    history = run_history(run_dir)
    assert [(r["phase"], r["round"]) for r in history] == [
        ("pretrain", 1),
        ("pretrain", 2),
        ("finetune", 1),
        ("evaluate", 1),
    ]
    for record in history:
        assert HISTORY_KEYS <= set(record)
        assert set(record["metrics"]) == {"knee-a", "knee-b", "ankle-c"}
        assert all("compute_s" in m for m in record["metrics"].values())
    groups = history[0]["groups"]
    # knee-b has no axial series: the axial backbone is averaged over the two other sites
    assert groups["backbone.axial"]["sites"] == ["ankle-c", "knee-a"]
    assert groups["backbone.sagittal"]["sites"] == ["ankle-c", "knee-a", "knee-b"]
    finetune = history[2]["groups"]
    assert finetune["head.ankle.cls"]["sites"] == ["ankle-c"]
    assert finetune["head.knee.cls"]["sites"] == ["knee-a", "knee-b"]
    assert history[0]["bytes_up"] > 0 and history[0]["bytes_down"] > 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["sites"]) == {"knee-a", "knee-b", "ankle-c"}
    report = (run_dir / "report.html").read_text()  # written by the server at the end
    assert all(site in report for site in ("knee-a", "knee-b", "ankle-c"))


def _tensorboard_steps(run_dir: Path) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_round_metrics_in_tensorboard(finished_run):
    # `tracking: tensorboard`: one point per round (step = history index), per site and view
    _, run_dir = finished_run
    steps = _tensorboard_steps(run_dir)
    assert steps["round/bytes_up"] == steps["round/seconds"] == [1, 2, 3, 4]
    for site in ("knee-a", "knee-b", "ankle-c"):
        assert steps[f"pretrain/loss/sagittal/{site}"] == [1, 2]
        assert steps[f"round/compute_s/{site}"] == [1, 2, 3, 4]
    assert steps["pretrain/loss/axial/mean"] == [1, 2]
    assert steps["finetune/loss/mean"] == [3]
    assert steps["groups/backbone.sagittal/examples"] == [1, 2]
    assert any(tag.startswith("evaluate/") and tag.endswith("/weighted") for tag in steps)


def test_group_nobody_sent_keeps_its_value(finished_run):
    _, run_dir = finished_run
    first = load_arrays(run_dir / "global" / "round-0001.safetensors")
    second = load_arrays(run_dir / "global" / "round-0002.safetensors")
    heads = [k for k in first if k.startswith("head.")]
    assert heads and all(np.array_equal(first[k], second[k]) for k in heads)
    backbones = [k for k in first if k.startswith("backbone.sagittal.")]
    assert any(not np.array_equal(first[k], second[k]) for k in backbones)


def test_resume_after_sigkill_matches_uninterrupted(tmp_path, finished_run):
    exp, reference = finished_run
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        federate_command(exp, run_dir),
        cwd=REPO,
        env=federation_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    history = run_dir / "history.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if history.is_file() and history.read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(run_history(run_dir))
    assert 1 <= done_before < 4, "the kill should land mid-federation"
    result = federate_cli(exp, run_dir, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(r["phase"], r["round"]) for r in run_history(run_dir)] == [
        (r["phase"], r["round"]) for r in run_history(reference)
    ]
    # the resumed run's event log holds every round once (rebuilt from history.jsonl)
    assert _tensorboard_steps(run_dir)["round/bytes_up"] == [1, 2, 3, 4]
    ours, theirs = final_weights(run_dir), final_weights(reference)
    assert list(ours) == list(theirs)
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], atol=1e-6, err_msg=key)


def test_existing_run_dir_needs_resume(finished_run):
    exp, run_dir = finished_run
    result = federate_refused(exp, run_dir)
    assert result.returncode == 2
    assert "--resume" in result.stderr and "Traceback" not in result.stderr


def test_global_checkpoint_evaluates_like_a_local_one(finished_run, fed_sites, tmp_path):
    from typer.testing import CliRunner

    from core.cli import build_app

    _, run_dir = finished_run
    final = sorted((run_dir / "global").glob("round-*.safetensors"))[-1]
    result = CliRunner().invoke(
        build_app(),
        [
            "evaluate",
            "--site",
            str(fed_sites[0]),
            "--checkpoint",
            str(final),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["joint"] == "knee" and metrics["n_cases"] > 0
    assert (tmp_path / "r" / "report.html").is_file()
    info = CliRunner().invoke(build_app(), ["info", str(final), "--json"])
    assert info.exit_code == 0, info.output
    card = json.loads(info.output)
    history = run_history(run_dir)
    assert card["kind"] == "federated"
    assert sum(card["training"]["rounds"].values()) == len(history)
    assert set(card["training"]["sites"]) == {s for r in history for s in r["sampled"]}
    assert "training cases of site" in card["thresholds"]["knee"]["source"]


def test_evaluate_line_of_a_dp_run_carries_the_cumulative_epsilon(tmp_path):
    """The record-building step of every round (no federation needed): an evaluate line, which
    spends nothing, still says what the run spent (README: every history line carries it)."""
    from types import SimpleNamespace

    from core.federation.rundir import RunDir
    from fl_server.rounds import _add_privacy

    run = RunDir(tmp_path / "run")
    fed = SimpleNamespace(
        run=run, experiment=SimpleNamespace(client_dp=SimpleNamespace(accountant="rdp"))
    )
    dp_metrics = {"dp_noise_multiplier": 1.2, "dp_sample_rate": 0.11, "dp_steps": 48}
    train = {"phase": "finetune", "index": 4, "metrics": {
        "knee-a": {"epsilon": 8.1, **dp_metrics, "dp_delta": 1e-5},
        "ankle-c": {"epsilon": 7.9, **dp_metrics, "dp_delta": 1e-5},
    }}  # fmt: skip
    group = {"epsilon": 0.5, "noise_multiplier": 0.001, "sample_rate": 1.0, "steps": 4}
    _add_privacy(fed, train, {"head.knee.cls": {**group, "delta": 1e-5, "accountant": "rdp"}})
    run.append_history(train)
    evaluate = {"phase": "evaluate", "index": 5, "metrics": {"knee-a": {"auc": 0.6}}}
    _add_privacy(fed, evaluate, {})
    assert evaluate["epsilon"] == {
        "sites": {"knee-a": 8.1, "ankle-c": 7.9},
        "groups": {"head.knee.cls": 0.5},
    }
    assert evaluate["dp"] == train["dp"] and evaluate["dp"]["sites"]["knee-a"]["steps"] == 48
    plain = {"phase": "evaluate", "index": 1, "metrics": {"knee-a": {"auc": 0.6}}}
    _add_privacy(SimpleNamespace(run=RunDir(tmp_path / "plain")), plain, {})
    assert "epsilon" not in plain and "dp" not in plain  # DP off: no privacy fields


def _error_line(result: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a refused command (no traceback anywhere)."""
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def test_sites_keep_state_under_the_run_key(finished_run):
    # issue 15, defect 4: a site's state between rounds belongs to this run only
    _, run_dir = finished_run
    record = json.loads((run_dir / "run.json").read_text())
    assert len(record["run_key"]) == 32 and record["config"]["pretrain.rounds"] == 2
    state = run_dir / "site-state" / "knee-a"
    assert list((state / "runs" / record["run_key"]).glob("pretrain-state-*.safetensors"))
    assert not list(state.glob("pretrain-state-*"))  # nothing keyed by round index only


def test_resume_with_another_config_is_refused_in_one_line(finished_run):
    # issue 15, defect 2: a finished run resumed with a changed config (exit 0 before)
    exp, run_dir = finished_run
    before = (run_dir / "history.jsonl").read_bytes(), (run_dir / "latest.json").read_bytes()
    result = federate_refused(
        exp, run_dir, "--resume", "finetune.train.lr=0.01", "pretrain.rounds=3"
    )
    assert result.returncode == 2
    line = _error_line(result)
    assert "another configuration" in line and "finetune.train.lr" in line
    assert "pretrain.rounds 2 -> 3" in line and "run.json" in line
    after = (run_dir / "history.jsonl").read_bytes(), (run_dir / "latest.json").read_bytes()
    assert after == before


def test_resume_of_a_mistyped_run_dir_starts_nothing(tmp_path, finished_run):
    exp, _ = finished_run
    result = federate_refused(exp, tmp_path / "typo", "--resume")
    assert result.returncode == 2
    assert "holds no started federation" in _error_line(result)
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("pretrain.timeout_s=-5", "error: pretrain.timeout_s must be a number of seconds"),
        ("model_overrides=[diffusion.schedule=bogus]", "error: model.diffusion.schedule 'bogus'"),
        ("init_checkpoint=missing.safetensors", "error: init_checkpoint missing.safetensors: no"),
    ],
)
def test_coordinator_mistake_is_refused_before_ray(tmp_path, fed_sites, override, says):
    # issue 15, defect 3: refused before the engine starts, nothing written, no site asked
    exp = write_experiment(tmp_path / "exp.yaml", sites=fed_sites)
    result = federate_refused(exp, tmp_path / "run", override)
    assert result.returncode == 2, result.stderr[-2000:]
    assert _error_line(result).startswith(says)
    assert not (tmp_path / "run").exists()


def test_a_site_listed_twice_under_two_folders_is_refused(tmp_path, fed_sites):
    import shutil

    from fl_server.simulation import check_sites

    copy = tmp_path / "knee-a-copy"
    shutil.copytree(fed_sites[0], copy)  # same site.yaml site_id
    check_sites([str(s) for s in fed_sites])
    with pytest.raises(ValueError, match="are both site 'knee-a'.*list each site once"):
        check_sites([*map(str, fed_sites), str(copy)])
