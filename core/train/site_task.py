"""What a ClientApp asks `core` to do at a site, framework-free: who are you (`site_info`),
train one round of a phase (`train_round`), evaluate models on the held-out split
(`evaluate_round`). The training itself is core/train/site_round.py (federated rounds) and
core/train/local_only.py (a site's local-only model, for the cross-site matrix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.config import FinetuneConfig, ModelConfig, PretrainConfig, load_config
from core.data.manifest import load_site
from core.eval.shared_metrics import flatten_metrics, shared_evaluation
from core.federation.rundir import Phase, parse_phase
from core.models.predict import evaluate
from core.train.local_only import LocalOnlyPlan, local_only_round
from core.train.privacy import parse_client_dp
from core.train.round_state import run_state_dir
from core.train.site_round import (
    LocalResult,
    finetune_round,
    model_with_global,
    pretrain_round,
    site_cases,
)

LOCAL_ONLY = Phase.LOCAL_ONLY  # the phase that trains a site's local-only model (cross-site)


def site_info(*, site_dir: Path, site_id: str = "") -> dict[str, Any]:
    """Aggregate facts a site shares when asked who it is (no case ids, no PHI)."""
    site = load_site(site_dir)
    cases = [p.name for p in site.case_dirs()]
    held = sum(site.is_heldout(c) for c in cases)
    return {
        "site-id": site_id or site.site_id,
        "joint": site.joint.value,
        "cases": len(cases),
        "heldout": held,
    }


def train_round(
    *,
    site_dir: Path,
    state_dir: Path,
    site_id: str,
    phase: str,
    index: int,
    seed: int,
    run_key: str,
    model_json: dict,
    train_json: dict,
    global_arrays: dict[str, np.ndarray],
    client_dp_json: str = "",
) -> LocalResult:
    """Dispatch one training round of `phase` at this site (`client_dp_json`: the
    experiment's `client_dp` settings as JSON; empty = no sample-level DP; `run_key`: the
    federation run's key, under which state between pretraining rounds is kept)."""
    phase = parse_phase(phase, choices=(Phase.PRETRAIN, Phase.FINETUNE, LOCAL_ONLY))
    if phase is Phase.PRETRAIN or run_key:
        run_state_dir(state_dir, run_key)  # refuse a missing or unsafe key before any work
    client_dp = parse_client_dp(client_dp_json)
    site = load_site(site_dir)
    sid = site_id or site.site_id
    model_config = load_config(ModelConfig, data=model_json)
    rounds = {
        Phase.PRETRAIN: (pretrain_round, PretrainConfig),
        Phase.FINETUNE: (finetune_round, FinetuneConfig),
    }
    if phase in rounds:
        run_round, schema = rounds[phase]
        return run_round(
            site=site,
            site_id=sid,
            state_dir=state_dir,
            index=index,
            seed=seed,
            model_config=model_config,
            train=load_config(schema, data=train_json),
            global_arrays=global_arrays,
            client_dp=client_dp,
            run_key=run_key,
        )
    return local_only_round(  # LOCAL_ONLY: the one phase left that parse_phase lets through
        site=site,
        site_id=sid,
        state_dir=state_dir,
        seed=seed,
        model_config=model_config,
        plan=LocalOnlyPlan.from_json(train_json),
        initial_arrays=global_arrays,
    )


CROSS_PREFIX = "cross/"


def evaluate_round(
    *,
    site_dir: Path,
    site_id: str,
    seed: int,
    model_json: dict,
    global_arrays: dict[str, np.ndarray],
    other_models: dict[str, dict[str, np.ndarray]] | None = None,
) -> tuple[str, dict[str, float]]:
    """Evaluate the global model on this site's held-out split; with `other_models` (name ->
    arrays: the other sites' local-only models, for the cross-site matrix) also each of them,
    reported as `cross/<name>/macro_auc`."""
    site = load_site(site_dir)
    model_config = load_config(ModelConfig, data=model_json)
    cases = site_cases(site, model_config)

    def metrics_of(arrays: dict[str, np.ndarray]) -> dict[str, float]:
        model, _ = model_with_global(
            site=site,
            model_config=model_config,
            seed=seed,
            global_arrays=arrays,
        )
        return shared_evaluation(flatten_metrics(evaluate(model, cases)))

    metrics = metrics_of(global_arrays)
    for name, arrays in (other_models or {}).items():
        value = metrics_of(arrays).get("macro_auc")
        if value is not None:
            metrics[f"{CROSS_PREFIX}{name}/macro_auc"] = value
    return site_id or site.site_id, metrics
