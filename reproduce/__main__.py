"""`python -m reproduce [--quick] [--seeds N] [--out DIR] [--config FILE]`."""

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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    # torch/MONAI load after argument parsing: `python -m reproduce --help` stays fast
    from reproduce.config import load_reproduce_config
    from reproduce.runner import run

    out = args.out or Path("results/quick" if args.quick else "results")
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m reproduce", *map(shlex.quote, given)])
    try:
        config = load_reproduce_config(args.config, quick=args.quick, seeds=args.seeds)
        return run(config=config, out=out, command=command)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
