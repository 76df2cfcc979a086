"""Turn a list of cases into model inputs and features (the bridge from CaseTensors to heads).

`EncodedCases` holds, for N cases, each view's fused feature map (zeros where a case lacks
the view), the (N, 3) view-presence mask, and (knee) the segmentation features of the
sagittal view. Labels and masks ride along with their own presence masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.models.features import case_seed
from core.models.registry import SEG_VIEW, OrthoModel
from core.views import LABELS, VIEWS


@dataclass
class EncodedCases:
    case_ids: list[str]
    features: dict[str, torch.Tensor]  # view -> (N, C, d, h, w); zeros for absent views
    present: torch.Tensor  # (N, 3) bool, VIEWS order
    seg_features: torch.Tensor | None  # (N, C, d', h', w') or None
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
            seg_features=None if self.seg_features is None else self.seg_features[rows],
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


def encode_cases(model: OrthoModel, cases: Sequence, *, with_seg: bool = True) -> EncodedCases:
    """Features of every view of `cases` (one backbone pass per view and timestep)."""
    seed = model.config.features.seed
    present = torch.tensor([[v in c.views for v in VIEWS] for c in cases], dtype=torch.bool)
    masks, has_mask = (
        _masks(model, cases) if with_seg else (None, torch.zeros(len(cases), dtype=torch.bool))
    )
    want_seg = with_seg and model.seg_head is not None
    features: dict[str, torch.Tensor] = {}
    seg_features = None
    for col, view in enumerate(VIEWS):
        rows = torch.nonzero(present[:, col]).flatten()
        if rows.numel() == 0:
            continue
        clean = torch.from_numpy(
            np.stack([np.asarray(cases[i].views[view], dtype=np.float32) for i in rows.tolist()])
        )
        seeds = [case_seed(seed, cases[i].case_id) for i in rows.tolist()]
        seg_here = want_seg and view == SEG_VIEW
        fused, seg = model.encode(view, clean, seeds=seeds, with_seg=seg_here)
        features[view.value] = fused.new_zeros((len(cases), *fused.shape[1:])).index_copy(
            0, rows, fused
        )
        if seg is not None:
            seg_features = seg.new_zeros((len(cases), *seg.shape[1:])).index_copy(0, rows, seg)
    labels, has_labels = _targets(model, cases)
    return EncodedCases(
        case_ids=[c.case_id for c in cases],
        features=features,
        present=present,
        seg_features=seg_features,
        labels=labels,
        has_labels=has_labels,
        masks=masks,
        has_mask=has_mask,
    )


def concat_encoded(parts: Sequence[EncodedCases]) -> EncodedCases:
    """Join encoded chunks (a view absent from a chunk becomes zeros there)."""
    if len(parts) == 1:
        return parts[0]
    views = {v: f for p in parts for v, f in p.features.items()}

    def cat_view(view: str) -> torch.Tensor:
        template = views[view]
        return torch.cat(
            [
                p.features.get(view, template.new_zeros((len(p.case_ids), *template.shape[1:])))
                for p in parts
            ]
        )

    seg_template = next((p.seg_features for p in parts if p.seg_features is not None), None)
    mask_template = next((p.masks for p in parts if p.masks is not None), None)

    def cat_optional(attr: str, template: torch.Tensor | None) -> torch.Tensor | None:
        if template is None:
            return None
        return torch.cat(
            [
                getattr(p, attr)
                if getattr(p, attr) is not None
                else template.new_zeros((len(p.case_ids), *template.shape[1:]))
                for p in parts
            ]
        )

    return EncodedCases(
        case_ids=[c for p in parts for c in p.case_ids],
        features={v: cat_view(v) for v in views},
        present=torch.cat([p.present for p in parts]),
        seg_features=cat_optional("seg_features", seg_template),
        labels=torch.cat([p.labels for p in parts]),
        has_labels=torch.cat([p.has_labels for p in parts]),
        masks=cat_optional("masks", mask_template),
        has_mask=torch.cat([p.has_mask for p in parts]),
    )


def encode_in_chunks(model: OrthoModel, cases: Sequence, *, batch_size: int) -> EncodedCases:
    """`encode_cases` over chunks of `batch_size` cases (bounded activation memory)."""
    if not cases:
        raise ValueError("no cases to encode")
    chunks = [cases[i : i + batch_size] for i in range(0, len(cases), batch_size)]
    return concat_encoded([encode_cases(model, list(c)) for c in chunks])
