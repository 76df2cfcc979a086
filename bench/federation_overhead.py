"""Federation overhead: how much of a round's wall time is not the slowest site's compute.

    python bench/federation_overhead.py --engine deployment --rounds 3 --min-site-seconds 60 \\
        --json runs/bench/federation_overhead_deployment.json

Runs N pretraining rounds of the demo experiment (configs/experiments/demo.yaml: its model,
its three sites from `--sites-dir`, generated as `make demo` does when missing) on this
machine, with no fine-tuning or evaluation, and every round waiting for every site:

- `--engine simulation`: `orthofed federate` (Flower's simulation engine, one process);
- `--engine deployment`: a TLS SuperLink with SuperNode authentication, one SuperNode per
  site and `orthofed submit`, all on loopback (`fl_server.loopback`, as the deployment
  tests start them).

The local work is sized first: a few pretraining steps of the demo model on random volumes
of its input shape, three views (the most a site trains), give the seconds per step (the
fastest timed step: other work on a shared machine slows some steps many times), and
`pretrain.train.steps` = ceil(S / step seconds) so the slowest site computes about S seconds
per round (sites that compute at once on fewer cores take longer; the measured figure is
what counts). Figures per round, from the run's history.jsonl: `wall_s` (the server's round
time), `slowest_site_s` and `sum_sites_s` (the sites' own `compute_s`: handling the message
at the site, data loading and training included) and `overhead_share` = (wall - slowest
site) / wall, with their median. Sites that train one after another (the simulation on a
machine with fewer cores than sites) add the others' compute to the overhead share.

Run dirs, certificates and logs go to a fresh folder under `--work-dir` (kept) or a temporary
one (removed); every process started is stopped at the end, on errors and Ctrl-C too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.demo import make_sites  # noqa: E402
from core.device import available_cores  # noqa: E402
from core.views import VIEWS  # noqa: E402

# Modules that pull torch/MONAI are imported inside the functions: `--help` stays fast.

EXPERIMENT = REPO / "configs" / "experiments" / "demo.yaml"
CALIBRATION_VIEWS = 3


def demo_sites(sites_dir: Path) -> list[Path]:
    """The demo experiment's site folders, under `sites_dir` (generated when missing)."""
    from core.federation.experiment import load_experiment

    folders = [sites_dir / Path(entry).name for entry in load_experiment(EXPERIMENT).sites]
    if not all((folder / "site.yaml").is_file() for folder in folders):
        print(f"generating the demo sites in {sites_dir} (as `make demo` does)", flush=True)
        sites_dir.mkdir(parents=True, exist_ok=True)
        if make_sites(sites_dir) != 0:
            raise RuntimeError(f"could not generate the demo sites in {sites_dir}")
    return folders


def base_overrides(sites: list[Path], *, rounds: int) -> list[str]:
    return [
        f"sites=[{','.join(str(s) for s in sites)}]",
        f"pretrain.rounds={rounds}",
        f"pretrain.min_sites={len(sites)}",  # every round waits for every site
        "finetune.rounds=0",
        "evaluate.enabled=false",
    ]


def prepare_sites(sites: list[Path], *, model_config) -> dict[str, Path]:
    """Each site's view cache for the demo model (so round 1 does not prepare it) and
    `{site id: folder}`."""
    from core.data.cache import load_site_tensors
    from core.data.manifest import load_site
    from core.models.presets import preprocess_for

    ids = {}
    for folder in sites:
        site = load_site(folder)
        load_site_tensors(site, preprocess=preprocess_for(model_config))
        ids[site.site_id] = folder
    return ids


def calibrate(experiment, *, model_config, min_site_seconds: float) -> dict:
    """Seconds per pretraining step of the demo model (three views) and the steps K."""
    import numpy as np

    from core.config import PretrainRunConfig
    from core.train.pretrain import Pretrainer, input_shape

    train = experiment.pretrain.train
    rng = np.random.default_rng(0)
    shape = input_shape(model_config)
    volumes = {
        view: [rng.standard_normal(shape).astype(np.float16) for _ in range(2 * train.batch_size)]
        for view in VIEWS[:CALIBRATION_VIEWS]
    }
    trainer = Pretrainer(config=PretrainRunConfig(model=model_config, train=train), volumes=volumes)
    for _ in range(2):  # warm-up: first-call allocations, autotuning
        trainer.train_step()
    times: list[float] = []
    while len(times) < 5 or (sum(times) < 5.0 and len(times) < 50):
        started = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - started)
    # the fastest step: on a shared machine the others' load inflates some steps many times
    step_s = min(times)
    return {
        "step_s": round(step_s, 4),
        "median_step_s": round(statistics.median(times), 4),
        "timed_steps": len(times),
        "views": CALIBRATION_VIEWS,
        "batch_size": train.batch_size,
        "precision": str(trainer.precision.value),
        "steps": max(1, math.ceil(min_site_seconds / step_s)),
    }


def run_simulation(
    work: Path, *, overrides: list[str], timeout_s: float, cpus_per_site: int | None = None
) -> Path:
    from fl_server.loopback import REPO as ROOT
    from fl_server.loopback import orthofed_command, process_env, stop

    run_dir = work / "run"
    log = work / "federate.log"
    cores = [] if cpus_per_site is None else ["--cpus-per-site", str(cpus_per_site)]
    cmd = orthofed_command(
        "federate", "--config", str(EXPERIMENT), "--run-dir", str(run_dir), *cores, *overrides
    )
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=process_env(work / "home-sim"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        code = proc.wait(timeout=timeout_s)
    finally:
        stop(proc)
    if code != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"orthofed federate failed ({code}):\n{tail}")
    return run_dir


def run_deployment(
    work: Path,
    *,
    sites: dict[str, Path],
    overrides: list[str],
    timeout_s: float,
    launcher: str = "warm",
) -> Path:
    from fl_server.loopback import LoopbackFederation

    work.mkdir(parents=True, exist_ok=True)
    # The sites share this machine: each gets its share of the cores for torch's threads, or
    # they spin against each other (2 threads per site for 3 sites on 2 cores made 20 steps
    # take 16x their calibrated time), which would pass for site compute.
    os.environ["OMP_NUM_THREADS"] = str(site_threads(len(sites)))
    run_dir = work / "run"
    with LoopbackFederation(work) as fed:
        fed.start(sites, supernode_args=[f"--{launcher}"])
        done = fed.submit(EXPERIMENT, run_dir=run_dir, overrides=overrides, timeout_s=timeout_s)
        if done.returncode != 0 or "finished:completed" not in done.stdout:
            logs = "".join(
                f"\n--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                for p in sorted(work.glob("*.log"))
            )
            raise RuntimeError(
                f"orthofed submit failed ({done.returncode}):\n{done.stdout[-2000:]}"
                f"{done.stderr[-2000:]}{logs}"
            )
    return run_dir


def site_threads(n_sites: int) -> int:
    return max(1, available_cores() // max(1, n_sites))


def round_figures(run_dir: Path, *, sites: list[str]) -> list[dict]:
    """Per pretraining round of RUN_DIR/history.jsonl: wall, slowest and summed site compute."""
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    out = []
    for record in (json.loads(line) for line in lines if line.strip()):
        if record.get("phase") != "pretrain":
            continue
        compute = {s: float(m["compute_s"]) for s, m in record["metrics"].items()}
        missing = sorted(set(sites) - set(compute))
        if missing:
            print(f"warning: round {record['round']} has no reply from {missing}", flush=True)
        wall, slowest = float(record["wall_s"]), max(compute.values())
        out.append(
            {
                "round": record["round"],
                "wall_s": round(wall, 3),
                "slowest_site_s": round(slowest, 3),
                "sum_sites_s": round(sum(compute.values()), 3),
                "overhead_s": round(wall - slowest, 3),
                "overhead_share": round((wall - slowest) / wall, 4),
                "sites_s": compute,
            }
        )
    return out


def measure(args: argparse.Namespace, work: Path) -> dict:
    from core.federation.experiment import load_experiment
    from core.federation.model_state import model_config_for

    started = time.monotonic()
    folders = demo_sites(args.sites_dir.resolve())
    overrides = base_overrides(folders, rounds=args.rounds)
    experiment = load_experiment(EXPERIMENT, overrides=overrides)
    model_config = model_config_for(experiment)
    sites = prepare_sites(folders, model_config=model_config)
    if args.steps is not None:
        cal = {"steps": args.steps, "given": True}
    else:
        cal = calibrate(
            experiment, model_config=model_config, min_site_seconds=args.min_site_seconds
        )
        print(
            f"calibration: {cal['step_s']:.3f}s per {cal['views']}-view step at batch "
            f"{cal['batch_size']} ({cal['precision']}, fastest of {cal['timed_steps']}; median "
            f"{cal['median_step_s']:.3f}s) -> "
            f"pretrain.train.steps={cal['steps']} for ~{args.min_site_seconds:g}s per site round",
            flush=True,
        )
    overrides.append(f"pretrain.train.steps={cal['steps']}")
    timeout_s = args.timeout or 600 + args.rounds * (len(sites) * 4 * args.min_site_seconds + 300)
    print(f"running {args.rounds} {args.engine} round(s) of {', '.join(sites)}", flush=True)
    common = {
        "min_site_seconds": args.min_site_seconds,
        "steps": cal["steps"],
        "calibration": cal,
        "sites": list(sites),
        "cpu_count": os.cpu_count(),
        "cpus_per_site": args.cpus_per_site,
        "deployment_site_threads": site_threads(len(sites)),
    }
    if args.engine == "simulation":
        run_dir = run_simulation(
            work, overrides=overrides, timeout_s=timeout_s, cpus_per_site=args.cpus_per_site
        )
        result = {"engine": "simulation", **engine_figures(run_dir, sites=list(sites))}
    else:
        launchers = ["cold", "warm"] if args.launcher == "both" else [args.launcher]
        result = {"engine": "deployment", "launchers": {}}
        for launcher in launchers:  # one after the other: they would share the cores
            print(f"  SuperNodes with --{launcher}", flush=True)
            run_dir = run_deployment(
                work / launcher,
                sites=sites,
                overrides=overrides,
                timeout_s=timeout_s,
                launcher=launcher,
            )
            result["launchers"][launcher] = engine_figures(run_dir, sites=list(sites))
        result.update(result["launchers"][launchers[-1]])
        if len(launchers) == 2:
            cold, warm = (result["launchers"][k]["median_overhead_s"] for k in launchers)
            result["cold_over_warm_overhead_s"] = round(cold / warm, 3) if warm > 0 else None
    return {**result, **common, "bench_s": round(time.monotonic() - started, 1)}


def engine_figures(run_dir: Path, *, sites: list[str]) -> dict:
    rounds = round_figures(run_dir, sites=sites)
    if not rounds:
        raise RuntimeError(f"{run_dir}/history.jsonl holds no pretraining round")
    return {
        "rounds": rounds,
        "median_overhead_share": round(statistics.median(r["overhead_share"] for r in rounds), 4),
        "median_overhead_s": round(statistics.median(r["overhead_s"] for r in rounds), 3),
    }


def print_figures(result: dict) -> None:
    tables = result.get("launchers") or {"": result}
    for launcher, figures in tables.items():
        name = f"{result['engine']} {launcher}".strip()
        print(f"\n{name}: round  wall_s  slowest_site_s  sum_sites_s  overhead_s  share")
        for r in figures["rounds"]:
            print(
                f"{'':>{len(name)}}  {r['round']:>5}  {r['wall_s']:>6.1f}  "
                f"{r['slowest_site_s']:>14.1f}  {r['sum_sites_s']:>11.1f}  "
                f"{r['overhead_s']:>10.1f}  {r['overhead_share']:>5.3f}"
            )
        print(
            f"median overhead: {figures['median_overhead_s']:.1f}s per round, share "
            f"{figures['median_overhead_share']:.3f}"
        )
    if "cold_over_warm_overhead_s" in result:
        print(f"cold / warm median overhead seconds: {result['cold_over_warm_overhead_s']}")
    print(json.dumps(result, indent=2))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Figures: per round wall_s, slowest_site_s, sum_sites_s, overhead_share = "
        "(wall - slowest site) / wall, and their median. Details: the module docstring.",
    )
    parser.add_argument(
        "--engine",
        choices=["simulation", "deployment"],
        default="deployment",
        help="Flower engine: simulation (one process) or deployment (TLS SuperLink + one "
        "SuperNode per site on loopback); default deployment",
    )
    parser.add_argument("--rounds", type=int, default=3, help="pretraining rounds (default 3)")
    parser.add_argument(
        "--min-site-seconds",
        type=float,
        default=60.0,
        help="local work per round sized so the slowest site computes about this many "
        "seconds (default 60)",
    )
    parser.add_argument(
        "--sites-dir",
        type=Path,
        default=REPO / "demo-sites",
        help="folder of the demo sites (default demo-sites/; generated when missing)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep run dirs, certificates and logs in a new folder under this one "
        "(default: a temporary folder, removed at the end)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="give up the federation after this many seconds (default: sized from rounds, "
        "sites and --min-site-seconds)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="pretraining steps per site round (default: sized by --min-site-seconds)",
    )
    parser.add_argument(
        "--cpus-per-site",
        type=int,
        default=None,
        help="simulation: cores per site (default all: sites train one after another)",
    )
    parser.add_argument(
        "--launcher",
        choices=["warm", "cold", "both"],
        default="warm",
        help="deployment: SuperNodes with --warm (default; one import per SuperNode), --cold "
        "(Flower's launcher, one process per message) or both, cold then warm, with the ratio "
        "of their median overhead seconds per round",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if not args.min_site_seconds > 0:
        parser.error("--min-site-seconds must be > 0")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.cpus_per_site is not None and args.engine != "simulation":
        parser.error("--cpus-per-site is a simulation setting (a SuperNode uses its machine)")
    if args.launcher != "warm" and args.engine != "deployment":
        parser.error("--launcher is a deployment setting (the simulation has no SuperNodes)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    # SIGTERM unwinds like Ctrl-C, so every started process is stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{args.engine}-", dir=args.work_dir))
        result = measure(args, work.resolve())
        print(f"run dir, logs: {work}", flush=True)
    else:
        with tempfile.TemporaryDirectory(prefix="orthofed-fed-overhead-") as tmp:
            result = measure(args, Path(tmp))
    print_figures(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
