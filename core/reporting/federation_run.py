"""A federation run folder read for reporting: completed rounds, summary, cross-site matrix.

Read-only and safe on a run in progress: only rounds that `latest.json` names as completed
are used (a history line written just before its `latest.json` is left for the next report).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.federation.rundir import LATEST, Phase, RunDir

CROSS_SITE = "cross_site.json"
SUMMARY = "metrics.json"
PHASES = (Phase.PRETRAIN, Phase.FINETUNE, Phase.EVALUATE)

SiteSeries = dict[str, list[tuple[float, float]]]  # site -> [(x, y)]


@dataclass(frozen=True)
class FederationRun:
    root: Path
    experiment: str
    model_preset: str | None
    history: list[dict[str, Any]]
    summary: dict[str, Any] | None  # metrics.json, absent while the run is in progress
    cross_site: dict[str, Any] | None
    cross_site_error: str | None  # why cross_site.json could not be used (shown in the report)
    last_saved: float | None  # mtime of latest.json / history.jsonl (seconds since epoch)

    @property
    def finished(self) -> bool:
        return self.summary is not None and int(self.summary.get("rounds", -1)) == len(self.history)

    def rounds(self, phase: str) -> list[dict[str, Any]]:
        return [r for r in self.history if r.get("phase") == phase]

    @property
    def sites(self) -> list[str]:
        """Every site named anywhere in the history, sorted."""
        names: set[str] = set()
        for record in self.history:
            names |= set(record.get("sampled", [])) | set(record.get("metrics", {}))
            names |= set(record.get("missing", []))
            names |= {r["site"] for r in record.get("rejected", []) if "site" in r}
            for group in record.get("groups", {}).values():
                names |= set(group.get("sites", []))
        return sorted(names)


def load_federation_run(root: Path) -> FederationRun:
    """The run in `root`; ValueError when it is not a run folder or has no completed round."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(
            f"{root}: no such run folder (expected the --run-dir of `orthofed federate`)"
        )
    run = RunDir(root)
    history = _completed(run)
    if not history:
        raise ValueError(
            f"{root} has no completed round yet (history.jsonl is missing or empty); "
            "run the report again after the first round is saved"
        )
    manifest = _latest_manifest(run)
    try:
        cross_site, cross_site_error = load_cross_site(root / CROSS_SITE), None
    except ValueError as err:  # a bad matrix file must not hide the rest of the report
        cross_site, cross_site_error = None, str(err)
    return FederationRun(
        root=root,
        experiment=str(manifest.get("experiment") or root.name),
        model_preset=manifest.get("model_preset"),
        history=history,
        summary=_read_json(root / SUMMARY),
        cross_site=cross_site,
        cross_site_error=cross_site_error,
        last_saved=_mtime(root / LATEST) or _mtime(run.history_path),
    )


def _completed(run: RunDir) -> list[dict[str, Any]]:
    history = run.read_history()
    latest = run.latest()
    if latest is None:
        return history
    last = int(latest.get("index", 0))
    return [r for r in history if int(r.get("index", 0)) <= last]


def _latest_manifest(run: RunDir) -> dict[str, Any]:
    latest = run.latest() or {}
    checkpoint = latest.get("checkpoint")
    if not checkpoint:
        return {}
    return _read_json((run.root / checkpoint).with_suffix(".json")) or {}


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); fix or delete the file") from None
    return value if isinstance(value, dict) else None


def _mtime(path: Path) -> float | None:
    return path.stat().st_mtime if path.is_file() else None


def load_cross_site(path: Path) -> dict[str, Any] | None:
    """`cross_site.json` checked for shape: macro_auc is models x sites, floats or null."""
    data = _read_json(path)
    if data is None:
        return None
    models, sites, matrix = data.get("models"), data.get("sites"), data.get("macro_auc")
    if not (isinstance(models, list) and isinstance(sites, list) and isinstance(matrix, list)):
        raise ValueError(f"{path}: needs lists 'models', 'sites' and 'macro_auc'")
    if len(matrix) != len(models) or any(
        not isinstance(row, list) or len(row) != len(sites) for row in matrix
    ):
        raise ValueError(
            f"{path}: 'macro_auc' must have one row per model ({len(models)}) "
            f"and one value per site ({len(sites)}) in each row"
        )
    clean = [[number(v) for v in row] for row in matrix]
    return {
        "models": [str(m) for m in models],
        "sites": [str(s) for s in sites],
        "macro_auc": clean,
    }


def number(value: object) -> float | None:
    """A finite float, or None for anything else (null, NaN, strings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def metric_series(records: Sequence[dict[str, Any]], name: str, *, x: str = "round") -> SiteSeries:
    """`{site: [(record[x], metrics[site][name]), ...]}` over the records that have it."""
    series: SiteSeries = {}
    for record in records:
        for site, values in sorted(record.get("metrics", {}).items()):
            value = number(values.get(name))
            if value is not None:
                series.setdefault(site, []).append((float(record.get(x, 0)), value))
    return series


def view_losses(records: Sequence[dict[str, Any]]) -> dict[str, SiteSeries]:
    """Diffusion loss per view: `{view: {site: [(round, loss)]}}`, views in first-seen order."""
    views: list[str] = []
    for record in records:
        for values in record.get("metrics", {}).values():
            views += [
                k.split("/", 1)[1] for k in values if k.startswith("loss/") and k[5:] not in views
            ]
    return {view: metric_series(records, f"loss/{view}") for view in views}


def epsilon_series(records: Sequence[dict[str, Any]], kind: str) -> SiteSeries:
    """Epsilon spent per site (`kind="sites"`) or per group (`"groups"`) over round indices."""
    series: SiteSeries = {}
    for record in records:
        spent = (record.get("epsilon") or {}).get(kind) or {}
        for name, value in sorted(spent.items()):
            eps = number(value)
            if eps is not None:
                series.setdefault(name, []).append((float(record.get("index", 0)), eps))
    return series


def round_label(record: dict[str, Any]) -> str:
    """Short column label: P1 (pretrain round 1), F2 (finetune 2), E1 (evaluate 1)."""
    return f"{str(record.get('phase', '?'))[:1].upper()}{record.get('round', '?')}"


def short_group(group: str) -> str:
    """backbone.sagittal -> sagittal, head.knee.cls -> knee.cls."""
    for prefix in ("backbone.", "head."):
        if group.startswith(prefix):
            return group[len(prefix) :]
    return group
