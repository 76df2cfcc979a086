"""Run a model on cases and turn its predictions into the metrics.json payload.

Held-out cases give every reported number. The site's labeled training cases are predicted
too, only to choose each label's decision threshold (never on the held-out cases).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from core.eval.bootstrap import N_RESAMPLES
from core.eval.classification import classification_metrics
from core.eval.metrics import dice_rows, hd95_rows, mean_defined, mean_per_structure
from core.eval.thresholds import choose_thresholds
from core.models.encode import encode_cases
from core.models.registry import OrthoModel
from core.views import KNEE_STRUCTURES, LABELS

HD95_UNIT = "voxels of the model input grid"


@dataclass
class Predictions:
    case_ids: list[str]
    probabilities: np.ndarray  # (N, n_labels)
    labels: np.ndarray  # (N, n_labels)
    has_labels: np.ndarray  # (N,) bool
    dice: torch.Tensor | None  # (cases with masks, n_structures), NaN where GT is empty
    hd95: torch.Tensor | None = None  # same rows as dice
    mask_case_ids: list[str] = field(default_factory=list)  # the cases behind dice/hd95 rows
    seg_examples: dict[str, np.ndarray] = field(default_factory=dict)  # case -> (D, H, W) uint8

    def subset(self, case_ids: Collection[str]) -> Predictions:
        """The predictions of the cases in `case_ids` only (order kept), e.g. one site's share
        of a pooled evaluation, so that its metrics need no second pass through the model."""
        keep = np.array([c in case_ids for c in self.case_ids], dtype=bool)
        if not keep.any():
            raise ValueError("none of the given case ids was predicted")
        mask_rows = [i for i, c in enumerate(self.mask_case_ids) if c in case_ids]

        def rows(values: torch.Tensor | None) -> torch.Tensor | None:
            return None if values is None or not mask_rows else values[mask_rows]

        return Predictions(
            case_ids=[c for c, k in zip(self.case_ids, keep, strict=True) if k],
            probabilities=self.probabilities[keep],
            labels=self.labels[keep],
            has_labels=self.has_labels[keep],
            dice=rows(self.dice),
            hd95=rows(self.hd95),
            mask_case_ids=[self.mask_case_ids[i] for i in mask_rows],
            seg_examples={c: m for c, m in self.seg_examples.items() if c in case_ids},
        )


@dataclass
class Evaluation:
    report: dict  # the metrics.json payload
    heldout: Predictions
    training: Predictions | None  # labeled training cases (threshold choice); None if none


def _segment(model: OrthoModel, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(predicted class maps, Dice rows, HD95 rows) of the batch's cases with masks."""
    rows = batch.has_mask
    logits = model.segment(batch.seg_image[rows], [m[rows] for m in batch.seg_maps])
    prediction = logits.argmax(dim=1, keepdim=True)
    target = batch.masks[batch.has_mask]
    n_classes = logits.shape[1]
    return (
        prediction,
        dice_rows(prediction, target, n_classes=n_classes),
        hd95_rows(prediction, target, n_classes=n_classes),
    )


@torch.no_grad()
def predict(
    model: OrthoModel,
    cases: Sequence,
    *,
    batch_size: int = 4,
    with_seg: bool = True,
    keep_masks: int = 0,
) -> Predictions:
    """Classification probabilities for every case; Dice and HD95 for cases with masks
    (when `with_seg`), keeping the predicted masks of the first `keep_masks` of them."""
    if not cases:
        raise ValueError("no cases to evaluate")
    probs, labels, has, dice, hd95, mask_ids = [], [], [], [], [], []
    examples: dict[str, np.ndarray] = {}
    for start in range(0, len(cases), batch_size):
        batch = encode_cases(model, list(cases[start : start + batch_size]), with_seg=with_seg)
        probs.append(torch.sigmoid(model.classify(batch.features, batch.present)).float())
        labels.append(batch.labels)
        has.append(batch.has_labels)
        if batch.masks is not None and bool(batch.has_mask.any()):
            maps, dice_part, hd95_part = _segment(model, batch)
            ids = [i for i, m in zip(batch.case_ids, batch.has_mask.tolist(), strict=True) if m]
            for case_id, label_map in zip(ids, maps, strict=True):
                if len(examples) < keep_masks:
                    examples[case_id] = label_map[0].numpy().astype(np.uint8)
            dice.append(dice_part)
            hd95.append(hd95_part)
            mask_ids.extend(ids)
    return Predictions(
        case_ids=[c.case_id for c in cases],
        probabilities=torch.cat(probs).numpy(),
        labels=torch.cat(labels).numpy(),
        has_labels=torch.cat(has).numpy(),
        dice=torch.cat(dice) if dice else None,
        hd95=torch.cat(hd95) if hd95 else None,
        mask_case_ids=mask_ids,
        seg_examples=examples,
    )


def _segmentation_report(predictions: Predictions) -> dict:
    if predictions.dice is None:
        dice, hd95 = dict.fromkeys(KNEE_STRUCTURES), dict.fromkeys(KNEE_STRUCTURES)
    else:
        dice = mean_per_structure(predictions.dice, names=KNEE_STRUCTURES)
        hd95 = mean_per_structure(predictions.hd95, names=KNEE_STRUCTURES)
    return {
        "dice": dice,
        "mean_dice": mean_defined(dice),
        "hd95": hd95,
        "mean_hd95": mean_defined(hd95),
        "hd95_unit": HD95_UNIT,
        "n_masks": len(predictions.mask_case_ids),
    }


def metrics_report(
    model: OrthoModel,
    predictions: Predictions,
    *,
    training: Predictions | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict:
    """The metrics.json payload of held-out `predictions`; thresholds come from `training`
    (labeled training-side predictions), 0.5 where it cannot choose one."""
    names = LABELS[model.joint]
    rows = predictions.has_labels
    train_p = np.zeros((0, len(names))) if training is None else training.probabilities
    train_y = np.zeros((0, len(names))) if training is None else training.labels
    if training is not None:
        train_p, train_y = train_p[training.has_labels], train_y[training.has_labels]
    classification = classification_metrics(
        test_probabilities=predictions.probabilities[rows],
        test_labels=predictions.labels[rows],
        train_probabilities=train_p,
        train_labels=train_y,
        names=names,
        n_resamples=n_resamples,
        seed=seed,
    )
    report = {
        "joint": model.joint.value,
        "n_cases": len(predictions.case_ids),
        "n_labeled": int(rows.sum()),
        "n_unlabeled_skipped": int((~rows).sum()),
        "n_threshold_cases": int(train_y.shape[0]),
        **classification,
    }
    if model.seg_head is not None:
        report.update(_segmentation_report(predictions))
    return report


def evaluate_cases(
    model: OrthoModel, cases: Sequence, *, batch_size: int = 4, keep_masks: int = 0, seed: int = 0
) -> Evaluation:
    """Metrics of `model` on the held-out cases among `cases`, thresholds from the rest."""
    heldout = [c for c in cases if c.heldout]
    if not heldout:
        raise ValueError("the site has no held-out cases to evaluate on (check heldout_fraction)")
    training_cases = [c for c in cases if not c.heldout and c.labels is not None]
    model.eval()
    tested = predict(model, heldout, batch_size=batch_size, keep_masks=keep_masks)
    training = (
        predict(model, training_cases, batch_size=batch_size, with_seg=False)
        if training_cases
        else None
    )
    report = metrics_report(model, tested, training=training, seed=seed)
    return Evaluation(report=report, heldout=tested, training=training)


def training_thresholds(
    model: OrthoModel, cases: Sequence, *, batch_size: int = 4
) -> tuple[dict[str, float], dict[str, str], int]:
    """Per-label decision thresholds chosen on the labeled *training* cases among `cases`
    (held-out ones never look): (thresholds, how each was chosen, number of cases used)."""
    names = LABELS[model.joint]
    training = [c for c in cases if not c.heldout and c.labels is not None]
    if not training:
        thresholds, methods = choose_thresholds(
            np.zeros((0, len(names))), np.zeros((0, len(names))), names=names
        )
        return thresholds, methods, 0
    model.eval()
    scored = predict(model, training, batch_size=batch_size, with_seg=False)
    rows = scored.has_labels
    thresholds, methods = choose_thresholds(
        scored.probabilities[rows], scored.labels[rows], names=names
    )
    return thresholds, methods, int(rows.sum())


def evaluate(model: OrthoModel, cases: Sequence, *, batch_size: int = 4) -> dict:
    """The metrics.json payload of `model` on the site's `cases` (all of them: held-out ones
    are evaluated, labeled training ones choose the thresholds)."""
    return evaluate_cases(model, cases, batch_size=batch_size).report


def evaluate_by_group(
    model: OrthoModel, cases: Sequence, *, groups: Mapping[str, Collection[str]]
) -> tuple[dict, dict[str, dict]]:
    """`evaluate`'s payload on all of `cases`, and one payload per group of case ids (e.g.
    the sites of a pooled case list) from the same predictions and the same thresholds."""
    evaluation = evaluate_cases(model, cases)
    predicted = set(evaluation.heldout.case_ids)
    for name, ids in groups.items():
        if predicted.isdisjoint(ids):
            raise ValueError(f"{name}: none of its cases is held out, nothing to evaluate it on")
    by_group = {
        name: metrics_report(model, evaluation.heldout.subset(ids), training=evaluation.training)
        for name, ids in groups.items()
    }
    return evaluation.report, by_group
