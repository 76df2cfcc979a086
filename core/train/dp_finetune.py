"""DP-SGD fine-tuning of a joint's heads on frozen backbones (per-case clipping, Opacus).

Only `linear` mode: the backbones are frozen, so each case's features are computed once
(no gradient) and DP-SGD runs on the heads alone; `partial`/`full` would need per-case
gradients through the UNets every step (the pretraining path does that, at ~1x a plain
step per view, but fine-tuning a whole UNet privately on a few dozen labeled cases spends
far more budget than it buys). The privacy unit is the case, as in pretraining, and both
phases spend the same site budget (`core.train.privacy.SiteBudget`).

Per-case gradients come from `torch.func` (vmap of grad over the heads, one case per
call), as in pretraining. A case's loss mixes BCE (if labeled) and segmentation (if masked),
which a vmap cannot branch on, so the Poisson batch is split into groups of cases alike
(labels and mask, labels only, mask only) and each group is one vmap. Against a loop of
`torch.autograd.grad` per case (what this was): 1.5x faster on 2 threads and 1.6x on 1 thread
for 8 knee cases with the reproduction's heads (the segmentation head is nearly all of it).
Opacus's `GradSampleModule` would need per-layer samplers for Conv3d (an unfold of every
3x3x3 neighbourhood at the input grid), so it is not used here. Opacus's `DPOptimizer` clips
the per-case gradients, adds the noise and divides by the expected batch size; an empty
batch is a noise-only step, counted by the accountant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from opacus.optimizers import DPOptimizer
from torch.func import functional_call, grad, vmap

from core.config import FinetuneConfig
from core.models.encode import EncodedCases, encode_in_chunks
from core.models.registry import OrthoModel
from core.precision import refuse_bf16_with_dp
from core.train.dp_pretrain import (
    PrivateRound,
    poisson_indices,
    release_optimizer,
    secure_generator,
)
from core.train.finetune import (
    FinetuneResult,
    build_optimizer,
    select_training_cases,
    set_trainable,
)
from core.train.losses import classification_loss, weighted_segmentation_loss
from core.train.privacy import (
    ClientDPConfig,
    SiteBudget,
    private_seed,
    round_entries,
    run_part,
    sample_rate,
    site_secret,
)
from core.train.proximal import attach_proximal_term


def dp_steps(*, epochs: int, rate: float, min_steps: int = 0) -> int:
    """Steps for `epochs` passes in expectation (epochs x 1/q), at least `min_steps`: the same
    floor `train.min_steps` sets without DP, so small label sets train as long with DP on."""
    return max(1, epochs * math.ceil(1.0 / rate), min_steps)


def _head_modules(model: OrthoModel) -> dict[str, torch.nn.Module]:
    seg = model.seg_head
    return {"cls": model.cls_head, **({"seg": seg} if seg is not None else {})}


def _case_loss(model: OrthoModel, *, labeled: bool, masked: bool) -> Callable[..., torch.Tensor]:
    """One case's task loss (`task_loss` of that case alone) as a function of the heads'
    weights, for a group of cases that all have labels (`labeled`) and/or a mask (`masked`)."""
    heads = model.config.heads

    def loss(weights, features, present, labels, image, maps, target):
        total = labels.new_zeros(())
        if labeled:
            batch = ({view: f.unsqueeze(0) for view, f in features.items()}, present.unsqueeze(0))
            logits = functional_call(model.cls_head, weights["cls"], batch)
            total = total + classification_loss(logits, labels.unsqueeze(0))
        if masked:
            inputs = (image.unsqueeze(0), [m.unsqueeze(0) for m in maps])
            logits = functional_call(model.seg_head, weights["seg"], inputs)
            total = total + weighted_segmentation_loss(
                heads, logits=logits, target=target.unsqueeze(0), one_hot=True
            )
        return total

    return loss


def _param_names(model: OrthoModel, params: list[torch.nn.Parameter]) -> list[tuple[str, str]]:
    """(head, parameter name) of each of `params`, which must all belong to the heads."""
    names = {
        id(p): (head, name)
        for head, module in _head_modules(model).items()
        for name, p in module.named_parameters()
    }
    if any(id(p) not in names for p in params):
        raise ValueError("DP fine-tuning trains the heads only (train.mode=linear)")
    return [names[id(p)] for p in params]


def _group_inputs(batch: EncodedCases, rows: torch.Tensor, *, masked: bool, classes: int) -> tuple:
    """The vmapped arguments of `_case_loss` for the cases at `rows` (None where unused)."""
    target = None
    if masked:  # one-hot here: MONAI's conversion writes in place, which vmap cannot batch
        target = F.one_hot(batch.masks[rows, 0], classes).permute(0, 4, 1, 2, 3).float()
    return (
        {view: f[rows] for view, f in batch.features.items()},
        batch.present[rows],
        batch.labels[rows],
        batch.seg_image[rows] if masked else None,
        [m[rows] for m in batch.seg_maps] if masked else None,
        target,
    )


def _per_case_gradients(
    model: OrthoModel, batch: EncodedCases, *, params: list[torch.nn.Parameter]
) -> list[torch.Tensor]:
    """(n, *shape) per parameter: each case's gradient of its own task loss (0 if none)."""
    where = _param_names(model, params)
    modules = _head_modules(model)
    weights = {
        head: {name: p.detach() for name, p in module.named_parameters()}
        for head, module in modules.items()
    }
    classes = modules["seg"].classifier.out_channels if "seg" in modules else 0
    out = [p.new_zeros((len(batch.case_ids), *p.shape)) for p in params]
    for labeled, masked in ((True, True), (True, False), (False, True)):
        rows = torch.nonzero((batch.has_labels == labeled) & (batch.has_mask == masked)).flatten()
        if not len(rows):
            continue
        inputs = _group_inputs(batch, rows, masked=masked, classes=classes)
        per_case = _case_loss(model, labeled=labeled, masked=masked)
        in_dims = (None,) + tuple(None if x is None else 0 for x in inputs)
        grads = vmap(grad(per_case), in_dims=in_dims)(weights, *inputs)
        for j, (head, name) in enumerate(where):
            out[j][rows] = grads[head][name]
    return out


def _private_step(
    model: OrthoModel,
    *,
    cached: EncodedCases,
    optimizer: DPOptimizer,
    rate: float,
    generator: torch.Generator | None,
) -> None:
    params = list(optimizer.params)
    rows = poisson_indices(cases=len(cached.case_ids), sample_rate=rate, generator=generator)
    optimizer.zero_grad(set_to_none=True)
    if len(rows):
        samples = _per_case_gradients(model, cached.select(rows), params=params)
    else:
        samples = [torch.zeros((0, *p.shape), dtype=p.dtype) for p in params]
    for p, g in zip(params, samples, strict=True):
        p.grad_sample = g
    optimizer.step()


def finetune_privately(
    model: OrthoModel,
    cases: Sequence,
    *,
    config: FinetuneConfig,
    dp: ClientDPConfig,
    state_dir: Path,
    index: int,
    site_id: str,
    subset_seed: int | None = None,
    run_key: str = "",
) -> tuple[PrivateRound, FinetuneResult | None]:
    """Check the site budget, fine-tune the heads by DP-SGD, spend the budget.

    Refuses (trains nothing, spends nothing) when the round would pass `max_epsilon`.
    """
    if config.mode != "linear":
        raise ValueError(
            f"client DP fine-tuning supports train.mode=linear only (got {config.mode!r}): "
            "set finetune.train.mode=linear, or client_dp.phases=[pretrain]"
        )
    refuse_bf16_with_dp(config.precision)
    chosen = select_training_cases(cases, model=model, config=config, subset_seed=subset_seed)
    rate = sample_rate(batch_size=config.batch_size, cases=len(chosen))
    steps = dp_steps(epochs=config.epochs, rate=rate, min_steps=config.min_steps)
    entries = round_entries(rates=[rate], steps=steps, config=dp)
    budget = SiteBudget.load(state_dir, config=dp)
    refused = budget.refusal(entries, max_epsilon=dp.max_epsilon)
    if refused:
        return PrivateRound(refused=refused), None
    set_trainable(model, mode="linear")
    with torch.no_grad():
        cached = encode_in_chunks(model, chosen, batch_size=config.batch_size)
    base = build_optimizer(model, backbone_params=[], config=config)
    proximal = attach_proximal_term(base, mu=config.proximal_mu)
    generator = (
        secure_generator()
        if dp.secure_rng
        else torch.Generator().manual_seed(
            private_seed(site_secret(state_dir), *run_part(run_key), index, site_id, "finetune")
        )
    )
    optimizer = DPOptimizer(
        base,
        noise_multiplier=entries[0][0],
        max_grad_norm=dp.max_grad_norm,
        expected_batch_size=rate * len(chosen),
        loss_reduction="mean",
        generator=generator,
        secure_mode=dp.secure_rng,
    )
    try:
        for _ in range(steps):
            _private_step(model, cached=cached, optimizer=optimizer, rate=rate, generator=generator)
    finally:
        release_optimizer(optimizer)
        if proximal is not None:
            proximal.remove()
        for p in model.parameters():
            p.requires_grad_(True)
    budget.spend(entries)
    return PrivateRound(metrics=budget.metrics(entries)), FinetuneResult(
        case_ids=[c.case_id for c in chosen]
    )
