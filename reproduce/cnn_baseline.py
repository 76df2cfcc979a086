"""The supervised detection baseline: a small multi-view 3D CNN trained from scratch.

The bar for the SSL backbone + probe: per view a MONAI `Classifier` (strided residual
convolutions -> one logit per label) on that view's volume, the case's logits the mean over the
views it has (a site without axial series trains and scores all the same), BCE, AdamW, a fixed
number of steps, fp32, on the same label subset the probe draws
(`core.train.subsets.stratified_subset`, same seed). MONAI provides the network; this module
only adds the view fusion MONAI has no network for, and wires it to the project's cases and
metrics (`bench/feature_study.py --cnn-steps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.eval.metrics import mean_defined, roc_auc_per_label
from core.train.subsets import stratified_subset
from core.views import LABELS, VIEWS, Joint


@dataclass(frozen=True)
class CNNBudget:
    steps: int = 600
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    channels: tuple[int, ...] = (16, 32, 64, 128)


def label_subset(cases: Sequence, *, fraction: float, seed: int) -> list:
    """The non-held-out labeled cases, reduced as the probe reduces them (same strata, seed)."""
    candidates = [c for c in cases if not c.heldout and c.labels is not None]
    if not candidates:
        raise ValueError("no labeled training cases for the CNN baseline")
    keep = set(
        stratified_subset([(c.case_id, c.labels) for c in candidates], fraction=fraction, seed=seed)
    )
    return [c for c in candidates if c.case_id in keep]


class MultiViewCNN(torch.nn.Module):
    """One MONAI `Classifier` per view; logits averaged over the views a case has."""

    def __init__(self, *, shape: tuple[int, int, int], n_labels: int, channels: Sequence[int]):
        from monai.networks.nets import Classifier

        super().__init__()
        self.nets = torch.nn.ModuleDict(
            {
                view.value: Classifier(
                    in_shape=(1, *shape),
                    classes=n_labels,
                    channels=tuple(channels),
                    strides=(2,) * len(channels),
                    num_res_units=1,
                )
                for view in VIEWS
            }
        )

    def forward(self, volumes: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """volumes (N, 3, D, H, W) in VIEWS order (zeros where absent), present (N, 3) bool."""
        logits = torch.stack(
            [self.nets[v.value](volumes[:, i : i + 1]) for i, v in enumerate(VIEWS)], dim=1
        )
        weights = present.float()[..., None]
        return (logits * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _inputs(cases: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, D, H, W) volumes (each view's (1, D, H, W) series; zeros where absent), presence."""
    shape = next(np.shape(v)[-3:] for c in cases for v in c.views.values())
    volumes = torch.zeros(len(cases), len(VIEWS), *shape)
    present = torch.zeros(len(cases), len(VIEWS), dtype=torch.bool)
    for row, case in enumerate(cases):
        for i, view in enumerate(VIEWS):
            if view in case.views:
                volume = np.array(case.views[view], dtype=np.float32).reshape(shape)
                volumes[row, i] = torch.from_numpy(volume)
                present[row, i] = True
    return volumes, present


def train_cnn(cases: Sequence, *, joint: Joint, budget: CNNBudget, seed: int) -> torch.nn.Module:
    """A MultiViewCNN trained on `cases` (all of them: pass `label_subset`'s output)."""
    volumes, present = _inputs(cases)
    labels = torch.from_numpy(np.array([c.labels for c in cases], dtype=np.float32))
    torch.manual_seed(seed)
    net = MultiViewCNN(
        shape=tuple(volumes.shape[-3:]), n_labels=len(LABELS[joint]), channels=budget.channels
    )
    optimizer = torch.optim.AdamW(net.parameters(), lr=budget.lr, weight_decay=budget.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(budget.steps):
        rows = torch.randint(len(cases), (min(budget.batch_size, len(cases)),), generator=generator)
        loss = F.binary_cross_entropy_with_logits(net(volumes[rows], present[rows]), labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net.eval()


@torch.no_grad()
def cnn_macro_auc(net: torch.nn.Module, cases: Sequence, *, joint: Joint) -> float | None:
    """Macro AUC over the labels defined on `cases` (labeled ones), as metrics.json has it."""
    labeled = [c for c in cases if c.labels is not None]
    if not labeled:
        raise ValueError("no labeled cases to score the CNN baseline on")
    volumes, present = _inputs(labeled)
    probs = torch.sigmoid(net(volumes, present)).numpy()
    targets = np.array([c.labels for c in labeled], dtype=np.float32)
    return mean_defined(roc_auc_per_label(probs, targets, names=LABELS[joint]))
