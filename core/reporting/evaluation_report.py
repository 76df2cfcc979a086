"""`REPORT_DIR/report.html` of `orthofed evaluate`: one self-contained page per evaluation.

Header (checkpoint, site, joint, date), a summary table per label, ROC curves, a reliability
diagram, (knee) segmentation scores and overlays, and the case counts behind every number.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from core.atomic import write_bytes_atomic
from core.eval.metrics import reliability_bins
from core.eval.thresholds import roc_points
from core.models.predict import Evaluation, Predictions
from core.models.registry import SEG_VIEW
from core.reporting.evaluation_plots import (
    OverlayExample,
    RocPanel,
    overlay_grid,
    reliability_plot,
    roc_grid,
)
from core.reporting.html import figure_block, fmt, page, paragraph, section, table
from core.views import KNEE_STRUCTURES, VIEWS

REPORT_NAME = "report.html"


def _ci_text(ci: Sequence[float] | None) -> str:
    return "–" if not ci else f"{ci[0]:.3f} – {ci[1]:.3f}"


def _threshold_text(value: float, source: str) -> str:
    return f"{value:.3f}" + ("" if source == "youden" else f" ({source})")


def _labeled(predictions: Predictions) -> tuple[np.ndarray, np.ndarray]:
    rows = predictions.has_labels
    return predictions.probabilities[rows], predictions.labels[rows]


def roc_panels(evaluation: Evaluation) -> list[RocPanel]:
    report = evaluation.report
    probabilities, labels = _labeled(evaluation.heldout)
    panels = []
    for j, name in enumerate(report["auc"]):
        fpr = tpr = point = None
        if report["auc"][name] is not None:
            fpr, tpr, _ = roc_points(probabilities[:, j], labels[:, j])
            point = (1 - report["specificity"][name], report["sensitivity"][name])
        panels.append(
            RocPanel(
                label=name,
                fpr=fpr,
                tpr=tpr,
                auc=report["auc"][name],
                ci=report["auc_ci"][name],
                point=point,
                n_positive=report["n_positive"][name],
                n_negative=report["n_negative"][name],
            )
        )
    return panels


def _summary(report: dict) -> str:
    rows = [
        (
            name,
            report["n_positive"][name],
            report["n_negative"][name],
            report["auc"][name],
            _ci_text(report["auc_ci"][name]),
            _threshold_text(report["threshold"][name], report["threshold_source"][name]),
            report["sensitivity"][name],
            report["specificity"][name],
        )
        for name in report["auc"]
    ]
    header = [
        "label",
        "positives",
        "negatives",
        "AUC",
        "95% CI",
        "threshold",
        "sensitivity",
        "specificity",
    ]
    lead = (
        f"Macro AUC {fmt(report['macro_auc'])} (95% CI {_ci_text(report['macro_auc_ci'])}), "
        f"expected calibration error {fmt(report['calibration_error'])}, on "
        f"{report['n_labeled']} labeled held-out cases."
    )
    if "mean_dice" in report:
        lead += (
            f" Segmentation: mean Dice {fmt(report['mean_dice'])}, mean HD95 "
            f"{fmt(report['mean_hd95'], digits=1)} ({report['hd95_unit']}) on "
            f"{report['n_masks']} held-out masks."
        )
    parts = [paragraph(lead), table(header, rows, text_columns=1)]
    parts.append(
        paragraph(
            f"Thresholds maximise Youden's J (sensitivity + specificity - 1) on the site's "
            f"{report['n_threshold_cases']} labeled training cases; the held-out cases were not "
            "used to choose them. Sensitivity and specificity are measured on the held-out cases. "
            "CIs: percentile bootstrap over held-out cases "
            f"({report['bootstrap_resamples']} resamples; resamples with one class skipped)."
        )
    )
    fallback = [n for n, s in report["threshold_source"].items() if s == "default"]
    if fallback:
        parts.append(
            paragraph(
                f"Threshold 0.5 (no choice possible: one class or no labeled training cases) for: "
                f"{', '.join(fallback)}.",
                css="note",
            )
        )
    return section("Summary", *parts)


def _roc_section(evaluation: Evaluation) -> str:
    figure = roc_grid(roc_panels(evaluation))
    caption = (
        "ROC curve per label on the labeled held-out cases; red dot: the operating point at "
        "the threshold chosen on training cases; corner: positives+ / negatives-."
    )
    return section("ROC curves", figure_block(figure, caption=caption))


def _calibration_section(evaluation: Evaluation) -> str:
    probabilities, labels = _labeled(evaluation.heldout)
    ece = evaluation.report["calibration_error"]
    if probabilities.size == 0:
        return section("Calibration", paragraph("No labeled held-out cases.", css="note"))
    mean_p, frequency, counts = reliability_bins(probabilities, labels)
    figure = reliability_plot(mean_probability=mean_p, frequency=frequency, counts=counts, ece=ece)
    caption = (
        f"Reliability diagram, 10 equal-width bins, all labels pooled ({int(counts.sum())} "
        f"case-label pairs). Expected calibration error {fmt(ece)}: the count-weighted mean gap "
        "between the curve and the diagonal."
    )
    return section("Calibration", figure_block(figure, caption=caption))


def representative_slice(mask: np.ndarray | None) -> int:
    """The slice with the most ground-truth foreground (the middle one without any)."""
    if mask is None or not np.any(mask):
        return 0 if mask is None else mask.shape[0] // 2
    return int(np.argmax((np.asarray(mask) > 0).reshape(mask.shape[0], -1).sum(axis=1)))


def overlay_examples(predictions: Predictions, cases: Sequence) -> list[OverlayExample]:
    """Segmented-view overlays of the cases whose predicted masks were kept."""
    by_id = {c.case_id: c for c in cases}
    examples = []
    for case_id, prediction in predictions.seg_examples.items():
        case = by_id[case_id]
        index = representative_slice(case.mask)
        others = {
            view.value: np.asarray(case.views[view][0, case.views[view].shape[1] // 2], np.float32)
            for view in VIEWS
            if view != SEG_VIEW and view in case.views
        }
        examples.append(
            OverlayExample(
                case_id=case_id,
                image=np.asarray(case.views[SEG_VIEW][0, index], dtype=np.float32),
                truth=np.asarray(case.mask[index]),
                prediction=prediction[index],
                slice_index=index,
                other_views=others,
            )
        )
    return examples


def _segmentation_section(evaluation: Evaluation, cases: Sequence) -> str:
    report, predictions = evaluation.report, evaluation.heldout
    if predictions.dice is None:
        present = dict.fromkeys(KNEE_STRUCTURES, 0)
    else:
        counted = (~np.isnan(predictions.dice.numpy())).sum(axis=0)
        present = {name: int(counted[j]) for j, name in enumerate(KNEE_STRUCTURES)}
    rows = [
        (n, report["dice"][n], fmt(report["hd95"][n], digits=1), present[n])
        for n in KNEE_STRUCTURES
    ]
    parts = [
        table(["structure", "Dice", "HD95", "held-out masks with it"], rows),
        paragraph(
            f"HD95: 95th-percentile Hausdorff distance in {report['hd95_unit']}; a structure "
            "the model missed entirely counts as the grid diagonal. A structure absent from a "
            "ground truth is left out for that case."
        ),
    ]
    examples = overlay_examples(predictions, cases)
    if examples:
        figure = overlay_grid(
            examples,
            structures=KNEE_STRUCTURES,
            seg_view=SEG_VIEW.value,
            views=[v.value for v in VIEWS],
        )
        caption = (
            f"The segmentation head works on the {SEG_VIEW.value} view only: the first two "
            f"columns show ground truth and prediction on the {SEG_VIEW.value} slice with the "
            "most ground-truth voxels; the other views show the middle input slice for reference."
        )
        parts.append(figure_block(figure, caption=caption))
    else:
        parts.append(
            paragraph(
                f"No held-out case has a mask and a {SEG_VIEW.value} series: no overlays.",
                css="note",
            )
        )
    return section("Segmentation (knee)", *parts)


def _counts_section(report: dict) -> str:
    rows = [
        ("held-out cases", "everything on this page", report["n_cases"]),
        (
            "labeled held-out cases",
            "AUC, CIs, sensitivity, specificity, calibration",
            report["n_labeled"],
        ),
        (
            "unlabeled held-out cases (skipped)",
            "nothing: no labels to score against",
            report["n_unlabeled_skipped"],
        ),
        ("labeled training cases", "choosing the thresholds only", report["n_threshold_cases"]),
        ("bootstrap resamples", "95% confidence intervals", report["bootstrap_resamples"]),
    ]
    if "n_masks" in report:
        rows.append(
            (
                "held-out cases with a mask",
                f"Dice, HD95, overlays ({SEG_VIEW.value} view)",
                report["n_masks"],
            )
        )
    parts = [table(["count", "used for", "n"], rows, text_columns=2)]
    parts.append(
        paragraph(
            "Per-label positives and negatives are in the summary table; per-structure counts in "
            "the segmentation table."
        )
    )
    return section("Case counts", *parts)


def render_evaluation_report(
    *,
    evaluation: Evaluation,
    cases: Sequence,
    checkpoint: str | Path,
    site_id: str,
    created: datetime | None = None,
) -> str:
    """The report page as one HTML string (plots embedded as PNG data URIs)."""
    report = evaluation.report
    when = (created or datetime.now().astimezone()).strftime("%Y-%m-%d %H:%M %Z").strip()
    subtitle = (
        f"checkpoint {checkpoint} · site {site_id} · joint {report['joint']} · "
        f"evaluated {when} · {report['n_cases']} held-out cases"
    )
    sections = [_summary(report), _roc_section(evaluation), _calibration_section(evaluation)]
    if "dice" in report:
        sections.append(_segmentation_section(evaluation, cases))
    sections.append(_counts_section(report))
    if report["n_unlabeled_skipped"]:
        sections.insert(
            0,
            paragraph(
                f"{report['n_unlabeled_skipped']} of {report['n_cases']} held-out cases have no "
                "labels; they are skipped for the classification metrics.",
                css="note",
            ),
        )
    return page(
        title=f"Evaluation of {site_id} ({report['joint']})", subtitle=subtitle, sections=sections
    )


def write_evaluation_report(
    out_dir: str | Path,
    *,
    evaluation: Evaluation,
    cases: Sequence,
    checkpoint: str | Path,
    site_id: str,
) -> Path:
    """Write `out_dir/report.html` atomically; returns its path."""
    target = Path(out_dir) / REPORT_NAME
    html = render_evaluation_report(
        evaluation=evaluation, cases=cases, checkpoint=checkpoint, site_id=site_id
    )
    write_bytes_atomic(target, html.encode("utf-8"))
    return target
