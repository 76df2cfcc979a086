"""Shared fixtures for the Flower-layer tests: tiny DICOM sites and a tiny experiment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.atomic import load_arrays
from core.data.manifest import SiteManifest, write_manifest
from core.views import LABELS, VIEWS
from tests.core.data import dicom_factory as factory

REPO = Path(__file__).resolve().parents[2]

# A model small enough for a whole federation to run in well under a minute on 2 cores.
TINY_MODEL = [
    "input_size=16",
    "input_slices=8",
    "backbone.channels=[4,8,8]",
    "backbone.norm_num_groups=4",
    "backbone.num_head_channels=4",
    "heads.view_dim=8",
    "heads.seg_proj=4",
    "heads.seg_channels=4",
]


def make_site(
    root: Path,
    *,
    joint: str,
    site_id: str,
    seed: int,
    n_cases: int = 5,
    views=VIEWS,
    labels: bool = True,
    case_prefix: str = "case-",
) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_cases):
        for i, view in enumerate(views):
            factory.write_series(
                root / f"{case_prefix}{c}" / f"s{i}",
                view=view.value,
                n_slices=8,
                rows=16,
                cols=16,
                seed=1000 * seed + 10 * c + i,
            )
        rows.append([f"{case_prefix}{c}", *[str(int(rng.random() < 0.5)) for _ in LABELS[joint]]])
    if labels:
        header = ",".join(["case_id", *LABELS[joint]])
        (root / "labels.csv").write_text(
            header + "\n" + "\n".join(",".join(r) for r in rows) + "\n"
        )
    write_manifest(
        SiteManifest(
            joint=joint, site_id=site_id, heldout_fraction=0.3, cache_dir=str(root) + ".cache"
        ),
        root / "site.yaml",
    )
    return root


def write_experiment(path: Path, *, sites: list[Path], extra: str = "") -> Path:
    overrides = ", ".join(f'"{o}"' for o in TINY_MODEL)
    site_list = ", ".join(str(s) for s in sites)
    path.write_text(
        f"""name: test
seed: 3
model_preset: tiny
model_overrides: [{overrides}]
joints: [knee, ankle]
sites: [{site_list}]
pretrain: {{rounds: 2, min_sites: 2, train: {{steps: 2, batch_size: 2}}}}
finetune: {{rounds: 1, min_sites: 2, train: {{epochs: 1, batch_size: 2}}}}
{extra}
"""
    )
    return path


@pytest.fixture(scope="session")
def fed_sites(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("fed-sites")
    return [
        make_site(root / "knee-a", joint="knee", site_id="knee-a", seed=1),
        make_site(root / "knee-b", joint="knee", site_id="knee-b", seed=2, views=VIEWS[:2]),
        make_site(root / "ankle-c", joint="ankle", site_id="ankle-c", seed=3),
    ]


def federate_command(exp: Path, run_dir: Path, *extra: str) -> list[str]:
    """`orthofed federate` of `exp` into `run_dir`, as a subprocess command line."""
    cli = [sys.executable, "-m", "fl_server.cli", "federate"]
    return [*cli, "--config", str(exp), "--run-dir", str(run_dir), *extra]


def federation_env() -> dict[str, str]:
    return {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}


def federate_cli(exp: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """`orthofed federate` of `exp` into `run_dir` in a subprocess, to its end."""
    return subprocess.run(
        federate_command(exp, run_dir, *extra),
        cwd=REPO,
        env=federation_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def federate_refused(exp: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """`orthofed federate` in this process, for commands that must be refused before Flower
    starts (a subprocess would spend ~5 s importing torch to print one line). An exception
    that escaped the command (a traceback in a real shell) fails the test here."""
    from typer.testing import CliRunner

    from fl_server.cli import build_full_app

    args = ["federate", "--config", str(exp), "--run-dir", str(run_dir), *extra]
    result = CliRunner().invoke(build_full_app(), args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"orthofed {' '.join(args)} raised") from result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def run_history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def final_weights(run_dir: Path) -> dict[str, np.ndarray]:
    latest = json.loads((run_dir / "latest.json").read_text())
    return load_arrays(run_dir / latest["checkpoint"])


def instrumented_federation(exp: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """tests/fl/instrumented_federation.py (the real simulation with fault/watch mods)."""
    cmd = [sys.executable, "-m", "tests.fl.instrumented_federation", str(exp), str(run_dir)]
    return subprocess.run(
        [*cmd, *extra],
        cwd=REPO,
        env=federation_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
