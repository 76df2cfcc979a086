"""A whole Flower deployment on this machine's loopback, as separate processes.

What `tests/fl/test_deployment.py` and `bench/federation_overhead.py` both start: `orthofed
certs` (a CA, the SuperLink's certificate and one key pair per site), a TLS SuperLink with
SuperNode authentication, `orthofed register` of the sites' public keys, and one SuperNode
per site, each on its own port; then runs are submitted with `orthofed submit`. Every process
runs the `orthofed` command of this interpreter in its own session with its own `FLWR_HOME`
under `root`, logging to `root/<name>.log`.

`LoopbackFederation.close()` stops them all (SIGTERM, then SIGKILL) and kills, by pid, the
helpers Flower starts in sessions of their own (SuperExec, ServerApp and ClientApp
processes) that dial one of the federation's ports. Use it as a context manager, so this
happens on errors and Ctrl-C too. Not part of the ServerApp or ClientApp: nothing imports it
at run time; it only drives the real commands, for tests and benches.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the project root: where the commands run
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def orthofed_command(*args: str) -> list[str]:
    """`orthofed ARGS` run by this interpreter (the venv's, whether activated or not)."""
    return [sys.executable, "-m", "fl_server.cli", *args]


def process_env(home: Path) -> dict[str, str]:
    """This environment with Flower's telemetry off, its own `FLWR_HOME`, and the venv's
    scripts first on PATH (Flower spawns `flower-superexec`, `flwr-clientapp`, ... by name)."""
    return {
        **os.environ,
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group of `proc` (started with a session of its own), SIGKILL it
    if it is still there after 10 s."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def kill_helpers(ports: Sequence[int], *, only: bytes = b"") -> None:
    """Flower starts SuperExec/app processes in their own sessions (they exit when their
    parent does, by polling); kill the ones dialling our ports at once, by pid (with `only`,
    those whose command line also holds it, e.g. b"serverapp": SuperNodes dial the same
    SuperLink port as the ServerApp does)."""
    marks = [f"{HOST}:{p}".encode() for p in ports]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if (b"flwr" in cmdline or b"flower" in cmdline) and only in cmdline:
            if any(mark in cmdline for mark in marks):
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.is_file() else ""


def wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    """Return once something accepts connections on `port`; RuntimeError (with the end of
    `log`) if `proc` exits first or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{log.stem} exited with code {proc.returncode}:\n{_tail(log)}")
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port} after {timeout_s}s:\n{_tail(log)}")


def _checked(done: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    return done


class LoopbackFederation:
    """Processes of one loopback deployment under `root`; `close()` kills them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.link_port = self.port()
        self.address = f"{HOST}:{self.link_port}"
        self.certs = root / "certs"
        self.ca = self.certs / "ca.pem"
        self.cli_home = root / "home-cli"  # FLWR_HOME of `register` and `submit`

    def __enter__(self) -> LoopbackFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def port(self) -> int:
        self.ports.append(free_port())
        return self.ports[-1]

    def spawn(self, name: str, cmd: list[str]) -> tuple[subprocess.Popen, Path]:
        """Start `cmd` in its own session, output to `root/<name>.log`."""
        log = self.root / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=process_env(self.root / f"home-{name}"),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc, log

    def run_cli(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess:
        """`orthofed ARGS` to its end, as the coordinator (FLWR_HOME = `cli_home`)."""
        return subprocess.run(
            orthofed_command(*args),
            cwd=REPO,
            env=process_env(self.cli_home),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def supernode(self, name: str, *extra: str, site: Path) -> tuple[subprocess.Popen, Path]:
        """A SuperNode for the site folder `site`, known as site `name`, on a port of its own."""
        return self.spawn(
            name,
            orthofed_command(
                "supernode",
                "--superlink",
                self.address,
                "--site",
                str(site),
                "--site-id",
                name,
                "--state-dir",
                str(self.root / "state" / name),
                "--port",
                str(self.port()),
                *extra,
            ),
        )

    def start(
        self,
        sites: Mapping[str, Path],
        *,
        unregistered: Sequence[str] = (),
        supernode_args: Sequence[str] = (),
        superlink_args: Sequence[str] = (),
    ) -> None:
        """Certificates (plus keys for the `unregistered` site ids, registered nowhere), the
        TLS SuperLink, registration of the `sites`' keys and one authenticated SuperNode per
        site (`{site id: site folder}`, each with `supernode_args` added, e.g. `--cold`; the
        SuperLink with `superlink_args`, e.g. `--database FILE`).
        RuntimeError naming the step that failed."""
        _checked(
            self.run_cli(
                "certs",
                "--out",
                str(self.certs),
                "--host",
                HOST,
                "--sites",
                ",".join([*sites, *unregistered]),
                timeout_s=60,
            ),
            "orthofed certs",
        )
        self.superlink(*superlink_args)
        keys = [str(self.certs / "sites" / f"{s}.pub") for s in sites]
        _checked(
            self.run_cli(
                "register",
                "--superlink",
                self.address,
                "--root-certificates",
                str(self.ca),
                *keys,
                timeout_s=120,
            ),
            "orthofed register",
        )
        for name, site in sites.items():
            self.site_supernode(name, *supernode_args, site=site)

    def site_supernode(self, name: str, *extra: str, site: Path) -> tuple[subprocess.Popen, Path]:
        """A SuperNode for site `name` with the federation's CA and that site's key (the key of
        an `unregistered` site id too, which the SuperLink then refuses)."""
        return self.supernode(
            name,
            "--root-certificates",
            str(self.ca),
            "--auth-key",
            str(self.certs / "sites" / f"{name}.key"),
            *extra,
            site=site,
        )

    def superlink(self, *extra: str, name: str = "superlink") -> subprocess.Popen:
        """The TLS SuperLink on `link_port` (again, after a kill: give another `name` for its
        log), returned once it accepts connections."""
        link, link_log = self.spawn(
            name,
            orthofed_command(
                "superlink",
                "--certs",
                str(self.certs),
                "--host",
                HOST,
                "--port",
                str(self.link_port),
                *extra,
            ),
        )
        wait_listening(self.link_port, link, link_log)
        return link

    def submit(
        self, experiment: Path, *, run_dir: Path, overrides: Sequence[str], timeout_s: float
    ) -> subprocess.CompletedProcess:
        """`orthofed submit` of `experiment` (+ overrides) to this SuperLink, to its end."""
        return self.run_cli(
            "submit",
            "--config",
            str(experiment),
            "--superlink",
            self.address,
            "--root-certificates",
            str(self.ca),
            "--run-dir",
            str(run_dir),
            "--timeout",
            f"{timeout_s:g}",
            *overrides,
            timeout_s=timeout_s + 100,
        )

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        kill_helpers(self.ports)
