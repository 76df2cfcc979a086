"""`make demo`: three synthetic hospitals, checked, then a whole federation in simulation.

Sites are generated once (deterministic by seed) under `demo-sites/`; the federation writes
`runs/demo/`. A second `make demo` resumes that run, which is a no-op once it finished
(delete `runs/demo` to train again).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

DEMO_SITES = (
    # profile, joint, seed: a 3T knee, a 1.5T knee without axial series, an ankle
    ("knee-3t", "knee", 1),
    ("knee-15t", "knee", 2),
    ("ankle-std", "ankle", 3),
)
CASES = 24
EXPERIMENT = "configs/experiments/demo.yaml"
RUN_DIR = Path("runs/demo")


def _orthofed(*args: str) -> int:
    print("$ orthofed " + " ".join(args), flush=True)
    return subprocess.call([sys.executable, "-m", "fl_server.cli", *args])


def make_sites(root: Path) -> int:
    root.mkdir(exist_ok=True)
    for profile, joint, seed in DEMO_SITES:
        site = root / profile
        if not (site / "site.yaml").is_file():
            code = _orthofed(
                "phantom",
                "--out",
                str(site),
                "--joint",
                joint,
                "--cases",
                str(CASES),
                "--seed",
                str(seed),
                "--profile",
                profile,
            )
            if code:
                return code
        if _orthofed("data", "check", str(site)) != 0:
            print(f"demo: 'orthofed data check {site}' found problems", file=sys.stderr)
            return 1
    return 0


def main() -> int:
    started = time.monotonic()
    code = make_sites(Path("demo-sites"))
    if code:
        return code
    args = ["federate", "--config", EXPERIMENT, "--run-dir", str(RUN_DIR)]
    if (RUN_DIR / "latest.json").is_file():
        args.append("--resume")
    code = _orthofed(*args)
    print(f"demo finished in {time.monotonic() - started:.0f}s (exit {code}); files in {RUN_DIR}/")
    return code


if __name__ == "__main__":
    sys.exit(main())
