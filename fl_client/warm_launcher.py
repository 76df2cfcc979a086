"""A warm ClientApp launcher for a SuperNode: heavy imports once per SuperNode, not per message.

Why hand-written: in Flower 1.42 a SuperNode in its default `subprocess` isolation starts
`flower-superexec`, which starts a fresh `flwr-clientapp` process for every message (one task
token each, `flwr/supercore/superexec/executor/subprocess_executor.py`). Each of those
processes imports torch, MONAI, Opacus and Flower again, about 8-14 s on a loaded 2-core
site, several times per round. Flower's own warm executors (`flwr/supercore/
warm_executor_*`) serve AgentApps, models and connectors, not ClientApps.

So a SuperNode started by `orthofed supernode` runs in Flower's `process` isolation, and this
launcher takes the place of `flower-superexec`: it imports the heavy third-party packages
once, then polls the SuperNode's local Runtime API for task tokens exactly as
`flower-superexec` does (`AcquireTask`, Flower's `AutoExecPlugin`) and, for each ClientApp
token, forks a child that runs Flower's own `run_clientapp` (pull the message, install and
load the FAB, run it, push the reply). The child starts with the imports done; everything
else (TLS to the SuperLink, node authentication, the FAB, our error redaction) is unchanged,
because the child runs the same Flower code a `flwr-clientapp` process runs.

The project's own modules are imported once to learn which third-party modules they pull
in, then dropped from `sys.modules`: the child loads the submitted FAB's code, not this
installation's, exactly as a cold `flwr-clientapp` would. The model and the site's data
cache need no warming here: the model is built in milliseconds and the cache lives on disk
(`core.data.cache`). Task types other than ClientApps fall back to Flower's subprocess
executor. Runs as `python -m fl_client.warm_launcher`; `orthofed supernode` starts it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore.constant import TaskType
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult
from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
from flwr.supercore.superexec.plugin import AutoExecPlugin

log = logging.getLogger("orthofed.warm_launcher")

PROJECT_PACKAGES = ("core", "fl_client", "fl_server", "reproduce")
# What a ClientApp runs when a message arrives (imported by the FAB's code at run time).
CLIENTAPP_TASK = TaskType.CLIENT_APP
DEFAULT_POLL_S = 0.2  # flower-superexec polls every 1 s; a warm child should not wait for it
PARENT_POLL_S = 0.5  # how often the launcher checks that its SuperNode is still there


def project_modules() -> list[str]:
    """Names of the project's modules loaded in this process."""
    return [name for name in sys.modules if name.split(".")[0] in PROJECT_PACKAGES]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def exit_with_parent(
    parent_pid: int, *, on_exit: Callable[[], None] = lambda: None, poll_s: float = PARENT_POLL_S
) -> threading.Thread:
    """End this process when the SuperNode `parent_pid` ends.

    Why not Flower's `start_parent_process_monitor`: it raises SIGINT once, and while the main
    thread sits in Flower's HTTP retry loop (the SuperNode's Runtime API went with it) that
    interrupt is lost and the launcher polls a dead port for ever (seen: launchers left behind
    by killed SuperNodes, all started with SIGINT ignored, as a shell's background jobs are).
    This calls `on_exit` (terminate the forked ClientApps: their own Flower monitor relies on
    the same SIGINT) and ends the process outright; it holds nothing to flush. When started as the
    SuperNode's child (`orthofed supernode`), a new parent pid also counts as the end: a
    SuperNode nobody reaped yet is a zombie that `kill(pid, 0)` still finds."""
    is_child = os.getppid() == parent_pid

    def watch() -> None:
        while _alive(parent_pid) and (not is_child or os.getppid() == parent_pid):
            time.sleep(poll_s)
        log.info("SuperNode %d has ended: the launcher exits", parent_pid)
        try:
            on_exit()
        finally:
            os._exit(0)

    thread = threading.Thread(target=watch, name="supernode-watch", daemon=True)
    thread.start()
    return thread


def preload(packages: tuple[str, ...] = ("core", "fl_client")) -> float:
    """Import every module of `packages` (and so every third-party module they import, even
    inside functions that import lazily at module level of their helpers), then forget the
    project's own modules. Returns the seconds it took."""
    started = time.monotonic()
    importlib.import_module("flwr.supernode.runtime.run_clientapp")
    for package in packages:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            importlib.import_module(info.name)
    _import_lazy_dependencies()
    for name in project_modules():
        del sys.modules[name]
    return time.monotonic() - started


def _import_lazy_dependencies() -> None:
    """Third-party modules the project imports inside functions only (a walk over the
    project's modules does not reach those imports)."""
    for name in (
        "torch",
        "monai.networks.nets",
        "monai.networks.schedulers",
        "monai.inferers",
        "monai.losses",
        "monai.metrics",
        "monai.transforms",
        "opacus",
        "opacus.accountants",
        "pydicom",
        "safetensors.torch",
        "omegaconf",
        "scipy.ndimage",
        "nibabel",
    ):
        try:
            importlib.import_module(name)
        except ImportError:  # an optional extra this site did not install
            log.debug("not preloaded: %s", name)


class ForkExecutor:
    """Flower's executor protocol (`flwr.supercore.superexec.executor.Executor`), forking a
    warm child per ClientApp token; other task types go to Flower's subprocess executor."""

    def __init__(self) -> None:
        self.children: set[int] = set()
        self.fallback = SubprocessExecutor()

    def get_eligible_capacity(
        self,
        supported_task_types: set[TaskType],
        *,
        insecure: bool = False,
        root_certificates_path: str | None = None,
    ) -> tuple[set[TaskType], set[str]]:
        del insecure, root_certificates_path
        return supported_task_types, set()

    def wait_for_capacity(self, task_type: TaskType | None = None, **_: object) -> None:
        del task_type

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        if spec.task_type != CLIENTAPP_TASK:
            return self.fallback.launch(spec)
        pid = os.fork()
        if pid == 0:  # the child: never returns into the launcher's loop
            os._exit(_run_child(spec))
        self.children.add(pid)
        log.info("task %d: ClientApp in warm child %d", spec.task_id, pid)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap finished children (no zombies across a long-lived SuperNode)."""
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self.children.discard(pid)
                log.info("warm child %d exited (%d)", pid, os.waitstatus_to_exitcode(status))

    def terminate(self) -> None:
        """SIGTERM every ClientApp child still running (the launcher is going away)."""
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                self.children.discard(pid)

    def close(self) -> None:
        self.fallback.close()


def _run_child(spec: ExecutionSpec) -> int:
    """Flower's own ClientApp process body, in the forked child; its exit code."""
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    try:
        run_clientapp(
            runtime_api_address=spec.runtime_api_address,
            token=spec.token,
            insecure=spec.insecure,
            certificates=(
                Path(spec.root_certificates_path).read_bytes()
                if spec.root_certificates_path
                else None
            ),
            parent_pid=spec.parent_pid,
            runtime_dependency_install=spec.runtime_dependency_install,
        )
    except SystemExit as done:  # flwr_exit ends the task with sys.exit(code)
        return done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child must not fall back into the loop
        log.exception("warm child failed outside the ClientApp")
        return 1
    return 0


def serve(
    *,
    runtime_api_address: str,
    poll_s: float = DEFAULT_POLL_S,
    executor: ForkExecutor | None = None,
) -> None:
    """Poll the SuperNode's Runtime API for tokens and launch each (what `flower-superexec`
    does in `run_superexec`, with a forking executor); runs until killed."""
    executor = executor or ForkExecutor()
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,  # the SuperNode's local Runtime API, as flower-superexec dials it
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    plugin = AutoExecPlugin(
        runtime_api_address=runtime_api_address,
        insecure=True,
        root_certificates_path=None,
        runtime_dependency_install=False,
        executor=executor,
    )
    try:
        while True:
            executor.reconcile()
            reply = client.AcquireTask(
                AcquireTaskRequest(supported_task_types=sorted(plugin.supported_task_types))
            )
            if reply.HasField("task") and reply.token:
                plugin.launch_task(token=reply.token, task=reply.task)
            time.sleep(poll_s)
    finally:
        client.close()
        executor.close()


def command(*, runtime_api_address: str, parent_pid: int) -> list[str]:
    """How `orthofed supernode` starts this launcher beside its SuperNode."""
    return [
        sys.executable,
        "-m",
        "fl_client.warm_launcher",
        "--runtime-api-address",
        runtime_api_address,
        "--parent-pid",
        str(parent_pid),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fl_client.warm_launcher",
        description="Serve a SuperNode's ClientApp tasks from warm forked children "
        "(started by 'orthofed supernode'; not meant to be run by hand).",
    )
    parser.add_argument("--runtime-api-address", required=True, help="The SuperNode's HOST:PORT")
    parser.add_argument("--parent-pid", type=int, help="Exit when this process (SuperNode) ends")
    parser.add_argument("--poll-s", type=float, default=DEFAULT_POLL_S, help="Polling interval")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s warm-launcher %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per poll
    executor = ForkExecutor()
    if args.parent_pid is not None:
        exit_with_parent(args.parent_pid, on_exit=executor.terminate)
    log.info("preloaded torch, MONAI, Opacus, Flower in %.1fs", preload())
    serve(runtime_api_address=args.runtime_api_address, poll_s=args.poll_s, executor=executor)


if __name__ == "__main__":
    main()
