"""Early stopping for fine-tuning on a validation split carved from the *training* cases.

Held-out cases are never seen here. Each epoch the heads' validation losses are computed; in
`linear` mode each head (classification, segmentation) keeps the weights of its own best
epoch. In `partial`/`full` mode the heads share the trained backbone, so one whole-model state
is kept: the one of the last epoch at which *any* head reached a new best. Not the best summed
loss: on the reproduction's knee pool (seed 0, 100% labels) the classification loss overfits
from epoch ~12 while the segmentation loss falls until epoch 45, the sum stays flat, and the
summed-loss rule kept epoch 17 (mean Dice 0.232, macro AUC 0.677); the last-improvement rule
keeps epoch 45 (mean Dice 0.583, macro AUC 0.646). Training stops after `patience` epochs in
which no head improved, in every mode.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch

from core.models.encode import EncodedCases, encode_cases
from core.models.registry import OrthoModel
from core.train.losses import head_losses
from core.train.subsets import stratified_subset

MIN_TRAIN_CASES = 4  # below this every case trains and nothing is held back
MIN_VAL_CASES = 2  # one validation case picks epochs by noise: then none is held back
VAL_CHUNK = 4  # cases per backbone pass when validation features are not cached


def validation_split(cases: Sequence, *, fraction: float, seed: int) -> tuple[list, list]:
    """(training, validation) cases: a stratified `fraction` (by label) for validation."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"train.val_fraction must be in [0, 1), got {fraction}")
    n_val = round(fraction * len(cases))
    if n_val < MIN_VAL_CASES or len(cases) - n_val < MIN_TRAIN_CASES:
        return list(cases), []
    val_ids = set(
        stratified_subset(
            [(c.case_id, c.labels) for c in cases], fraction=n_val / len(cases), seed=seed
        )
    )
    return [c for c in cases if c.case_id not in val_ids], [
        c for c in cases if c.case_id in val_ids
    ]


def _mean_losses(model: OrthoModel, batches: list[EncodedCases]) -> dict[str, float]:
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for batch in batches:
        rows = {"cls": int(batch.has_labels.sum()), "seg": int(batch.has_mask.sum())}
        for head, loss in head_losses(model, batch).items():
            sums[head] = sums.get(head, 0.0) + float(loss) * rows[head]
            counts[head] = counts.get(head, 0) + rows[head]
    return {h: sums[h] / counts[h] for h in sums if counts[h]}


class Validation:
    """Tracks validation losses per epoch and the best weights (see the module docstring)."""

    def __init__(
        self, model: OrthoModel, *, cases: list, encoded: EncodedCases | None, per_head: bool
    ) -> None:
        self.model = model
        self.cases = cases
        self.encoded = encoded
        self.per_head = per_head
        self.epoch = 0
        self.stalled = 0
        # head ("cls", "seg", or "all" for the whole model) -> (loss, epoch, weights)
        self.best: dict[str, tuple[float, int, dict[str, torch.Tensor]]] = {}
        self.best_loss: dict[str, float] = {}  # head -> its lowest validation loss so far
        self.improved_at: dict[str, int] = {}  # head -> the epoch of that loss
        self.last: dict[str, float] = {}

    def _losses(self) -> dict[str, float]:
        with torch.no_grad():
            if self.encoded is not None:
                return _mean_losses(self.model, [self.encoded])
            chunks = [self.cases[i : i + VAL_CHUNK] for i in range(0, len(self.cases), VAL_CHUNK)]
            batches = [encode_cases(self.model, c, for_training=True) for c in chunks]
            return _mean_losses(self.model, batches)

    def _module(self, head: str) -> torch.nn.Module:
        """The weights one best state covers: a head, or the whole model ("all")."""
        return self.model if head == "all" else self.model.head[self.model.joint.value][head]

    def _snapshot(self, head: str) -> dict[str, torch.Tensor]:
        return copy.deepcopy(self._module(head).state_dict())

    def after_epoch(self) -> int:
        """Record this epoch; returns the number of epochs since the last improvement."""
        self.epoch += 1
        if not self.cases:
            return 0
        self.last = self._losses()
        improved = [h for h, loss in self.last.items() if loss < self.best_loss.get(h, math.inf)]
        self.best_loss.update({h: self.last[h] for h in improved})
        self.improved_at.update({h: self.epoch for h in improved})
        if self.per_head:
            for head in improved:
                self.best[head] = (self.last[head], self.epoch, self._snapshot(head))
        elif improved:  # the whole model, kept with the summed loss for the record
            self.best["all"] = (sum(self.last.values()), self.epoch, self._snapshot("all"))
        self.stalled = 0 if improved else self.stalled + 1
        return self.stalled

    def status(self) -> str:
        return "".join(f" val {h} {v:.4f}" for h, v in self.last.items())

    def restore_best(self) -> None:
        for head, (_loss, _epoch, state) in self.best.items():
            self._module(head).load_state_dict(state)

    def best_epochs(self) -> dict[str, int]:
        """Per head, its best epoch; in whole-model mode also "all", the epoch kept."""
        kept = {head: epoch for head, (_loss, epoch, _state) in self.best.items()}
        return kept if self.per_head else {**self.improved_at, **kept}
