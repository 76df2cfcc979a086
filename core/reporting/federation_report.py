"""`RUN_DIR/report.html`: how a federation is going, in one self-contained file.

Built from the files the server writes (history.jsonl, latest.json, metrics.json,
global/round-NNNN.json, optionally cross_site.json); works on a run in progress.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.atomic import write_bytes_atomic
from core.federation.rundir import Phase
from core.reporting import federation_plots as plots
from core.reporting.federation_run import (
    PHASES,
    FederationRun,
    epsilon_series,
    load_federation_run,
    metric_series,
    number,
    round_label,
    view_losses,
)
from core.reporting.federation_tables import (
    evaluation_section,
    participation_section,
    problems_section,
)
from core.reporting.html import figure_block, page, paragraph, section, table

REPORT = "report.html"
MB = 1e6
TITLE_CROSS_SITE = "Cross-site evaluation (macro AUC)"


def write_federation_report(run_dir: Path, *, out: Path | None = None) -> Path:
    """Render the report of `run_dir` and write it atomically (default RUN_DIR/report.html)."""
    run = load_federation_run(Path(run_dir))
    target = Path(out) if out is not None else run.root / REPORT
    write_bytes_atomic(target, render_federation_report(run).encode("utf-8"))
    return target


def render_federation_report(run: FederationRun) -> str:
    colors = plots.site_colors(run.sites)
    sections = [
        _overview(run),
        _pretrain(run, colors),
        _finetune(run, colors),
        evaluation_section(run, colors),
        participation_section(run),
        problems_section(run),
        _privacy(run, colors),
        _traffic(run),
        _cross_site(run),
    ]
    return page(
        title=f"Federation report: {run.experiment}",
        subtitle=_subtitle(run),
        sections=[s for s in sections if s],
    )


def _when(seconds: float | None) -> str:
    return "–" if seconds is None else time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(seconds))


def _subtitle(run: FederationRun) -> str:
    state = "finished" if run.finished else "in progress"
    return (
        f"Run folder {run.root} · {len(run.history)} completed round(s) · {state} · "
        f"last round saved {_when(run.last_saved)} · report generated {_when(time.time())}"
    )


def _overview(run: FederationRun) -> str:
    rows = []
    for phase in PHASES:
        records = run.rounds(phase)
        if records:
            sites = sorted({s for r in records for s in r.get("sampled", [])})
            rows.append(
                [phase, len(records), ", ".join(sites), _seconds(r.get("wall_s") for r in records)]
            )
    parts = [
        table(["phase", "rounds done", "sites sampled", "wall time (s)"], rows, text_columns=1),
        paragraph(f"Model preset: {run.model_preset or '–'}. Sites: {', '.join(run.sites)}."),
    ]
    if not run.finished:
        parts.insert(
            0,
            paragraph(
                "This run is still in progress (or stopped early): no final metrics.json yet. The "
                "report shows the rounds completed so far; run `orthofed report "
                f"{run.root}` again to refresh it.",
                css="note",
            ),
        )
    return section("Overview", *parts)


def _seconds(values) -> str:
    numbers = [number(v) for v in values]
    return f"{sum(v for v in numbers if v is not None):.1f}"


def _pretrain(run: FederationRun, colors: dict[str, str]) -> str:
    records = run.rounds(Phase.PRETRAIN)
    if not records:
        return ""
    panels = {f"{view} view": series for view, series in view_losses(records).items()}
    if not panels:
        return section(
            "Self-supervised pretraining: diffusion loss",
            paragraph(
                "No site reported a training loss: under client DP sites report only the "
                "privacy they spent (see Privacy budget), since losses are not private."
            ),
        )
    last = records[-1]
    views = list(view_losses([last]))
    rows = [
        [site, *[number(m.get(f"loss/{v}")) for v in views]]
        for site, m in sorted(last.get("metrics", {}).items())
    ]
    return section(
        "Self-supervised pretraining: diffusion loss",
        figure_block(
            plots.lines_by_panel(
                panels, colors=colors, xlabel="pretrain round", ylabel="diffusion loss (MSE)"
            ),
            caption="Mean denoising loss of each site's local training, per view and round "
            "(lower is better; a site without a view has no line in that panel).",
        ),
        paragraph(f"Last pretrain round ({round_label(last)}):"),
        table(["site", *[f"loss/{v}" for v in views]], rows),
    )


def _finetune(run: FederationRun, colors: dict[str, str]) -> str:
    records = run.rounds(Phase.FINETUNE)
    if not records:
        return ""
    series = metric_series(records, "loss")
    if not series:
        return section(
            "Fine-tuning: task loss",
            paragraph("No site reported a fine-tuning loss (client DP: only epsilon is reported)."),
        )
    return section(
        "Fine-tuning: task loss",
        figure_block(
            plots.lines_by_panel(
                {"fine-tune loss": series}, colors=colors, xlabel="finetune round", ylabel="loss"
            ),
            caption="Task-head training loss reported by each site per fine-tune round "
            "(classification + segmentation where the site has masks).",
        ),
    )


def _privacy(run: FederationRun, colors: dict[str, str]) -> str:
    records = [r for r in run.history if r.get("epsilon")]
    if not records:
        return section(
            "Privacy budget (epsilon)",
            paragraph("Differential privacy was off for this run: no round recorded an epsilon."),
        )
    sites, groups = epsilon_series(records, "sites"), epsilon_series(records, "groups")
    panels = {
        title: s
        for title, s in (("per site (local DP)", sites), ("per group (server DP)", groups))
        if s
    }
    group_colors = plots.site_colors(list(groups), palette_name="Dark2")
    parts = [
        figure_block(
            plots.lines_by_panel(
                panels,
                colors={**group_colors, **colors},
                xlabel="round # (all phases)",
                ylabel="epsilon spent",
                shared_legend=False,
            ),
            caption="Cumulative epsilon after each round (lower = more private): per site from its "
            "local DP training, per parameter group from the server's DP aggregation.",
        ),
        table(
            ["site or group", "kind", "epsilon (latest)", "noise multiplier", "delta"],
            _epsilon_rows(records[-1]),
            text_columns=2,
        ),
    ]
    return section("Privacy budget (epsilon)", *parts)


def _epsilon_rows(record: dict[str, Any]) -> list[list]:
    eps, dp = record.get("epsilon", {}), record.get("dp", {})
    rows = []
    for kind, label in (("sites", "site"), ("groups", "group")):
        for name, value in sorted((eps.get(kind) or {}).items()):
            params = (dp.get(kind) or {}).get(name, {})
            delta = number(params.get("delta"))
            rows.append(
                [
                    name,
                    label,
                    number(value),
                    number(params.get("noise_multiplier")),
                    "–" if delta is None else f"{delta:g}",
                ]
            )
    return rows


def _traffic(run: FederationRun) -> str:
    records = run.history
    labels = [round_label(r) for r in records]
    down = [(number(r.get("bytes_down")) or 0.0) / MB for r in records]
    up = [(number(r.get("bytes_up")) or 0.0) / MB for r in records]
    wall = [number(r.get("wall_s")) for r in records]
    compute = [_compute(r, max) for r in records]
    total = [_compute(r, sum) for r in records]
    rows = [
        [
            r.get("index"),
            label,
            len(r.get("sampled", [])),
            f"{d:.2f}",
            f"{u:.2f}",
            *map(_s, (w, c, t)),
        ]
        for r, label, d, u, w, c, t in zip(
            records, labels, down, up, wall, compute, total, strict=True
        )
    ]
    rows.append(
        [
            "total",
            "",
            "",
            f"{sum(down):.2f}",
            f"{sum(up):.2f}",
            _s(_total(wall)),
            "",
            _s(_total(total)),
        ]
    )
    return section(
        "Communication and time per round",
        figure_block(
            plots.traffic(labels, down_mb=down, up_mb=up, wall_s=wall, compute_s=compute),
            caption="Megabytes (10^6 bytes) per round; wall time of the round at the server "
            "vs the compute time of its slowest site.",
        ),
        table(
            [
                "#",
                "round",
                "sites",
                "MB down",
                "MB up",
                "wall (s)",
                "slowest site (s)",
                "all sites (s)",
            ],
            rows,
            text_columns=2,
        ),
    )


def _compute(record: dict[str, Any], reduce) -> float | None:
    values = [number(m.get("compute_s")) for m in record.get("metrics", {}).values()]
    values = [v for v in values if v is not None]
    return round(reduce(values), 3) if values else None


def _s(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds:.1f}"


def _total(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if isinstance(v, (int, float))]
    return round(sum(present), 3) if present else None


def _cross_site(run: FederationRun) -> str:
    data = run.cross_site
    if run.cross_site_error:
        return section(TITLE_CROSS_SITE, paragraph(run.cross_site_error, css="note"))
    if data is None:
        return ""
    models, sites, matrix = data["models"], data["sites"], data["macro_auc"]
    return section(
        TITLE_CROSS_SITE,
        paragraph(
            "Each row is a model (the global model, or one site's local-only model) evaluated "
            "on every site's held-out split; a local model's score on its own site is its home "
            "score, the others show how it transfers."
        ),
        figure_block(
            plots.heatmap(matrix, rows=models, columns=sites, label="macro AUC"),
            caption="Macro AUC of each model (rows) on each site (columns); – = not evaluated.",
        ),
        table(["model", *sites], [[m, *row] for m, row in zip(models, matrix, strict=True)]),
    )
