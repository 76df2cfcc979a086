"""A tiny model config and random cases shared by the model, training and checkpoint tests
(8x32x32 inputs, channels 8/16)."""

from __future__ import annotations

import json

import numpy as np

from core.data.cache import CaseTensors
from core.views import LABELS, VIEWS, Joint

TINY_MODEL = {
    "name": "test",
    "input_slices": 8,
    "input_size": 32,
    "backbone": {
        "channels": [8, 16],
        "attention_levels": [False, True],
        "norm_num_groups": 8,
        "num_head_channels": 8,
    },
    "heads": {"view_dim": 16, "seg_proj": 8, "seg_channels": 8},
}


def model_overrides(config: dict = TINY_MODEL, *, prefix: str = "model") -> list[str]:
    """`config` as command-line overrides, e.g. model.backbone.channels=[8,16]."""
    items = []
    for key, value in config.items():
        if isinstance(value, dict):
            items += model_overrides(value, prefix=f"{prefix}.{key}")
        else:
            items.append(f"{prefix}.{key}={json.dumps(value, separators=(',', ':'))}")
    return items


def random_case(
    case_id: str, *, joint: Joint, rng: np.random.Generator, missing=(), heldout=False
) -> CaseTensors:
    views = {
        v: rng.uniform(-1, 1, (1, 8, 32, 32)).astype(np.float16) for v in VIEWS if v not in missing
    }
    return CaseTensors(
        case_id=case_id,
        views=views,
        labels=(rng.random(len(LABELS[joint])) < 0.5).astype(np.float32),
        mask=rng.integers(0, 12, (8, 32, 32)).astype(np.uint8) if joint == Joint.KNEE else None,
        heldout=heldout,
    )
