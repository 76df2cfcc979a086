"""Training metrics as TensorBoard scalars (`tracking: tensorboard`), off by default.

A tracker takes `{tag: value}` scalars at a step. `tracking: none` gives a tracker that does
nothing; `tracking: tensorboard` writes event files with `torch.utils.tensorboard` under
`<run dir>/tensorboard/`, so that `tensorboard --logdir RUN_DIR` shows them. TensorBoard is an
optional dependency (`pip install 'orthofed[tracking]'`), imported only when tracking is on.

Tags of a federation round (step: the round's index across phases, as in history.jsonl):
- `<phase>/<metric>/<site>` for each site's metric (`pretrain/loss/sagittal/knee-a`,
  `finetune/loss/knee-a`, `evaluate/macro_auc/knee-a`), `<phase>/<metric>/mean` their mean
  over sites, `evaluate/<metric>/weighted` the case-weighted means of the evaluate round;
- `round/seconds`, `round/bytes_up`, `round/bytes_down`, `round/sites`, `round/missing`,
  `round/rejected`, and `round/compute_s/<site>` (each site's local seconds);
- `groups/<group>/examples` and `groups/<group>/sites`: who trained each weight group;
- `privacy/epsilon/site/<site>` and `privacy/epsilon/group/<group>` when DP is on.
Local pretraining (step: optimizer step, every `train.log_every` as in log.jsonl):
`pretrain/loss/<view>`, `pretrain/lr`, `pretrain/step_seconds`. Local fine-tuning (step:
epoch): `finetune/loss`, `finetune/val_loss/<head>`.

The event log never holds a step twice: a tracker opened with `purge_step` N makes TensorBoard
drop the points at steps >= N that earlier event files in the folder hold. A resumed local
pretraining run purges from the step it resumes at; a resumed federation purges everything
and logs again every round of history.jsonl (so a round is there exactly once).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"
INSTALL_HINT = "pip install 'orthofed[tracking]'"
# Site metrics that have their own tags (compute_s, epsilon) or belong to the DP record (dp_*).
_NOT_PER_PHASE = ("compute_s", "epsilon")


class Tracking(StrEnum):
    """`tracking` values (experiment files and the `--tracking` option use these names)."""

    none = "none"
    tensorboard = "tensorboard"


def parse_tracking(value: Tracking | str) -> Tracking:
    try:
        return Tracking(value)
    except ValueError:
        choices = ", ".join(t.value for t in Tracking)
        raise ValueError(f"tracking={value!r}: use one of {choices}") from None


def require_tracking(tracking: Tracking | str) -> Tracking:
    """The parsed setting, refused up front when its package is not installed."""
    chosen = parse_tracking(tracking)
    if chosen is Tracking.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ValueError(f"tracking=tensorboard needs the tensorboard package: {INSTALL_HINT}")
    return chosen


class NullTracker:
    """`tracking: none`: accepts scalars and drops them."""

    def scalars(self, values: Mapping[str, float], *, step: int) -> None:
        del values, step

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TensorBoardTracker(NullTracker):
    """Scalars into TensorBoard event files in `log_dir` (non-finite values are skipped)."""

    def __init__(self, log_dir: Path, *, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError(
                f"tracking=tensorboard needs the tensorboard package: {INSTALL_HINT}"
            ) from None
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float], *, step: int) -> None:
        for tag, value in values.items():
            if _finite(value):
                self.writer.add_scalar(tag, float(value), global_step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_tracker(
    tracking: Tracking | str, *, log_dir: Path, purge_step: int | None = None
) -> NullTracker:
    """The tracker for a `tracking` setting; event files go to `log_dir`."""
    if parse_tracking(tracking) is Tracking.none:
        return NullTracker()
    return TensorBoardTracker(Path(log_dir), purge_step=purge_step)


def _finite(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def _site_scalars(phase: str, metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    values: dict[str, float] = {}
    by_metric: dict[str, list[float]] = {}
    for site, site_metrics in sorted(metrics.items()):
        for name, value in site_metrics.items():
            if not _finite(value):
                continue
            if name == "compute_s":
                values[f"round/compute_s/{site}"] = float(value)
            if name in _NOT_PER_PHASE or name.startswith("dp_"):
                continue
            values[f"{phase}/{name}/{site}"] = float(value)
            by_metric.setdefault(name, []).append(float(value))
    for name, site_values in by_metric.items():
        values[f"{phase}/{name}/mean"] = sum(site_values) / len(site_values)
    return values


def _round_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    values = {
        "round/seconds": record.get("wall_s"),
        "round/bytes_up": record.get("bytes_up"),
        "round/bytes_down": record.get("bytes_down"),
        "round/sites": len(record.get("metrics", {})),
        "round/missing": len(record.get("missing", [])),
        "round/rejected": len(record.get("rejected", [])),
    }
    for group, summary in sorted(record.get("groups", {}).items()):
        values[f"groups/{group}/examples"] = summary.get("examples")
        values[f"groups/{group}/sites"] = len(summary.get("sites", []))
    epsilon = record.get("epsilon", {})
    for kind in ("site", "group"):
        for name, value in sorted(epsilon.get(f"{kind}s", {}).items()):
            values[f"privacy/epsilon/{kind}/{name}"] = value
    return {tag: float(v) for tag, v in values.items() if _finite(v)}


def history_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one history.jsonl record, by tag (see the module docstring)."""
    phase = str(record["phase"])
    values = _site_scalars(phase, record.get("metrics", {}))
    for name, value in record.get("weighted", {}).items():
        if _finite(value):
            values[f"{phase}/{name}/weighted"] = float(value)
    values.update(_round_scalars(record))
    return values


def log_history_record(tracker: NullTracker, record: Mapping[str, Any]) -> None:
    """Log one federation round at step `record["index"]` and flush it to disk."""
    tracker.scalars(history_scalars(record), step=int(record["index"]))
    tracker.flush()


def log_pretrain_step(
    tracker: NullTracker,
    *,
    step: int,
    losses: Mapping[str, float],
    seconds: float,
    lr: float | None = None,
) -> None:
    """Local pretraining: the per-view losses of one optimizer step, its time and lr."""
    values = {f"pretrain/loss/{view}": loss for view, loss in losses.items()}
    values["pretrain/step_seconds"] = seconds
    if lr is not None:
        values["pretrain/lr"] = lr
    tracker.scalars(values, step=step)


def log_finetune_epoch(
    tracker: NullTracker, *, epoch: int, loss: float, validation: Mapping[str, float]
) -> None:
    """Local fine-tuning: one epoch's training loss and validation losses per head."""
    values = {"finetune/loss": loss}
    values.update({f"finetune/val_loss/{head}": v for head, v in validation.items()})
    tracker.scalars(values, step=epoch)
    tracker.flush()
