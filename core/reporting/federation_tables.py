"""The tabular sections of the federation report: task metrics, participation, problems.

Each function takes a loaded `FederationRun` and returns one HTML section (see
`federation_report` for the page that assembles them).
"""

from __future__ import annotations

from typing import Any

from core.federation.rundir import Phase
from core.reporting import federation_plots as plots
from core.reporting.federation_run import FederationRun, number, round_label, short_group
from core.reporting.html import figure_block, paragraph, section, table

PARTICIPATION_COLUMNS = 40  # most recent rounds shown in the participation grid


def evaluation_section(run: FederationRun, colors: dict[str, str]) -> str:
    records = run.rounds(Phase.EVALUATE)
    if not records:
        return section(
            "Task metrics",
            paragraph(
                "No evaluation round yet: task metrics appear after the federation's "
                "evaluate phase."
            ),
        )
    last = records[-1]
    metrics: dict[str, dict[str, Any]] = dict(sorted(last.get("metrics", {}).items()))
    weighted = last.get("weighted", {})
    auc = {site: number(m.get("macro_auc")) for site, m in metrics.items()}
    auc["weighted"] = number(weighted.get("macro_auc"))
    parts = [
        paragraph(
            f"Global model after round {last.get('index')} ({round_label(last)}), evaluated by "
            "each site on its own held-out split; 'weighted' averages the sites by case count."
        ),
        table(*_summary_table(metrics, weighted)),
        figure_block(
            plots.bar_per_site(auc, colors=colors, ylabel="macro AUC"),
            caption="Macro AUC per site (mean over the joint's labels) and case-weighted.",
        ),
    ]
    for prefix, title in (
        ("auc/", "AUC per label (– : the site has no such label, or no positive case)"),
        ("dice/", "Dice per structure (– : the site has no mask of that structure)"),
    ):
        block = _per_name_table(metrics, weighted, prefix=prefix)
        if block:
            parts += [paragraph(f"{title}:"), block]
    return section("Task metrics (final evaluation)", *parts)


SUMMARY_COLUMNS = (
    ("n_cases", "cases"),
    ("n_labeled", "labeled"),
    ("macro_auc", "macro AUC"),
    ("n_masks", "masks"),
    ("mean_dice", "mean Dice"),
)


def _summary_table(metrics: dict[str, dict], weighted: dict) -> tuple[list[str], list[list]]:
    keys = [(k, title) for k, title in SUMMARY_COLUMNS if any(k in m for m in metrics.values())]
    rows = [[site, *[_value(k, m.get(k)) for k, _ in keys]] for site, m in metrics.items()]
    if weighted:
        totals = [
            _value(k, sum(number(m.get(k)) or 0.0 for m in metrics.values()))
            if k.startswith("n_")
            else number(weighted.get(k))
            for k, _ in keys
        ]
        rows.append(["weighted (all sites)", *totals])
    return ["site", *[title for _, title in keys]], rows


def _value(key: str, value: object) -> object:
    """Counts (n_*) as integers, everything else as a float or None."""
    value = number(value)
    return int(value) if key.startswith("n_") and value is not None else value


def _per_name_table(metrics: dict[str, dict], weighted: dict, *, prefix: str) -> str:
    names = sorted({k[len(prefix) :] for m in metrics.values() for k in m if k.startswith(prefix)})
    if not names:
        return ""
    sites = [s for s, m in metrics.items() if any(k.startswith(prefix) for k in m)]
    rows = [
        [
            name,
            *[number(metrics[s].get(prefix + name)) for s in sites],
            number(weighted.get(prefix + name)),
        ]
        for name in names
    ]
    columns = [*sites, "weighted"]
    return table([prefix.rstrip("/"), *columns], rows)


def participation_section(run: FederationRun) -> str:
    records = run.history[-PARTICIPATION_COLUMNS:]
    header = ["site", *[f"{round_label(r)}" for r in records]]
    rows = [[site, *[_cell(r, site) for r in records]] for site in run.sites]
    parts = [
        paragraph(
            "Which parameter groups each site contributed in each round (P = pretrain, "
            "F = finetune, E = evaluate; 'eval' = reported metrics; 'missing' = sampled but "
            "did not answer; '✗' = update rejected; '·' = not sampled this round)."
        ),
        table(header, rows),
    ]
    if len(run.history) > PARTICIPATION_COLUMNS:
        parts.insert(
            0, paragraph(f"Showing the last {PARTICIPATION_COLUMNS} of {len(run.history)} rounds.")
        )
    parts += [
        paragraph("Per group: rounds aggregated and examples behind each update."),
        table(*_group_table(run)),
    ]
    return section("Participation per group", *parts)


def _cell(record: dict[str, Any], site: str) -> str:
    if site in record.get("missing", []):
        return "missing"
    if site not in record.get("sampled", []) and site not in record.get("metrics", {}):
        return "·"
    sent = [
        short_group(g) for g, v in record.get("groups", {}).items() if site in v.get("sites", [])
    ]
    if record.get("phase") == Phase.EVALUATE and site in record.get("metrics", {}):
        sent.append("eval")
    if record.get("phase") == Phase.LOCAL_ONLY and site in record.get("metrics", {}):
        sent.append("local model")
    sent += [
        f"✗ {short_group(str(r.get('group', '*')))}"
        for r in record.get("rejected", [])
        if r.get("site") == site
    ]
    return " ".join(sent) or "none"


def _group_table(run: FederationRun) -> tuple[list[str], list[list]]:
    groups: dict[str, list[dict]] = {}
    for record in run.history:
        for name, info in record.get("groups", {}).items():
            groups.setdefault(name, []).append({**info, "label": round_label(record)})
    rows = []
    for name, seen in groups.items():
        examples = [int(s.get("examples", 0)) for s in seen]
        sites = sorted({site for s in seen for site in s.get("sites", [])})
        rows.append(
            [name, len(seen), ", ".join(sites), min(examples), max(examples), seen[-1]["label"]]
        )
    header = [
        "group",
        "rounds aggregated",
        "sites (any round)",
        "examples (min)",
        "examples (max)",
        "last round",
    ]
    return header, rows


def problems_section(run: FederationRun) -> str:
    rows = []
    for record in run.history:
        where = [record.get("index"), round_label(record)]
        rows += [
            [*where, r.get("site", "–"), r.get("group", "*"), r.get("reason", "–")]
            for r in record.get("rejected", [])
        ]
        rows += [
            [*where, site, "*", "sampled but did not answer in time (missing)"]
            for site in record.get("missing", [])
        ]
        rows += [
            [*where, "–", s.get("group", "–"), s.get("reason", "–")]
            for s in record.get("skipped_groups", [])
        ]
    if not rows:
        return section(
            "Rejected updates and missing sites",
            paragraph(
                "No update was rejected, no group was skipped and every sampled site answered."
            ),
        )
    return section(
        "Rejected updates and missing sites",
        paragraph(
            "Group '*' means the whole reply; a site with '–' is a group the server left "
            "unchanged (e.g. privacy budget)."
        ),
        table(["#", "round", "site", "group", "reason"], rows, text_columns=5),
    )
