"""A site's local-only model, for the cross-site matrix (`evaluate.cross_site`).

"Local-only" = the model this site would have if it had trained alone with the federation's
own schedule: the same initial weights, `pretrain_rounds` rounds of `pretrain.steps` steps,
then `finetune_rounds` rounds of `finetune.epochs` epochs. It is trained by replaying the
federation's site rounds with this site as the only participant (FedAvg over one site is
local training), so it uses exactly the code and compute of the federated site rounds.

The optimizer state lives in `<state dir>/local-only/` and is wiped at the start: a site that
crashes half-way simply retrains (every seed is derived from the experiment seed, so the
retrained model is the same).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.config import FinetuneConfig, ModelConfig, PretrainConfig, load_config, to_dict
from core.federation.rundir import Phase
from core.train.site_round import LocalResult, finetune_round, pretrain_round

LOCAL_STATE_DIR = "local-only"


@dataclass
class LocalOnlyPlan:
    """The federation's schedule a site replays alone."""

    pretrain: PretrainConfig
    finetune: FinetuneConfig
    pretrain_rounds: int
    finetune_rounds: int

    @classmethod
    def from_json(cls, data: dict) -> LocalOnlyPlan:
        """The `train` parameter of a local-only instruction (see `to_json`)."""
        try:
            return cls(
                pretrain=load_config(PretrainConfig, data=data["pretrain"]),
                finetune=load_config(FinetuneConfig, data=data["finetune"]),
                pretrain_rounds=int(data["pretrain_rounds"]),
                finetune_rounds=int(data["finetune_rounds"]),
            )
        except KeyError as err:
            raise ValueError(f"local-only instruction lacks {err.args[0]!r}") from None

    def to_json(self) -> dict:
        return {
            "pretrain": to_dict(self.pretrain),
            "finetune": to_dict(self.finetune),
            "pretrain_rounds": self.pretrain_rounds,
            "finetune_rounds": self.finetune_rounds,
        }


def local_only_round(
    *,
    site,
    site_id: str,
    state_dir: Path,
    seed: int,
    model_config: ModelConfig,
    plan: LocalOnlyPlan,
    initial_arrays: dict[str, np.ndarray],
):
    """Train this site's local-only model from `initial_arrays`; returns a LocalResult with
    every group the site trained (its views' backbones, its joint's heads) and their counts."""
    own_state = state_dir / LOCAL_STATE_DIR
    shutil.rmtree(own_state, ignore_errors=True)
    state = dict(initial_arrays)
    examples: dict[str, int] = {}
    metrics: dict[str, float] = {}
    rounds = [(Phase.PRETRAIN, r) for r in range(plan.pretrain_rounds)]
    rounds += [(Phase.FINETUNE, r) for r in range(plan.finetune_rounds)]
    for index, (phase, _) in enumerate(rounds, start=1):
        step = pretrain_round if phase is Phase.PRETRAIN else finetune_round
        result = step(
            site=site,
            site_id=site_id,
            state_dir=own_state,
            index=index,
            seed=seed,
            model_config=model_config,
            global_arrays=state,
            train=plan.pretrain if phase is Phase.PRETRAIN else plan.finetune,
        )
        state.update(result.arrays)
        examples.update(result.examples)
        metrics.update({f"{phase.value}/{k}": v for k, v in result.metrics.items()})
    trained = {k: v for k, v in state.items() if any(k.startswith(g + ".") for g in examples)}
    return LocalResult(site_id=site_id, arrays=trained, examples=examples, metrics=metrics)
