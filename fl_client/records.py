"""Wire keys and conversions between Flower records and plain numpy/dict values.

Defined once here and imported by both the ClientApp and the ServerApp. Only weights and
aggregate numbers travel: never images, labels, case ids or DICOM tags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

# RecordDict keys
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
STATUS = "status"
LOCAL_MODEL_PREFIX = "local/"  # "local/<site>": a local-only model in an evaluate message

# ConfigRecord keys sent by the server
PHASE = "phase"
ROUND = "round"
INDEX = "index"
SEED = "seed"
# The federation run's key (RUN_DIR/run.json): sites keep state between rounds under it, so
# that a state dir outliving one federation never restores another's state.
RUN_KEY = "run-key"
PARAMS = "params"  # prefix: "params.<name>" carries one scalar hyper-parameter

# MetricRecord keys sent by a site
NUM_EXAMPLES = "num-examples"  # Flower's conventional weight key (total over groups)
EXAMPLES_PREFIX = "examples/"  # "examples/<group>" = training cases behind that group
COMPUTE_S = "compute_s"

# ConfigRecord keys sent by a site
SITE_ID = "site-id"
REFUSED = "refused"  # non-empty: the site declined to train, and why (e.g. privacy budget)


def arrays_to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Ordered numpy mapping -> ArrayRecord (Flower serialises with np.save, no pickle)."""
    return ArrayRecord({key: Array(np.ascontiguousarray(value)) for key, value in arrays.items()})


def record_to_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """ArrayRecord -> ordered numpy mapping (np.load with allow_pickle=False inside Flower)."""
    return {key: array.numpy() for key, array in record.items()}


def flatten_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Scalar hyper-parameters -> `params.<name>` ConfigRecord entries (scalars only)."""
    flat: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, bool | int | float | str):
            flat[f"{PARAMS}.{name}"] = value
        elif value is None:
            continue
        else:
            raise ValueError(
                f"hyper-parameter {name!r} must be a scalar, got {type(value).__name__}"
            )
    return flat


def unflatten_params(config: Mapping[str, Any]) -> dict[str, Any]:
    prefix = f"{PARAMS}."
    return {key[len(prefix) :]: value for key, value in config.items() if key.startswith(prefix)}


def build_instruction(
    *,
    arrays: Mapping[str, np.ndarray],
    phase: str,
    round_: int,
    index: int,
    seed: int,
    params: Mapping[str, Any],
    run_key: str = "",
) -> RecordDict:
    """A training/evaluation instruction (`run_key` may be empty only where the site keeps
    no state between rounds: local-only training, evaluation)."""
    config = ConfigRecord(
        {
            PHASE: phase,
            ROUND: round_,
            INDEX: index,
            SEED: seed,
            RUN_KEY: run_key,
            **flatten_params(params),
        }
    )
    return RecordDict({ARRAYS: arrays_to_record(arrays), CONFIG: config})


def build_reply(
    *,
    site_id: str,
    arrays: Mapping[str, np.ndarray],
    examples: Mapping[str, int],
    metrics: Mapping[str, float],
    refused: str = "",
) -> RecordDict:
    """A site's reply: its trained groups, per-group example counts, numeric metrics."""
    metric_values: dict[str, int | float] = {NUM_EXAMPLES: int(sum(examples.values()))}
    metric_values.update({f"{EXAMPLES_PREFIX}{g}": int(n) for g, n in examples.items()})
    for name, value in metrics.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"metric {name!r} must be a number")
        metric_values[name] = float(value) if isinstance(value, float) else int(value)
    return RecordDict(
        {
            ARRAYS: arrays_to_record(arrays),
            METRICS: MetricRecord(metric_values),
            STATUS: ConfigRecord({SITE_ID: site_id, REFUSED: refused}),
        }
    )


def parse_reply(content: RecordDict, *, with_arrays: bool = True) -> dict[str, Any]:
    """Reply -> {"site_id", "arrays", "examples": {group: n}, "metrics": {...}, "refused"}.

    `with_arrays=False` leaves "arrays" empty (the caller reads `content[ARRAYS]` itself).
    """
    if STATUS not in content or METRICS not in content:
        raise ValueError("malformed reply: missing status or metrics record")
    status = content[STATUS]
    metrics = dict(content[METRICS])
    examples = {
        key[len(EXAMPLES_PREFIX) :]: int(value)
        for key, value in metrics.items()
        if key.startswith(EXAMPLES_PREFIX)
    }
    other = {
        key: value
        for key, value in metrics.items()
        if not key.startswith(EXAMPLES_PREFIX) and key != NUM_EXAMPLES
    }
    arrays = record_to_arrays(content[ARRAYS]) if with_arrays and ARRAYS in content else {}
    return {
        "site_id": str(status.get(SITE_ID, "")),
        "arrays": arrays,
        "examples": examples,
        "metrics": other,
        "refused": str(status.get(REFUSED, "")),
    }


def local_models_in(content: RecordDict) -> dict[str, dict[str, np.ndarray]]:
    """The local-only models an evaluate message carries (cross-site matrix), by site."""
    return {
        key[len(LOCAL_MODEL_PREFIX) :]: record_to_arrays(value)
        for key, value in content.items()
        if key.startswith(LOCAL_MODEL_PREFIX)
    }


def record_bytes(content: RecordDict) -> int:
    """Payload size of the arrays in a RecordDict (for bytes_up/bytes_down in history)."""
    return sum(rec.count_bytes() for rec in content.values() if isinstance(rec, ArrayRecord))
