"""wait_for_run: a SuperLink that misses polls on a loaded machine is retried, a silent one
ends the wait with one clear line (the loopback deployment itself: test_deployment.py)."""

from __future__ import annotations

import httpx
import pytest
from flwr.proto.control_pb2 import ListRunsResponse  # pylint: disable=no-name-in-module

from fl_server.app import settings_from_run_config
from fl_server.deploy_submit import run_config_toml, wait_for_run

RUN_ID = 7


class ControlStandIn:
    """Answers ListRuns from a script: an exception to raise or a run status to report."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.calls = 0

    def ListRuns(self, request):  # noqa: N802 - the Control API's name
        self.calls += 1
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        response = ListRunsResponse()
        response.run_dict[RUN_ID].status.status = step
        return response


def test_handshake_timeouts_are_retried_until_the_run_finishes():
    client = ControlStandIn(
        [
            httpx.ConnectTimeout("handshake timed out"),
            "running",
            httpx.ReadTimeout("slow"),
            "finished",
        ]
    )
    outcome = wait_for_run(RUN_ID, poll_s=0.0, client=client)
    assert outcome.status == "finished" and client.calls == 4


def test_a_silent_superlink_ends_the_wait_saying_the_run_may_go_on():
    client = ControlStandIn([httpx.ConnectError("refused")])
    with pytest.raises(ConnectionError, match=f"may still be going.*flwr log {RUN_ID}"):
        wait_for_run(RUN_ID, poll_s=0.01, unreachable_s=0.05, client=client)
    assert client.calls >= 2


def test_the_run_config_submit_writes_is_what_the_serverapp_reads_and_typos_are_refused(tmp_path):
    written = run_config_toml(
        experiment=tmp_path / "exp.yaml",
        run_dir=tmp_path / "run",
        overrides=["seed=4"],
        resume=True,
    )
    settings = settings_from_run_config(written)
    assert settings.run_dir == str((tmp_path / "run").resolve()) and settings.resume
    assert settings.overrides == ["seed=4"]
    with pytest.raises(ValueError, match="unknown key.*run_dir.*reads experiment, run-dir"):
        settings_from_run_config({**written, "run_dir": "/elsewhere"})
