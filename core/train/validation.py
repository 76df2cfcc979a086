"""Early stopping for fine-tuning on a validation split carved from the *training* cases.

Held-out cases are never seen here. Each epoch the heads' validation losses are computed; in
`linear` mode each head (classification, segmentation) keeps the weights of its own best
epoch, in `partial`/`full` mode the whole model keeps the weights of the best summed loss.
"""

from __future__ import annotations

import copy
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
        self.best: dict[str, tuple[float, int, dict[str, torch.Tensor]]] = {}
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
        scores = self.last if self.per_head else {"all": sum(self.last.values())}
        improved = False
        for head, loss in scores.items():
            if head not in self.best or loss < self.best[head][0]:
                self.best[head] = (loss, self.epoch, self._snapshot(head))
                improved = True
        self.stalled = 0 if improved else self.stalled + 1
        return self.stalled

    def status(self) -> str:
        return "".join(f" val {h} {v:.4f}" for h, v in self.last.items())

    def restore_best(self) -> None:
        for head, (_loss, _epoch, state) in self.best.items():
            self._module(head).load_state_dict(state)

    def best_epochs(self) -> dict[str, int]:
        return {head: epoch for head, (_loss, epoch, _state) in self.best.items()}
