"""The global model of a federation as a flat, ordered `key -> numpy array` mapping.

It carries the three view backbones (shared by all joints) and the heads of every joint the
experiment names. Backbones are identical across joints for a given seed, so they are taken
once; each joint contributes its own head groups.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from core.atomic import load_arrays
from core.checkpoint import FORMAT, groups_of, package_versions
from core.config import ModelConfig, to_dict
from core.federation.experiment import ExperimentConfig
from core.model_card import federated_training
from core.models.presets import load_model_config, preprocess_for
from core.models.registry import build_model


def model_config_for(experiment: ExperimentConfig) -> ModelConfig:
    return load_model_config(experiment.model_preset, overrides=list(experiment.model_overrides))


def to_numpy_state(module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def initial_global_state(
    experiment: ExperimentConfig, *, model_config: ModelConfig
) -> dict[str, np.ndarray]:
    """Fresh global weights (seeded), or the experiment's `init_checkpoint` when set."""
    state: dict[str, np.ndarray] = {}
    for joint in experiment.joints:
        model = build_model(model_config, joint=joint, seed=experiment.seed)
        for key, value in to_numpy_state(model).items():
            if key.startswith("backbone.") and key in state:
                continue
            state[key] = value
    if experiment.init_checkpoint:
        state = _overlay_checkpoint(state, experiment.init_checkpoint)
    return state


def check_init_checkpoint(experiment: ExperimentConfig, *, model_config: ModelConfig) -> None:
    """Refuse an `init_checkpoint` that is missing, unreadable or of another model before a
    federation starts (by building the initial state once, as the ServerApp will)."""
    if not experiment.init_checkpoint:
        return
    if not Path(experiment.init_checkpoint).is_file():
        raise ValueError(
            f"init_checkpoint {experiment.init_checkpoint}: no such file (paths are read on "
            "the machine that runs the ServerApp)"
        )
    initial_global_state(experiment, model_config=model_config)


def _overlay_checkpoint(state: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    """Take every array of `state` that the checkpoint holds (shapes must match)."""
    loaded = load_arrays(path)
    out = dict(state)
    for key, value in loaded.items():
        if key not in state:
            continue
        if value.shape != state[key].shape:
            raise ValueError(
                f"{path}: {key} has shape {value.shape}, the experiment's model expects "
                f"{state[key].shape} (different model preset?)"
            )
        out[key] = value.astype(state[key].dtype)
    if not any(k in loaded for k in state):
        raise ValueError(f"{path}: no weights of this model (wrong checkpoint?)")
    return out


def round_manifest(
    experiment: ExperimentConfig,
    *,
    model_config: ModelConfig,
    phase: str,
    round_: int,
    keys: list[str],
    history: list[dict] | None = None,
) -> dict:
    """The JSON manifest of a global round checkpoint: a full orthofed checkpoint manifest
    (format, preset, model config, preprocessing key, versions, groups), so that
    `orthofed evaluate|finetune` take `global/round-NNNN.safetensors` like a local one.
    `history` (the run's records up to this round) becomes its `training` summary (rounds,
    sites, examples per group, epsilon; see core/model_card.py)."""
    return {
        "format": FORMAT,
        "kind": "federated",
        "experiment": experiment.name,
        "phase": phase,
        "round": round_,
        "model_preset": experiment.model_preset,
        "preset": model_config.name,
        "config": {"model": to_dict(model_config)},
        "preprocess_key": preprocess_for(model_config).key(),
        "joints": list(experiment.joints),
        "versions": package_versions(),
        "groups": groups_of(keys),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "training": federated_training(history or []),
    }
