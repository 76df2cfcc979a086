"""The ServerApp: phases (pretrain -> finetune -> evaluate), resume, dropout tolerance.

Flower has no checkpoint/resume and numbers rounds from 1, so the round loop lives here:
each round's replies are streamed to disk as they arrive, aggregated per group, and
persisted by `core.federation.rundir.RunDir` before the next one starts. Sampling and DP
noise are seeded from (experiment seed, round index), so a resumed run redoes exactly what
an uninterrupted one would have done.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from rich.console import Console

from core.federation.experiment import ExperimentConfig
from core.federation.rundir import Phase
from core.tracking import log_history_record
from fl_server.console import final_summary, print_round
from fl_server.cross_site import run_local_only_round
from fl_server.federation import Federation, ServerSettings
from fl_server.report import write_final_metrics
from fl_server.rounds import run_evaluate_round, run_train_round

log = logging.getLogger("orthofed.server")

app = ServerApp()


# the keys of pyproject.toml [tool.flwr.app.config]
RUN_CONFIG_KEYS = ("experiment", "run-dir", "overrides", "resume")


def settings_from_run_config(run_config: dict[str, Any]) -> ServerSettings:
    """Flower run_config (scalars only) -> settings. Overrides are ';'-separated key=value.
    An unknown key is refused (a typo such as `run_dir` would otherwise run with the default)."""
    unknown = sorted(set(run_config) - set(RUN_CONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"run config: unknown key(s) {', '.join(unknown)}; the ServerApp reads "
            f"{', '.join(RUN_CONFIG_KEYS)}"
        )
    overrides = [o for o in str(run_config.get("overrides", "")).split(";") if o.strip()]
    return ServerSettings(
        experiment_path=str(run_config.get("experiment", "configs/experiments/demo.yaml")),
        run_dir=str(run_config.get("run-dir", "runs/demo")),
        overrides=overrides,
        resume=bool(run_config.get("resume", False)),
    )


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_federation(grid, settings_from_run_config(dict(context.run_config)))


def make_server_app(settings: ServerSettings) -> ServerApp:
    """A ServerApp bound to explicit settings (used by the embedded simulation)."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        run_federation(grid, settings)

    return server


def round_plan(experiment: ExperimentConfig) -> list[tuple[Phase, int]]:
    """(phase, round within phase) for every round of the federation, in order."""
    plan = [(Phase.PRETRAIN, r) for r in range(1, experiment.pretrain.rounds + 1)]
    plan += [(Phase.FINETUNE, r) for r in range(1, experiment.finetune.rounds + 1)]
    if experiment.evaluate.enabled and experiment.evaluate.cross_site:
        plan.append((Phase.LOCAL_ONLY, 1))
    if experiment.evaluate.enabled:
        plan.append((Phase.EVALUATE, 1))
    return plan


def run_rounds(fed: Federation) -> None:
    """Every round of the plan after the run's resume point, each saved before the next."""
    plan = round_plan(fed.experiment)
    try:
        for index, (phase, round_) in enumerate(plan, start=1):
            if index <= fed.start_index:
                continue
            started = time.monotonic()
            if phase == Phase.EVALUATE:
                record = run_evaluate_round(fed, round_=round_, index=index)
            elif phase == Phase.LOCAL_ONLY:
                record = run_local_only_round(fed, round_=round_, index=index)
            else:
                record = run_train_round(fed, phase=phase, round_=round_, index=index)
            record["wall_s"] = round(time.monotonic() - started, 3)
            fed.save(index=index, record=record)
            log_history_record(fed.tracker, record)
            print_round(record, total=len(plan))
    finally:
        fed.tracker.close()
    metrics = write_final_metrics(fed.run)
    Console(stderr=True).print(
        final_summary(metrics, checkpoint=(fed.run.latest() or {}).get("checkpoint"))
    )
    write_report_safely(fed.run.root)


def write_report_safely(run_dir: Path) -> Path | None:
    """RUN_DIR/report.html; a report that fails to render is a warning, never a failed run."""
    try:
        # matplotlib, once at the end of a run
        from core.reporting.federation_report import write_federation_report

        path = write_federation_report(run_dir)
    except Exception as err:  # noqa: BLE001 - the run's results are already saved
        log.warning("could not write the federation report for %s: %s", run_dir, err)
        return None
    log.info("federation report: %s", path)
    return path


def run_federation(grid: Grid, settings: ServerSettings) -> None:
    """Run (or resume) every round of the experiment's phases."""
    run_rounds(Federation(grid, settings))


__all__ = ["app", "make_server_app", "run_federation", "ServerSettings", "ConfigRecord"]
