"""The loss curve of a local pretraining run (`RUN_DIR/loss.png` from `RUN_DIR/log.jsonl`).

The DDPM loss of one step depends on the timesteps it happened to draw, so single points
scatter widely; the figure shows them faintly with a running mean over `window` logged
points per view, on a log scale where a plateau is easy to see.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from core.atomic import write_bytes_atomic


def read_loss_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """`{view: [(step, loss)]}` from a pretraining log.jsonl (unreadable lines skipped)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            curves.setdefault(str(record["view"]), []).append(
                (int(record["step"]), float(record["loss"]))
            )
        except (ValueError, KeyError, TypeError):
            continue
    return curves


def running_mean(values: list[float], *, window: int) -> np.ndarray:
    """Mean of the last `window` values at each point (fewer at the start)."""
    cumulative = np.cumsum(np.insert(np.asarray(values, dtype=np.float64), 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def write_loss_plot(log_path: Path, out_path: Path, *, window: int = 10) -> Path | None:
    """Write the per-view loss figure as PNG; None when the log holds no losses."""
    curves = read_loss_log(log_path) if log_path.is_file() else {}
    if not any(curves.values()):
        return None
    from core.reporting.federation_plots import plt  # matplotlib: only when a figure is drawn

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for view, points in curves.items():
        steps, losses = zip(*points, strict=True)
        (line,) = ax.plot(steps, running_mean(list(losses), window=window), label=view)
        ax.plot(steps, losses, color=line.get_color(), alpha=0.25, linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"diffusion loss (running mean of {window} logged steps)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(out_path, buffer.getvalue())
    return out_path
