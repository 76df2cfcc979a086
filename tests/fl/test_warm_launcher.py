"""The warm ClientApp launcher's pieces (the loopback deployment in test_deployment.py runs
it for real: every SuperNode there is started --warm, the default)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fl_client import warm_launcher
from fl_server import deploy
from fl_server.loopback import process_env

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from fl_client import warm_launcher as w
w.preload()
left = w.project_modules()
before = set(sys.modules)
import fl_client.app, core.train.site_task, core.train.pretrain, core.train.finetune
import core.train.dp_pretrain, core.train.dp_finetune, core.models.registry, core.data.cache
from core.data.manifest import load_site
new = {m.split(".")[0] for m in set(sys.modules) - before}
third_party = sorted(new - set(w.PROJECT_PACKAGES) - set(sys.stdlib_module_names))
print(json.dumps({"left": left, "third_party": third_party, "torch": "torch" in before}))
"""


def test_preload_imports_the_heavy_packages_and_forgets_the_project(tmp_path):
    # in a fresh interpreter: preload() rewrites sys.modules
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=process_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["left"] == []  # the FAB's own code is what a child will load
    assert facts["torch"]
    # what the ClientApp's modules import afterwards is project code and stdlib only
    assert facts["third_party"] == []


def test_launcher_command_names_the_supernode_to_follow():
    cmd = warm_launcher.command(runtime_api_address="127.0.0.1:9094", parent_pid=42)
    assert cmd[:3] == [sys.executable, "-m", "fl_client.warm_launcher"]
    args = cmd[3:]
    assert args[args.index("--runtime-api-address") + 1] == "127.0.0.1:9094"
    assert args[args.index("--parent-pid") + 1] == "42"


@pytest.mark.parametrize(("warm", "isolation"), [(True, "process"), (False, None)])
def test_supernode_isolation_follows_the_launcher(fed_sites, warm, isolation):
    cmd = deploy.supernode_command(
        deploy.SuperNodeOptions(
            superlink="10.0.0.5:8000", site_dir=fed_sites[0], root_certificates=None, warm=warm
        )
    )
    found = cmd[cmd.index("--isolation") + 1] if "--isolation" in cmd else None
    assert found == isolation


def test_executor_reaps_finished_children():
    executor = warm_launcher.ForkExecutor()
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    executor.children.add(pid)
    deadline = time.monotonic() + 10
    while executor.children and time.monotonic() < deadline:
        executor.reconcile()
        time.sleep(0.05)
    assert executor.children == set()
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(pid, os.WNOHANG)


def test_executor_terminates_running_children_when_the_launcher_goes():
    executor = warm_launcher.ForkExecutor()
    pid = os.fork()
    if pid == 0:  # a ClientApp still at work, deaf to SIGINT like the launcher that forked it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        time.sleep(60)
        os._exit(0)
    executor.children.add(pid)
    executor.terminate()
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_launcher_exits_when_its_supernode_is_gone(tmp_path):
    # the SuperNode's Runtime API port is closed (it went with the SuperNode), so the launcher
    # sits in Flower's HTTP retry loop; started with SIGINT ignored, as every background job of
    # a shell script is (`supernode ... &`), where Flower's SIGINT-based parent monitor did
    # nothing and the launcher polled the dead port for ever
    supernode = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    launcher = subprocess.Popen(
        [
            *warm_launcher.command(runtime_api_address="127.0.0.1:9", parent_pid=supernode.pid),
            "--poll-s",
            "0.05",
        ],
        cwd=REPO,
        env=process_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint,
    )
    try:
        for line in launcher.stderr:  # wait until it is polling the (dead) Runtime API
            if "preloaded" in line:
                break
        time.sleep(2)
        assert launcher.poll() is None  # still serving while its SuperNode runs
        supernode.kill()
        supernode.wait()
        _, err = launcher.communicate(timeout=60)
        assert launcher.returncode == 0, err[-2000:]
        assert f"SuperNode {supernode.pid} has ended" in err
    finally:
        for proc in (supernode, launcher):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
