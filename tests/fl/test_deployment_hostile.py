"""Hostile updates from a registered site, through a real deployment (issue 15): a TLS
SuperLink with SuperNode authentication, two honest SuperNodes (`orthofed supernode`, warm
launcher) and `mallory`, a registered SuperNode whose ClientApp replies are spoilt before
Flower sends them (`tests/fl/hostile_launcher.py`). Every spoilt group is rejected and recorded
with its reason, the honest sites' groups are aggregated without mallory's, and the run ends
with a finite model."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from fl_server import deploy
from fl_server.loopback import LoopbackFederation
from tests.fl.conftest import final_weights, run_history, write_experiment
from tests.fl.hostile_launcher import ATTACKS

HONEST = ("knee-b", "ankle-c")


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, fed_sites):
    root = tmp_path_factory.mktemp("hostile")
    with LoopbackFederation(root) as fed:
        fed.start(dict(zip(HONEST, fed_sites[1:], strict=True)), unregistered=["mallory"])
        registered = fed.run_cli(
            "register",
            "--superlink",
            fed.address,
            "--root-certificates",
            str(fed.ca),
            str(fed.certs / "sites" / "mallory.pub"),
            timeout_s=120,
        )
        assert registered.returncode == 0, registered.stderr
        options = deploy.SuperNodeOptions(  # knee-a's data, a registered key, a spoilt app
            superlink=fed.address,
            site_dir=fed_sites[0],
            root_certificates=fed.ca,
            state_dir=root / "state" / "mallory",
            site_id="mallory",
            auth_key=fed.certs / "sites" / "mallory.key",
            port=fed.port(),
            warm=True,
        )
        node, _ = fed.spawn("mallory", deploy.supernode_command(options))
        fed.spawn(
            "mallory-launcher",
            [
                sys.executable,
                "-m",
                "tests.fl.hostile_launcher",
                "--runtime-api-address",
                f"127.0.0.1:{options.port}",
                "--parent-pid",
                str(node.pid),
            ],
        )
        exp = write_experiment(
            root / "exp.yaml", sites=fed_sites, extra="evaluate: {enabled: false}"
        )
        done = fed.submit(
            exp,
            run_dir=root / "run",
            overrides=["pretrain.min_sites=3", "finetune.rounds=0"],
            timeout_s=600,
        )
    return done, root / "run"


def test_every_spoilt_group_is_rejected_and_recorded(hostile_run):
    done, run_dir = hostile_run
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    history = run_history(run_dir)
    assert [(r["phase"], r["round"]) for r in history] == [("pretrain", 1), ("pretrain", 2)]
    for record in history:
        assert set(record["metrics"]) == {*HONEST, "mallory"}  # all three replied
        rejected = {(r["site"], r["group"]): r["reason"] for r in record["rejected"]}
        expected = ATTACKS[record["round"]]
        assert set(rejected) == {("mallory", group) for group in expected}, rejected
        for group, (_, reason) in expected.items():
            assert reason in rejected[("mallory", group)], (group, rejected)


def test_the_model_is_built_from_the_honest_sites_only(hostile_run):
    _, run_dir = hostile_run
    for record in run_history(run_dir):
        for group, facts in record["groups"].items():
            assert "mallory" not in facts["sites"], (record["round"], group)
        assert set(record["groups"]["backbone.sagittal"]["sites"]) == set(HONEST)
    weights = final_weights(run_dir)
    assert weights and all(np.isfinite(v).all() for v in weights.values())
    assert not any(key.startswith("head.shoulder.") for key in weights)
