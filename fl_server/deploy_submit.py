"""Talk to a running SuperLink: register site keys, submit a run, wait for its real status.

Flower 1.42 reads SuperLink connections from `$FLWR_HOME/config.toml` (default `~/.flwr`);
we write one named `orthofed` there, so the coordinator can also use plain
`flwr ls orthofed` / `flwr log RUN_ID orthofed`. Runs are submitted with `flwr run`, which
builds the FAB and returns as soon as the run is queued (exit 0 even if the ServerApp later
crashes), so `wait_for_run` polls the run's status (the Control API call behind
`flwr ls --run-id N`) until it is `finished:*`. Registration and polling use the Control API
client of the `flwr` CLI in-process: each `flwr` start costs seconds of CPU.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import tomli
import tomli_w

from fl_server.deploy import check_address, flower_executable

CONNECTION = "orthofed"
# How long the SuperLink may fail to answer status polls in a row before `submit` gives up.
UNREACHABLE_S = 300.0

log = logging.getLogger("orthofed.submit")
APP_DIR = Path(__file__).resolve().parents[1]  # the project root holding pyproject.toml


def flwr_home() -> Path:
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr")


def write_connection(
    *, address: str, root_certificates: Path | None, insecure: bool = False
) -> Path:
    """Add/replace `[superlink.orthofed]` in `$FLWR_HOME/config.toml`; other entries are kept."""
    check_address(address)
    entry: dict[str, object] = {"address": address}
    if insecure:
        entry["insecure"] = True
    elif root_certificates is not None:
        if not root_certificates.is_file():
            raise ValueError(f"--root-certificates {root_certificates} not found (the CA's ca.pem)")
        entry["root-certificates"] = str(root_certificates.resolve())
    path = flwr_home() / "config.toml"
    config = tomli.loads(path.read_text()) if path.is_file() else {}
    config.setdefault("superlink", {})[CONNECTION] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(config))
    return path


def _flwr_json(args: list[str], *, timeout_s: float = 120) -> dict:
    """Run `flwr ARGS --format json` and return its JSON answer (raises with its message)."""
    cmd = [flower_executable("flwr"), *args, "--format", "json"]
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    out = done.stdout
    start, end = out.find("{"), out.rfind("}")
    answer = json.loads(out[start : end + 1]) if 0 <= start < end else {}
    if done.returncode != 0 or not answer.get("success", False):
        reason = answer.get("error-message") or (done.stderr or out).strip()[-500:]
        raise RuntimeError(f"flwr {args[0]} failed: {' '.join(str(reason).split())}")
    return answer


def register_site(client, public_key: Path, *, name: str = "") -> int:
    """Register one site's SuperNode public key (what `flwr supernode register` does)."""
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=no-name-in-module

    if not public_key.is_file():
        raise ValueError(f"{public_key} not found (a site's SITE.pub, see 'orthofed site-key')")
    response = client.RegisterNode(
        RegisterNodeRequest(public_key=try_load_public_key(public_key), name=name or None)
    )
    if not response.node_id:
        raise RuntimeError(f"the SuperLink did not register {public_key}")
    return int(response.node_id)


@dataclass(frozen=True)
class RunOutcome:
    run_id: int
    status: str  # e.g. finished:completed, finished:failed, finished:stopped
    details: str

    @property
    def ok(self) -> bool:
        return self.status == "finished:completed"


def run_config_toml(*, experiment: Path, run_dir: Path, overrides: list[str], resume: bool) -> dict:
    """The run_config the ServerApp reads (`fl_server.app.settings_from_run_config`)."""
    for item in overrides:
        if ";" in item or "=" not in item:
            raise ValueError(f"override {item!r} must be key=value without ';'")
    return {
        "experiment": str(experiment.resolve()),
        "run-dir": str(run_dir.resolve()),
        "overrides": ";".join(overrides),
        "resume": resume,
    }


def start_run(run_config: dict, *, app_dir: Path = APP_DIR) -> int:
    """`flwr run APP orthofed --run-config FILE`: build the FAB, queue the run, return its id."""
    with tempfile.TemporaryDirectory(prefix="orthofed-run-config-") as tmp:
        config_file = Path(tmp) / "run-config.toml"
        config_file.write_text(tomli_w.dumps(run_config))
        answer = _flwr_json(["run", str(app_dir), CONNECTION, "--run-config", str(config_file)])
    return int(answer["run-id"])


def control_client():
    """A Control API client for the `orthofed` connection (the one `flwr ls` uses inside)."""
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.utils import init_http_client_from_connection

    return init_http_client_from_connection(read_superlink_connection(CONNECTION))


def run_status(client, run_id: int) -> tuple[str, str]:
    """(`status[:sub-status]`, details) of one run, as `flwr ls` prints them."""
    from flwr.proto.control_pb2 import ListRunsRequest  # pylint: disable=no-name-in-module

    response = client.ListRuns(ListRunsRequest(run_id=run_id))
    if run_id not in response.run_dict:
        raise RuntimeError(f"the SuperLink does not know run {run_id} (was it restarted?)")
    status = response.run_dict[run_id].status
    text = f"{status.status}:{status.sub_status}" if status.sub_status else status.status
    return text, status.details


def wait_for_run(
    run_id: int,
    *,
    timeout_s: float | None = None,
    poll_s: float = 2.0,
    unreachable_s: float = UNREACHABLE_S,
    client=None,
) -> RunOutcome:
    """Poll until the run is finished (any sub-status) or `timeout_s` passes (TimeoutError).

    A poll that fails on the network (a TLS handshake or connection timing out on a loaded
    coordinator) is retried; only a SuperLink silent for `unreachable_s` in a row ends the
    wait, with a ConnectionError saying the run may still be going."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    own_client = client is None
    client = control_client() if own_client else client
    silent_since: float | None = None
    try:
        while True:
            try:
                status, details = run_status(client, run_id)
                silent_since = None
            except httpx.TransportError as err:
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since > unreachable_s:
                    raise ConnectionError(
                        f"the SuperLink has not answered for {unreachable_s:.0f}s ({err}); run "
                        f"{run_id} may still be going: follow it with 'flwr log {run_id} "
                        f"{CONNECTION}', or resubmit with --resume"
                    ) from None
                log.warning("SuperLink did not answer (%s); retrying", err)
                time.sleep(poll_s)
                continue
            if status.startswith("finished"):
                return RunOutcome(run_id=run_id, status=status, details=details)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {status} after {timeout_s:.0f}s")
            time.sleep(poll_s)
    finally:
        if own_client:
            client.close()
