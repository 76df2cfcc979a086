"""`orthofed` commands for running across hospitals on Flower's deployment engine.

Coordinator: `certs` (dev CA), `superlink`, `register` (site public keys), `submit`.
Site: `site-key` (its own key pair), `supernode`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import typer

from core.commands.common import fail, user_errors
from fl_client import warm_launcher
from fl_server import certs as certs_mod
from fl_server import deploy, deploy_submit

CERTS_HELP = (
    "Create a development CA, the SuperLink's TLS certificate and site key pairs.\n\n"
    "Writes OUT/ca.pem (give to every site and to whoever submits runs), OUT/ca.key (keep "
    "private), OUT/superlink.pem + superlink.key (for `orthofed superlink --certs OUT`), and "
    "with --sites one ECDSA P-384 key pair per site: OUT/sites/SITE.key (give only to that "
    "site) and SITE.pub (register it with `orthofed register`).\n\n"
    "For trials only: production brings its own PKI (a server certificate for the "
    "SuperLink's host names from the hospital's CA), and each site creates its own key pair "
    "with `orthofed site-key`, sending only the .pub file."
)


@user_errors
def certs(
    out: Path = typer.Option(..., "--out", help="Folder to create (must not hold a CA yet)."),
    host: list[str] = typer.Option(
        [], "--host", help="Host name or IP the sites dial (repeatable); loopback is always added."
    ),
    sites: str = typer.Option("", "--sites", help="Site ids, comma-separated: knee-3t,knee-15t"),
    days: int = typer.Option(365, "--days", help="Validity of the certificates in days."),
) -> None:
    site_ids = [certs_mod.check_site_id(s.strip()) for s in sites.split(",") if s.strip()]
    repeated = sorted({s for s in site_ids if site_ids.count(s) > 1})
    if repeated:  # refused before any file is written
        raise ValueError(f"--sites lists {', '.join(repeated)} more than once; list each site once")
    tls = certs_mod.create_tls_files(out, hosts=list(host), days=days)
    typer.echo(f"CA: {tls.ca_cert} (private key {tls.ca_key})")
    typer.echo(f"SuperLink: {tls.server_cert}, {tls.server_key}")
    for site_id in site_ids:
        keys = certs_mod.create_site_keys(out / "sites", site_id)
        typer.echo(f"site {site_id}: {keys.private_key} (give to the site), {keys.public_key}")


@user_errors
def site_key(
    site: str = typer.Option(..., "--site", help="This site's id, e.g. knee-3t."),
    out: Path = typer.Option(..., "--out", help="Folder for SITE.key and SITE.pub."),
) -> None:
    """Create this site's SuperNode key pair; send only SITE.pub to the coordinator."""
    keys = certs_mod.create_site_keys(out, site)
    typer.echo(f"private key (stays here): {keys.private_key}")
    typer.echo(f"public key (send to the coordinator): {keys.public_key}")


def _exec(cmd: list[str]) -> None:
    """Replace this process by the Flower one, so signals and exit codes are Flower's."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ["PATH"] = os.pathsep.join([deploy.scripts_dir(), os.environ.get("PATH", "")])
    os.execv(cmd[0], cmd)


@user_errors
def superlink(
    certs_dir: Path | None = typer.Option(
        None, "--certs", help="Folder with ca.pem, superlink.pem, superlink.key."
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext, no TLS: local tests only."),
    auth: bool = typer.Option(
        True,
        "--auth/--no-auth",
        help="Only SuperNodes whose public key was registered ('orthofed register') may join.",
    ),
    host: str | None = typer.Option(
        None,
        "--host",
        help="Interface to listen on (default: all with TLS, 127.0.0.1 with --insecure).",
    ),
    port: int = typer.Option(
        deploy.DEFAULT_SUPERLINK_PORT, "--port", help="HTTPS port (Fleet, Control, Runtime APIs)."
    ),
    database: Path | None = typer.Option(
        None, "--database", help="SQLite file for the SuperLink's state (default: in memory)."
    ),
) -> None:
    """Start the coordinator's Flower SuperLink (TLS, SuperNode authentication, no installs)."""
    if insecure and certs_dir is not None:
        fail(
            f"--certs {certs_dir} and --insecure conflict (TLS or plaintext): drop --insecure "
            "to serve TLS with those certificates, or drop --certs for a plaintext test link"
        )
    if insecure:
        typer.secho(
            "warning: --insecure: plaintext, no SuperNode authentication", fg="yellow", err=True
        )
    options = deploy.SuperLinkOptions(
        certs=certs_dir,
        insecure=insecure,
        supernode_auth=auth and not insecure,
        # plaintext stays on this machine unless --host says otherwise
        host=host or ("127.0.0.1" if insecure else "0.0.0.0"),
        port=port,
        database=database,
    )
    _exec(deploy.superlink_command(options))


@user_errors
def supernode(
    superlink_address: str = typer.Option(..., "--superlink", help="The coordinator's HOST:PORT."),
    site: Path = typer.Option(..., "--site", help="This site's data folder (holds site.yaml)."),
    root_certificates: Path | None = typer.Option(
        None, "--root-certificates", help="The coordinator's ca.pem (omit only for a public CA)."
    ),
    auth_key: Path | None = typer.Option(None, "--auth-key", help="This site's SITE.key."),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", help="Where local optimizer/privacy state is kept."
    ),
    site_id: str = typer.Option("", "--site-id", help="Override the site id of site.yaml."),
    port: int = typer.Option(
        deploy.DEFAULT_SUPERNODE_PORT,
        "--port",
        help="Local port of this SuperNode's Runtime API; one per SuperNode on a machine.",
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext, no TLS: local tests only."),
    warm: bool = typer.Option(
        True,
        "--warm/--cold",
        help="--warm (default): import torch/MONAI/Flower once and fork a ready process per "
        "message; --cold: Flower's stock launcher, a fresh process (and imports) per message.",
    ),
) -> None:
    """Start this site's Flower SuperNode, serving the ClientApp on the data in --site."""
    options = deploy.SuperNodeOptions(
        superlink=superlink_address,
        site_dir=site,
        root_certificates=root_certificates,
        state_dir=state_dir,
        site_id=site_id,
        auth_key=auth_key,
        port=port,
        insecure=insecure,
        warm=warm,
    )
    cmd = deploy.supernode_command(options)
    if warm:
        # the launcher outlives this exec (same pid) and exits when the SuperNode does
        subprocess.Popen(
            warm_launcher.command(runtime_api_address=f"127.0.0.1:{port}", parent_pid=os.getpid())
        )
    _exec(cmd)


@user_errors
def register(
    public_keys: list[Path] = typer.Argument(..., help="Sites' SITE.pub files."),
    superlink_address: str = typer.Option(..., "--superlink", help="The SuperLink's HOST:PORT."),
    root_certificates: Path | None = typer.Option(None, "--root-certificates", help="ca.pem."),
    insecure: bool = typer.Option(False, "--insecure", help="The SuperLink runs without TLS."),
) -> None:
    """Register sites' SuperNode public keys, so those sites (and only those) may join."""
    for key in public_keys:  # every file checked before the SuperLink is asked
        certs_mod.check_public_key(key)
    deploy_submit.write_connection(
        address=superlink_address, root_certificates=root_certificates, insecure=insecure
    )
    client = deploy_submit.control_client()
    try:
        for key in public_keys:
            node_id = deploy_submit.register_site(client, key, name=key.stem)
            typer.echo(f"registered {key.stem}: node {node_id}")
    except Exception as err:  # the Control API's errors (HTTP, refused key) -> one line
        fail(f"registering {key}: {' '.join(str(err).split())}", code=1)
    finally:
        client.close()


@user_errors
def submit(
    config: Path = typer.Option(
        ..., "--config", help="Experiment YAML (read on the SuperLink's machine)."
    ),
    superlink_address: str = typer.Option(..., "--superlink", help="The SuperLink's HOST:PORT."),
    root_certificates: Path | None = typer.Option(None, "--root-certificates", help="ca.pem."),
    insecure: bool = typer.Option(False, "--insecure", help="The SuperLink runs without TLS."),
    run_dir: Path | None = typer.Option(
        None,
        "--run-dir",
        help="Where the ServerApp writes the run (default: runs/ and the experiment's name).",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue after the last completed round of --run-dir."
    ),
    timeout_s: float | None = typer.Option(
        None, "--timeout", help="Give up waiting after this many seconds."
    ),
    unreachable_s: float = typer.Option(
        deploy_submit.UNREACHABLE_S,
        "--unreachable",
        min=1,
        help="Stop waiting once the SuperLink has not answered for this many seconds in a "
        "row (it went down: restart it on its --database and resubmit with --resume).",
    ),
    overrides: list[str] = typer.Argument(
        None, help="Dotted key=value overrides, e.g. pretrain.rounds=3."
    ),
) -> None:
    """Submit a federation to a running SuperLink and wait for its real final status.

    Paths are made absolute: the ServerApp runs on the SuperLink's machine, so submit from
    that machine (or use paths valid there). Exit 0 only if the run finished:completed.
    """
    # torch/MONAI: `orthofed --help` and the other commands must not pay for them
    from core.federation.experiment import load_experiment
    from core.federation.model_state import check_init_checkpoint, model_config_for
    from core.federation.run_record import check_run, resolved_config
    from core.federation.rundir import RunDir

    overrides = list(overrides or [])
    experiment = load_experiment(config, overrides=overrides)
    target = run_dir or Path("runs") / experiment.name
    # before anything is submitted (the ServerApp checks again where the run dir lives)
    model_config = model_config_for(experiment)
    resolved = resolved_config(experiment, model_config=model_config)
    check_run(RunDir(target), config=resolved, resume=resume)
    if not resume:
        check_init_checkpoint(experiment, model_config=model_config)
    deploy_submit.write_connection(
        address=superlink_address, root_certificates=root_certificates, insecure=insecure
    )
    run_config = deploy_submit.run_config_toml(
        experiment=config, run_dir=target, overrides=overrides, resume=resume
    )
    try:
        run_id = deploy_submit.start_run(run_config)
        typer.echo(f"run {run_id} submitted; waiting (follow it with: flwr log {run_id} orthofed)")
        outcome = deploy_submit.wait_for_run(
            run_id, timeout_s=timeout_s, unreachable_s=unreachable_s
        )
    except (RuntimeError, TimeoutError, ConnectionError) as err:
        fail(str(err), code=1)
    if not outcome.ok:
        detail = f" ({outcome.details})" if outcome.details else ""
        fail(f"run {run_id} {outcome.status}{detail}; see 'flwr log {run_id} orthofed'", code=1)
    typer.echo(f"run {run_id} finished:completed: {run_config['run-dir']}/history.jsonl")


def register_deploy_commands(app: typer.Typer) -> None:
    app.command("certs", help=CERTS_HELP)(certs)
    app.command("site-key")(site_key)
    app.command("superlink")(superlink)
    app.command("supernode")(supernode)
    app.command("register")(register)
    app.command("submit")(submit)
