"""Turn a list of cases into model inputs and features (the bridge from CaseTensors to heads).

`EncodedCases` holds, for N cases, each view's fused classification feature map (zeros where
a case lacks the view), the (N, 3) view-presence mask and (knee) the sagittal image with its
segmentation feature maps (one per `heads.seg_taps` entry, each at its own grid). Labels and
masks ride along with their own presence masks. With a `FeatureCache` (frozen backbones),
each case's features are computed once and then read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.models.backbone import seg_taps
from core.models.feature_cache import FeatureCache
from core.models.features import case_seed
from core.models.registry import SEG_VIEW, OrthoModel
from core.views import LABELS, VIEWS

CaseFeatures = dict[str, torch.Tensor]  # "cls.<view>" and "seg.<i>" -> one case's maps


@dataclass
class EncodedCases:
    case_ids: list[str]
    features: dict[str, torch.Tensor]  # view -> (N, C, d, h, w); zeros for absent views
    present: torch.Tensor  # (N, 3) bool, VIEWS order
    seg_maps: list[torch.Tensor] | None  # one (N, C_i, d_i, h_i, w_i) per seg tap, or None
    seg_image: torch.Tensor | None  # (N, 1, D, H, W) sagittal input (zeros where absent)
    labels: torch.Tensor  # (N, n_labels) float32 (zeros where unlabeled)
    has_labels: torch.Tensor  # (N,) bool
    masks: torch.Tensor | None  # (N, 1, D, H, W) int64 or None
    has_mask: torch.Tensor  # (N,) bool (mask given and sagittal view present)

    def select(self, rows: torch.Tensor) -> EncodedCases:
        """The cases at `rows` (a 1-D index tensor)."""
        pick = rows.tolist()
        return EncodedCases(
            case_ids=[self.case_ids[i] for i in pick],
            features={v: f[rows] for v, f in self.features.items()},
            present=self.present[rows],
            seg_maps=None if self.seg_maps is None else [m[rows] for m in self.seg_maps],
            seg_image=None if self.seg_image is None else self.seg_image[rows],
            labels=self.labels[rows],
            has_labels=self.has_labels[rows],
            masks=None if self.masks is None else self.masks[rows],
            has_mask=self.has_mask[rows],
        )


def _targets(model: OrthoModel, cases: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    n_labels = len(LABELS[model.joint])
    labels = torch.zeros(len(cases), n_labels)
    for row, case in enumerate(cases):
        if case.labels is not None:
            if len(case.labels) != n_labels:
                raise ValueError(
                    f"case {case.case_id}: {len(case.labels)} labels, joint "
                    f"{model.joint.value} has {n_labels}"
                )
            labels[row] = torch.from_numpy(np.asarray(case.labels, dtype=np.float32))
    has = torch.tensor([c.labels is not None for c in cases], dtype=torch.bool)
    return labels, has


def _masks(model: OrthoModel, cases: Sequence) -> tuple[torch.Tensor | None, torch.Tensor]:
    has = torch.tensor(
        [model.seg_head is not None and c.mask is not None and SEG_VIEW in c.views for c in cases],
        dtype=torch.bool,
    )
    if not bool(has.any()):
        return None, has
    cfg = model.config
    masks = torch.zeros(
        len(cases), 1, cfg.input_slices, cfg.input_size, cfg.input_size, dtype=torch.long
    )
    for row, case in enumerate(cases):
        if has[row]:
            if tuple(case.mask.shape) != tuple(masks.shape[2:]):
                raise ValueError(
                    f"case {case.case_id}: mask shape {tuple(case.mask.shape)} does not match the "
                    f"model input {tuple(masks.shape[2:])}"
                )
            masks[row, 0] = torch.from_numpy(np.asarray(case.mask, dtype=np.int64))
    return masks, has


def compute_case_features(
    model: OrthoModel, cases: Sequence, *, with_seg: bool, with_cls: bool = True
) -> list[CaseFeatures]:
    """Per-case feature maps of `cases` (one backbone pass per view and timestep). Without
    `with_cls` only the segmentation view is passed (a batch of masks without labels: the
    other views' backbones would run, and in partial/full mode backpropagate, for nothing)."""
    seed = model.config.features.seed
    per_case: list[CaseFeatures] = [{} for _ in cases]
    for view in VIEWS:
        rows = [i for i, c in enumerate(cases) if view in c.views]
        if not rows or not (with_cls or (with_seg and view == SEG_VIEW)):
            continue
        clean = torch.from_numpy(
            np.stack([np.asarray(cases[i].views[view], dtype=np.float32) for i in rows])
        )
        seeds = [case_seed(seed, cases[i].case_id) for i in rows]
        seg_here = with_seg and model.seg_head is not None and view == SEG_VIEW
        fused, seg = model.encode(view, clean, seeds=seeds, with_seg=seg_here)
        for j, i in enumerate(rows):
            per_case[i][f"cls.{view.value}"] = fused[j]
            for k, item in enumerate(seg or []):
                per_case[i][f"seg.{k}"] = item[j]
    return per_case


def _cached_features(
    model: OrthoModel, cases: Sequence, *, cache: FeatureCache, batch_size: int
) -> list[CaseFeatures]:
    found = [cache.get(c.case_id) for c in cases]
    todo = [i for i, f in enumerate(found) if f is None]
    for start in range(0, len(todo), batch_size):
        rows = todo[start : start + batch_size]
        computed = compute_case_features(model, [cases[i] for i in rows], with_seg=True)
        for i, tensors in zip(rows, computed, strict=True):
            found[i] = cache.put(cases[i].case_id, tensors)
    return found  # type: ignore[return-value]


def _stack(items: list[torch.Tensor | None]) -> torch.Tensor:
    template = next(t for t in items if t is not None)
    return torch.stack([template.new_zeros(template.shape) if t is None else t for t in items])


def _seg_inputs(
    model: OrthoModel, cases: Sequence, per_case: list[CaseFeatures]
) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
    n_taps = len(seg_taps(model.config))
    if model.seg_head is None or not any("seg.0" in f for f in per_case):
        return None, None
    maps = [_stack([f.get(f"seg.{k}") for f in per_case]) for k in range(n_taps)]
    cfg = model.config
    image = torch.zeros(len(cases), 1, cfg.input_slices, cfg.input_size, cfg.input_size)
    for row, case in enumerate(cases):
        if SEG_VIEW in case.views:
            image[row] = torch.from_numpy(np.asarray(case.views[SEG_VIEW], dtype=np.float32))
    return maps, image


def assemble(
    model: OrthoModel, cases: Sequence, per_case: list[CaseFeatures], *, with_seg: bool
) -> EncodedCases:
    """Batch per-case features (zeros for absent views) with their targets."""
    present = torch.tensor([[v in c.views for v in VIEWS] for c in cases], dtype=torch.bool)
    features = {
        v.value: _stack([f.get(f"cls.{v.value}") for f in per_case])
        for v in VIEWS
        if any(f"cls.{v.value}" in f for f in per_case)
    }
    seg_maps, seg_image = _seg_inputs(model, cases, per_case) if with_seg else (None, None)
    masks, has_mask = (
        _masks(model, cases) if with_seg else (None, torch.zeros(len(cases), dtype=torch.bool))
    )
    labels, has_labels = _targets(model, cases)
    return EncodedCases(
        case_ids=[c.case_id for c in cases],
        features=features,
        present=present,
        seg_maps=seg_maps,
        seg_image=seg_image,
        labels=labels,
        has_labels=has_labels,
        masks=masks,
        has_mask=has_mask,
    )


def encode_cases(
    model: OrthoModel,
    cases: Sequence,
    *,
    with_seg: bool = True,
    cache: FeatureCache | None = None,
    batch_size: int = 8,
    for_training: bool = False,
) -> EncodedCases:
    """Features of `cases` (backbone passes in chunks of `batch_size` when using a cache).
    `for_training`: only what the losses need (no classification features for a batch
    without labels)."""
    if not cases:
        raise ValueError("no cases to encode")
    if cache is not None:
        per_case = _cached_features(model, cases, cache=cache, batch_size=batch_size)
    else:
        with_cls = not for_training or any(c.labels is not None for c in cases)
        per_case = compute_case_features(model, cases, with_seg=with_seg, with_cls=with_cls)
    return assemble(model, cases, per_case, with_seg=with_seg)


def encode_in_chunks(
    model: OrthoModel, cases: Sequence, *, batch_size: int, cache: FeatureCache | None = None
) -> EncodedCases:
    """`encode_cases` with backbone passes over chunks of `batch_size` (bounded activations)."""
    if cache is None:
        cache = FeatureCache(digest="in-memory")  # memory only: nothing written
    return encode_cases(model, cases, cache=cache, batch_size=batch_size)
