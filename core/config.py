"""Typed configuration: one dataclass per concern, values from YAML via OmegaConf.

`OmegaConf.structured` rejects unknown keys and wrong types; `load_config` turns those
errors into one ValueError line naming the file and the key, so a coordinator can fix it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from core.device import Device
from core.precision import Precision

T = TypeVar("T")


class LrSchedule(StrEnum):
    """`train.lr_schedule` for pretraining: after `warmup_steps` of linear warm-up, the
    learning rate stays at `lr` (constant) or follows a cosine down to a tenth of it."""

    constant = "constant"
    cosine = "cosine"


@dataclass
class PreprocessConfig:
    """How a view volume becomes a network input.

    Reference: central 16 slices, 256x256, intensities in [-1, 1].
    """

    slices: int = 16
    size: int = 256
    # Percentiles used for min-max scaling; (0, 100) is plain min-max as in the reference code.
    lower_percentile: float = 0.0
    upper_percentile: float = 100.0

    def key(self) -> str:
        """Stable short hash naming a cache built with these parameters."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class DataConfig:
    """Rules for reading and validating a site's exports."""

    min_slices: int = 8
    max_obliquity_deg: float = 30.0
    # Relative deviation of slice gaps from their median that counts as uneven spacing.
    spacing_tolerance: float = 0.1
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)


def _format_error(err: OmegaConfBaseException, source: str) -> str:
    key = getattr(err, "full_key", None) or getattr(err, "key", None)
    msg = str(err).splitlines()[0]
    where = f" (key '{key}')" if key else ""
    return f"{source}: invalid configuration{where}: {msg}"


def load_config(
    schema: type[T],
    *,
    path: str | Path | None = None,
    data: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> T:
    """Merge schema defaults, a YAML file, a dict and dotted `key=value` overrides.

    Returns an instance of `schema`. Raises ValueError naming the file/key on unknown keys,
    bad types or unreadable YAML.
    """
    source = str(path) if path else "config"
    try:
        merged = OmegaConf.structured(schema)
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ValueError(f"{p}: configuration file not found")
            merged = OmegaConf.merge(merged, OmegaConf.load(p))
        if data:
            merged = OmegaConf.merge(merged, OmegaConf.create(data))
        for item in overrides or []:
            merged = OmegaConf.merge(merged, _parse_override(item))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise ValueError(_format_error(err, source)) from None
    except Exception as err:  # yaml parse errors and the like
        if isinstance(err, ValueError):
            raise
        raise ValueError(f"{source}: cannot read configuration: {_first_line(err)}") from None


def _first_line(err: Exception) -> str:
    """YAML errors span several lines (what, then `in "<file>", line L` marks): one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(line for line in lines if not line.startswith("in ")) or type(err).__name__


def _parse_override(item: str):
    """One dotted `key=value` override; a malformed one is named in one line."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key=value")
    try:
        return OmegaConf.from_dotlist([item])
    except Exception as err:  # YAML errors of the value (an unclosed list, a bad quote)
        raise ValueError(
            f"override {item!r}: value is not valid YAML ({_first_line(err)})"
        ) from None


def check_ranges(checks: list[tuple[bool, str, str, Any]], *, key: str) -> None:
    """Refuse the first failed (ok, name, rule, value) check in one line naming that value,
    e.g. `train.lr must be > 0, got -1.0` (never one line for several values)."""
    for ok, name, rule, value in checks:
        if not ok:
            raise ValueError(f"{key}.{name} {rule}, got {value}")


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-dict view of a config dataclass (for manifests and JSON)."""
    container = OmegaConf.to_container(OmegaConf.structured(config), resolve=True, enum_to_str=True)
    return container  # type: ignore[return-value]


# --- Model and training schemas (view backbones, features, heads, pretraining, fine-tuning) ---


@dataclass
class BackboneConfig:
    """One MONAI DiffusionModelUNet per view (3D, 1 channel in/out, no conditioning)."""

    channels: list[int] = field(default_factory=lambda: [64, 64, 128, 128, 256])
    attention_levels: list[bool] = field(default_factory=lambda: [False, False, False, False, True])
    num_res_blocks: int = 1
    norm_num_groups: int = 32
    num_head_channels: int = 64
    use_flash_attention: bool = True


@dataclass
class DiffusionConfig:
    """DDPM noise schedule and training target (reference: T=1000, cosine, epsilon, MSE)."""

    num_train_timesteps: int = 1000
    schedule: str = "cosine"
    prediction_type: str = "epsilon"


@dataclass
class FeatureTap:
    """One feature source: noise to `timestep`, hook `block` ("middle", "down.<i>", "up.<i>")."""

    timestep: int = 100
    block: str = "middle"


@dataclass
class FeatureConfig:
    """Which (timestep, block) pairs feed the classification head; fused by channel concat."""

    taps: list[FeatureTap] = field(default_factory=lambda: [FeatureTap()])
    seed: int = 0
    # Classification features averaged over this many noise draws per case (draw 0 is the
    # seed's own, so 1 reads exactly what checkpoints before this key read); averaging as in
    # DIFT (Tang et al., 2023) shrinks the noise that t = 100 adds to small findings.
    noise_draws: int = 1


@dataclass
class HeadConfig:
    """Task heads: multi-view classification and (knee) segmentation."""

    view_dim: int = 512
    # > 0: each view's pooling also averages a pool_grid^3 partition of the volume (0 = the
    # reference's attention + mean, and max, only)
    pool_grid: int = 0
    # Segmentation reads several blocks (decoder + a shallow encoder block) at a small t,
    # brought to the input grid with the image itself (see core/models/heads.py for why).
    # Empty = the default for the backbone: its last three decoder blocks and first encoder
    # block at t = `seg_timestep` (core.models.backbone.default_seg_taps).
    seg_taps: list[FeatureTap] = field(default_factory=list)
    # The presets set 2 (docs/feature-study.md section 11: thin structures gain at 10% of the
    # masks); 10 here is what checkpoints and runs written before this key existed used, so
    # that they keep reading the features their heads were trained on.
    seg_timestep: int = 10
    seg_proj: int = 8  # channels each tap is projected to before upsampling
    seg_channels: int = 16  # width of the head's 3x3x3 convolutions
    seg_context_pool: int = 4  # the context branch works at 1/4 of the grid (0 = off)
    seg_stem_kernel: int = 3  # kernel of the stem that fuses image and taps (1 or 3)
    seg_ce_weight: float = 0.2
    seg_dice_weight: float = 1.0
    seg_loss_weight: float = 1.0


@dataclass
class ModelConfig:
    """A model preset: input grid, backbone, diffusion schedule, features and heads."""

    name: str = "paper"
    input_slices: int = 16
    input_size: int = 256
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    heads: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class PretrainConfig:
    """Self-supervised DDPM pretraining of each view backbone (reference: Adam 1e-4, batch 10)."""

    steps: int = 21500
    batch_size: int = 10
    lr: float = 1e-4
    # Linear warm-up over the first `warmup_steps` steps, then `lr_schedule` (see LrSchedule).
    lr_schedule: LrSchedule = LrSchedule.constant
    warmup_steps: int = 0
    # Cosine horizon in optimizer steps; 0 = `steps` (a local run). A federation sets it to
    # rounds x steps, so the decay spans the whole run rather than restarting every round.
    lr_decay_steps: int = 0
    ema_decay: float = 0.995
    # EMA warm-up: effective decay min(ema_decay, (1 + n) / (10 + n)); keeps short runs useful.
    ema_warmup: bool = True
    seed: int = 0
    # auto: bf16 autocast where the hardware has bf16 units, fp32 elsewhere (core/precision.py).
    precision: Precision = Precision.auto
    # auto: the site's CUDA GPU when PyTorch sees one, the CPU elsewhere (core/device.py).
    device: Device = Device.auto
    log_every: int = 10
    checkpoint_every: int = 500
    # FedProx proximal term toward the round's global weights (0 = plain FedAvg). Used in
    # federated rounds only; a local `orthofed pretrain` run has no global model to pull to.
    proximal_mu: float = 0.0


@dataclass
class FinetuneConfig:
    """Task fine-tuning (reference: linear probe, head lr 5e-4, 10 epochs; here 5e-3 and up to
    100 epochs with early stopping, which the segmentation head needs; see
    configs/train/finetune.yaml, whose values local runs read; experiments start from these)."""

    mode: str = "linear"
    epochs: int = 100
    # A floor in optimizer steps: small label sets run more epochs until they reach it (a
    # budget in epochs alone gives 6 masks 100 steps). 0 here, so a federation's budget stays
    # the coordinator's rounds x epochs; local runs read configs/train/finetune.yaml's value.
    min_steps: int = 0
    batch_size: int = 8
    lr: float = 5e-3
    # Backbone lr = backbone_lr_scale x lr in `partial` and `full` modes (reference: 0.05).
    backbone_lr_scale: float = 0.05
    label_fraction: float = 1.0
    seed: int = 0
    # auto: bf16 autocast for head (and backbone) training where the hardware has bf16
    # units, fp32 elsewhere; cached frozen features are always computed in fp32.
    precision: Precision = Precision.auto
    weight_decay: float = 0.01
    # Early stopping: this fraction of the training cases (never held-out ones) is kept
    # aside for validation; each head ends at the epoch of its lowest validation loss.
    # 0 = no validation split (every training case trains; the last epoch is kept).
    val_fraction: float = 0.2
    # Stop after this many epochs without a better validation loss (0 = run every epoch).
    patience: int = 20
    # Linear mode: frozen-backbone features are cached on disk in the site's cache dir,
    # keyed by a digest of the backbone weights, taps and noise seed (reused across epochs,
    # rounds, label fractions and evaluation).
    cache_features: bool = True
    # FedProx proximal term toward the weights fine-tuning starts from (in a federation: the
    # round's global model; locally: the --init checkpoint). 0 = plain FedAvg.
    proximal_mu: float = 0.0


@dataclass
class PretrainRunConfig:
    """Everything a pretraining run needs; saved in its checkpoint manifest."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: PretrainConfig = field(default_factory=PretrainConfig)


@dataclass
class FinetuneRunConfig:
    """Everything a fine-tuning run needs; saved in its checkpoint manifest."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: FinetuneConfig = field(default_factory=FinetuneConfig)
