"""Command lines for Flower's deployment engine: a TLS SuperLink and one SuperNode per site.

Flower 1.42 serves the Fleet, Control and Runtime APIs of a SuperLink over one HTTPS port
(`--host/--port`); a SuperNode dials it (`--superlink HOST:PORT`) and serves its own local
Runtime API on `--port`, so several SuperNodes on one machine need distinct ports. These
helpers only build argument lists: `fl_server.deploy_commands` execs them, tests spawn them.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from fl_server.certs import TlsFiles

DEFAULT_SUPERLINK_PORT = 8000  # flower-superlink's own default
DEFAULT_SUPERNODE_PORT = 9094  # flower-supernode's own default (its local Runtime API)


def scripts_dir() -> str:
    """The venv's bin folder: Flower spawns `flower-superexec`, `flwr-serverapp`, ... by name,
    so it must be on PATH even when the venv is not activated."""
    return str(Path(sys.executable).parent)


def flower_executable(name: str) -> str:
    """The Flower console script next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ValueError(f"'{name}' not found: install the project (make setup) into this venv")
    return found


def check_address(address: str) -> str:
    """HOST:PORT as the SuperNodes and the flwr CLI dial it (no scheme)."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"--superlink {address!r} must be HOST:PORT, e.g. 10.0.0.5:8000 (no https://)"
        )
    return address


@dataclass(frozen=True)
class SuperLinkOptions:
    """How the coordinator's SuperLink is started."""

    certs: Path | None
    insecure: bool = False
    supernode_auth: bool = True
    host: str = "0.0.0.0"
    port: int = DEFAULT_SUPERLINK_PORT
    database: Path | None = None


def superlink_command(options: SuperLinkOptions) -> list[str]:
    """`flower-superlink ...` with TLS (or an explicit --insecure) and no runtime installs."""
    cmd = [
        flower_executable("flower-superlink"),
        "--disable-runtime-dependency-installation",
        "--host",
        options.host,
        "--port",
        str(options.port),
    ]
    if options.insecure:
        if options.supernode_auth:
            raise ValueError(
                "SuperNode authentication needs TLS: drop --insecure, or also pass --no-auth"
            )
        cmd.append("--insecure")
    else:
        if options.certs is None:
            raise ValueError("--certs DIR is required (or --insecure for a plaintext test link)")
        tls = TlsFiles.under(options.certs)
        tls.check_server_side()
        cmd += [
            "--ssl-ca-certfile",
            str(tls.ca_cert),
            "--ssl-certfile",
            str(tls.server_cert),
            "--ssl-keyfile",
            str(tls.server_key),
        ]
    if options.supernode_auth:
        cmd.append("--enable-supernode-auth")
    if options.database is not None:
        cmd += ["--database", str(options.database)]
    return cmd


def _toml_literal(key: str, value: str) -> str:
    """key='value' as a TOML literal string (no escapes, so Windows paths survive)."""
    if "'" in value or "\n" in value:
        raise ValueError(f"{key} {value!r} must not contain a single quote or a line break")
    return f"{key}='{value}'"


@dataclass(frozen=True)
class SuperNodeOptions:
    """How one site's SuperNode is started."""

    superlink: str
    site_dir: Path
    root_certificates: Path | None
    state_dir: Path | None = None
    site_id: str = ""
    auth_key: Path | None = None
    port: int = DEFAULT_SUPERNODE_PORT
    insecure: bool = False
    max_wait_s: float | None = None
    # True: Flower's `process` isolation, ClientApps served by `fl_client.warm_launcher`
    # (imports once per SuperNode); False: Flower's stock `subprocess` isolation
    warm: bool = True


def node_config(options: SuperNodeOptions) -> str:
    """The `--node-config` string the ClientApp reads (`fl_client.app.facts_from_node_config`)."""
    if not (options.site_dir / "site.yaml").is_file():
        raise ValueError(
            f"{options.site_dir} has no site.yaml: pass the site folder "
            "(write one with 'orthofed data init SITE', check it with 'orthofed data check SITE')"
        )
    pairs = [_toml_literal("site-dir", str(options.site_dir.resolve()))]
    if options.state_dir is not None:
        pairs.append(_toml_literal("state-dir", str(options.state_dir.resolve())))
    if options.site_id:
        pairs.append(_toml_literal("site-id", options.site_id))
    return " ".join(pairs)


def supernode_command(options: SuperNodeOptions) -> list[str]:
    """`flower-supernode ...` dialling the SuperLink over TLS with this site's node_config."""
    cmd = [
        flower_executable("flower-supernode"),
        "--superlink",
        check_address(options.superlink),
        "--node-config",
        node_config(options),
        "--port",
        str(options.port),
    ]
    if options.warm:
        cmd += ["--isolation", "process"]
    if options.insecure:
        if options.root_certificates is not None or options.auth_key is not None:
            raise ValueError("--insecure cannot be combined with --root-certificates or --auth-key")
        cmd.append("--insecure")
    elif options.root_certificates is not None:
        if not options.root_certificates.is_file():
            raise ValueError(
                f"--root-certificates {options.root_certificates} not found "
                "(the coordinator's ca.pem)"
            )
        cmd += ["--root-certificates", str(options.root_certificates)]
    if options.auth_key is not None:
        if not options.auth_key.is_file():
            raise ValueError(f"--auth-key {options.auth_key} not found (this site's <site>.key)")
        cmd += ["--auth-supernode-private-key", str(options.auth_key)]
    if options.max_wait_s is not None:
        cmd += ["--max-wait-time", str(options.max_wait_s)]
    return cmd
