"""A federation experiment (`configs/experiments/<name>.yaml`): phases, rounds, sites, rules.

One typed schema; unknown keys are rejected by OmegaConf. Flower's run_config carries only
the path of this file plus dotted overrides; everything else is read from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.config import FinetuneConfig, LrSchedule, PretrainConfig, load_config
from core.federation.config import AggregationConfig, ServerDPConfig
from core.precision import refuse_bf16_with_dp
from core.tracking import Tracking
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
        self.joints = [parse_joint(j).value for j in self.joints]
        if not self.joints:
            raise ValueError("experiment.joints: list at least one joint (knee, ankle, shoulder)")
        for name in ("pretrain", "finetune"):
            plan: PhasePlan = getattr(self, name)
            if plan.rounds < 0 or plan.min_sites < 1 or not 0.0 < plan.fraction <= 1.0:
                raise ValueError(
                    f"experiment.{name}: rounds must be >= 0, min_sites >= 1, fraction in (0, 1]"
                )
        check_pretrain_config(self.pretrain.train, key="pretrain.train")
        train = self.pretrain.train
        if LrSchedule(train.lr_schedule) is LrSchedule.cosine and not train.lr_decay_steps:
            # the cosine spans the whole federation, not each round's local steps
            train.lr_decay_steps = max(1, self.pretrain.rounds * train.steps)
        dp = self.client_dp
        private_finetune = dp.enabled and "finetune" in dp.phases and self.finetune.rounds > 0
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
        for name in ("pretrain", "finetune"):
            if dp.enabled and name in dp.phases:
                refuse_bf16_with_dp(getattr(self, name).train.precision, key=f"{name}.train")


def load_experiment(path: str | Path, *, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment file with dotted `key=value` overrides (unknown keys rejected)."""
    return load_config(ExperimentConfig, path=path, overrides=overrides)
