"""The embedded default: a whole federation on one machine in Flower's simulation engine.

The real ServerApp and ClientApps run unchanged; Flower's Ray backend plays the SuperNodes,
one per site folder listed in the experiment.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from core.data.manifest import load_site
from core.device import available_cores
from core.federation.experiment import load_experiment
from core.federation.model_state import check_init_checkpoint, model_config_for
from core.federation.run_record import check_run, resolved_config
from core.federation.rundir import RunDir
from fl_client.app import make_simulation_client_app
from fl_server.app import ServerSettings, make_server_app


class KnownDeprecation(logging.Filter):
    """Drops Flower's warning that `run_simulation` is deprecated. It is the one in-process
    simulation API of flwr 1.42 (`flwr run` needs a SuperLink), used here on purpose, and the
    warning printed on every `federate` and `make demo` gives the user nothing to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


def check_sites(site_dirs: list[str]) -> None:
    if not site_dirs:
        raise ValueError(
            "the experiment lists no sites: add `sites: [path/to/site, ...]` for simulation"
        )
    for path in site_dirs:
        if not Path(path).is_dir():
            raise ValueError(
                f"site folder {path} not found (generate it with 'orthofed phantom' or fix `sites`)"
            )
    folders: dict[str, str] = {}
    for path in site_dirs:  # two folders of one site (a copy) would be refused in round 1
        try:
            site_id = load_site(path).site_id
        except ValueError:
            continue  # the site itself reports what is wrong with its folder
        if site_id in folders:
            raise ValueError(
                f"sites: {folders[site_id]} and {path} are both site {site_id!r} (site.yaml "
                "site_id): list each site once, or give each folder its own site_id"
            )
        folders[site_id] = path


def run_embedded(
    *,
    experiment_path: str,
    run_dir: str,
    resume: bool = False,
    overrides: list[str] | None = None,
    cpus_per_site: int | None = None,
    client_mods: list | None = None,
) -> None:
    """Run (or resume) the experiment with one simulated SuperNode per listed site.

    `cpus_per_site` is what Ray reserves per running ClientApp and the torch threads each
    uses (default: all cores, so sites train one after another, each with every core; fewer
    lets cores // cpus_per_site sites train at once); `client_mods` are Flower client mods."""
    from flwr.simulation import run_simulation

    cores = available_cores()  # a container's or taskset's limit, not the host's count
    if cpus_per_site is not None and not 1 <= cpus_per_site <= cores:
        raise ValueError(
            f"--cpus-per-site must be between 1 and the {cores} cores this process may use, "
            f"got {cpus_per_site} (Ray would never start a site that needs more)"
        )
    overrides = list(overrides or [])
    experiment = load_experiment(experiment_path, overrides=overrides)
    check_sites(experiment.sites)
    settings = ServerSettings(
        experiment_path=experiment_path,
        run_dir=run_dir,
        overrides=overrides,
        resume=resume,
    )
    # before Ray starts: a new run needs a free folder, a resumed one its own configuration
    model_config = model_config_for(experiment)
    config = resolved_config(experiment, model_config=model_config)
    check_run(RunDir(Path(run_dir)), config=config, resume=resume)
    if not resume:
        check_init_checkpoint(experiment, model_config=model_config)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    cpus = cpus_per_site or cores
    server = make_server_app(settings)
    client = make_simulation_client_app(
        site_dirs=[str(Path(s).resolve()) for s in experiment.sites],
        state_root=str((Path(run_dir) / "site-state").resolve()),
        mods=client_mods,
        threads=cpus,
    )
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray's FutureWarning on every start asks for this; sites reserve no GPU here anyway.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    flower_log = logging.getLogger("flwr")
    flower_log.setLevel(logging.WARNING)
    if not any(isinstance(f, KnownDeprecation) for f in flower_log.filters):
        flower_log.addFilter(KnownDeprecation())
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=len(experiment.sites),
        backend_config={
            "client_resources": {"num_cpus": cpus, "num_gpus": 0.0},
            "init_args": {"num_cpus": cores, "include_dashboard": False},
        },
    )
