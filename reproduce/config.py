"""The reproduction's configuration (`configs/reproduce.yaml`, `configs/reproduce-quick.yaml`).

One typed schema, loaded through `core.config.load_config` (unknown keys and wrong types are
a ValueError naming the key). `fingerprint` names everything a cached cell depends on but its
key does not: all of the config except `seeds`, `label_fractions` and `privacy.epsilons`
(cell keys carry the seed, the fraction and the epsilon), so adding seeds, fractions or
epsilons reuses the finished cells.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from core.config import LrSchedule, load_config, to_dict
from core.views import parse_joint

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIGS_DIR / "reproduce.yaml"
QUICK_CONFIG = CONFIGS_DIR / "reproduce-quick.yaml"
KNEE = "knee"


@dataclass
class SiteSpec:
    """One synthetic hospital: a phantom profile (its name is the site id) and a case count."""

    profile: str = "knee-3t"
    joint: str = KNEE
    cases: int = 40


@dataclass
class PhantomConfig:
    seed: int = 7
    heldout_fraction: float = 0.3
    # Optional overrides of every profile's acquisition (0 = the profile's own value); the
    # quick mode shrinks the images so that generating them takes seconds.
    size: int = 0
    slices: int = 0
    supersample: int = 0
    sites: list[SiteSpec] = field(
        default_factory=lambda: [
            SiteSpec("knee-3t", "knee", 60),
            SiteSpec("knee-15t", "knee", 60),
            SiteSpec("ankle-std", "ankle", 40),
            SiteSpec("shoulder-std", "shoulder", 40),
        ]
    )


@dataclass
class ModelSpec:
    preset: str = "tiny"
    # Dotted overrides relative to the model config, as in an experiment's model_overrides.
    overrides: list[str] = field(default_factory=list)


@dataclass
class FederationSpec:
    """Per-round budgets of every federation (the local and centralized baselines get the same
    compute: see reproduce/plan.py)."""

    pretrain_rounds: int = 5
    pretrain_steps: int = 30  # local steps per view per round
    pretrain_batch: int = 4
    pretrain_lr: float = 1e-4
    pretrain_lr_schedule: str = "constant"  # constant | cosine (core.config.LrSchedule)
    pretrain_warmup_steps: int = 0  # over the whole run's pretrain_rounds x pretrain_steps
    finetune_rounds: int = 2
    finetune_epochs: int = 5  # local epochs per round (linear probe, as client DP needs)
    finetune_batch: int = 8
    finetune_lr: float = 2e-3
    # A floor in optimizer steps per round (the experiment's finetune.train.min_steps; 0 =
    # epochs alone): 5 epochs of ~5 batches are ~25 steps a round.
    finetune_min_steps: int = 0
    # The same floor for the client-DP federations (DP-SGD steps; their noise is planned for it).
    dp_finetune_min_steps: int = 0

    def min_steps(self, *, private: bool) -> int:
        """The fine-tuning step floor per round of a federation with or without client DP."""
        return self.dp_finetune_min_steps if private else self.finetune_min_steps


@dataclass
class FinetuneSpec:
    """Local fine-tuning of a backbone (label efficiency, transfer, scratch)."""

    linear_epochs: int = 10
    partial_epochs: int = 5
    full_epochs: int = 5
    batch_size: int = 8
    lr: float = 2e-3  # head lr (the backbone's is backbone_lr_scale x this)
    # A floor in optimizer steps for small label sets (train.min_steps; 0 = epochs alone).
    min_steps: int = 0
    # "Scratch" = random-init backbone trained end to end (`full`); its backbone lr is
    # scratch_backbone_lr_scale x the head lr (1.0: a normal lr, not the 0.05 of fine-tuning).
    scratch_backbone_lr_scale: float = 1.0


@dataclass
class BaselineSpec:
    """Supervised baselines trained from scratch at each label fraction, on the subsets the
    heads draw: row 5's MONAI BasicUNet (reproduce/baselines.py) on the knee pool's masks and
    row 1's multi-view 3D CNN (reproduce/cnn_baseline.py) on its labels."""

    unet_steps: int = 400
    unet_batch: int = 4
    unet_lr: float = 2e-3
    cnn_steps: int = 600
    cnn_batch: int = 8
    cnn_lr: float = 1e-3


@dataclass
class PrivacySpec:
    # Whole-federation epsilon targets (pretraining + fine-tuning, per site); infinity is the
    # main federation without client DP.
    epsilons: list[float] = field(default_factory=lambda: [8.0, 3.0])
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "rdp"


@dataclass
class ReproduceConfig:
    seeds: int = 3
    label_fractions: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.1])
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    federation: FederationSpec = field(default_factory=FederationSpec)
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)
    privacy: PrivacySpec = field(default_factory=PrivacySpec)
    baselines: BaselineSpec = field(default_factory=BaselineSpec)

    def sites_of(self, joint: str) -> list[str]:
        return [s.profile for s in self.phantom.sites if s.joint == joint]


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"reproduce config: {name} must be > 0, got {value}")


# Keys that may be 0 (or are not numbers): checked on their own in `validate`.
NOT_POSITIVE = (
    "pretrain_lr_schedule",
    "pretrain_warmup_steps",
    "min_steps",
    "finetune_min_steps",
    "dp_finetune_min_steps",
)


def _positives(section: str, values: object) -> dict[str, float]:
    return {f"{section}.{k}": v for k, v in vars(values).items() if k not in NOT_POSITIVE}


def validate(config: ReproduceConfig) -> ReproduceConfig:
    """Raise ValueError (naming the key) for settings the runner cannot use."""
    fed, ft, ph = config.federation, config.finetune, config.phantom
    schedules = [s.value for s in LrSchedule]
    if fed.pretrain_lr_schedule not in schedules:
        raise ValueError(
            f"reproduce config: federation.pretrain_lr_schedule must be one of {schedules}, "
            f"got {fed.pretrain_lr_schedule!r}"
        )
    for name, value in (
        ("federation.pretrain_warmup_steps", fed.pretrain_warmup_steps),
        ("federation.finetune_min_steps", fed.finetune_min_steps),
        ("federation.dp_finetune_min_steps", fed.dp_finetune_min_steps),
        ("finetune.min_steps", ft.min_steps),
    ):
        if value < 0:
            raise ValueError(f"reproduce config: {name} must be >= 0, got {value}")
    _check_positive(
        seeds=config.seeds,
        **_positives("federation", fed),
        **_positives("finetune", ft),
        **{f"baselines.{k}": v for k, v in vars(config.baselines).items()},
        **{f"privacy.{k}": v for k, v in vars(config.privacy).items() if k == "max_grad_norm"},
    )
    if not config.label_fractions or any(not 0 < f <= 1 for f in config.label_fractions):
        raise ValueError("reproduce config: label_fractions must be fractions in (0, 1]")
    if not 0 < ph.heldout_fraction < 1:
        raise ValueError("reproduce config: phantom.heldout_fraction must be in (0, 1)")
    names = [s.profile for s in ph.sites]
    if len(set(names)) != len(names):
        raise ValueError(f"reproduce config: phantom.sites lists a profile twice: {names}")
    for site in ph.sites:
        parse_joint(site.joint)
        if site.cases < 4:
            raise ValueError(f"reproduce config: site {site.profile} needs at least 4 cases")
    if len(config.sites_of(KNEE)) < 2:
        raise ValueError("reproduce config: list at least two knee sites (the federation)")
    if any(not (0 < e and math.isfinite(e)) for e in config.privacy.epsilons):
        raise ValueError("reproduce config: privacy.epsilons must be finite numbers > 0")
    if not 0 < config.privacy.delta < 1:
        raise ValueError("reproduce config: privacy.delta must be in (0, 1)")
    return config


def load_reproduce_config(
    path: str | Path | None = None, *, quick: bool = False, seeds: int | None = None
) -> ReproduceConfig:
    """The config file (default: reproduce.yaml, or reproduce-quick.yaml with `quick`), with
    `seeds` overriding the file's seed count."""
    source = Path(path) if path else (QUICK_CONFIG if quick else DEFAULT_CONFIG)
    overrides = [f"seeds={int(seeds)}"] if seeds is not None else None
    return validate(load_config(ReproduceConfig, path=source, overrides=overrides))


def fingerprint(config: ReproduceConfig) -> str:
    """Short hash of what cached cells depend on beyond their keys (see the module doc)."""
    data = to_dict(config)
    for name in ("seeds", "label_fractions"):
        data.pop(name)
    data["privacy"].pop("epsilons")
    floors = ("finetune_min_steps", "dp_finetune_min_steps")  # added later: while both are 0
    if not any(data["federation"][k] for k in floors):  # nothing changes, so earlier caches
        for key in floors:  # stay valid
            data["federation"].pop(key)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
