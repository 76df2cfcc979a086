"""`python -m reproduce`: sites, every cell of every seed, then the tables and plots.

Work folder `<out>/reproduce/`: `sites/` (generated once), `cells/` (one JSON per finished
cell), `runs/seed-<n>/` (federations, pretrainings), `config.json` (the fingerprint of the
configuration the cells were computed with: another configuration is refused, never mixed).
Outputs: `<out>/reproduce.json`, `<out>/reproduce.md`, `<out>/reproduce-*.png`, and the
cross-site matrix as `<out>/reproduce/cross_site.json` (mean over seeds) and in each seed's
main federation run dir (whose report.html then shows it).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from core.atomic import write_bytes_atomic, write_json_atomic
from core.config import to_dict
from core.reporting.federation_report import write_federation_report
from reproduce import parallel, plan, plots, specs, tables
from reproduce.cells import Cell, CellCache, RunOutcome, run_cells
from reproduce.config import KNEE, ReproduceConfig, fingerprint
from reproduce.local import model_config
from reproduce.sites import SiteCases, ensure_site

REUSE = (
    "One knee-only federation per seed (federated SSL pretraining + federated linear "
    "fine-tuning) feeds rows 1 and 3 (its pretraining checkpoint: the backbone fine-tuned "
    "locally), row 2 'federated', row 4 epsilon = inf and row 5 (its final model). One "
    "random-init checkpoint per seed feeds the random-probe baselines of rows 1 and 3 and "
    "row 3's scratch baseline. Row 5 reuses the evaluations of rows 4 and 1 and adds its "
    "own supervised UNet cells. Sites are "
    "generated once per run."
)
DEFINITIONS = (
    "Scratch = the same architecture from its random init with the whole model trained "
    "(`full` mode, backbone lr = scratch_backbone_lr_scale x head lr); random probe = that "
    "random init frozen + linear probe. Row 1's from-scratch baselines are a supervised "
    "multi-view 3D CNN (detection) and row 5's a MONAI BasicUNet (segmentation). Rows 1 "
    "and 5 fine-tune on the knee pool (every knee "
    "site's training cases, label fractions stratified) and evaluate on every knee site's "
    "held-out split. Row 2 baselines get the federation's compute (local: its per-site "
    "steps and epochs; centralized: pooled training cases, n_sites x the steps). Row 4 "
    "applies client DP (DP-SGD, case-level) in both phases; sigma is chosen so that the "
    "worst site spends at most the target over the whole federation. The phantom sites and "
    "their held-out splits are the same for every seed: the +- sd is training randomness "
    "(initialisation, batches, noise, label subsets), not data sampling."
)


def check_fingerprint(work: Path, config: ReproduceConfig) -> None:
    """Refuse a work folder whose cells come from another configuration."""
    path, current = work / "config.json", fingerprint(config)
    if path.is_file():
        saved = json.loads(path.read_text()).get("fingerprint")
        if saved != current:
            raise ValueError(
                f"{work} holds results of another configuration (fingerprint {saved}, now "
                f"{current}): choose another --out, or delete {work} to start over"
            )
    write_json_atomic(path, {"fingerprint": current, "config": to_dict(config)})


def _sites(work: Path, config: ReproduceConfig, out: TextIO) -> dict[str, Path]:
    folders = {}
    for spec in config.phantom.sites:
        started = time.perf_counter()
        existed = (work / "sites" / spec.profile / "phantom.json").is_file()
        folders[spec.profile] = ensure_site(work / "sites", spec=spec, phantom=config.phantom)
        state = "reused" if existed else f"generated {spec.cases} cases"
        print(
            f"site {spec.profile}: {state} ({time.perf_counter() - started:.1f} s)",
            file=out,
            flush=True,
        )
    return folders


def _seed_matrices(ctx: plan.Context, results: dict[str, Any]) -> None:
    """Each seed's cross-site matrix into its main federation's run dir (+ its report)."""
    models = specs.r2_models(ctx.config)
    for seed in range(ctx.config.seeds):
        fed = results.get(f"s{seed}.fed")
        if fed is None:
            continue
        own = {k: v for k, v in results.items() if k.startswith(f"s{seed}.")}
        matrix = tables.cross_site(own, models=models, sites=ctx.knee_sites(), suffix_of=specs.r2)
        run_dir = Path(fed["run_dir"])
        write_json_atomic(run_dir / "cross_site.json", matrix)
        try:
            write_federation_report(run_dir)
        except Exception as err:  # noqa: BLE001 - the numbers are saved; the report is extra
            print(f"warning: could not refresh {run_dir}/report.html: {err}", file=sys.stderr)


def write_outputs(
    *,
    out: Path,
    config: ReproduceConfig,
    results: dict[str, Any],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """reproduce.json, reproduce.md, the cross-site matrix and the plots."""
    rows = tables.table_rows(results, specs.lines(config))
    contrasts = tables.contrast_rows(results, specs.contrasts(config))
    matrix = tables.cross_site(
        results, models=specs.r2_models(config), sites=config.sites_of(KNEE), suffix_of=specs.r2
    )
    work = out / "reproduce"
    write_json_atomic(work / "cross_site.json", matrix)
    pngs = {
        "label_efficiency": plots.label_efficiency(
            results, config, out / "reproduce-label-efficiency.png"
        ),
        "privacy": plots.privacy(results, config, out / "reproduce-privacy.png"),
        "cross_site": plots.cross_site_heatmap(matrix, out / "reproduce-cross-site.png"),
    }
    payload = {
        **meta,
        "config": to_dict(config),
        "fingerprint": fingerprint(config),
        "reuse": REUSE,
        "definitions": DEFINITIONS,
        "table": rows,
        "contrasts": contrasts,
        "cross_site": matrix,
        "plots": {k: str(v) for k, v in pngs.items()},
        "cells": results,
    }
    write_json_atomic(out / "reproduce.json", payload)
    header = [
        "# Reproduction of the paper's claims (synthetic sites)",
        "",
        f"Produced {meta['date']} by `{meta['command']}`: {config.seeds} seed(s), "
        f"wall time {meta['wall_s'] / 60:.1f} min this invocation, "
        f"{meta['compute_s'] / 60:.1f} min of cell compute in all.",
        "",
        f"Reuse: {REUSE}",
        "",
        f"Definitions: {DEFINITIONS}",
    ]
    if meta.get("failed"):
        header += [
            "",
            f"**{len(meta['failed'])} cell(s) failed or were skipped**: "
            + "; ".join(f"{k}: {v}" for k, v in meta["failed"].items()),
        ]
    text = tables.markdown(rows, contrasts, header=header)
    write_bytes_atomic(out / "reproduce.md", text.encode())
    return payload


def _run_parallel(
    ctx: plan.Context,
    cells: list[Cell],
    *,
    jobs: int,
    out: Path,
    config_path: Path | None,
    log: Path,
    stream: TextIO,
) -> RunOutcome:
    """The seeds in `jobs` pinned processes, then every cell read back from the cache: a cell
    that a seed's process did not finish is reported failed here, not rerun in this process.
    A seed whose cells are all cached starts no process: it would hold its cores for nothing
    while the next wave waits (a rerun that adds seeds 1-2 to a cached seed 0 would run seed
    1 on one core beside an idle one, then seed 2)."""
    if config_path is None:
        raise ValueError("parallel seeds need the configuration file's path")
    cache = ctx.cache
    run_cells(plan.site_cells(ctx), cache=cache, out=stream, log=log)  # sites loaded once
    before = {c.key for c in cells if cache.get(c.key) is not None}
    pending = sorted({c.seed for c in cells if c.seed is not None and c.key not in before})

    def command(seed: int, cores: list[int]) -> list[str]:
        return parallel.seed_command(
            config_path=config_path, out=out, seeds=ctx.config.seeds, seed=seed, cores=cores
        )

    parallel.run_seeds(seeds=pending, jobs=jobs, command=command, stream=stream)
    outcome = RunOutcome()
    for cell in cells:
        if cache.get(cell.key) is None:
            outcome.failed[cell.key] = "not finished by its seed's process (see failures.log)"
        else:
            (outcome.cached if cell.key in before else outcome.done).append(cell.key)
    return outcome


def run(
    *,
    config: ReproduceConfig,
    out: Path,
    command: str,
    stream: TextIO = sys.stdout,
    jobs: int = 1,
    only_seed: int | None = None,
    config_path: Path | None = None,
) -> int:
    """Run (or resume) the whole reproduction; 0 when every cell has a result. `jobs` > 1 runs
    the seeds as that many parallel processes (reproduce/parallel.py; they need `config_path`);
    `only_seed` is what such a process runs: that seed's cells, no tables."""
    if only_seed is not None and not 0 <= only_seed < config.seeds:
        raise ValueError(f"--only-seed {only_seed}: the run has seeds 0-{config.seeds - 1}")
    started = time.perf_counter()
    out = Path(out).resolve()  # cells record checkpoint paths: make them cwd-independent
    work = out / "reproduce"
    work.mkdir(parents=True, exist_ok=True)
    check_fingerprint(work, config)
    cache = CellCache(work / "cells")
    folders = _sites(work, config, stream)
    ctx = plan.Context(
        config=config,
        work=work,
        cache=cache,
        sites=SiteCases(folders, model_config=model_config(config.model)),
    )
    log = work / "failures.log"
    if only_seed is not None:
        cells = plan.site_cells(ctx) + plan.seed_cells(ctx, only_seed)
        return 1 if run_cells(cells, cache=cache, out=stream, log=log).failed else 0
    cells = plan.site_cells(ctx) + [c for s in range(config.seeds) for c in plan.seed_cells(ctx, s)]
    if jobs > 1:
        outcome = _run_parallel(
            ctx, cells, jobs=jobs, out=out, config_path=config_path, log=log, stream=stream
        )
    else:
        outcome = run_cells(cells, cache=cache, out=stream, log=log)
    results = {c.key: r for c in cells if (r := cache.get(c.key)) is not None}
    _seed_matrices(ctx, results)
    meta = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "wall_s": round(time.perf_counter() - started, 1),
        "compute_s": round(sum(r.get("seconds", 0.0) for r in results.values()), 1),
        "cells_run": len(outcome.done),
        "cells_cached": len(outcome.cached),
        "failed": outcome.failed,
    }
    write_outputs(out=out, config=config, results=results, meta=meta)
    print(
        f"wrote {out / 'reproduce.md'}, {out / 'reproduce.json'} and plots in "
        f"{meta['wall_s'] / 60:.1f} min ({len(outcome.done)} cells run, "
        f"{len(outcome.cached)} cached, {len(outcome.failed)} failed)",
        file=stream,
        flush=True,
    )
    return 1 if outcome.failed else 0
