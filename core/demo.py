"""`make demo`: what exists end to end, on synthetic sites generated when missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO_SITES = (
    ("knee-3t", "knee", 1),
    ("knee-15t", "knee", 2),
    ("ankle-std", "ankle", 3),
)


def _orthofed(*args: str) -> int:
    cmd = [sys.executable, "-m", "core.cli", *args]
    print("$ orthofed " + " ".join(args), flush=True)
    return subprocess.call(cmd)


def main(root: Path = Path("demo-sites"), cases: int = 12) -> int:
    root.mkdir(exist_ok=True)
    for profile, joint, seed in DEMO_SITES:
        site = root / profile
        if not (site / "site.yaml").is_file():
            code = _orthofed(
                "phantom", "--out", str(site), "--joint", joint,
                "--cases", str(cases), "--seed", str(seed), "--profile", profile,
            )
            if code:
                return code
        if _orthofed("data", "check", str(site)) not in (0,):
            print(f"demo: problems in {site}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
