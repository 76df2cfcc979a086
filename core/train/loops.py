"""Run-directory training loops: pretraining (logs, checkpoints, resume) and fine-tuning.

A pretraining run directory holds `checkpoint.safetensors` + `checkpoint.json` (EMA backbone
weights), `state.json` + `state-<step>.safetensors` (everything needed to resume),
`log.jsonl` (one record per logged step and view) and `loss.png` (its per-view curves).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from core.checkpoint import save_checkpoint
from core.config import FinetuneRunConfig, PretrainRunConfig, to_dict
from core.model_card import threshold_source, thresholds_entry
from core.models.loading import model_from_checkpoint
from core.models.predict import training_thresholds
from core.reporting.pretrain_plot import write_loss_plot
from core.tracking import (
    TENSORBOARD_DIR,
    Tracking,
    log_finetune_epoch,
    log_pretrain_step,
    open_tracker,
)
from core.train.finetune import finetune
from core.train.pretrain import Pretrainer, training_volumes
from core.train.progress import training_progress
from core.train.state import STATE_JSON, load_state_files, save_state

CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "log.jsonl"


@dataclass
class PretrainResult:
    step: int
    losses: dict[str, float]
    checkpoint: Path
    num_examples: dict[str, int]


def _trim_log(path: Path, *, step: int) -> None:
    """Drop log records after `step` (written after the state we resume from)."""
    if not path.is_file():
        return
    kept = [
        line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step
    ]
    path.write_text("".join(line + "\n" for line in kept))


def _append_log(path: Path, records: list[dict]) -> None:
    with path.open("a") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def _save_all(trainer: Pretrainer, *, run_dir: Path, preprocess_key: str, info: dict) -> Path:
    tensors, meta = trainer.state()
    meta["model_config"] = to_dict(trainer.config.model)
    save_state(run_dir, step=trainer.step, tensors=tensors, meta=meta)
    num_examples = {f"backbone.{v.value}": len(a) for v, a in trainer.volumes.items() if a}
    save_checkpoint(
        run_dir / CHECKPOINT_NAME,
        tensors=trainer.backbone_weights(ema=True),
        config=to_dict(trainer.config),
        preset=trainer.config.model.name,
        preprocess_key=preprocess_key,
        extra={
            "kind": "pretrain",
            "step": trainer.step,
            "trained_groups": list(num_examples),
            "num_examples": num_examples,
            **info,
        },
    )
    return run_dir / CHECKPOINT_NAME


def check_pretrain_out(run_dir: Path, *, resume: bool) -> None:
    """Refuse to start a new pretraining run over a saved one (cheap: before data is read)."""
    if not resume and (Path(run_dir) / STATE_JSON).is_file():
        raise ValueError(
            f"{run_dir} already holds a training state: pass --resume to continue it, "
            "or choose a new --out folder"
        )


def check_finetune_out(run_dir: Path, *, force: bool) -> None:
    """Refuse to replace a checkpoint already in `run_dir` unless `force` (like pretraining,
    which refuses a run folder holding a run)."""
    existing = Path(run_dir) / CHECKPOINT_NAME
    if existing.exists() and not force:
        raise ValueError(
            f"{run_dir} already holds a checkpoint ({existing.name}): choose a new --out folder, "
            "or pass --force to replace it"
        )


def _start(trainer: Pretrainer, *, run_dir: Path, resume: bool) -> None:
    check_pretrain_out(run_dir, resume=resume)
    saved = load_state_files(run_dir)
    if saved is None:
        return
    meta, tensors = saved
    if meta.get("model_config") != to_dict(trainer.config.model):
        raise ValueError(
            f"{run_dir}: the saved run used a different model configuration; resume it with "
            "the same --preset and model overrides, or choose a new --out folder"
        )
    trainer.restore(step=meta["step"], tensors=tensors, meta=meta)
    _trim_log(run_dir / LOG_NAME, step=trainer.step)


def run_pretraining(
    cases: Sequence,
    *,
    config: PretrainRunConfig,
    run_dir: str | Path,
    preprocess_key: str,
    resume: bool = False,
    progress: bool = False,
    info: dict | None = None,
    tracking: Tracking | str = Tracking.none,
) -> PretrainResult:
    """Pretrain every view backbone up to `config.train.steps` steps (continuing a saved run).

    Uses every non-held-out case, labeled or not; held-out cases are never trained on.
    `info` (e.g. site id, joint) is added to the checkpoint manifest. With `tracking`
    tensorboard, the logged steps also go to `run_dir/tensorboard/` (core/tracking.py).
    """
    run_dir = Path(run_dir)
    trainer = Pretrainer(config=config, volumes=training_volumes(cases, config=config.model))
    _start(trainer, run_dir=run_dir, resume=resume)
    run_dir.mkdir(parents=True, exist_ok=True)  # only once the run can start: no empty folders
    train, log_path, losses = config.train, run_dir / LOG_NAME, {}
    checkpoint = run_dir / CHECKPOINT_NAME
    with (
        training_progress(
            title=f"pretrain ({trainer.device}, {trainer.precision})",
            total=train.steps,
            done=trainer.step,
            enabled=progress,
        ) as bar,
        # points logged after the saved state we resume from are replaced, not duplicated
        open_tracker(
            tracking, log_dir=run_dir / TENSORBOARD_DIR, purge_step=trainer.step + 1
        ) as tracker,
    ):
        while trainer.step < train.steps:
            started = time.perf_counter()
            losses = {v.value: loss for v, loss in trainer.train_step().items()}
            seconds = time.perf_counter() - started
            if trainer.step % train.log_every == 0 or trainer.step == train.steps:
                _append_log(
                    log_path,
                    [
                        {"step": trainer.step, "view": v, "loss": loss, "seconds": seconds}
                        for v, loss in losses.items()
                    ],
                )
                log_pretrain_step(
                    tracker, step=trainer.step, losses=losses, seconds=seconds, lr=_lr(trainer)
                )
            if trainer.step % train.checkpoint_every == 0 and trainer.step < train.steps:
                _save_all(trainer, run_dir=run_dir, preprocess_key=preprocess_key, info=info or {})
            bar.advance(status=" ".join(f"{v[:3]} {x:.4f}" for v, x in losses.items()))
    checkpoint = _save_all(trainer, run_dir=run_dir, preprocess_key=preprocess_key, info=info or {})
    write_loss_plot(log_path, run_dir / "loss.png")
    return PretrainResult(
        step=trainer.step,
        losses=losses,
        checkpoint=checkpoint,
        num_examples={v.value: len(a) for v, a in trainer.volumes.items() if a},
    )


def _lr(trainer: Pretrainer) -> float | None:
    """The learning rate of the step just taken (every view's optimizer shares it)."""
    for optimizer in trainer.optimizers.values():
        return float(optimizer.param_groups[0]["lr"])
    return None


@dataclass
class FinetuneRunResult:
    checkpoint: Path
    epoch_losses: list[float]
    num_examples: int
    best_epochs: dict[str, int]


def run_finetuning(
    cases: Sequence,
    *,
    init: str | Path,
    config: FinetuneRunConfig,
    joint: str,
    run_dir: str | Path,
    preprocess_key: str,
    progress: bool = False,
    info: dict | None = None,
    feature_root: Path | None = None,
    tracking: Tracking | str = Tracking.none,
) -> FinetuneRunResult:
    """Fine-tune the model in checkpoint `init` for `joint`; write `run_dir/checkpoint.*`.

    The architecture comes from `init`'s manifest (`config.model` is replaced by it); heads
    that `init` lacks are initialised from `config.train.seed`. Frozen-backbone features are
    cached under `feature_root` (the site's cache dir) when given. With `tracking`
    tensorboard, epoch losses go to `run_dir/tensorboard/` (a re-run replaces them).
    """
    model, source = model_from_checkpoint(init, joint=joint, seed=config.train.seed)
    config.model = model.config
    log_dir = Path(run_dir) / TENSORBOARD_DIR
    with open_tracker(tracking, log_dir=log_dir, purge_step=1) as tracker:
        result = finetune(
            model,
            cases,
            config=config.train,
            progress=progress,
            feature_root=feature_root,
            on_epoch=partial(log_finetune_epoch, tracker),
        )
    trained = [f"head.{model.joint.value}.cls"]
    if model.seg_head is not None:
        trained.append(f"head.{model.joint.value}.seg")
    if config.train.mode != "linear":
        trained = [f"backbone.{v}" for v in model.backbone] + trained
    path = Path(run_dir) / CHECKPOINT_NAME
    # Only the labels this run was allowed to use (its label fraction) choose thresholds.
    used = set(result.case_ids)
    thresholds, methods, n_cases = training_thresholds(
        model, [c for c in cases if c.case_id in used]
    )
    chosen = thresholds_entry(
        thresholds=thresholds,
        methods=methods,
        source=threshold_source(
            n_cases=n_cases, site_id=(info or {}).get("site_id"), command="orthofed finetune"
        ),
    )
    save_checkpoint(
        path,
        tensors=model.state_dict(),
        config=to_dict(config),
        preset=model.config.name,
        preprocess_key=preprocess_key,
        extra={
            "kind": "finetune",
            "joint": model.joint.value,
            "init": str(init),
            "init_created": source.manifest.get("created"),
            "trained_groups": trained,
            "num_examples": {g: result.num_examples for g in trained},
            "epoch_losses": result.epoch_losses,
            "best_epochs": result.best_epochs,
            "thresholds": {model.joint.value: chosen},
            **(info or {}),
        },
    )
    return FinetuneRunResult(
        checkpoint=path,
        epoch_losses=result.epoch_losses,
        num_examples=result.num_examples,
        best_epochs=result.best_epochs,
    )
