"""Local (non-federated) training and evaluation used by the cells, with the core loops.

Pretraining runs resume from their own saved state; fine-tuning runs are scratch folders
deleted once their model is evaluated (their metrics are the cell's result).
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from core.config import FinetuneRunConfig, PretrainRunConfig
from core.models.loading import model_from_checkpoint
from core.models.predict import evaluate, evaluate_by_group
from core.models.presets import load_model_config, load_run_config, preprocess_for
from core.train.loops import run_finetuning, run_pretraining
from reproduce.config import ModelSpec

KEPT_METRICS = (
    "macro_auc",
    "macro_auc_ci",
    "auc",
    "mean_dice",
    "dice",
    "n_cases",
    "n_labeled",
    "n_masks",
)


def model_overrides(model: ModelSpec) -> list[str]:
    return [f"model.{item}" for item in model.overrides]


def model_config(model: ModelSpec):
    return load_model_config(model.preset, overrides=list(model.overrides))


def pretrain(
    cases: Sequence,
    *,
    model: ModelSpec,
    run_dir: Path,
    steps: int,
    batch: int,
    lr: float,
    lr_schedule: str,
    warmup_steps: int,
    seed: int,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Pretrain the view backbones on the non-held-out `cases` (steps=0: the random init)."""
    config = load_run_config(
        PretrainRunConfig,
        preset=model.preset,
        train="pretrain",
        overrides=[
            *model_overrides(model),
            f"train.steps={steps}",
            f"train.batch_size={batch}",
            f"train.lr={lr}",
            f"train.lr_schedule={lr_schedule}",
            f"train.warmup_steps={warmup_steps}",
            f"train.seed={seed}",
            f"train.log_every={max(1, steps // 20)}",
            f"train.checkpoint_every={max(1, steps // 4)}",
        ],
    )
    result = run_pretraining(
        cases,
        config=config,
        run_dir=run_dir,
        resume=True,
        preprocess_key=preprocess_for(config.model).key(),
        info=dict(info or {}),
    )
    return {
        "checkpoint": str(result.checkpoint),
        "steps": result.step,
        "final_loss": result.losses,
        "volumes": result.num_examples,
    }


def slim(report: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics the tables use (the full report has thresholds, calibration, ...)."""
    return {k: report[k] for k in KEPT_METRICS if k in report}


def evaluate_checkpoint(path: str | Path, *, joint: str, cases: Sequence) -> dict[str, Any]:
    """Metrics of the checkpoint's `joint` model on the held-out cases among `cases`."""
    model, _ = model_from_checkpoint(path, joint=joint, require_heads=True)
    return slim(evaluate(model, cases))


def evaluate_checkpoint_by_group(
    path: str | Path, *, joint: str, cases: Sequence, groups: Mapping[str, Collection[str]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`evaluate_checkpoint` on all of `cases`, and the same metrics per group of case ids
    (one pass through the model)."""
    model, _ = model_from_checkpoint(path, joint=joint, require_heads=True)
    pooled, by_group = evaluate_by_group(model, cases, groups=groups)
    return slim(pooled), {name: slim(report) for name, report in by_group.items()}


def finetune(
    cases: Sequence,
    *,
    init: str | Path,
    joint: str,
    model: ModelSpec,
    run_dir: Path,
    train: Mapping[str, Any],
) -> tuple[Path, int]:
    """Fine-tune `init` for `joint` on the non-held-out `cases`; `train` holds FinetuneConfig
    values (mode, epochs, lr, ...; what it leaves out is configs/train/finetune.yaml's).
    Returns the checkpoint and the number of training cases."""
    config = load_run_config(
        FinetuneRunConfig,
        preset=model.preset,
        train="finetune",
        overrides=[
            *model_overrides(model),
            *(f"train.{k}={v}" for k, v in train.items()),
        ],
    )
    result = run_finetuning(
        cases,
        init=init,
        config=config,
        joint=joint,
        run_dir=run_dir,
        preprocess_key=preprocess_for(config.model).key(),
    )
    return result.checkpoint, result.num_examples


def finetune_and_evaluate(
    cases: Sequence,
    *,
    init: str | Path,
    joint: str,
    model: ModelSpec,
    run_dir: Path,
    train: Mapping[str, Any],
    evaluations: Mapping[str, Sequence] | None = None,
    groups: Mapping[str, Collection[str]] | None = None,
) -> dict[str, Any]:
    """Fine-tune, then evaluate on the held-out `cases` (key "metrics", and with `groups`
    also per group of those cases' ids, key "per_site"), or instead on each case list of
    `evaluations` (key "per_site"); the fine-tuning folder is removed after."""
    if evaluations and groups:
        raise ValueError("give evaluations (other case lists) or groups (of cases), not both")
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        checkpoint, n_train = finetune(
            cases, init=init, joint=joint, model=model, run_dir=run_dir, train=train
        )
        result: dict[str, Any] = {"n_train": n_train, "train": dict(train), "init": str(init)}
        if groups:
            result["metrics"], result["per_site"] = evaluate_checkpoint_by_group(
                checkpoint, joint=joint, cases=cases, groups=groups
            )
        elif not evaluations:
            result["metrics"] = evaluate_checkpoint(checkpoint, joint=joint, cases=cases)
        else:
            result["per_site"] = {
                name: evaluate_checkpoint(checkpoint, joint=joint, cases=site_cases)
                for name, site_cases in evaluations.items()
            }
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result
