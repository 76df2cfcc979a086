"""No PHI leaves a site: DICOM tags and case ids never appear in what a site sends or in
anything the server writes (a real simulated federation; every reply captured by a mod)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom

from tests.fl.conftest import make_site, write_experiment

REPO = Path(__file__).resolve().parents[2]
# Distinctive values, so that any hit is a leak and not a coincidence.
TAGS = {
    "PatientName": "Zyxwort^Quilliam",
    "PatientID": "MRN4471923",
    "PatientBirthDate": "19470316",
    "StudyDate": "20240817",
    "InstitutionName": "Saint Obscura Hospital",
    "AccessionNumber": "ACC99887766",
}
NEEDLES = [
    "Zyxwort",
    "Quilliam",
    "MRN4471923",
    "19470316",
    "1947-03-16",
    "20240817",
    "2024-08-17",
    "Obscura",
    "ACC99887766",
]


def _stamp_phi(site: Path) -> None:
    for path in site.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for tag, value in TAGS.items():
            setattr(ds, tag, value)
        ds.save_as(path)


def _hits(path: Path) -> list[str]:
    data = path.read_bytes()
    return [n for n in NEEDLES if n.encode() in data]


def _scan(root: Path) -> dict[str, list[str]]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and (hits := _hits(path)):
            found[str(path.relative_to(root))] = hits
    return found


def test_no_phi_in_replies_run_dir_or_logs(tmp_path):
    sites = [
        make_site(
            tmp_path / "sites" / "knee-p",
            joint="knee",
            site_id="knee-p",
            seed=11,
            case_prefix="MRN4471923-",
        ),
        make_site(
            tmp_path / "sites" / "ankle-p",
            joint="ankle",
            site_id="ankle-p",
            seed=12,
            case_prefix="MRN4471923-",
        ),
    ]
    for site in sites:
        _stamp_phi(site)
    assert _scan(tmp_path / "sites"), "the scan must find the PHI where it is (the DICOM files)"
    exp = write_experiment(tmp_path / "exp.yaml", sites=sites)
    capture, run_dir = tmp_path / "captured", tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fl.instrumented_federation",
            str(exp),
            str(run_dir),
            "--capture",
            str(capture),
            "pretrain.rounds=1",
        ],
        cwd=REPO,
        env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    replies = sorted(p.name for p in capture.iterdir())
    assert any("train" in name and name.endswith(".bin") for name in replies)
    assert any("evaluate" in name for name in replies)
    assert (run_dir / "history.jsonl").is_file() and (run_dir / "metrics.json").is_file()
    assert _scan(capture) == {}
    assert _scan(run_dir) == {}
    logs = result.stdout + result.stderr
    assert [n for n in NEEDLES if n in logs] == []


def test_error_texts_leave_the_site_without_case_ids_or_paths(tmp_path):
    # Flower's Message needs a running federation; the text a reply carries is `redact`'s
    from fl_client.app import SiteFacts, _log_locally, redact

    site = make_site(
        tmp_path / "knee-e",
        joint="knee",
        site_id="knee-e",
        seed=13,
        case_prefix="MRN4471923-",
        n_cases=2,
    )
    err = ValueError(f"{site.resolve()}/MRN4471923-1: case 'MRN4471923-1' has 7 labels")
    reason = redact(str(err), site_dir=site)
    assert [n for n in NEEDLES if n in reason] == [] and str(tmp_path) not in reason
    assert reason == "<site>/<case>: case '<case>' has 7 labels"
    assert redact("a.b in 1.5 T: ok", site_dir=site) == "a.b in 1.5 T: ok"
    facts = SiteFacts(site_dir=site, state_dir=tmp_path / "state", site_id="knee-e")
    _log_locally(facts, err)
    assert "MRN4471923-1" in (tmp_path / "state" / "errors.log").read_text()  # kept at the site


def _train_message(*, site_dir: Path, state_dir: Path):
    """A train instruction as a SuperNode receives it (real Flower records and metadata) and
    the Context the deployed ClientApp gets, so the test needs no running federation."""
    import time

    from flwr.app import Context, Message, Metadata, RecordDict

    from fl_client import records

    content = records.build_instruction(
        arrays={},
        phase="pretrain",
        round_=1,
        index=0,
        seed=3,
        params={"model": "{}", "train": "{}"},
    )
    metadata = Metadata(
        run_id=7,
        message_id="m1",
        src_node_id=1,
        dst_node_id=2,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=600.0,
        message_type="train",
    )
    node_config = {"site-dir": str(site_dir), "state-dir": str(state_dir), "site-id": "knee-x"}
    context = Context(
        run_id=7, node_id=2, node_config=node_config, state=RecordDict(), run_config={}
    )
    return Message(content, metadata=metadata), context


def test_any_exception_from_training_leaves_the_site_redacted_and_bounded(tmp_path, monkeypatch):
    import core.train.site_task
    from fl_client import app

    site = make_site(
        tmp_path / "knee-x",
        joint="knee",
        site_id="knee-x",
        seed=14,
        case_prefix="MRN4471923-",
        n_cases=2,
    )
    case_path = site.resolve() / "MRN4471923-1" / "s0" / "IM0001.dcm"
    full = f"cannot decode {case_path} of Zyxwort^Quilliam (MRN4471923-1) " + "x" * 5000

    def train_round(**_):
        raise RuntimeError(full)

    monkeypatch.setattr(core.train.site_task, "train_round", train_round)
    msg, context = _train_message(site_dir=site, state_dir=tmp_path / "state")
    reply = app.app(msg, context)  # the deployed ClientApp, as a SuperNode calls it
    assert reply.has_error() and not reply.has_content()
    reason = reply.error.reason
    assert reply.error.code == app.SITE_FAILURE
    assert reason.startswith("knee-x: ") and "RuntimeError" in reason and "errors.log" in reason
    assert len(reason) <= app.MAX_REASON_CHARS
    assert [n for n in NEEDLES if n in reason] == []
    assert str(tmp_path) not in reason and "IM0001" not in reason
    log = (tmp_path / "state" / "errors.log").read_text()
    assert full in log and "Traceback" in log  # in full, for the site's operator only


def test_user_errors_keep_their_redacted_text_within_the_bound(tmp_path, monkeypatch):
    import core.train.site_task
    from core.views import parse_joint
    from fl_client import app

    site = make_site(
        tmp_path / "knee-y",
        joint="knee",
        site_id="knee-y",
        seed=15,
        case_prefix="MRN4471923-",
        n_cases=2,
    )
    text = f"{site.resolve()}/MRN4471923-0 of Zyxwort^Quilliam: " + "y" * 5000

    def train_round(**_):
        parse_joint(text)  # our own ValueError, which quotes what it was given

    monkeypatch.setattr(core.train.site_task, "train_round", train_round)
    msg, context = _train_message(site_dir=site, state_dir=tmp_path / "state")
    reply = app.app(msg, context)
    reason = reply.error.reason
    assert reply.error.code == app.USER_ERROR
    assert reason.startswith("knee-x: unknown joint '<site>/<case> of <name>: yyy")
    assert len(reason) <= app.MAX_REASON_CHARS and reason.endswith("...")
    assert [n for n in NEEDLES if n in reason] == [] and str(tmp_path) not in reason
    assert "Zyxwort" not in reason
    assert "MRN4471923-0" in (tmp_path / "state" / "errors.log").read_text()


def test_a_library_value_error_leaves_only_its_type(tmp_path, monkeypatch):
    # pydicom, nibabel or torch raise ValueError with header values in the text: not ours
    import pydicom.valuerep

    import core.train.site_task
    from fl_client import app

    site = make_site(tmp_path / "knee-z", joint="knee", site_id="knee-z", seed=16, n_cases=2)

    def train_round(**_):
        pydicom.valuerep.validate_value("DA", "Zyxwort Quilliam", 2)  # quotes the value

    monkeypatch.setattr(core.train.site_task, "train_round", train_round)
    msg, context = _train_message(site_dir=site, state_dir=tmp_path / "state")
    reply = app.app(msg, context)
    assert reply.error.code == app.SITE_FAILURE
    assert "ValueError" in reply.error.reason and "Zyxwort" not in reply.error.reason
    assert "Zyxwort" in (tmp_path / "state" / "errors.log").read_text()


def test_a_full_site_disk_is_named_as_such_without_its_paths(tmp_path, monkeypatch):
    import errno

    import core.train.site_task
    from fl_client import app

    site = make_site(tmp_path / "knee-f", joint="knee", site_id="knee-f", seed=17, n_cases=2)

    def train_round(**_):
        raise OSError(errno.ENOSPC, "No space left on device", str(site / "case-0"))

    monkeypatch.setattr(core.train.site_task, "train_round", train_round)
    msg, context = _train_message(site_dir=site, state_dir=tmp_path / "state")
    reply = app.app(msg, context)
    assert reply.error.code == app.USER_ERROR
    assert "no space left on the site's disk" in reply.error.reason
    assert str(tmp_path) not in reply.error.reason
