"""Wire keys and conversions between Flower records and plain numpy/dict values.

Defined once here and imported by both the ClientApp and the ServerApp. Only weights and
aggregate numbers travel: never images, labels, case ids or DICOM tags.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from core.federation.groups import group_of

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


# Packing. Flower 1.42 moves every Array of a message as its own object, one HTTP request
# per object and hop (SuperLink <-> SuperNode <-> ClientApp), so a model of 618 tensors cost
# thousands of requests per round. A weight group's tensors of one dtype travel instead as
# one flat buffer, "pack/<group>/<dtype>", plus LAYOUT: a JSON list, in the mapping's order,
# of [key, pack, shape]. Unpacking checks the layout against the buffers before slicing, so
# a malformed or lying reply is one ValueError ("malformed reply: ...").
LAYOUT = "layout"
PACK_PREFIX = "pack/"


def _pack_name(key: str, dtype: np.dtype) -> str:
    return f"{PACK_PREFIX}{group_of(key)}/{dtype.str}"


def arrays_to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Ordered numpy mapping -> ArrayRecord of packed buffers and their layout (Flower
    serialises each buffer with np.save, no pickle)."""
    parts: dict[str, list[np.ndarray]] = {}
    layout = []
    for key, value in arrays.items():
        value = np.asarray(value)
        pack = _pack_name(key, value.dtype)
        parts.setdefault(pack, []).append(value.reshape(-1))
        layout.append([key, pack, list(value.shape)])
    record = {LAYOUT: Array(np.frombuffer(json.dumps(layout).encode(), dtype=np.uint8).copy())}
    for pack, chunks in parts.items():
        record[pack] = Array(np.ascontiguousarray(np.concatenate(chunks)))
    return ArrayRecord(record)


def record_layout(record: ArrayRecord) -> list[tuple[str, str, tuple[int, ...]]]:
    """The checked layout of a packed record: [(key, pack, shape)], sizes matching buffers."""
    if LAYOUT not in record:
        raise ValueError("malformed reply: arrays without a layout")
    try:
        entries = json.loads(record[LAYOUT].numpy().tobytes().decode())
        layout = [(str(k), str(p), tuple(int(n) for n in shape)) for k, p, shape in entries]
    except (ValueError, TypeError) as err:
        raise ValueError(f"malformed reply: unreadable layout ({err})") from None
    if len({key for key, _, _ in layout}) != len(layout):
        raise ValueError("malformed reply: a key appears twice in the layout")
    need: dict[str, int] = {}
    for key, pack, shape in layout:
        if pack not in record or any(n < 0 for n in shape):
            raise ValueError(f"malformed reply: layout of {key!r} names no buffer {pack!r}")
        if not pack.startswith(f"{PACK_PREFIX}{group_of(key)}/"):
            raise ValueError(f"malformed reply: {key!r} is packed in another group's {pack!r}")
        need[pack] = need.get(pack, 0) + int(np.prod(shape, dtype=np.int64))
    for pack, count in need.items():
        found = int(np.prod(record[pack].shape, dtype=np.int64))
        if found != count:
            raise ValueError(f"malformed reply: {pack} holds {found} values, layout says {count}")
    return layout


def unpack(
    record: ArrayRecord,
    entries: list[tuple[str, str, tuple[int, ...]]],
    *,
    offsets: Mapping[str, int],
) -> dict[str, np.ndarray]:
    """The arrays of `entries` (a checked layout, or one group's part of it) from `record`;
    `offsets` = `layout_offsets` of the whole layout."""
    buffers: dict[str, np.ndarray] = {}
    out = {}
    for key, pack, shape in entries:
        if pack not in buffers:
            buffers[pack] = record[pack].numpy().reshape(-1)
        start = offsets[key]
        size = int(np.prod(shape, dtype=np.int64))
        out[key] = buffers[pack][start : start + size].reshape(shape).copy()
    return out


def layout_offsets(layout: list[tuple[str, str, tuple[int, ...]]]) -> dict[str, int]:
    """Where each key starts in its pack."""
    position: dict[str, int] = {}
    offsets = {}
    for key, pack, shape in layout:
        offsets[key] = position.get(pack, 0)
        position[pack] = offsets[key] + int(np.prod(shape, dtype=np.int64))
    return offsets


def record_to_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Packed ArrayRecord -> ordered numpy mapping (np.load with allow_pickle=False inside
    Flower); ValueError on a malformed layout."""
    if not len(record):
        return {}
    layout = record_layout(record)
    return unpack(record, layout, offsets=layout_offsets(layout))


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
