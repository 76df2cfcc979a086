"""Sites in parallel in Flower's simulation: round wall time with every core per site (sites
train one after another) against `--cpus-per-site` cores per site (cores // that many at once).

    python bench/parallel_sites.py --rounds 2 --min-site-seconds 30 \\
        --json runs/bench/parallel_sites.json

Both runs are `bench/federation_overhead.py --engine simulation` on the demo's sites with the
same pretraining steps per round (sized once, by the first run's calibration); prints each
run's rounds and the ratio of the median round wall times (sequential / parallel: > 1 means
parallel sites finish rounds sooner). On a machine with fewer cores than sites the parallel
run trains cores // cpus_per_site sites at once, each with fewer threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from federation_overhead import measure, parse_args  # bench/ is on sys.path as a script


def _run(argv: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="orthofed-parallel-sites-") as tmp:
        return measure(parse_args(argv), Path(tmp))


def _median_wall(result: dict) -> float:
    return statistics.median(r["wall_s"] for r in result["rounds"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="pretraining rounds (default 2)")
    parser.add_argument("--min-site-seconds", type=float, default=30.0)
    parser.add_argument("--cpus-per-site", type=int, default=1, help="parallel run (default 1)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    common = ["--engine", "simulation", "--rounds", str(args.rounds)]
    sequential = _run([*common, "--min-site-seconds", str(args.min_site_seconds)])
    steps = ["--steps", str(sequential["steps"])]
    parallel = _run([*common, *steps, "--cpus-per-site", str(args.cpus_per_site)])
    result = {
        "cpu_count": os.cpu_count(),
        "cpus_per_site": args.cpus_per_site,
        "steps": sequential["steps"],
        "sequential": sequential["rounds"],
        "parallel": parallel["rounds"],
        "median_wall_s": {
            "sequential": _median_wall(sequential),
            "parallel": _median_wall(parallel),
        },
    }
    result["speedup"] = round(_median_wall(sequential) / _median_wall(parallel), 3)
    for name in ("sequential", "parallel"):
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in result[name])
        print(f"{name:>10}: round wall_s {walls}; median {result['median_wall_s'][name]:.1f}")
    print(
        f"speedup (sequential / parallel median round wall): {result['speedup']:.2f}x on "
        f"{result['cpu_count']} cores, {args.cpus_per_site} core(s) per site"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
