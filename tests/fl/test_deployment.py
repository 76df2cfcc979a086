"""Flower's deployment engine for real: a TLS SuperLink with SuperNode authentication and
three SuperNodes as separate processes on loopback, driven by the `orthofed` commands.
Two rounds end to end, a ServerApp crash reported as a failure, the two refusals
(unregistered key, no CA), a SuperNode killed mid-round, and last the SuperLink killed mid-run
and restarted on its `--database` (issue 15). One deployment serves them all: starting one
costs about a minute of a 2-core machine."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from flwr.common.config import parse_config_args

from fl_server import deploy, deploy_submit
from fl_server.certs import create_site_keys, create_tls_files
from fl_server.loopback import LoopbackFederation, kill_helpers
from tests.fl.conftest import final_weights, run_history, write_experiment

REPO = Path(__file__).resolve().parents[2]
SITES = ("knee-a", "knee-b", "ankle-c")


# ---- the pieces, without processes (run first) ------------------------------------------


def test_submit_refuses_a_changed_resume_before_contacting_the_superlink(
    tmp_path, monkeypatch, fed_sites
):
    # issue 15, defect 2: checked before any connection is written or run submitted
    from typer.testing import CliRunner

    from core.federation.experiment import load_experiment
    from core.federation.model_state import model_config_for
    from core.federation.run_record import check_run, resolved_config, write_record
    from core.federation.rundir import RunDir
    from fl_server.cli import build_full_app

    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))
    exp = write_experiment(tmp_path / "exp.yaml", sites=fed_sites)
    experiment = load_experiment(exp)
    config = resolved_config(experiment, model_config=model_config_for(experiment))
    write_record(tmp_path / "run", check_run(RunDir(tmp_path / "run"), config=config, resume=False))
    base = ["submit", "--config", str(exp), "--superlink", "127.0.0.1:9", "--insecure"]
    changed = CliRunner().invoke(
        build_full_app(), [*base, "--run-dir", str(tmp_path / "run"), "--resume", "seed=4"]
    )
    assert changed.exit_code == 2 and "seed 3 -> 4" in changed.output
    missing = CliRunner().invoke(
        build_full_app(), [*base, "--run-dir", str(tmp_path / "typo"), "--resume"]
    )
    assert missing.exit_code == 2 and "holds no started federation" in missing.output
    assert not (tmp_path / "flwr").exists()  # no connection written, nothing submitted


@pytest.mark.parametrize("hosts", [["127.0.0.1"], ["fl.hospital.example", "10.1.2.3"]])
def test_server_certificate_is_signed_by_the_ca_for_every_host(tmp_path, hosts):
    files = create_tls_files(tmp_path, hosts=hosts)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    names |= set(sans.get_values_for_type(x509.DNSName))
    assert set(hosts) | {"127.0.0.1", "localhost"} <= names
    assert files.ca_key.stat().st_mode & 0o077 == 0
    with pytest.raises(ValueError, match="already exists"):
        create_tls_files(tmp_path, hosts=hosts)


def test_site_keys_are_what_flower_reads(tmp_path):
    keys = create_site_keys(tmp_path, "knee-3t")
    private = load_ssh_private_key(keys.private_key.read_bytes(), None)
    public = load_ssh_public_key(keys.public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert public.public_numbers() == private.public_key().public_numbers()
    with pytest.raises(ValueError, match="site id"):
        create_site_keys(tmp_path, "../etc")


def test_node_config_round_trips_through_flowers_parser(tmp_path, fed_sites):
    options = deploy.SuperNodeOptions(
        superlink="10.0.0.5:8000",
        site_dir=fed_sites[0],
        root_certificates=None,
        state_dir=tmp_path / "my state",
        site_id="knee-a",
    )
    parsed = parse_config_args([deploy.node_config(options)])
    assert parsed == {
        "site-dir": str(fed_sites[0].resolve()),
        "state-dir": str((tmp_path / "my state").resolve()),
        "site-id": "knee-a",
    }
    with pytest.raises(ValueError, match="site.yaml"):
        deploy.node_config(
            deploy.SuperNodeOptions(
                superlink="10.0.0.5:8000", site_dir=tmp_path, root_certificates=None
            )
        )


def test_superlink_needs_certs_or_an_explicit_insecure(tmp_path):
    with pytest.raises(ValueError, match="--certs"):
        deploy.superlink_command(deploy.SuperLinkOptions(certs=None))
    with pytest.raises(ValueError, match="needs TLS"):
        deploy.superlink_command(deploy.SuperLinkOptions(certs=None, insecure=True))
    with pytest.raises(ValueError, match="orthofed certs"):
        deploy.superlink_command(deploy.SuperLinkOptions(certs=tmp_path))
    plaintext = deploy.SuperLinkOptions(certs=None, insecure=True, supernode_auth=False)
    cmd = deploy.superlink_command(plaintext)
    assert "--insecure" in cmd and "--disable-runtime-dependency-installation" in cmd
    with pytest.raises(ValueError, match="HOST:PORT"):
        deploy.check_address("https://10.0.0.5:8000")


def test_fab_holds_the_code_and_configs_only():
    from flwr.cli.build import build_fab_from_disk

    fab = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(REPO)))
    tops = {name.split("/")[0] for name in fab.namelist()}
    assert tops == {".info", "pyproject.toml", "core", "fl_client", "fl_server", "configs"}
    assert "fl_server/app.py" in fab.namelist()
    assert sum(info.file_size for info in fab.infolist()) < 5 * 2**20


# ---- a loopback deployment -----------------------------------------------------------


@pytest.fixture(scope="module")
def federation(tmp_path_factory, fed_sites):
    with LoopbackFederation(tmp_path_factory.mktemp("deploy")) as fed:
        fed.start(
            dict(zip(SITES, fed_sites, strict=True)),
            unregistered=["rogue"],
            superlink_args=_database(fed),
        )
        yield fed


def _database(fed: LoopbackFederation) -> list[str]:
    """The SuperLink's persistent state, so that a restarted SuperLink knows the run."""
    return ["--database", str(fed.root / "superlink.db")]


TWO_ROUNDS = ["pretrain.rounds=1", "evaluate.enabled=false"]


@pytest.fixture(scope="module")
def two_rounds(federation, fed_sites):
    exp = write_experiment(federation.root / "exp.yaml", sites=fed_sites)
    run_dir = federation.root / "run"
    started = time.monotonic()
    done = federation.submit(
        exp,
        run_dir=run_dir,
        overrides=TWO_ROUNDS,
        timeout_s=600,
    )
    return done, run_dir, time.monotonic() - started


def test_two_rounds_end_to_end_over_tls(two_rounds):
    done, run_dir, total_s = two_rounds
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "finished:completed" in done.stdout
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["round"]) for r in history] == [("pretrain", 1), ("finetune", 1)]
    overheads = []
    for record in history:
        # site ids come from each SuperNode's node_config (--site-id), one reply per site
        assert set(record["metrics"]) == set(SITES)
        slowest = max(m["compute_s"] for m in record["metrics"].values())
        overheads.append(
            (
                record["phase"],
                record["wall_s"],
                slowest,
                round((record["wall_s"] - slowest) / record["wall_s"], 3),
            )
        )
    assert (run_dir / "latest.json").is_file()
    for site in SITES:  # SuperNodes start --warm: each message ran in a forked warm child
        assert "ClientApp in warm child" in (run_dir.parent / f"{site}.log").read_text()
    print(
        f"\ndeployment: submit took {total_s:.1f}s; (phase, wall_s, slowest compute_s, overhead):",
        overheads,
    )


def test_serverapp_crash_is_a_failed_run_not_a_success(federation, two_rounds, monkeypatch):
    # `flwr run` accepts this run (exit 0); only its final status tells it crashed
    monkeypatch.setenv("FLWR_HOME", str(federation.cli_home))  # the connection `register` wrote
    run_config = deploy_submit.run_config_toml(
        experiment=federation.root / "missing.yaml",
        run_dir=federation.root / "crashed",
        overrides=[],
        resume=False,
    )
    run_id = deploy_submit.start_run(run_config)
    outcome = deploy_submit.wait_for_run(run_id, timeout_s=180, poll_s=1.0)
    assert outcome.status == "finished:failed" and not outcome.ok


def _refused(proc: subprocess.Popen, log: Path) -> str:
    try:
        code = proc.wait(timeout=90)
    except subprocess.TimeoutExpired as err:
        tail = log.read_text()[-2000:]
        raise AssertionError(f"the SuperNode was not refused within 90s:\n{tail}") from err
    assert code != 0
    return log.read_text()


def test_unregistered_supernode_is_refused(federation, fed_sites, two_rounds):
    proc, log = federation.site_supernode("rogue", site=fed_sites[0])
    assert "Failed to activate SuperNode" in _refused(proc, log)


def test_supernode_without_the_ca_cannot_connect(federation, fed_sites, two_rounds):
    proc, log = federation.supernode("no-ca", site=fed_sites[0])  # system CAs only
    assert "CERTIFICATE_VERIFY_FAILED" in _refused(proc, log)


def _dp_steps(federation, site: str) -> int:
    """Steps in a site's privacy budget (its history merges runs of equal sigma and rate)."""
    path = federation.root / "state" / site / "privacy-budget.json"
    return sum(n for _, _, n in json.loads(path.read_text())["history"]) if path.exists() else 0


STEPS = 4  # DP steps per view and round in the kill test


def test_supernode_killed_mid_round_is_left_out_then_rejoins(federation, fed_sites, two_rounds):
    # issue 15: knee-b's SuperNode (launcher and ClientApp included) is SIGKILLed while it
    # starts round 1 under client DP; round 1 completes with the other two once the SuperLink
    # reports the node unavailable (missed heartbeats), recorded under knee-b with Flower's
    # reason. Started again after that (the SuperLink
    # refuses to activate a node it still believes alive), knee-b trains a later round, and
    # its privacy budget file is whole and spent once for that round
    exp = write_experiment(
        federation.root / "exp-kill.yaml",
        sites=fed_sites,
        extra="evaluate: {enabled: false}\nclient_dp: {enabled: true, noise_multiplier: 1.2}",
    )
    run_dir = federation.root / "run-kill"
    log = federation.root / "knee-b.log"
    children = log.read_text().count("ClientApp in warm child")
    outcome: dict = {}
    overrides = [
        "pretrain.rounds=3",
        "pretrain.timeout_s=120",
        f"pretrain.train.steps={STEPS}",
        "finetune.rounds=0",
    ]
    submit = threading.Thread(
        target=lambda: outcome.update(
            done=federation.submit(exp, run_dir=run_dir, overrides=overrides, timeout_s=600)
        )
    )
    submit.start()
    # knee-b's second child of this run is round 1's training (the first answers discovery)
    _wait_for(lambda: log.read_text().count("ClientApp in warm child") >= children + 2, submit)
    node = next(p for p in federation.procs if "knee-b" in p.args and p.poll() is None)
    os.killpg(node.pid, signal.SIGKILL)
    node.wait(timeout=30)
    spent_at_kill = _dp_steps(federation, "knee-b")
    _wait_for(lambda: (run_dir / "history.jsonl").is_file(), submit)  # round 1 is saved
    federation.site_supernode("knee-b", site=fed_sites[1])
    submit.join(timeout=700)
    done = outcome["done"]
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    first, *_, last = run_history(run_dir)
    assert set(first["metrics"]) == {"knee-a", "ankle-c"} and first["missing"] == []
    assert [(r["site"], "Unavailable" in r["reason"]) for r in first["rejected"]] == [
        ("knee-b", True)
    ]
    assert all("knee-b" not in g["sites"] for g in first["groups"].values())
    assert "knee-b" in last["metrics"]  # rejoined
    trained = sum("knee-b" in r["metrics"] for r in run_history(run_dir))
    assert _dp_steps(federation, "knee-a") == 3 * STEPS * 3  # 3 rounds, 3 views
    # whole (it parses) and spent once per round trained after the restart (knee-b: 2 views)
    assert _dp_steps(federation, "knee-b") == spent_at_kill + trained * STEPS * 2


def _wait_for(condition, submit: threading.Thread, timeout_s: float = 400) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline and submit.is_alive(), "the run ended or stalled"
        time.sleep(0.2)


# ---- last: the SuperLink killed and restarted (the deployment's state changes for good) ----


@pytest.fixture(scope="module")
def restarted(federation, two_rounds):
    """`two_rounds`' experiment again; the SuperLink and the ServerApp it runs are SIGKILLed
    once round 1 (pretraining) is saved, the SuperLink is started again on its database (the
    SuperNodes reconnect by themselves) and `orthofed submit --resume` runs the finetune round."""
    run_dir = federation.root / "interrupted"
    exp = federation.root / "exp.yaml"
    first: dict = {}
    thread = threading.Thread(
        target=lambda: first.update(
            done=federation.submit(
                exp, run_dir=run_dir, overrides=[*TWO_ROUNDS, "--unreachable", "15"], timeout_s=300
            )
        )
    )
    thread.start()
    _wait_for(lambda: (run_dir / "history.jsonl").is_file(), thread)  # round 1 is saved
    link = next(p for p in federation.procs if "superlink" in p.args and p.poll() is None)
    os.killpg(link.pid, signal.SIGKILL)  # the coordinator's machine goes down
    kill_helpers([federation.link_port], only=b"serverapp")  # and the ServerApp it ran
    link.wait(timeout=30)
    thread.join(timeout=400)
    federation.superlink(*_database(federation), name="superlink-restarted")
    resumed = federation.submit(
        exp, run_dir=run_dir, overrides=[*TWO_ROUNDS, "--resume"], timeout_s=600
    )
    return first["done"], resumed, run_dir


def test_the_interrupted_submit_says_the_superlink_went_silent(restarted):
    interrupted, _, _ = restarted
    assert interrupted.returncode == 1  # the submit saw its SuperLink go, not a success
    assert "has not answered for 15s" in interrupted.stderr + interrupted.stdout


def test_resume_after_a_superlink_restart_ends_like_an_uninterrupted_run(restarted, two_rounds):
    _, resumed, run_dir = restarted
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    history = run_history(run_dir)
    assert [(r["phase"], r["round"]) for r in history] == [("pretrain", 1), ("finetune", 1)]
    assert set(history[-1]["metrics"]) == set(SITES)  # every SuperNode came back
    straight, interrupted = final_weights(two_rounds[1]), final_weights(run_dir)
    assert list(straight) == list(interrupted)
    for key, value in straight.items():
        assert interrupted[key].tobytes() == value.tobytes(), key
