"""Packed weights on the wire (fl_client/records.py): one buffer per (group, dtype) instead
of one Flower object per tensor, and a layout that is checked before anything is sliced."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fl_client import records


def _state(views=("sagittal", "coronal")) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    state = {}
    for view in views:
        state[f"backbone.{view}.conv.weight"] = rng.standard_normal((4, 2, 3)).astype(np.float32)
        state[f"backbone.{view}.conv.bias"] = rng.standard_normal(4).astype(np.float32)
        state[f"backbone.{view}.steps"] = np.array(7, dtype=np.int64)  # a 0-d int buffer
    state["head.knee.cls.proj.weight"] = rng.standard_normal((3, 5)).astype(np.float64)
    state["head.knee.cls.empty"] = np.zeros((0, 4), np.float32)
    return state


@pytest.mark.parametrize("views", [("sagittal",), ("sagittal", "coronal", "axial")])
def test_round_trip_keeps_order_values_shapes_and_dtypes(views):
    state = _state(views)
    record = records.arrays_to_record(state)
    packs = [key for key in record if key.startswith(records.PACK_PREFIX)]
    # one buffer per (group, dtype): float32 and int64 per view, float32 and float64 head
    assert len(packs) == 2 * len(views) + 2 and len(record) == len(packs) + 1
    back = records.record_to_arrays(record)
    assert list(back) == list(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
        assert back[key].tobytes() == value.tobytes(), key
    assert records.record_to_arrays(ArrayRecord()) == {}


def _with_layout(record: ArrayRecord, layout) -> ArrayRecord:
    data = np.frombuffer(json.dumps(layout).encode(), dtype=np.uint8).copy()
    record[records.LAYOUT] = Array(data)
    return record


def _layout(record: ArrayRecord) -> list:
    return json.loads(record[records.LAYOUT].numpy().tobytes().decode())


def _lie(kind: str) -> ArrayRecord:
    record = records.arrays_to_record(_state())
    layout = _layout(record)
    if kind == "no layout":
        del record[records.LAYOUT]
        return record
    if kind == "garbage":
        record[records.LAYOUT] = Array(np.frombuffer(b"\xff{[", dtype=np.uint8).copy())
        return record
    if kind == "sizes":
        layout[0][2] = [400, 2, 3]  # claims more values than its buffer holds
    elif kind == "duplicate":
        layout.append(layout[0])
    elif kind == "no buffer":
        layout[0][1] = "pack/backbone.sagittal/<c16"
    elif kind == "another group's buffer":
        coronal = next(e for e in layout if e[0].startswith("backbone.coronal."))
        layout[0][1] = coronal[1]
    return _with_layout(record, layout)


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("no layout", "without a layout"),
        ("garbage", "unreadable layout"),
        ("sizes", "layout says"),
        ("duplicate", "twice"),
        ("no buffer", "names no buffer"),
        ("another group's buffer", "another group"),
    ],
)
def test_a_lying_layout_is_one_clear_error(kind, says):
    with pytest.raises(ValueError, match="malformed reply") as err:
        records.record_to_arrays(_lie(kind))
    assert says in str(err.value)


def test_a_reply_parses_back_to_its_groups():
    state = _state()
    content = records.build_reply(
        site_id="knee-a",
        arrays=state,
        examples={"backbone.sagittal": 3, "backbone.coronal": 3, "head.knee.cls": 2},
        metrics={"compute_s": 1.5},
    )
    parsed = records.parse_reply(content)
    assert parsed["site_id"] == "knee-a" and parsed["metrics"] == {"compute_s": 1.5}
    assert list(parsed["arrays"]) == list(state)
