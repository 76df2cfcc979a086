"""PNG plots of the reproduction: label-efficiency curve, privacy curve, cross-site heatmap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.atomic import write_bytes_atomic  # noqa: E402
from reproduce import specs  # noqa: E402
from reproduce.config import ReproduceConfig  # noqa: E402
from reproduce.tables import Results, by_suffix, mean_sd, values_of  # noqa: E402

AUC = "metrics.macro_auc"


def _save(fig, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def label_efficiency(results: Results, config: ReproduceConfig, path: Path) -> Path:
    """Macro AUC against the label fraction: one panel for the pooled knee held-out cases,
    then one per knee site (the same models, their held-out cases split by site)."""
    grouped = by_suffix(results)
    fractions = sorted(config.label_fractions)
    panels = {"knee pool": AUC} | {
        site: f"per_site.{site}.macro_auc" for site in specs.row1_sites(config)
    }
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.2 * len(panels), 4.2), sharey=True, squeeze=False
    )
    curves = {
        specs.METHODS[m][0]: [specs.r1(m, f) for f in fractions]
        for m in specs.LABEL_EFFICIENCY_METHODS
    }
    curves[specs.CNN_LABEL] = [specs.r1_cnn(f) for f in fractions]
    for ax, (title, metric) in zip(axes[0], panels.items(), strict=True):
        for label, suffixes in curves.items():
            stats = [
                mean_sd(values_of(grouped, suffix=s, metric=metric).values()) for s in suffixes
            ]
            xs = [100 * f for f, (m, _) in zip(fractions, stats, strict=True) if m is not None]
            ys = [m for m, _ in stats if m is not None]
            errs = [sd or 0.0 for m, sd in stats if m is not None]
            if xs:
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xticks([100 * f for f in fractions], [specs.pct(f) for f in fractions])
        ax.set_xlabel("labelled training cases (knee pool)")
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(f"Label efficiency: held-out {title}")
    axes[0][0].set_ylabel("macro AUC, held-out (mean ± sd over seeds)")
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def privacy(results: Results, config: ReproduceConfig, path: Path) -> Path:
    """Macro AUC against the epsilon actually spent; epsilon = inf drawn at the right edge."""
    grouped = by_suffix(results)
    points = []
    for eps in config.privacy.epsilons:
        auc = mean_sd(values_of(grouped, suffix=specs.r4(eps), metric=AUC).values())
        spent = mean_sd(values_of(grouped, suffix=specs.r4(eps), metric="epsilon").values())[0]
        if auc[0] is not None:
            points.append((spent if spent is not None else eps, *auc))
    inf_auc = mean_sd(values_of(grouped, suffix=specs.r4(None), metric=AUC).values())
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    right = max([p[0] for p in points] + [1.0]) * 1.6
    if points:
        points.sort()
        ax.errorbar(
            [p[0] for p in points],
            [p[1] for p in points],
            yerr=[p[2] or 0.0 for p in points],
            marker="o",
            capsize=3,
            label="client DP",
        )
    if inf_auc[0] is not None:
        ax.errorbar(
            [right],
            [inf_auc[0]],
            yerr=[inf_auc[1] or 0.0],
            marker="s",
            capsize=3,
            color="black",
            label="no DP (epsilon = inf)",
        )
    ticks = [p[0] for p in points] + [right]
    ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks[:-1]] + ["inf"])
    ax.set_xlabel(f"epsilon spent (worst site, delta {config.privacy.delta:.0e})")
    ax.set_ylabel("macro AUC, knee held-out")
    ax.set_title("Privacy cost")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, path)


def cross_site_heatmap(matrix: dict[str, Any], path: Path) -> Path:
    values = np.array(
        [[np.nan if v is None else v for v in row] for row in matrix["macro_auc"]], dtype=float
    )
    fig, ax = plt.subplots(
        figsize=(3.4 + 1.4 * len(matrix["sites"]), 1.4 + 0.6 * len(matrix["models"]))
    )
    low = min(0.5, float(np.nanmin(values))) if np.isfinite(values).any() else 0.5
    image = ax.imshow(values, vmin=low, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(matrix["sites"])), matrix["sites"])
    ax.set_yticks(range(len(matrix["models"])), matrix["models"])
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(
                j,
                i,
                "n/a" if np.isnan(v) else f"{v:.3f}",
                ha="center",
                va="center",
                color="white" if np.isnan(v) or v < (low + 1.0) / 2 else "black",
                fontsize=9,
            )
    ax.set_xlabel("evaluated on (held-out split)")
    ax.set_title("Cross-site macro AUC\n(mean over seeds)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.05)
    return _save(fig, path)
