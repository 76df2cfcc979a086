"""From cell results to numbers: per-setting values over seeds, mean +- sd, paired contrasts,
the markdown table, the cross-site matrix and the reproduce.json payload.

Everything here works on plain dicts (cell results as cached), so it is tested with fakes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reproduce.specs import CLAIMS, ROWS, Contrast, Line

Results = Mapping[str, Mapping[str, Any]]  # key "s<seed>.<suffix>" -> cell result


def split_key(key: str) -> tuple[int, str] | None:
    """(seed, suffix) of a seed cell key; None for other cells (sites)."""
    head, _, suffix = key.partition(".")
    if not (head.startswith("s") and head[1:].isdigit() and suffix):
        return None
    return int(head[1:]), suffix


def by_suffix(results: Results) -> dict[str, dict[int, Mapping[str, Any]]]:
    """suffix -> {seed: result}."""
    out: dict[str, dict[int, Mapping[str, Any]]] = {}
    for key, result in results.items():
        parsed = split_key(key)
        if parsed is not None:
            out.setdefault(parsed[1], {})[parsed[0]] = result
    return out


def lookup(result: Mapping[str, Any], path: str) -> float | None:
    """The finite number at a dotted path, or None."""
    value: Any = result
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def values_of(
    grouped: Mapping[str, Mapping[int, Mapping[str, Any]]], *, suffix: str, metric: str
) -> dict[int, float]:
    """{seed: value} over the seeds whose cell has the metric."""
    found = {seed: lookup(r, metric) for seed, r in grouped.get(suffix, {}).items()}
    return {seed: v for seed, v in sorted(found.items()) if v is not None}


def mean_sd(values: Iterable[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None when undefined)."""
    data = list(values)
    if not data:
        return None, None
    return statistics.fmean(data), (statistics.stdev(data) if len(data) > 1 else None)


def format_mean_sd(mean: float | None, sd: float | None, *, digits: int = 3) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")


def table_rows(results: Results, lines: Sequence[Line]) -> list[dict[str, Any]]:
    """One dict per line: row, setting, metric, per-seed values, mean, sd, n seeds."""
    grouped = by_suffix(results)
    out = []
    for line in lines:
        values = values_of(grouped, suffix=line.suffix, metric=line.metric)
        mean, sd = mean_sd(values.values())
        out.append(
            {
                "row": line.row,
                "setting": line.setting,
                "cell": line.suffix,
                "metric": line.name,
                "path": line.metric,
                "values": {str(k): v for k, v in values.items()},
                "mean": mean,
                "sd": sd,
                "n_seeds": len(values),
            }
        )
    return out


def contrast_rows(results: Results, contrasts: Sequence[Contrast]) -> list[dict[str, Any]]:
    """Paired differences better - worse over the seeds that have both."""
    grouped = by_suffix(results)
    out = []
    for c in contrasts:
        a = values_of(grouped, suffix=c.better, metric=c.metric)
        b = values_of(grouped, suffix=c.worse, metric=c.metric)
        diffs = {seed: a[seed] - b[seed] for seed in a if seed in b}
        mean, sd = mean_sd(diffs.values())
        out.append(
            {
                "row": c.row,
                "contrast": c.label,
                "differences": {str(k): v for k, v in diffs.items()},
                "mean": mean,
                "sd": sd,
                "n_seeds": len(diffs),
                "positive_seeds": sum(1 for d in diffs.values() if d > 0),
            }
        )
    return out


def cross_site(
    results: Results, *, models: Mapping[str, str], sites: Sequence[str], suffix_of
) -> dict[str, Any]:
    """The row 2 matrix (mean macro AUC over seeds), in the federation report's format
    {"models", "sites", "macro_auc"} plus the seed count behind each value."""
    grouped = by_suffix(results)
    matrix, n = [], []
    for model in models:
        row, counts = [], []
        for site in sites:
            values = values_of(
                grouped, suffix=suffix_of(model), metric=f"per_site.{site}.macro_auc"
            )
            row.append(mean_sd(values.values())[0])
            counts.append(len(values))
        matrix.append(row)
        n.append(counts)
    return {
        "models": list(models.values()),
        "sites": list(sites),
        "macro_auc": matrix,
        "n_seeds": n,
    }


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown(
    rows: Sequence[Mapping[str, Any]],
    contrasts: Sequence[Mapping[str, Any]],
    *,
    header: Sequence[str] = (),
) -> str:
    """The results table (paper's claim on the first line of each row) and the contrasts."""
    out = [
        *header,
        "",
        "| Row | Setting | Metric | Mean ± sd | n seeds | Paper's claim |",
        "|---|---|---|---|---|---|",
    ]
    shown: set[str] = set()
    for r in rows:
        first = r["row"] not in shown
        shown.add(r["row"])
        row_name = f"{r['row']}. {ROWS[r['row']]}" if first else ""
        claim = CLAIMS[r["row"]] if first else ""
        digits = 2 if r["path"] == "epsilon" else 3
        out.append(
            f"| {_cell(row_name)} | {_cell(r['setting'])} | {r['metric']} | "
            f"{format_mean_sd(r['mean'], r['sd'], digits=digits)} | {r['n_seeds']} | "
            f"{_cell(claim)} |"
        )
    out += [
        "",
        "Paired contrasts (same seed; difference of macro AUC, better - worse):",
        "",
        "| Row | Contrast | Mean ± sd | Seeds > 0 |",
        "|---|---|---|---|",
    ]
    for c in contrasts:
        out.append(
            f"| {c['row']} | {_cell(c['contrast'])} | "
            f"{format_mean_sd(c['mean'], c['sd'])} | {c['positive_seeds']}/{c['n_seeds']} |"
        )
    return "\n".join(out) + "\n"
