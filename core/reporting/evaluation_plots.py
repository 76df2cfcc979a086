"""Matplotlib figures of the local evaluation report (Agg backend, closed by `figure_block`).

Each function takes plain arrays already computed by the evaluation and returns a figure:
ROC curves per label (small multiples), a reliability diagram, segmentation overlays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

CURVE_COLOR = "#0969da"
POINT_COLOR = "#cf222e"


@dataclass(frozen=True)
class RocPanel:
    label: str
    fpr: np.ndarray | None  # None: the held-out cases have one class for this label
    tpr: np.ndarray | None
    auc: float | None
    ci: Sequence[float] | None
    point: tuple[float, float] | None  # (1 - specificity, sensitivity) at the threshold
    n_positive: int
    n_negative: int


@dataclass(frozen=True)
class OverlayExample:
    case_id: str
    image: np.ndarray  # (H, W) slice of the segmented view, in [-1, 1]
    truth: np.ndarray  # (H, W) ground-truth classes
    prediction: np.ndarray  # (H, W) predicted classes
    slice_index: int
    other_views: dict[str, np.ndarray] = field(default_factory=dict)  # view -> (H, W) slice


def _title(panel: RocPanel) -> str:
    if panel.auc is None:
        return f"{panel.label}\nAUC n/a"
    ci = f" [{panel.ci[0]:.2f}, {panel.ci[1]:.2f}]" if panel.ci else ""
    return f"{panel.label}\nAUC {panel.auc:.2f}{ci}"


def _roc_axes(ax, panel: RocPanel) -> None:
    ax.plot([0, 1], [0, 1], color="#8c959f", lw=0.8, ls="--")
    if panel.fpr is None:
        ax.text(
            0.5,
            0.5,
            "one class only\nin held-out cases",
            ha="center",
            va="center",
            fontsize=8,
            color="#57606a",
        )
    else:
        ax.plot(panel.fpr, panel.tpr, color=CURVE_COLOR, lw=1.6)  # ties: diagonal segments
        if panel.point is not None:
            ax.plot(*panel.point, "o", color=POINT_COLOR, ms=5)
    ax.set_title(_title(panel), fontsize=8.5)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)
    ax.text(
        0.98,
        0.03,
        f"{panel.n_positive}+ / {panel.n_negative}-",
        ha="right",
        va="bottom",
        fontsize=7,
        color="#57606a",
        transform=ax.transAxes,
    )


def roc_grid(panels: Sequence[RocPanel], *, columns: int = 4):
    """One ROC panel per label; the dot is the operating point at the chosen threshold."""
    rows = max(1, math.ceil(len(panels) / columns))
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(2.6 * columns, 3.0 * rows),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    for ax, panel in zip(axes.flat, panels, strict=False):
        _roc_axes(ax, panel)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("1 - specificity", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("sensitivity", fontsize=8)
    fig.tight_layout(h_pad=1.5)
    return fig


def reliability_plot(
    *, mean_probability: np.ndarray, frequency: np.ndarray, counts: np.ndarray, ece: float | None
):
    """Observed frequency against mean predicted probability per bin, with bin counts."""
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(4.6, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    edges = np.linspace(0, 1, len(counts) + 1)
    used = counts > 0
    top.plot([0, 1], [0, 1], color="#8c959f", lw=0.8, ls="--", label="perfect calibration")
    top.plot(mean_probability[used], frequency[used], "o-", color=CURVE_COLOR, label="model")
    top.set_ylabel("observed frequency of the finding", fontsize=8)
    top.set_xlim(0, 1)
    top.set_ylim(-0.02, 1.02)
    title = "all labels pooled" + ("" if ece is None else f", ECE {ece:.3f}")
    top.set_title(title, fontsize=9)
    top.legend(fontsize=7, loc="upper left")
    bottom.bar(
        edges[:-1], counts, width=np.diff(edges), align="edge", color="#8c959f", edgecolor="white"
    )
    bottom.set_ylabel("predictions", fontsize=8)
    bottom.set_xlabel("predicted probability", fontsize=8)
    for ax in (top, bottom):
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def _structure_colors(n_structures: int) -> ListedColormap:
    palette = plt.get_cmap("tab20").colors
    return ListedColormap([palette[i % len(palette)] for i in range(n_structures)])


def _show_labels(ax, image: np.ndarray, *, classes: np.ndarray, cmap, n_structures: int) -> None:
    ax.imshow(image, cmap="gray", vmin=-1, vmax=1)
    shown = np.ma.masked_equal(classes.astype(int), 0)
    norm = BoundaryNorm(np.arange(0.5, n_structures + 1.5), n_structures)
    ax.imshow(shown, cmap=cmap, norm=norm, alpha=0.5, interpolation="nearest")


def _outline(ax, classes: np.ndarray) -> None:
    """Ground-truth boundaries as thin white lines."""
    if classes.max() == 0:
        return
    for value in np.unique(classes[classes > 0]):
        ax.contour(classes == value, levels=[0.5], colors="white", linewidths=0.6)


def overlay_grid(
    examples: Sequence[OverlayExample],
    *,
    structures: Sequence[str],
    seg_view: str,
    views: Sequence[str],
):
    """Per case: ground truth and prediction on the segmented view (prediction with the
    ground-truth outline), then the other views' input slices without masks."""
    others = [v for v in views if v != seg_view]
    columns = 2 + len(others)
    cmap = _structure_colors(len(structures))
    fig, axes = plt.subplots(
        len(examples),
        columns,
        figsize=(2.5 * columns, 2.7 * len(examples)),
        squeeze=False,
    )
    n = len(structures)
    for row, ex in zip(axes, examples, strict=True):
        _show_labels(row[0], ex.image, classes=ex.truth, cmap=cmap, n_structures=n)
        row[0].set_title(
            f"{ex.case_id}: {seg_view} slice {ex.slice_index}\nground truth", fontsize=8
        )
        _show_labels(row[1], ex.image, classes=ex.prediction, cmap=cmap, n_structures=n)
        _outline(row[1], ex.truth)
        row[1].set_title("prediction\n(white: ground-truth outline)", fontsize=8)
        for ax, view in zip(row[2:], others, strict=True):
            if view in ex.other_views:
                ax.imshow(ex.other_views[view], cmap="gray", vmin=-1, vmax=1)
                ax.set_title(f"{view} (input only,\nnot segmented)", fontsize=8)
            else:
                ax.text(0.5, 0.5, f"no {view} series", ha="center", va="center", fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Patch(color=cmap(i), label=name) for i, name in enumerate(structures)]
    fig.tight_layout(h_pad=2.5)
    fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(6, len(handles)),
        fontsize=7,
        frameon=False,
    )  # kept by bbox "tight"
    return fig
