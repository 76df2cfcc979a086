"""The coordinator's SuperLink killed mid-run and started again on its database (issue 15): a
real TLS deployment on loopback runs the same two-round experiment twice, once straight and
once with the SuperLink (and the ServerApp it runs) SIGKILLed after round 1 is saved; the
SuperNodes reconnect, `orthofed submit --resume` finishes the run, and its final weights are
bit-identical to the straight run's."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from fl_server.loopback import LoopbackFederation, kill_helpers
from tests.fl.conftest import final_weights, run_history, write_experiment

SITES = ("knee-a", "knee-b", "ankle-c")
OVERRIDES = ["pretrain.rounds=2", "finetune.rounds=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fed_sites):
    root = tmp_path_factory.mktemp("restart")
    database = ["--database", str(root / "superlink.db")]
    with LoopbackFederation(root) as fed:
        fed.start(dict(zip(SITES, fed_sites, strict=True)), superlink_args=database)
        no_eval = "evaluate: {enabled: false}"
        exp = write_experiment(root / "exp.yaml", sites=fed_sites, extra=no_eval)
        straight = fed.submit(exp, run_dir=root / "straight", overrides=OVERRIDES, timeout_s=600)
        assert straight.returncode == 0, straight.stdout[-2000:] + straight.stderr[-3000:]

        run_dir = root / "interrupted"
        first: dict = {}
        thread = threading.Thread(
            target=lambda: first.update(
                done=fed.submit(
                    exp,
                    run_dir=run_dir,
                    overrides=[*OVERRIDES, "--unreachable", "15"],
                    timeout_s=300,
                )
            )
        )
        thread.start()
        deadline = time.monotonic() + 300
        while not (run_dir / "history.jsonl").is_file():  # round 1 is saved
            assert time.monotonic() < deadline and thread.is_alive(), "round 1 never saved"
            time.sleep(0.2)
        link = next(p for p in fed.procs if "superlink" in p.args and p.poll() is None)
        os.killpg(link.pid, signal.SIGKILL)  # the coordinator's machine goes down
        kill_helpers([fed.link_port], only=b"serverapp")  # and the ServerApp it ran
        link.wait(timeout=30)
        thread.join(timeout=400)
        fed.superlink(*database, name="superlink-restarted")
        resumed = fed.submit(
            exp, run_dir=run_dir, overrides=[*OVERRIDES, "--resume"], timeout_s=600
        )
    return root, first["done"], resumed


def test_the_interrupted_submit_says_the_superlink_went_silent(runs):
    _, interrupted, _ = runs
    assert interrupted.returncode == 1  # the submit saw its SuperLink go, not a success
    assert "has not answered for 15s" in interrupted.stderr + interrupted.stdout


def test_resume_after_a_superlink_restart_ends_like_an_uninterrupted_run(runs):
    root, _, resumed = runs
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    history = run_history(root / "interrupted")
    assert [(r["phase"], r["round"]) for r in history] == [("pretrain", 1), ("pretrain", 2)]
    assert set(history[-1]["metrics"]) == set(SITES)  # every SuperNode came back
    straight, interrupted = final_weights(root / "straight"), final_weights(root / "interrupted")
    assert list(straight) == list(interrupted)
    for key, value in straight.items():
        assert interrupted[key].tobytes() == value.tobytes(), key
