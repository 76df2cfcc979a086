"""The supervised segmentation baseline: a plain MONAI `BasicUNet` trained from scratch.

The bar a site holds a foundation model to: sagittal image -> 12 classes (background + the 11
knee structures), MONAI `DiceCELoss`, AdamW, a fixed number of steps, on the same mask subset
the heads draw (`core.train.subsets.stratified_subset` with the same seed). No diffusion
backbone, no features: MONAI already does all of it, so this module only wires it to the
project's cases and metrics (used by `make reproduce`'s row 5 and `bench/seg_study.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.eval.metrics import dice_rows, mean_defined, mean_per_structure
from core.train.subsets import stratified_subset
from core.views import KNEE_STRUCTURES, View

N_CLASSES = len(KNEE_STRUCTURES) + 1
UNET_MULTIPLE = 16  # 2**4: BasicUNet's four poolings


@dataclass(frozen=True)
class UNetBudget:
    steps: int = 400
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 0.01


def mask_subset(cases: Sequence, *, fraction: float, seed: int) -> list:
    """The non-held-out cases with a mask (and the sagittal series it lies on), reduced as the
    heads reduce them (same strata, same seed)."""
    candidates = [
        c for c in cases if not c.heldout and c.mask is not None and View.SAGITTAL in c.views
    ]
    if not candidates:
        raise ValueError("no training cases with knee masks for the UNet baseline")
    keep = set(
        stratified_subset([(c.case_id, c.labels) for c in candidates], fraction=fraction, seed=seed)
    )
    return [c for c in candidates if c.case_id in keep]


def _image(case) -> torch.Tensor:
    return torch.from_numpy(np.array(case.views[View.SAGITTAL], dtype=np.float32))


def _forward(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits on the input grid: BasicUNet pools 4 times, so each side is padded (replicated
    edge) to a multiple of 16 and the output cropped back; a grid that would leave a 1x1x1
    bottleneck (which instance norm cannot train on) gets its last side padded to 32."""
    sides = images.shape[-3:]
    pads = [(-side) % UNET_MULTIPLE for side in sides]
    if all(side + pad == UNET_MULTIPLE for side, pad in zip(sides, pads, strict=True)):
        pads[2] += UNET_MULTIPLE
    padded = F.pad(images, (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")
    return net(padded)[..., : sides[0], : sides[1], : sides[2]]


def train_unet(cases: Sequence, *, budget: UNetBudget, seed: int) -> torch.nn.Module:
    """A BasicUNet trained on `cases` (all of them: pass `mask_subset`'s output), in fp32:
    under bf16 autocast its gradients overflowed to inf within 5 steps on a knee site (16 x 64
    x 64, batch 4), and a baseline that silently trains on NaN would flatter the heads."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import BasicUNet

    images = torch.stack([_image(c) for c in cases])
    masks = torch.stack([torch.from_numpy(np.array(c.mask, dtype=np.int64))[None] for c in cases])
    torch.manual_seed(seed)
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=budget.lr, weight_decay=budget.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(budget.steps):
        rows = torch.randint(len(cases), (min(budget.batch_size, len(cases)),), generator=generator)
        loss = loss_fn(_forward(net, images[rows]), masks[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net.eval()


@torch.no_grad()
def unet_dice(net: torch.nn.Module, cases: Sequence) -> dict:
    """`dice` (per structure) and `mean_dice` over `cases` with masks, as metrics.json has them."""
    rows = []
    for case in cases:
        if case.mask is None:
            continue
        prediction = _forward(net, _image(case)[None]).argmax(dim=1, keepdim=True)
        target = torch.from_numpy(np.array(case.mask, dtype=np.int64))[None, None]
        rows.append(dice_rows(prediction, target, n_classes=N_CLASSES))
    if not rows:
        raise ValueError("no cases with knee masks to score the UNet baseline on")
    return {**dice_summary(torch.cat(rows)), "n_masks": len(rows)}


def dice_summary(rows: torch.Tensor) -> dict:
    """`dice` per structure and their `mean_dice` from per-case Dice rows (as metrics.json)."""
    dice = mean_per_structure(rows, names=KNEE_STRUCTURES)
    return {"dice": dice, "mean_dice": mean_defined(dice)}
