"""Checkpoints: safetensors weights + a JSON manifest beside them, written atomically.

`x.safetensors` holds the tensors (flat `group.param` keys), `x.json` the manifest: preset,
full config, preprocessing key, package versions, groups, creation time. The manifest is
written last, so a manifest that exists always describes complete weights. Loading never
unpickles anything.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from core.atomic import write_bytes_atomic, write_json_atomic
from core.federation.groups import group_of

# /2: multi-scale segmentation head (`heads.seg_taps`) and attention+mean+max pooling in the
# classification head. Checkpoints of /1 have heads of another shape: refused, never mis-loaded.
FORMAT = "orthofed-checkpoint/2"
OLDER_FORMATS = ("orthofed-checkpoint/1",)
_VERSIONED = ("orthofed", "torch", "monai", "safetensors", "numpy")
_SHOWN = 5  # mismatching keys named in an error message


@dataclass(frozen=True)
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    manifest: dict[str, Any]


def manifest_path(weights_path: str | Path) -> Path:
    """The JSON manifest that belongs to a `.safetensors` file."""
    return Path(weights_path).with_suffix(".json")


def groups_of(keys: list[str] | dict[str, Any]) -> list[str]:
    """Groups present in `keys`, in first-seen order."""
    return list(dict.fromkeys(group_of(k) for k in keys))


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def tensors_to_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """Safetensors bytes of detached, contiguous CPU copies (shared storage is not allowed)."""
    return save_safetensors_bytes(
        {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    )


def save_checkpoint(
    path: str | Path,
    *,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    preset: str,
    preprocess_key: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `path` (.safetensors) then its manifest; returns the manifest path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: checkpoint files must end in .safetensors")
    manifest = {
        "format": FORMAT,
        "preset": preset,
        "config": config,
        "preprocess_key": preprocess_key,
        "versions": package_versions(),
        "groups": groups_of(list(tensors)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    write_bytes_atomic(path, tensors_to_bytes(tensors))
    json_path = manifest_path(path)
    write_json_atomic(json_path, manifest, sort_keys=True)
    return json_path


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in safetensors file `path`, from its header alone (which
    safetensors caps at 100 MB); never reads a tensor. ValueError unless the header parses
    and its tensors exactly cover the file (a truncated or padded file, a header length or
    a tensor larger than the file)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({err})") from None


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (never unpickles); ValueError when unreadable. The
    header is checked first, so a damaged or hostile file is refused before its body is
    read into memory."""
    path = Path(path)
    weight_shapes(path)
    try:
        return load_safetensors_bytes(path.read_bytes())
    except (SafetensorError, ValueError) as err:
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({err})") from None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Weights and manifest of a checkpoint written by `save_checkpoint`."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: pass the checkpoint's .safetensors file")
    tensors = load_tensors(path)
    return Checkpoint(tensors=tensors, manifest=load_manifest(path))


def load_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of checkpoint `path` (.safetensors), checked to be a current one."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: pass the checkpoint's .safetensors file")
    json_path = manifest_path(path)
    if not json_path.is_file():
        raise ValueError(f"{path}: manifest {json_path.name} is missing (incomplete checkpoint?)")
    try:
        manifest = json.loads(json_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{json_path}: manifest is not valid JSON ({err})") from None
    if manifest.get("format") in OLDER_FORMATS:
        raise ValueError(
            f"{path}: written by an older orthofed ({manifest['format']}) whose task heads "
            f"this version cannot load ({FORMAT}): pretrain and fine-tune it again"
        )
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{json_path}: not an orthofed checkpoint manifest")
    return manifest


def _named(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def state_mismatch(
    expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], *, partial: bool = False
) -> list[str]:
    """Problems loading `given` into a module whose state is `expected` (empty = compatible).

    With `partial`, whole groups absent from `given` are allowed (e.g. new task heads).
    """
    missing = [k for k in expected if k not in given]
    if partial:
        present = set(groups_of(list(given)))
        missing = [k for k in missing if group_of(k) in present]
    unexpected = sorted(k for k in given if k not in expected)
    shapes = [
        f"{k} {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_named(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_named(unexpected)}")
    if shapes:
        problems.append(f"shape differences: {_named(shapes)}")
    return problems


def load_state(
    module: nn.Module, tensors: dict[str, torch.Tensor], *, partial: bool = False
) -> None:
    """Copy `tensors` into `module`; ValueError naming the mismatch if architectures differ."""
    expected = module.state_dict()
    problems = state_mismatch(expected, tensors, partial=partial)
    if problems:
        raise ValueError("checkpoint does not fit this model: " + "; ".join(problems))
    module.load_state_dict(tensors, strict=not partial)
