"""Task fine-tuning of a joint's heads (and optionally its backbones) on labeled cases.

Modes: `linear` (backbones frozen; features computed once, core/models/feature_cache.py), `partial`
(encoder + middle block train at `backbone_lr_scale` x the head lr; decoder frozen) and
`full` (whole backbones at that scaled lr). Training cases are the non-held-out cases with
labels (or, for the knee, a mask); `label_fraction` keeps a stratified subset of them, and
`val_fraction` of those are kept aside to pick each head's best epoch (core/train/validation.py).
The budget is `epochs`, raised to reach `min_steps` optimizer steps on small label sets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.config import FinetuneConfig, check_ranges
from core.models.backbone import conv_shapes, decoder_parameters, encoder_parameters
from core.models.encode import EncodedCases, encode_cases
from core.models.feature_cache import FeatureCache, feature_digest
from core.models.registry import SEG_VIEW, OrthoModel
from core.precision import Precision, autocast, resolve_precision
from core.train.losses import task_loss
from core.train.progress import training_progress
from core.train.proximal import attach_proximal_term
from core.train.subsets import stratified_subset
from core.train.validation import Validation, validation_split

MODES = ("linear", "partial", "full")
# Called after each epoch with keywords epoch (1-based), loss, validation ({head: loss}).
EpochCallback = Callable[..., None]


@dataclass
class FinetuneResult:
    case_ids: list[str]
    epoch_losses: list[float] = field(default_factory=list)
    best_epochs: dict[str, int] = field(default_factory=dict)  # head -> epoch kept (1-based)

    @property
    def num_examples(self) -> int:
        return len(self.case_ids)


def annotated(case, model: OrthoModel) -> bool:
    has_mask = model.seg_head is not None and case.mask is not None and SEG_VIEW in case.views
    return case.labels is not None or has_mask


def check_finetune_config(train: FinetuneConfig, *, key: str = "train") -> None:
    """One line per wrong value, naming it (checked before any data is read)."""
    if train.mode not in MODES:
        raise ValueError(
            f"{key}.mode: unknown fine-tuning mode {train.mode!r}: use one of {', '.join(MODES)}"
        )
    checks = [
        (train.epochs >= 1, "epochs", "must be >= 1", train.epochs),
        (train.min_steps >= 0, "min_steps", "must be >= 0 (0 = epochs alone)", train.min_steps),
        (train.batch_size >= 1, "batch_size", "must be >= 1", train.batch_size),
        (train.lr > 0, "lr", "must be > 0", train.lr),
        (
            train.backbone_lr_scale >= 0,
            "backbone_lr_scale",
            "must be >= 0",
            train.backbone_lr_scale,
        ),
        (
            0 < train.label_fraction <= 1,
            "label_fraction",
            "must be in (0, 1]",
            train.label_fraction,
        ),
        (0 <= train.val_fraction < 1, "val_fraction", "must be in [0, 1)", train.val_fraction),
        (train.patience >= 0, "patience", "must be >= 0 (0 = every epoch)", train.patience),
        (train.weight_decay >= 0, "weight_decay", "must be >= 0", train.weight_decay),
        (train.proximal_mu >= 0, "proximal_mu", "must be >= 0 (0 = FedAvg)", train.proximal_mu),
    ]
    check_ranges(checks, key=key)


def select_training_cases(
    cases: Sequence, *, model: OrthoModel, config: FinetuneConfig, subset_seed: int | None = None
) -> list:
    """Non-held-out annotated cases, reduced to the stratified label fraction (the subset
    drawn with `subset_seed`, default `config.seed`: a federation keeps it fixed across
    rounds so that a site never trains on more than its fraction)."""
    candidates = [c for c in cases if not c.heldout and annotated(c, model)]
    if not candidates:
        raise ValueError(
            "no labeled training cases: fine-tuning needs non-held-out cases with labels.csv "
            "rows (or knee masks)"
        )
    keep = set(
        stratified_subset(
            [(c.case_id, c.labels) for c in candidates],
            fraction=config.label_fraction,
            seed=config.seed if subset_seed is None else subset_seed,
        )
    )
    return [c for c in candidates if c.case_id in keep]


def set_trainable(model: OrthoModel, *, mode: str) -> list[torch.nn.Parameter]:
    """Freeze per mode; returns the backbone parameters that train (empty for `linear`)."""
    if mode not in MODES:
        raise ValueError(f"unknown fine-tuning mode {mode!r}: use one of {', '.join(MODES)}")
    training: list[torch.nn.Parameter] = []
    for unet in model.backbone.values():
        for p in unet.parameters():
            p.requires_grad_(mode == "full")
        if mode == "partial":
            for p in encoder_parameters(unet):
                p.requires_grad_(True)
            for p in decoder_parameters(unet):
                p.requires_grad_(False)
        training += [p for p in unet.parameters() if p.requires_grad]
    for p in model.head.parameters():
        p.requires_grad_(True)
    return training


def build_optimizer(
    model: OrthoModel, *, backbone_params: list, config: FinetuneConfig
) -> torch.optim.Optimizer:
    groups = [{"params": list(model.head.parameters()), "lr": config.lr}]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": config.lr * config.backbone_lr_scale})
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def feature_cache_for(model: OrthoModel, *, config: FinetuneConfig, root: Path | None):
    """The frozen-feature cache of a linear run (on disk under `root` when given)."""
    if config.mode != "linear":
        return None
    if not config.cache_features:
        root = None
    return FeatureCache(digest=feature_digest(model), root=root)


def _encoded(model: OrthoModel, cases: list, *, cache, batch_size: int) -> EncodedCases | None:
    if cache is None or not cases:
        return None
    with torch.no_grad():
        return encode_cases(model, cases, cache=cache, batch_size=batch_size)


def _epoch(
    model: OrthoModel,
    *,
    cases: list,
    cached: EncodedCases | None,
    optimizer: torch.optim.Optimizer,
    config: FinetuneConfig,
    generator: torch.Generator,
    precision: Precision,
) -> float:
    order = torch.randperm(len(cases), generator=generator)
    total, batches = 0.0, 0
    for start in range(0, len(cases), config.batch_size):
        rows = order[start : start + config.batch_size]
        with autocast(precision):
            batch = (
                cached.select(rows)
                if cached
                else encode_cases(model, [cases[i] for i in rows], for_training=True)
            )
            loss = task_loss(model, batch)
        if loss is None:
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, batches = total + float(loss.detach()), batches + 1
    return total / max(batches, 1)


def finetune(
    model: OrthoModel,
    cases: Sequence,
    *,
    config: FinetuneConfig,
    progress: bool = False,
    subset_seed: int | None = None,
    feature_root: Path | None = None,
    on_epoch: EpochCallback | None = None,
) -> FinetuneResult:
    """Train `model` in place on the selected training cases for up to `config.epochs` epochs.

    A validation split carved from those cases (`val_fraction`) picks each head's best epoch
    and stops training after `patience` epochs without improvement. In `linear` mode the
    frozen features come from a `FeatureCache` (on disk under `feature_root` when given).
    `on_epoch` receives each epoch's losses (see EpochCallback), e.g. for TensorBoard.
    """
    check_finetune_config(config)
    chosen = select_training_cases(cases, model=model, config=config, subset_seed=subset_seed)
    train_cases, val_cases = validation_split(
        chosen, fraction=config.val_fraction, seed=config.seed
    )
    backbone_params = set_trainable(model, mode=config.mode)
    optimizer = build_optimizer(model, backbone_params=backbone_params, config=config)
    proximal = attach_proximal_term(optimizer, mu=config.proximal_mu)
    cache = feature_cache_for(model, config=config, root=feature_root)
    cached = _encoded(model, train_cases, cache=cache, batch_size=config.batch_size)
    validation = Validation(
        model,
        cases=val_cases,
        encoded=_encoded(model, val_cases, cache=cache, batch_size=config.batch_size),
        per_head=config.mode == "linear",
    )
    result = FinetuneResult(case_ids=[c.case_id for c in chosen])
    try:
        _train_epochs(
            model,
            chosen=train_cases,
            cached=cached,
            optimizer=optimizer,
            config=config,
            result=result,
            progress=progress,
            validation=validation,
            on_epoch=on_epoch,
        )
        validation.restore_best()
        result.best_epochs = validation.best_epochs()
    finally:
        if proximal is not None:
            proximal.remove()
        for p in model.parameters():
            p.requires_grad_(True)
    return result


def floor_epochs(*, n_cases: int, config: FinetuneConfig) -> int:
    """Epochs that give at least `config.min_steps` optimizer steps on `n_cases` cases."""
    return math.ceil(config.min_steps / max(1, math.ceil(n_cases / config.batch_size)))


def _train_epochs(
    model: OrthoModel,
    *,
    chosen: list,
    cached: EncodedCases | None,
    optimizer: torch.optim.Optimizer,
    config: FinetuneConfig,
    result: FinetuneResult,
    progress: bool,
    validation: Validation,
    on_epoch: EpochCallback | None = None,
) -> None:
    generator = torch.Generator().manual_seed(config.seed)
    precision = resolve_precision(config.precision, conv_shapes=conv_shapes(model.config))
    floor = floor_epochs(n_cases=len(chosen), config=config)
    total = max(config.epochs, floor)
    with training_progress(title=f"finetune ({config.mode})", total=total, enabled=progress) as bar:
        for epoch in range(1, total + 1):
            loss = _epoch(
                model,
                cases=chosen,
                cached=cached,
                optimizer=optimizer,
                config=config,
                generator=generator,
                precision=precision,
            )
            result.epoch_losses.append(loss)
            stalled = validation.after_epoch()
            if on_epoch is not None:
                on_epoch(epoch=validation.epoch, loss=loss, validation=dict(validation.last))
            bar.advance(status=f"loss {loss:.4f}{validation.status()}")
            if stalled >= config.patience > 0 and epoch >= floor:  # no early stop below the floor
                break
