"""A federation experiment (`configs/experiments/<name>.yaml`): phases, rounds, sites, rules.

One typed schema; unknown keys are rejected by OmegaConf. Flower's run_config carries only
the path of this file plus dotted overrides; everything else is read from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from core.config import FinetuneConfig, LrSchedule, PretrainConfig, check_ranges, load_config
from core.device import refuse_cuda_with_dp
from core.federation.config import AggregationConfig, ServerDPConfig
from core.federation.rundir import TRAINING_PHASES, Phase
from core.precision import refuse_bf16_with_dp
from core.tracking import Tracking
from core.train.finetune import check_finetune_config
from core.train.pretrain import check_pretrain_config
from core.train.privacy import ClientDPConfig
from core.views import parse_joint


@dataclass
class PhasePlan:
    """Rounds of one phase and who takes part."""

    rounds: int = 1
    # Fraction of the connected sites sampled each round (at least min_sites are sampled).
    fraction: float = 1.0
    # A round completes when at least this many sampled sites answered; otherwise it fails.
    min_sites: int = 1
    # A group is aggregated only when at least this many sites sent it (else it keeps its value).
    min_sites_per_group: int = 1
    # Seconds to wait for replies; a site that has not answered by then is counted as missing.
    timeout_s: float = 1800.0


@dataclass
class PretrainPhase(PhasePlan):
    # `train.steps` = local optimisation steps per view per round.
    train: PretrainConfig = field(default_factory=lambda: PretrainConfig(steps=20, batch_size=2))


@dataclass
class FinetunePhase(PhasePlan):
    # `train.epochs` = local epochs per round.
    train: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(epochs=2))


@dataclass
class EvaluatePhase:
    enabled: bool = True
    timeout_s: float = 1800.0
    min_sites: int = 1
    # Cross-site matrix: before evaluating, every site also trains a local-only model (the
    # federation's schedule, alone; one extra round that costs about a whole federation), and
    # every site evaluates the global model and each same-joint local-only model on its
    # held-out split. Writes RUN_DIR/cross_site.json, shown in report.html.
    cross_site: bool = False


@dataclass
class ExperimentConfig:
    name: str = "demo"
    seed: int = 0
    model_preset: str = "tiny"
    model_overrides: list[str] = field(default_factory=list)
    # Joints whose heads the global model carries.
    joints: list[str] = field(default_factory=lambda: ["knee"])
    # Simulation only: one site folder per simulated SuperNode (relative to the working dir).
    sites: list[str] = field(default_factory=list)
    # Optional global checkpoint (.safetensors) to start from instead of a fresh model.
    init_checkpoint: str = ""
    pretrain: PretrainPhase = field(default_factory=PretrainPhase)
    finetune: FinetunePhase = field(default_factory=FinetunePhase)
    evaluate: EvaluatePhase = field(default_factory=EvaluatePhase)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    server_dp: ServerDPConfig = field(default_factory=ServerDPConfig)
    # Sample-level DP-SGD at every site (Opacus), with each site's persistent budget.
    client_dp: ClientDPConfig = field(default_factory=ClientDPConfig)
    # Round metrics as TensorBoard event files in RUN_DIR/tensorboard/ (core/tracking.py);
    # `tensorboard` needs the optional extra: pip install 'orthofed[tracking]'.
    tracking: Tracking = Tracking.none

    def __post_init__(self) -> None:
        """Every coordinator mistake is refused here, before any engine or message starts."""
        self.joints = [parse_joint(j).value for j in self.joints]
        if not self.joints:
            raise ValueError("experiment.joints: list at least one joint (knee, ankle, shoulder)")
        for name in TRAINING_PHASES:
            check_phase_plan(getattr(self, name), key=name)
        check_evaluate_phase(self.evaluate)
        check_pretrain_config(self.pretrain.train, key="pretrain.train")
        check_finetune_config(self.finetune.train, key="finetune.train")
        check_site_list(self)
        train = self.pretrain.train
        if LrSchedule(train.lr_schedule) is LrSchedule.cosine and not train.lr_decay_steps:
            # the cosine spans the whole federation, not each round's local steps
            train.lr_decay_steps = max(1, self.pretrain.rounds * train.steps)
        dp = self.client_dp
        private_finetune = dp.enabled and Phase.FINETUNE in dp.phases and self.finetune.rounds > 0
        if private_finetune and self.finetune.train.mode != "linear":
            raise ValueError(
                f"finetune.train.mode={self.finetune.train.mode!r}: client DP fine-tuning supports "
                "mode linear only; set finetune.train.mode=linear or client_dp.phases=[pretrain]"
            )
        if self.evaluate.cross_site and (dp.enabled or self.server_dp.enabled):
            raise ValueError(
                "evaluate.cross_site sends each site's local-only model, which neither client_dp "
                "nor server_dp protects: set evaluate.cross_site=false or turn DP off"
            )
        if self.evaluate.cross_site and not self.evaluate.enabled:
            raise ValueError("evaluate.cross_site needs evaluate.enabled=true")
        for name in TRAINING_PHASES:
            if dp.enabled and name in dp.phases:
                refuse_bf16_with_dp(getattr(self, name).train.precision, key=f"{name}.train")
        if dp.enabled and Phase.PRETRAIN in dp.phases:
            refuse_cuda_with_dp(self.pretrain.train.device, key="pretrain.train")


def _positive_seconds(value: float) -> bool:
    return math.isfinite(value) and value > 0


def check_phase_plan(plan: PhasePlan, *, key: str) -> None:
    """One line naming the first wrong value of a training phase's plan."""
    checks = [
        (plan.rounds >= 0, "rounds", "must be >= 0 (0 skips the phase)", plan.rounds),
        (0.0 < plan.fraction <= 1.0, "fraction", "must be in (0, 1]", plan.fraction),
        (plan.min_sites >= 1, "min_sites", "must be >= 1", plan.min_sites),
        (
            plan.min_sites_per_group >= 1,
            "min_sites_per_group",
            "must be >= 1",
            plan.min_sites_per_group,
        ),
        (
            _positive_seconds(plan.timeout_s),
            "timeout_s",
            "must be a number of seconds > 0 (how long to wait for the sites' replies)",
            plan.timeout_s,
        ),
    ]
    check_ranges(checks, key=key)


def check_evaluate_phase(plan: EvaluatePhase) -> None:
    checks = [
        (plan.min_sites >= 1, "min_sites", "must be >= 1", plan.min_sites),
        (
            _positive_seconds(plan.timeout_s),
            "timeout_s",
            "must be a number of seconds > 0 (how long to wait for the sites' replies)",
            plan.timeout_s,
        ),
    ]
    check_ranges(checks, key="evaluate")


def check_site_list(experiment: ExperimentConfig) -> None:
    """The listed sites: each folder once, and enough of them for every phase's `min_sites`
    (a list is what the simulation runs; a deployment's sites are its connected SuperNodes,
    so an experiment without a list is checked against them when rounds start)."""
    sites = experiment.sites
    seen: dict[Path, str] = {}
    for entry in sites:
        folder = Path(entry).expanduser().resolve()
        if folder in seen:
            raise ValueError(
                f"sites: {seen[folder]!r} and {entry!r} are the same site folder; "
                "list each site once"
            )
        seen[folder] = entry
    if not sites:
        return
    plans = [(name, getattr(experiment, name)) for name in TRAINING_PHASES]
    needs = [
        (f"{name}.{field_}", getattr(plan, field_))
        for name, plan in plans
        if plan.rounds > 0
        for field_ in ("min_sites", "min_sites_per_group")
    ]
    if experiment.evaluate.enabled:
        needs.append(("evaluate.min_sites", experiment.evaluate.min_sites))
    for key, value in needs:
        if value > len(sites):
            raise ValueError(
                f"{key}={value} but the experiment lists {len(sites)} site(s): set {key} "
                f"to at most {len(sites)}, or list more sites"
            )


def load_experiment(path: str | Path, *, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment file with dotted `key=value` overrides (unknown keys rejected)."""
    return load_config(ExperimentConfig, path=path, overrides=overrides)
