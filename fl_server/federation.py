"""The state of one federation run on the server: its experiment, run folder, global model,
privacy accountant and tracker, and how a round's instruction and checkpoint are made from
them. The round loop that drives it is fl_server/app.py; the rounds are fl_server/rounds.py
and fl_server/cross_site.py, the messages fl_server/messaging.py (all take a `Federation`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import RecordDict
from flwr.serverapp import Grid

from core.config import to_dict
from core.federation.experiment import load_experiment
from core.federation.model_state import initial_global_state, model_config_for, round_manifest
from core.federation.run_record import check_run, read_record, resolved_config, write_record
from core.federation.rundir import TRAINING_PHASES, Phase, RunDir
from core.tracking import TENSORBOARD_DIR, log_history_record, open_tracker
from fl_client import records

log = logging.getLogger("orthofed.server")


@dataclass
class ServerSettings:
    experiment_path: str
    run_dir: str
    overrides: list[str] = field(default_factory=list)
    resume: bool = False
    node_wait_s: float = 120.0


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
            # Opacus (and torch), only for a server-DP run
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
        train = to_dict(plan.train) if phase in TRAINING_PHASES else {}
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
        if phase == Phase.PRETRAIN:  # heads are not trained or needed while pretraining
            return {k: v for k, v in self.state.items() if k.startswith("backbone.")}
        return self.state

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
