"""Build a model from a checkpoint: its manifest carries the model config, the file the weights."""

from __future__ import annotations

from pathlib import Path

import torch

from core.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_manifest,
    load_state,
    state_mismatch,
    weight_shapes,
)
from core.config import ModelConfig, load_config
from core.models.registry import OrthoModel, build_model
from core.views import Joint, parse_joint


def model_config_of(checkpoint: Checkpoint, *, source: str | Path) -> ModelConfig:
    """The ModelConfig stored in a checkpoint manifest."""
    config = checkpoint.manifest.get("config")
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        raise ValueError(f"{source}: manifest has no model configuration")
    return load_config(ModelConfig, data=model)


def checked_model_config(
    checkpoint: Checkpoint, *, source: str | Path, joint: Joint | str | None = None
) -> ModelConfig:
    """The manifest's ModelConfig, after checking that the checkpoint's tensors fit the model
    it describes (backbones, and `joint`'s heads when given). The model is laid out on the
    meta device for this, so a manifest that lies (e.g. channels far larger than the
    weights) is refused before anything of its size is allocated."""
    config = model_config_of(checkpoint, source=source)
    chosen = parse_joint(str(joint)) if joint is not None else None
    with torch.device("meta"):
        layout = OrthoModel(config, joint=chosen or Joint.KNEE)
    kept = ("backbone.",) + ((f"head.{chosen.value}.",) if chosen else ())
    expected = {k: t for k, t in layout.state_dict().items() if k.startswith(kept)}
    given = {k: t for k, t in checkpoint.tensors.items() if k.startswith(kept)}
    problems = state_mismatch(expected, given, partial=True)
    if problems:
        raise ValueError(
            f"{source}: checkpoint does not fit the model its manifest describes: "
            + "; ".join(problems)
        )
    return config


def checked_manifest(path: str | Path) -> dict:
    """The manifest of checkpoint `path`, after checking from the weights file's header
    alone (no tensor is read, no model built) that the weights are whole and fit the model
    the manifest describes: what `orthofed info` vouches for."""
    manifest = load_manifest(path)
    shapes = {k: torch.empty(s, device="meta") for k, s in weight_shapes(path).items()}
    header = Checkpoint(tensors=shapes, manifest=manifest)
    for joint in heads_in(shapes) or [None]:
        checked_model_config(header, source=path, joint=joint)
    return manifest


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
    joint = parse_joint(str(chosen))
    config = checked_model_config(checkpoint, source=path, joint=joint)
    model = build_model(config, joint=joint, seed=seed)
    tensors = usable_tensors(model, checkpoint.tensors)
    if require_heads and not any(k.startswith(f"head.{model.joint.value}.") for k in tensors):
        raise ValueError(_missing_heads_message(path, model.joint, checkpoint.tensors))
    load_state(model, tensors, partial=True)
    return model, checkpoint
