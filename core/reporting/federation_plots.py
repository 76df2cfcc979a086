"""Matplotlib figures of the federation report (Agg backend, closed by `figure_block`).

Each function takes plain data already pulled out of history.jsonl and returns a figure;
one colour per site across every figure, so a site reads the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

Series = Mapping[str, Sequence[tuple[float, float]]]  # site -> [(x, y)]
WEIGHTED_COLOR = "#444444"


def site_colors(sites: Sequence[str], *, palette_name: str = "tab10") -> dict[str, str]:
    palette = plt.get_cmap(palette_name).colors
    return {
        site: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, site in enumerate(sites)
    }


def _plot_series(ax, series: Series, *, colors: Mapping[str, str]) -> None:
    for site, points in series.items():
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", markersize=4, color=colors.get(site), label=site)
    ax.grid(alpha=0.3)


def _round_ticks(ax, series: Series) -> None:
    """Ticks on the rounds themselves when there are few (a lone round gets a readable axis)."""
    rounds = sorted({x for points in series.values() for x, _ in points})
    if len(rounds) > 12 or not rounds:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        return
    ax.set_xticks(rounds, [f"{x:g}" for x in rounds])
    if len(rounds) == 1:
        ax.set_xlim(rounds[0] - 1, rounds[0] + 1)


def lines_by_panel(
    panels: Mapping[str, Series],
    *,
    colors: Mapping[str, str],
    xlabel: str,
    ylabel: str,
    shared_legend: bool = True,
):
    """One panel per key (e.g. per view), one line per site; one legend or one per panel."""
    count = max(1, len(panels))
    fig, axes = plt.subplots(1, count, figsize=(min(4.2 * count, 12), 3.2), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels.items(), strict=False):
        _plot_series(ax, series, colors=colors)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        _round_ticks(ax, series)
        if not shared_legend:
            ax.legend(fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    handles, labels = _unique_legend(axes[0]) if shared_legend else ([], [])
    if labels:
        fig.legend(
            handles, labels, loc="upper center", ncol=min(len(labels), 6), bbox_to_anchor=(0.5, 1.1)
        )
    fig.tight_layout()
    return fig


def _unique_legend(axes) -> tuple[list, list[str]]:
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def bar_per_site(values: Mapping[str, float | None], *, colors: Mapping[str, str], ylabel: str):
    """One bar per site (and `weighted`, drawn grey); values written on the bars."""
    names = list(values)
    heights = [_finite_or_zero(values[n]) for n in names]
    fig, ax = plt.subplots(figsize=(max(3.5, 1.1 * len(names) + 1.5), 3.2))
    bar_colors = [colors.get(n, WEIGHTED_COLOR) for n in names]
    bars = ax.bar(names, heights, color=bar_colors)
    for bar, name in zip(bars, names, strict=True):
        value = values[name]
        text = "–" if not _finite(value) else f"{value:.3f}"
        ax.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.axhline(0.5, color="#999999", linestyle="--", linewidth=1, label="chance (0.5)")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(ylabel)
    ax.legend(loc="lower right", fontsize=8)
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    return fig


def traffic(
    labels: Sequence[str],
    *,
    down_mb: Sequence[float],
    up_mb: Sequence[float],
    wall_s: Sequence[float | None],
    compute_s: Sequence[float | None],
):
    """Left: MB sent to / received from the sites per round. Right: wall vs slowest-site time."""
    xs = list(range(len(labels)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2))
    width = 0.4
    left.bar(
        [x - width / 2 for x in xs], down_mb, width, label="down (server → sites)", color="#4c72b0"
    )
    left.bar(
        [x + width / 2 for x in xs], up_mb, width, label="up (sites → server)", color="#dd8452"
    )
    left.set_ylabel("MB per round")
    left.set_ylim(0, 1.3 * max([*down_mb, *up_mb, 1e-3]))
    left.legend(fontsize=8, ncol=2, loc="upper center")
    right.plot(xs, [_nan(v) for v in wall_s], marker="o", label="round wall time", color="#4c72b0")
    right.plot(
        xs, [_nan(v) for v in compute_s], marker="s", label="slowest site compute", color="#dd8452"
    )
    right.set_ylabel("seconds")
    right.set_ylim(0, 1.3 * max([v for v in (*wall_s, *compute_s) if _finite(v)] or [1.0]))
    right.legend(fontsize=8, ncol=2, loc="upper center")
    for ax in (left, right):
        ax.set_xticks(xs, labels, rotation=45 if len(xs) > 12 else 0, fontsize=8)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def heatmap(
    matrix: Sequence[Sequence[float | None]],
    *,
    rows: Sequence[str],
    columns: Sequence[str],
    label: str,
):
    """Values written in each cell; missing cells (None) left blank with an en dash."""
    data = [[_nan(v) for v in row] for row in matrix]
    finite = [v for row in data for v in row if not math.isnan(v)]
    low = min([0.5, *finite])
    fig, ax = plt.subplots(
        figsize=(max(4.0, 1.2 * len(columns) + 2.5), max(2.2, 0.6 * len(rows) + 1.2))
    )
    image = ax.imshow(data, cmap="viridis", vmin=low, vmax=1.0, aspect="auto")
    for i, row in enumerate(data):
        for j, value in enumerate(row):
            text = "–" if math.isnan(value) else f"{value:.3f}"
            shade = "black" if not math.isnan(value) and value > low + 0.6 * (1 - low) else "white"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                color=shade if text != "–" else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(columns)), columns, rotation=20)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("evaluated on (held-out split of)")
    ax.set_ylabel("model")
    fig.colorbar(image, ax=ax, label=label)
    fig.tight_layout()
    return fig


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite_or_zero(value: object) -> float:
    return float(value) if _finite(value) else 0.0


def _nan(value: object) -> float:
    return float(value) if _finite(value) else float("nan")
