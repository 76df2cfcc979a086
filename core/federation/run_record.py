"""What a federation run is (`RUN_DIR/run.json`): written when it starts, checked on resume.

`run.json` holds the run's key (a random id sent to the sites with every training instruction,
so that their state files belong to this run only), the digest of the run's resolved
configuration (the experiment plus the model configuration its preset resolves to) and that
configuration flattened to dotted keys, so that `--resume` with a different configuration is
refused in one line naming the keys that differ. Only how long to wait for sites and where
round metrics go (`MAY_CHANGE_ON_RESUME`) may change between a run and its resumption.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.atomic import write_json_atomic
from core.config import ModelConfig, to_dict
from core.federation.rundir import HISTORY, LATEST, RunDir
from core.paths import check_out_folder

RUN_RECORD = "run.json"
FORMAT = "orthofed-federation-run"
# Keys a resumed run may change: they decide how long the server waits, not what is trained.
MAY_CHANGE_ON_RESUME = frozenset(
    {"pretrain.timeout_s", "finetune.timeout_s", "evaluate.timeout_s", "tracking"}
)
# Keys added after runs were recorded, each with the value that reproduces the behaviour from
# before it: a run recorded without one resumes as if it had that value. A key whose absence
# meant another behaviour (model.heads.seg_timestep: such runs read t = 10, the presets now 2)
# is not listed, so such a run refuses to resume under the new value.
ADDED_KEYS = {"model.heads.pool_grid": 0, "model.heads.seg_stem_kernel": 3}
MAX_NAMED = 5  # differing keys shown in the refusal (then "and N more")
MAX_VALUE_CHARS = 40

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRecord:
    run_key: str  # random hex id, fixed for the run's whole life (resumptions included)
    digest: str  # of the configuration without MAY_CHANGE_ON_RESUME keys
    config: dict[str, Any]  # dotted key -> value (the whole resolved configuration)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "run_key": self.run_key,
            "config_digest": self.digest,
            "config": self.config,
        }


def flatten(tree: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {dotted.key: value}; lists and scalars are values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=name + "."))
        else:
            flat[name] = value
    return flat


def resolved_config(experiment: Any, *, model_config: ModelConfig) -> dict[str, Any]:
    """The experiment and its resolved model configuration (`model.*`) as dotted keys. The
    preset name and model overrides are left out: the model they resolve to is what counts
    (and a changed preset file shows as the `model.*` keys it changed)."""
    flat = {
        k: v
        for k, v in flatten(to_dict(experiment)).items()
        if k not in ("model_preset", "model_overrides")
    }
    flat.update(flatten(to_dict(model_config), prefix="model."))
    return flat


def _compared(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in MAY_CHANGE_ON_RESUME}


def config_digest(config: Mapping[str, Any]) -> str:
    blob = json.dumps(_compared(config), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def differing_keys(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Keys (outside MAY_CHANGE_ON_RESUME) whose values differ or that only one side has."""
    old, new = _compared(stored), _compared(current)
    return sorted(k for k in old.keys() | new.keys() if old.get(k, ...) != new.get(k, ...))


def _short(value: Any) -> str:
    text = "(absent)" if value is ... else json.dumps(value, default=str)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def describe_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """`key run -> now, ...` for the first MAX_NAMED differing keys, on one line."""
    keys = differing_keys(stored, current)
    shown = [
        f"{k} {_short(stored.get(k, ...))} -> {_short(current.get(k, ...))}"
        for k in keys[:MAX_NAMED]
    ]
    more = f" and {len(keys) - MAX_NAMED} more" if len(keys) > MAX_NAMED else ""
    return ", ".join(shown) + more


def new_record(config: Mapping[str, Any]) -> RunRecord:
    return RunRecord(run_key=uuid.uuid4().hex, digest=config_digest(config), config=dict(config))


def read_record(root: Path) -> RunRecord | None:
    """The run's record, or None when the folder has none; ValueError when it is damaged."""
    path = Path(root) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunRecord(
            run_key=str(data["run_key"]),
            digest=str(data["config_digest"]),
            config=dict(data["config"]),
        )
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: damaged run record ({err}); cannot resume from it") from None


def write_record(root: Path, record: RunRecord) -> Path:
    path = Path(root) / RUN_RECORD
    write_json_atomic(path, record.to_dict())
    return path


def has_started(root: Path) -> bool:
    """True when the folder holds a federation run (its record, or rounds of an older one)."""
    root = Path(root)
    return any((root / name).is_file() for name in (RUN_RECORD, LATEST, HISTORY))


def check_run(run: RunDir, *, config: Mapping[str, Any], resume: bool) -> RunRecord:
    """The record of the run about to start or resume in `run`, or a one-line ValueError.

    A new run refuses a folder that already holds one; a resumed run refuses a folder that
    holds none and a configuration other than the one the run started with (even a finished
    run's). Writes nothing: the CLI checks before any engine starts, and the ServerApp writes
    a new run's record (`write_record`) once its initial model is built."""
    root = check_out_folder(run.root, option="--run-dir")
    if not resume:
        if has_started(root):
            raise ValueError(
                f"{root} already holds a run: pass --resume to continue it, or another --run-dir"
            )
        return new_record(config)
    stored = read_record(root)
    if stored is None:
        if not run.exists():
            raise ValueError(
                f"--resume: {root} holds no started federation (no {RUN_RECORD}); check "
                "--run-dir, or leave out --resume to start a new run there"
            )
        # a run started before run records existed: adopt the current configuration
        log.warning("%s has no %s: its configuration cannot be checked", root, RUN_RECORD)
        return new_record(config)
    recorded = {**ADDED_KEYS, **stored.config}
    if config_digest(config) not in (stored.digest, config_digest(recorded)):
        changes = describe_differences(recorded, config) or "its digest differs"
        raise ValueError(
            f"--resume: {root} was started with another configuration ({changes}); resume with "
            f"the run's configuration (see {root / RUN_RECORD}) or start a new --run-dir"
        )
    return stored
