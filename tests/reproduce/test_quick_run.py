"""End to end: `python -m reproduce --quick` (two real Flower federations, every row), then a
rerun with a second seed and `--jobs 2`: seed 0 is all cached and starts no process, seed 1's
process runs its own cells on every core. About 3 minutes of CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core.device import available_cores
from core.reporting.federation_run import load_cross_site
from reproduce import specs
from reproduce.config import load_reproduce_config

REPO = Path(__file__).resolve().parents[2]


def _quick(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "reproduce", "--quick", "--out", str(out), *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_quick_run_fills_every_row_and_resumes(tmp_path):
    out = tmp_path / "results"
    first = _quick(out)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    payload = json.loads((out / "reproduce.json").read_text())
    assert payload["failed"] == {} and payload["command"].startswith("python -m reproduce")
    config = load_reproduce_config(quick=True)
    rows = payload["table"]
    assert len(rows) == len(specs.lines(config))
    for row in "1234":
        assert any(r["n_seeds"] == 1 for r in rows if r["row"] == row), row
    # 3-4 held-out cases per site: a model may leave every label's AUC undefined, rarely
    per_site_1 = [r for r in rows if r["row"] == "1" and r["path"].startswith("per_site.")]
    auc_rows = [r for r in rows if r["metric"] == "macro AUC" and r not in per_site_1]
    undefined = [r["setting"] for r in auc_rows if r["n_seeds"] == 0]
    assert len(undefined) <= 2, undefined
    # row 1 per knee site: the same models' held-out cases split by site (fewer per line)
    assert len(per_site_1) == 2 * len([r for r in rows if r["row"] == "1"]) // 3
    for site in config.sites_of("knee"):  # each site scored on most lines
        on_site = [r for r in per_site_1 if r["path"] == f"per_site.{site}.macro_auc"]
        assert sum(r["n_seeds"] == 1 for r in on_site) >= len(on_site) // 2, site
    spent = next(r for r in rows if r["path"] == "epsilon")
    assert 0 < spent["mean"] <= config.privacy.epsilons[0] * 1.01
    assert any(r["n_seeds"] == 1 for r in rows if r["row"] == "5")
    matrix = load_cross_site(out / "reproduce" / "cross_site.json")
    assert len(matrix["macro_auc"]) == 4 and len(matrix["sites"]) == 2
    run_dir = Path(payload["cells"]["s0.fed"]["run_dir"])
    assert load_cross_site(run_dir / "cross_site.json")["models"] == matrix["models"]
    assert "Cross-site" in (run_dir / "report.html").read_text()
    for name in ("label-efficiency", "privacy", "cross-site"):
        assert (out / f"reproduce-{name}.png").stat().st_size > 1000
    text = (out / "reproduce.md").read_text()
    assert text.count("| 1. Label efficiency") == 1 and "Paper's claim" in text
    progress = [line for line in first.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == len(payload["cells"]) and all("elapsed" in p for p in progress)

    again = _quick(out, "--seeds", "2", "--jobs", "2")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    lines = [line for line in again.stdout.splitlines() if line.startswith("[")]
    seed0 = [line for line in lines if "] s0." in line]
    seed1 = [line for line in lines if "] s1." in line]
    assert all(": cached (" in line for line in seed0)  # resumed, nothing redone
    assert seed1 and not any(": cached (" in line for line in seed1)
    if available_cores() >= 2:  # seed 0 is all cached: no process for it, seed 1 on every core
        assert "seed 0: started" not in again.stdout and not seed0
        assert again.stdout.count("started on core(s)") == 1
    else:  # --jobs 2 on one core runs the seeds in turn, in this process
        assert seed0 and "started on core(s)" not in again.stdout
    second = json.loads((out / "reproduce.json").read_text())
    assert second["failed"] == {} and second["cells_run"] == len(seed1)
    assert second["cells_cached"] == len(payload["cells"])
    assert any(r["n_seeds"] == 2 for r in second["table"] if r["row"] == "1")
