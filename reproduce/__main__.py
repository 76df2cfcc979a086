"""`python -m reproduce [--quick] [--seeds N] [--out DIR] [--config FILE] [--jobs N|auto]`."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m reproduce",
        description="Reproduce the paper's claims on synthetic sites (resumable: finished "
        "cells are kept under OUT/reproduce/cells/ and skipped by a rerun).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny everything (configs/reproduce-quick.yaml, 1 seed): checks "
        "every row end to end in minutes; default --out results/quick",
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: config)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default results, or results/quick with --quick)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="configuration file (default configs/reproduce.yaml)",
    )
    parser.add_argument(
        "--jobs",
        default="1",
        help="run the seeds as this many parallel processes at a time, each pinned to its "
        "share of the cores (default 1). 'auto' starts every seed at once (at most two per "
        "core): with more seeds than cores each gets one core, shared, and moves to a core "
        "that a finished seed frees. On the 2-core machine two single-core seeds did "
        "1.13-1.28x the work of one seed on both cores",
    )
    parser.add_argument(
        "--only-seed",
        type=int,
        default=None,
        metavar="K",
        help="run only seed K's cells and write no tables (what --jobs starts per seed)",
    )
    parser.add_argument(
        "--cores",
        default=None,
        metavar="LIST",
        help="pin this process to these CPU ids, e.g. 0,1 (what --jobs gives each seed)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    from reproduce import parallel

    try:
        jobs = parallel.parse_jobs(args.jobs)
        if args.cores is not None:  # before torch loads: its thread pool sizes on the pin
            parallel.pin_to(parallel.parse_cores(args.cores))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # torch/MONAI load after argument parsing: `python -m reproduce --help` stays fast
    from core.device import available_cores
    from reproduce.config import DEFAULT_CONFIG, QUICK_CONFIG, load_reproduce_config
    from reproduce.runner import run

    out = args.out or Path("results/quick" if args.quick else "results")
    config_path = (args.config or (QUICK_CONFIG if args.quick else DEFAULT_CONFIG)).resolve()
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m reproduce", *map(shlex.quote, given)])
    try:
        config = load_reproduce_config(config_path, seeds=args.seeds)
        return run(
            config=config,
            out=out,
            command=command,
            jobs=parallel.resolve_jobs(jobs, seeds=config.seeds, cores=available_cores()),
            only_seed=args.only_seed,
            config_path=config_path,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"interrupted: finished cells are kept under {out / 'reproduce' / 'cells'}; "
            "the same command resumes",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
