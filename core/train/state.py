"""Resumable training state: tensors in safetensors, everything else in JSON, never pickle.

`state.json` is written last and names the tensor file it belongs to (`state-<step>.safetensors`),
so an interruption at any moment leaves either the old or the new state, never a mix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from core.atomic import write_bytes_atomic, write_json_atomic
from core.checkpoint import load_tensors, tensors_to_bytes

STATE_JSON = "state.json"


def optimizer_to_flat(optimizer: torch.optim.Optimizer, *, prefix: str) -> tuple[dict, dict]:
    """Split an optimizer state dict into safetensors-ready tensors and JSON-ready metadata."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(
    optimizer: torch.optim.Optimizer, *, tensors: dict[str, torch.Tensor], meta: dict, prefix: str
) -> None:
    """Inverse of `optimizer_to_flat`: reload the optimizer's state."""
    entries: dict[int, dict[str, Any]] = {}
    head = prefix + "."
    for key, value in tensors.items():
        if key.startswith(head):
            index, name = key[len(head) :].split(".", 1)
            entries.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        entries.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": entries, "param_groups": meta["param_groups"]})


def save_state(run_dir: Path, *, step: int, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write `state-<step>.safetensors`, then `state.json` pointing at it; drop older files."""
    name = f"state-{step:08d}.safetensors"
    write_bytes_atomic(run_dir / name, tensors_to_bytes(tensors))
    write_json_atomic(run_dir / STATE_JSON, {"step": step, "tensors": name, **meta})
    for old in run_dir.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_state_files(run_dir: Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """(meta, tensors) of the last saved state, or None when the run has none."""
    path = run_dir / STATE_JSON
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: resume state is damaged ({err}); start a new run") from None
    return meta, load_tensors(run_dir / meta["tensors"])
