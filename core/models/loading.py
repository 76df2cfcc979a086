"""Build a model from a checkpoint: its manifest carries the model config, the file the weights."""

from __future__ import annotations

from pathlib import Path

import torch

from core.checkpoint import Checkpoint, load_checkpoint, load_state
from core.config import ModelConfig, load_config
from core.models.registry import OrthoModel, build_model
from core.views import Joint, parse_joint


def model_config_of(checkpoint: Checkpoint, *, source: str | Path) -> ModelConfig:
    """The ModelConfig stored in a checkpoint manifest."""
    model = checkpoint.manifest.get("config", {}).get("model")
    if not isinstance(model, dict):
        raise ValueError(f"{source}: manifest has no model configuration")
    return load_config(ModelConfig, data=model)


def usable_tensors(model: OrthoModel, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Backbones plus this joint's heads; other joints' heads are left out (transfer)."""
    own = f"head.{model.joint.value}."
    return {k: t for k, t in tensors.items() if k.startswith("backbone.") or k.startswith(own)}


def heads_in(tensors: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Joint -> the task heads ("cls", "seg") a checkpoint's tensors hold."""
    heads: dict[str, list[str]] = {}
    for key in tensors:
        parts = key.split(".")
        if parts[0] == "head" and len(parts) > 2 and parts[2] not in heads.setdefault(parts[1], []):
            heads[parts[1]].append(parts[2])
    return heads


def _missing_heads_message(path: str | Path, joint: Joint, tensors: dict) -> str:
    names = {"cls": "classification", "seg": "segmentation"}
    held = heads_in(tensors)
    if not held:
        return (
            f"{path}: no {joint.value} heads in this checkpoint (it has backbones only, e.g. "
            "from pretraining): fine-tune it first ('orthofed finetune')"
        )
    has = "; ".join(
        f"{other} ({', '.join(names.get(h, h) for h in sorted(kinds))})"
        for other, kinds in sorted(held.items())
    )
    return (
        f"{path}: no {joint.value} heads in this checkpoint, it has heads for {has}: evaluate "
        f"it on a site of that joint or fine-tune it for {joint.value} first ('orthofed finetune')"
    )


def model_from_checkpoint(
    path: str | Path,
    *,
    joint: Joint | str | None = None,
    require_heads: bool = False,
    seed: int = 0,
) -> tuple[OrthoModel, Checkpoint]:
    """A model with the checkpoint's architecture and weights (heads fresh if absent,
    initialised from `seed`).

    `joint` defaults to the manifest's. With `require_heads`, a checkpoint without this
    joint's heads (e.g. straight from pretraining) is refused.
    """
    checkpoint = load_checkpoint(path)
    chosen = joint or checkpoint.manifest.get("joint")
    if not chosen:
        raise ValueError(f"{path}: manifest names no joint; pass one")
    model = build_model(
        model_config_of(checkpoint, source=path), joint=parse_joint(str(chosen)), seed=seed
    )
    tensors = usable_tensors(model, checkpoint.tensors)
    if require_heads and not any(k.startswith(f"head.{model.joint.value}.") for k in tensors):
        raise ValueError(_missing_heads_message(path, model.joint, checkpoint.tensors))
    load_state(model, tensors, partial=True)
    return model, checkpoint
