"""The ClientApp: translates Flower messages into `core.train.site_task` calls.

Site facts come from the SuperNode's node_config (`site-dir`, optional `state-dir`,
`site-id`); in the embedded simulation they come from the experiment's site list, indexed by
Flower's `partition-id`. Every exception becomes an error reply naming the site, never a
crash of the node: user-data problems redacted, anything else as its type name only; the full
text stays in the site's errors.log.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from core.data.manifest import load_site
from fl_client import records

log = logging.getLogger("orthofed.client")

# Error codes in replies (Flower reserves small numbers; ours are distinct).
USER_ERROR = 4100  # bad site data or settings: the (redacted) message says what to fix
SITE_FAILURE = 4101  # anything else: only its type leaves the site (the text may hold PHI)
# A reply's error text is bounded: it travels to the coordinator and into their logs.
MAX_REASON_CHARS = 500
USER_ERRORS = (ValueError, FileNotFoundError, KeyError)
# Packages whose error messages we wrote (and keep free of patient data); a ValueError raised
# inside a library (pydicom, torch, nibabel) may quote a header value, so only its type leaves.
OWN_PACKAGES = ("core", "fl_client", "fl_server")
# A DICOM person name (PN): components joined by '^' ("Family^Given"); a library message our
# own text wraps can quote one, so any such token is masked before a reason leaves the site.
PERSON_NAME = re.compile(r"[^\s'\"()\[\]{},;:]*\^[^\s'\"()\[\]{},;:]*")


@dataclass(frozen=True)
class SiteFacts:
    site_dir: Path
    state_dir: Path
    site_id: str


def facts_from_node_config(node_config: dict) -> SiteFacts:
    if "site-dir" not in node_config:
        raise ValueError(
            "node_config has no 'site-dir': start the SuperNode with "
            "--node-config \"site-dir='/path/to/site'\""
        )
    site_dir = Path(str(node_config["site-dir"]))
    state = node_config.get("state-dir") or str(
        site_dir.resolve().parent / f"{site_dir.name}.orthofed-state"
    )
    site_id = str(node_config.get("site-id", "")) or ""
    return SiteFacts(site_dir=site_dir, state_dir=Path(str(state)), site_id=site_id)


def _case_ids(site_dir: Path) -> list[str]:
    try:
        return [p.name for p in load_site(site_dir).case_dirs()]
    except (ValueError, OSError):
        return []


def redact(text: str, *, site_dir: Path) -> str:
    """Error text that may leave the site: case ids (folder names, which hospitals often make
    MRNs) and the site's paths replaced. The full text stays in the site's own error log."""
    text = text.replace(str(site_dir.resolve()), "<site>")  # a relative one names no patient
    for case_id in sorted(_case_ids(site_dir), key=len, reverse=True):
        text = re.sub(rf"(?<![\w.-]){re.escape(case_id)}(?![\w-])", "<case>", text)
    return PERSON_NAME.sub("<name>", text)


def raised_by_us(err: BaseException) -> bool:
    """Whether the innermost frame that raised `err` is in one of the project's packages,
    i.e. whether we wrote its message."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return False
    root = Path(__file__).resolve().parent.parent
    raised_in = Path(frames[-1].filename).resolve()
    return any(raised_in.is_relative_to(root / package) for package in OWN_PACKAGES)


def _log_locally(facts: SiteFacts, err: Exception) -> None:
    """The unredacted error, for the site's operator only (`<state dir>/errors.log`); an
    unexpected one with its traceback."""
    text = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {type(err).__name__}: {err}\n"
    if not isinstance(err, USER_ERRORS):
        text += "".join(traceback.format_exception(err))
    try:
        facts.state_dir.mkdir(parents=True, exist_ok=True)
        with (facts.state_dir / "errors.log").open("a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as log_err:  # e.g. the disk that is full: say so on the console instead
        log.error("cannot write %s (%s); the error was: %s", facts.state_dir, log_err, text)


def _bounded(text: str) -> str:
    if len(text) <= MAX_REASON_CHARS:
        return text
    return text[: MAX_REASON_CHARS - 3] + "..."


def failure(facts: SiteFacts, err: Exception) -> Error:
    """The error a reply carries. A user error raised by our own code (a message about the
    site's data or settings) is sent redacted; the text of any other exception, or of a user
    error raised inside a library, was not written by us and may quote anything (a DICOM
    element, a patient name), so only its type leaves the site."""
    where = facts.site_id or "site"
    if isinstance(err, USER_ERRORS) and raised_by_us(err):
        reason = f"{where}: {redact(str(err), site_dir=facts.site_dir)}"
        return Error(code=USER_ERROR, reason=_bounded(reason))
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = (
            f"{where}: no space left on the site's disk (previous state and privacy budget "
            "kept); the site's operator frees space and the site rejoins the next round"
        )
        return Error(code=USER_ERROR, reason=reason)
    reason = (
        f"{where}: unexpected {type(err).__name__}; the site's operator finds the full "
        "text in errors.log in the site's state folder"
    )
    return Error(code=SITE_FAILURE, reason=_bounded(reason))


# The handlers import `core.train.site_task` (torch, MONAI, Opacus: seconds on 2 cores) when
# called, not at the top: without the warm launcher Flower starts one ClientApp process per
# message, and a discovery query (site facts only) should not pay for the training stack.
def handle_query(msg: Message, facts: SiteFacts) -> Message:
    from core.train.site_task import site_info

    info = site_info(site_dir=facts.site_dir, site_id=facts.site_id)
    return Message(RecordDict({records.STATUS: ConfigRecord(info)}), reply_to=msg)


def handle_train(msg: Message, facts: SiteFacts) -> Message:
    from core.train.site_task import train_round

    config = msg.content[records.CONFIG]
    params = records.unflatten_params(config)
    started = time.process_time(), time.monotonic()
    result = train_round(
        site_dir=facts.site_dir,
        state_dir=facts.state_dir,
        site_id=facts.site_id,
        phase=str(config[records.PHASE]),
        index=int(config[records.INDEX]),
        seed=int(config[records.SEED]),
        run_key=str(config.get(records.RUN_KEY, "")),
        model_json=json.loads(str(params["model"])),
        train_json=json.loads(str(params["train"])),
        global_arrays=records.record_to_arrays(msg.content[records.ARRAYS]),
        client_dp_json=str(params.get("client_dp", "")),
    )
    metrics = {**result.metrics, records.COMPUTE_S: round(time.monotonic() - started[1], 3)}
    reply = records.build_reply(
        site_id=result.site_id,
        arrays=result.arrays,
        examples=result.examples,
        metrics=metrics,
        refused=result.refused,
    )
    return Message(reply, reply_to=msg)


def handle_evaluate(msg: Message, facts: SiteFacts) -> Message:
    from core.train.site_task import evaluate_round

    config = msg.content[records.CONFIG]
    params = records.unflatten_params(config)
    started = time.monotonic()
    site_id, metrics = evaluate_round(
        site_dir=facts.site_dir,
        site_id=facts.site_id,
        seed=int(config[records.SEED]),
        model_json=json.loads(str(params["model"])),
        global_arrays=records.record_to_arrays(msg.content[records.ARRAYS]),
        other_models=records.local_models_in(msg.content),
    )
    metrics[records.COMPUTE_S] = round(time.monotonic() - started, 3)
    reply = records.build_reply(site_id=site_id, arrays={}, examples={}, metrics=metrics)
    return Message(reply, reply_to=msg)


def _guarded(handler, msg: Message, facts: SiteFacts) -> Message:
    """Every exception a handler raises becomes an error reply (see `failure`), logged in full
    at the site; none reaches Flower, which would forward its raw text to the server."""
    try:
        return handler(msg, facts)
    except Exception as err:  # noqa: BLE001 - by design: nothing unredacted leaves the site
        _log_locally(facts, err)
        error = failure(facts, err)
        log.error("%s (details in %s)", error.reason, facts.state_dir / "errors.log")
        return Message(error, reply_to=msg)


def _register(client: ClientApp, facts_of) -> ClientApp:
    @client.query()
    def query(msg: Message, context: Context) -> Message:
        return _guarded(handle_query, msg, facts_of(context))

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        return _guarded(handle_train, msg, facts_of(context))

    @client.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return _guarded(handle_evaluate, msg, facts_of(context))

    return client


app = _register(ClientApp(), lambda context: facts_from_node_config(dict(context.node_config)))


def make_simulation_client_app(
    *, site_dirs: list[str], state_root: str, mods: list | None = None, threads: int = 0
) -> ClientApp:
    """A ClientApp for the embedded simulation: SuperNode i serves `site_dirs[i]`.

    `mods` are Flower client mods wrapped around every handler (e.g. a network-fault
    injector in the dropout tests); `threads` (> 0) caps torch's threads per site at the
    cores Ray reserved for it, so sites that train at once do not oversubscribe the CPUs."""

    def facts_of(context: Context) -> SiteFacts:
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        pid = int(context.node_config["partition-id"])
        site_dir = Path(site_dirs[pid])
        return SiteFacts(site_dir=site_dir, state_dir=Path(state_root) / site_dir.name, site_id="")

    return _register(ClientApp(mods=mods), facts_of)
