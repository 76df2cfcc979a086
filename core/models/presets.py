"""Model presets and run configs: `configs/model/<preset>.yaml` + `configs/train/<kind>.yaml`
(+ `configs/train/<kind>.<preset>.yaml`, a preset's own training defaults, where it exists).

A preset is a name (`tiny`, `paper`) or a path to a YAML file. Overrides are dotted
`key=value` strings on the run config, e.g. `model.backbone.channels=[8,16]` or `train.lr=1e-3`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf

from core.config import ModelConfig, PreprocessConfig, load_config
from core.diffusion.ddpm import check_diffusion
from core.models.backbone import parse_block, seg_taps, validate_backbone, validate_input_shape

T = TypeVar("T")
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


def preset_path(preset: str) -> Path:
    """The YAML file of a preset name or path; ValueError listing the known presets."""
    candidate = Path(preset)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ValueError(f"{candidate}: model preset file not found")
        return candidate
    path = CONFIGS_DIR / "model" / f"{preset}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (CONFIGS_DIR / "model").glob("*.yaml")))
        raise ValueError(f"unknown model preset {preset!r}: use one of {known} or a .yaml path")
    return path


def _yaml(path: Path) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}  # type: ignore[return-value]
    except Exception as err:  # yaml syntax errors and the like
        raise ValueError(f"{path}: cannot read configuration: {err}") from None


def load_model_config(preset: str = "tiny", *, overrides: list[str] | None = None) -> ModelConfig:
    """A validated ModelConfig from a preset (+ dotted overrides relative to the model)."""
    config = load_config(ModelConfig, path=preset_path(preset), overrides=overrides)
    validate_model_config(config)
    return config


def load_run_config(
    schema: type[T], *, preset: str, train: str, overrides: list[str] | None = None
) -> T:
    """A run config (`model` + `train`) from a preset, a train YAML name and overrides."""
    train_path = CONFIGS_DIR / "train" / f"{train}.yaml"
    data = {"model": _yaml(preset_path(preset)), "train": _yaml(train_path)}
    # A named preset may tune the training defaults for its hardware class (the reference
    # values in configs/train/<kind>.yaml are for GPU sites): configs/train/<kind>.<preset>.yaml.
    tuned = CONFIGS_DIR / "train" / f"{train}.{preset}.yaml"
    if tuned.is_file():
        data["train"].update(_yaml(tuned))
    config = load_config(schema, data=data, overrides=overrides)
    validate_model_config(config.model)  # type: ignore[attr-defined]
    return config


def validate_model_config(config: ModelConfig) -> None:
    """Raise ValueError naming the key when a preset cannot build a working model."""
    validate_backbone(config.backbone)
    validate_input_shape(config)
    check_diffusion(config.diffusion)
    if not config.features.taps:
        raise ValueError("model.features.taps is empty: give at least one {timestep, block}")
    if config.features.noise_draws < 1:
        raise ValueError(
            f"model.features.noise_draws: {config.features.noise_draws}; give 1 or more"
        )
    if config.heads.pool_grid < 0:
        raise ValueError(f"model.heads.pool_grid: {config.heads.pool_grid}; give 0 (off) or more")
    if config.heads.seg_stem_kernel not in (1, 3):
        raise ValueError(
            f"model.heads.seg_stem_kernel: {config.heads.seg_stem_kernel}; give 1 or 3"
        )
    if not 0 <= config.heads.seg_timestep < config.diffusion.num_train_timesteps:
        raise ValueError(
            f"model.heads.seg_timestep: {config.heads.seg_timestep} outside "
            f"[0, {config.diffusion.num_train_timesteps})"
        )
    levels = len(config.backbone.channels)
    for where, tap in [("features.taps", t) for t in config.features.taps] + [
        ("heads.seg_taps", t) for t in seg_taps(config)
    ]:
        parse_block(tap.block, levels=levels)
        if not 0 <= tap.timestep < config.diffusion.num_train_timesteps:
            raise ValueError(
                f"model.{where}: timestep {tap.timestep} outside "
                f"[0, {config.diffusion.num_train_timesteps})"
            )


def preprocess_for(config: ModelConfig) -> PreprocessConfig:
    """The preprocessing whose output matches the model's input grid."""
    return PreprocessConfig(slices=config.input_slices, size=config.input_size)
