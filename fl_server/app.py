"""The ServerApp: phases (pretrain -> finetune -> evaluate), resume, dropout tolerance.

Flower has no checkpoint/resume and numbers rounds from 1, so the round loop lives here:
each round's replies are streamed to disk as they arrive, aggregated per group, and
persisted by `core.federation.rundir.RunDir` before the next one starts. Sampling and DP
noise are seeded from (experiment seed, round index), so a resumed run redoes exactly what
an uninterrupted one would have done.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.serverapp import Grid, ServerApp
from rich.console import Console

from core.config import to_dict
from core.federation.experiment import ExperimentConfig, load_experiment
from core.federation.model_state import initial_global_state, model_config_for, round_manifest
from core.federation.run_record import check_run, read_record, resolved_config, write_record
from core.federation.rundir import RunDir
from core.tracking import TENSORBOARD_DIR, log_history_record, open_tracker
from fl_client import records
from fl_server.console import final_table, print_round
from fl_server.cross_site import run_local_only_round
from fl_server.report import write_final_metrics
from fl_server.rounds import run_evaluate_round, run_train_round

log = logging.getLogger("orthofed.server")

app = ServerApp()


@dataclass
class ServerSettings:
    experiment_path: str
    run_dir: str
    overrides: list[str] = field(default_factory=list)
    resume: bool = False
    node_wait_s: float = 120.0


def settings_from_run_config(run_config: dict[str, Any]) -> ServerSettings:
    """Flower run_config (scalars only) -> settings. Overrides are ';'-separated key=value."""
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


def round_plan(experiment: ExperimentConfig) -> list[tuple[str, int]]:
    """(phase, round within phase) for every round of the federation, in order."""
    plan = [("pretrain", r) for r in range(1, experiment.pretrain.rounds + 1)]
    plan += [("finetune", r) for r in range(1, experiment.finetune.rounds + 1)]
    if experiment.evaluate.enabled and experiment.evaluate.cross_site:
        plan.append(("local-only", 1))  # core.train.site_task.LOCAL_ONLY
    if experiment.evaluate.enabled:
        plan.append(("evaluate", 1))
    return plan


class Federation:
    """State of one run of the round loop."""

    def __init__(self, grid: Grid, settings: ServerSettings) -> None:

        self.grid = grid
        self.settings = settings
        self.experiment = load_experiment(settings.experiment_path, overrides=settings.overrides)
        self.model_config = model_config_for(self.experiment)
        self.run = RunDir(Path(settings.run_dir))
        self.sites: dict[int, dict] = {}
        self.start_index = 0
        self.accountant = None
        server_state: dict[str, Any] = {}
        # before anything is changed: a new run needs an empty folder, a resumed one the
        # configuration it started with (RUN_DIR/run.json); its key names the sites' state
        self.record = check_run(
            self.run,
            config=resolved_config(self.experiment, model_config=self.model_config),
            resume=settings.resume,
        )
        point = self.run.resume_point() if settings.resume else None
        if point is not None:
            self.state, self.start_index, server_state = (
                point.state,
                point.index,
                point.server_state,
            )
            log.info("resuming after round %d (%s %d)", point.index, point.phase, point.round)
        else:
            self.state = initial_global_state(self.experiment, model_config=self.model_config)
        if self.experiment.server_dp.enabled:
            from core.federation.accounting import GroupPrivacyAccountant

            saved = server_state.get("accountant")
            self.accountant = (
                GroupPrivacyAccountant.from_dict(saved) if saved else GroupPrivacyAccountant()
            )
        if read_record(self.run.root) is None:  # a new run (or one from before run records)
            write_record(self.run.root, self.record)
        self.tracker = self._open_tracker()

    def _open_tracker(self):
        """RUN_DIR/tensorboard/ when `tracking: tensorboard`; a resumed run rebuilds it from
        history.jsonl, so that every completed round is there exactly once."""

        tracker = open_tracker(
            self.experiment.tracking, log_dir=self.run.root / TENSORBOARD_DIR, purge_step=1
        )
        for record in self.run.read_history():
            log_history_record(tracker, record)
        return tracker

    def instruction(self, *, phase: str, round_: int, index: int) -> RecordDict:
        plan = getattr(self.experiment, phase, None)
        train = to_dict(plan.train) if phase in ("pretrain", "finetune") else {}
        params = {
            "model": json.dumps(to_dict(self.model_config)),
            "train": json.dumps(train),
            "client_dp": json.dumps(to_dict(self.experiment.client_dp)),
        }
        arrays = self._arrays_for(phase)
        return records.build_instruction(
            arrays=arrays,
            phase=phase,
            round_=round_,
            index=index,
            seed=self.experiment.seed,
            params=params,
            run_key=self.record.run_key,
        )

    def _arrays_for(self, phase: str) -> dict[str, np.ndarray]:
        if phase == "pretrain":  # heads are not trained or needed while pretraining
            return {k: v for k, v in self.state.items() if k.startswith("backbone.")}
        return self.state

    def run_all(self) -> None:
        try:
            self._run_rounds()
        finally:
            self.tracker.close()

    def _run_rounds(self) -> None:
        plan = round_plan(self.experiment)
        for index, (phase, round_) in enumerate(plan, start=1):
            if index <= self.start_index:
                continue
            started = time.monotonic()
            if phase == "evaluate":
                record = run_evaluate_round(self, round_=round_, index=index)
            elif phase == "local-only":
                record = run_local_only_round(self, round_=round_, index=index)
            else:
                record = run_train_round(self, phase=phase, round_=round_, index=index)
            record["wall_s"] = round(time.monotonic() - started, 3)
            self.save(index=index, record=record)
            log_history_record(self.tracker, record)
            print_round(record, total=len(plan))

        Console(stderr=True).print(final_table(write_final_metrics(self.run)))
        write_report_safely(self.run.root)

    def save(self, *, index: int, record: dict[str, Any]) -> None:
        server_state: dict[str, Any] = {}
        if self.accountant is not None:
            server_state["accountant"] = self.accountant.to_dict()
        manifest = round_manifest(
            self.experiment,
            model_config=self.model_config,
            phase=record["phase"],
            round_=record["round"],
            keys=list(self.state),
            history=[*self.run.read_history(), record],
        )
        self.run.save_round(
            index=index,
            state=self.state,
            manifest=manifest,
            history_record=record,
            server_state=server_state,
        )
        log.info(
            "round %d (%s %d) saved in %.1fs",
            index,
            record["phase"],
            record["round"],
            record["wall_s"],
        )


def write_report_safely(run_dir: Path) -> Path | None:
    """RUN_DIR/report.html; a report that fails to render is a warning, never a failed run."""
    try:
        from core.reporting.federation_report import write_federation_report

        path = write_federation_report(run_dir)
    except Exception as err:  # noqa: BLE001 - the run's results are already saved
        log.warning("could not write the federation report for %s: %s", run_dir, err)
        return None
    log.info("federation report: %s", path)
    return path


def run_federation(grid: Grid, settings: ServerSettings) -> None:
    """Run (or resume) every round of the experiment's phases."""
    Federation(grid, settings).run_all()


__all__ = ["app", "make_server_app", "run_federation", "ServerSettings", "ConfigRecord"]
