"""Live per-round lines and the final per-site table, printed by the ServerApp."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from core.federation.rundir import Phase


def _summary(record: dict[str, Any]) -> str:
    metrics = record.get("metrics", {})
    if record["phase"] == Phase.PRETRAIN:
        losses = [v for m in metrics.values() for k, v in m.items() if k.startswith("loss/")]
        return f"mean diffusion loss {sum(losses) / len(losses):.4f}" if losses else ""
    if record["phase"] == Phase.FINETUNE:
        losses = [m["loss"] for m in metrics.values() if "loss" in m]
        return f"mean task loss {sum(losses) / len(losses):.4f}" if losses else ""
    if record["phase"] == Phase.LOCAL_ONLY:
        return f"local-only models kept for {len(metrics)} site(s)"
    weighted = record.get("weighted", {})
    parts = [f"{k} {weighted[k]:.3f}" for k in ("macro_auc", "mean_dice") if k in weighted]
    return "weighted " + ", ".join(parts) if parts else ""


def print_round(record: dict[str, Any], *, total: int, console: Console | None = None) -> None:
    console = console or Console(stderr=True)
    sites = len(record.get("metrics", {}))
    issues = len(record.get("rejected", [])) + len(record.get("missing", []))
    mb = (record.get("bytes_up", 0) + record.get("bytes_down", 0)) / 1e6
    flag = f" [yellow]{issues} rejected/missing[/yellow]" if issues else ""
    console.print(
        f"[bold]round {record['index']}/{total}[/bold] {record['phase']} {record['round']}: "
        f"{sites} sites, {len(record.get('groups', {}))} groups, {record['wall_s']:.1f}s, "
        f"{mb:.1f} MB  {_summary(record)}{flag}",
        highlight=False,
    )
    for item in record.get("rejected", []):
        console.print(
            f"  [yellow]rejected[/yellow] {item['site']} {item['group']}: {item['reason']}",
            highlight=False,
        )


def final_summary(metrics: dict[str, Any], *, checkpoint: str | None) -> Table | str:
    """The table of the final evaluation, or, when no site evaluated the final model
    (`evaluate.enabled: false`, or every site's evaluation failed), one line that says so and
    where the final global weights are."""
    if metrics.get("sites"):
        return final_table(metrics)
    where = f": the final global weights are RUN_DIR/{checkpoint}" if checkpoint else ""
    why = "evaluate.enabled is false or every site's evaluation failed"
    return f"no site evaluated the final model ({why}){where}"


def final_table(metrics: dict[str, Any]) -> Table:
    table = Table(title="final evaluation on each site's held-out split")
    columns = ["n_cases", "macro_auc", "mean_dice"]
    table.add_column("site")
    for name in columns:
        table.add_column(name, justify="right")
    rows = dict(metrics.get("sites", {}))
    if metrics.get("weighted"):
        rows["(case-weighted)"] = metrics["weighted"]
    for site, values in rows.items():
        cells = []
        for name in columns:
            value = values.get(name)
            cells.append(
                "-" if value is None else (f"{value:.0f}" if name == "n_cases" else f"{value:.3f}")
            )
        table.add_row(site, *cells)
    return table
