"""Federations of the reproduction: experiment files, runs in Flower's simulation engine, and
what they leave behind (global checkpoints, per-site evaluation, epsilon spent).

Each federation runs as `python -m fl_server.cli federate` in a child process (the real
ServerApp and ClientApps; Ray and its memory go away with the process), its output in
`<run dir>/federate.log`. A run that stopped part-way is continued with `--resume` (the
server's own round-level resume); a complete one is never rerun. A partial run WITH client
DP is started over instead: its sites' budgets already count the interrupted round, which a
resume would spend again (the budget guard would then refuse it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from core.train.privacy import PHASES
from reproduce.config import ReproduceConfig

REPO = Path(__file__).resolve().parents[1]
TAIL = 2000


def _private_finetuning(client_dp: dict[str, Any] | None) -> bool:
    dp = client_dp or {}
    return bool(dp.get("enabled")) and "finetune" in dp.get("phases", PHASES)


def experiment(
    *,
    name: str,
    seed: int,
    config: ReproduceConfig,
    sites: list[Path],
    joints: list[str],
    client_dp: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An experiment (configs/experiments schema): pretraining + linear fine-tuning rounds on
    `sites`, then every site evaluates the final global model on its held-out split."""
    fed = config.federation
    n = len(sites)
    return {
        "name": name,
        "seed": seed,
        "model_preset": config.model.preset,
        "model_overrides": list(config.model.overrides),
        "joints": joints,
        "sites": [str(s.resolve()) for s in sites],
        "pretrain": {
            "rounds": fed.pretrain_rounds,
            "min_sites": n,
            "train": {
                "steps": fed.pretrain_steps,
                "batch_size": fed.pretrain_batch,
                "lr": fed.pretrain_lr,
                "lr_schedule": fed.pretrain_lr_schedule,
                "warmup_steps": fed.pretrain_warmup_steps,
            },
        },
        "finetune": {
            "rounds": fed.finetune_rounds,
            "min_sites": n,
            "train": {
                "mode": "linear",
                "epochs": fed.finetune_epochs,
                "batch_size": fed.finetune_batch,
                "lr": fed.finetune_lr,
                "min_steps": fed.min_steps(private=_private_finetuning(client_dp)),
            },
        },
        "evaluate": {"enabled": True, "min_sites": n},
        "client_dp": client_dp or {"enabled": False},
    }


def planned_rounds(config: ReproduceConfig) -> int:
    """Rounds of a complete run: pretraining, fine-tuning and the evaluation round."""
    return config.federation.pretrain_rounds + config.federation.finetune_rounds + 1


def completed_rounds(run_dir: Path) -> int:
    latest = run_dir / "latest.json"
    return int(json.loads(latest.read_text())["index"]) if latest.is_file() else 0


def federate(*, spec: dict[str, Any], folder: Path, rounds: int) -> Path:
    """Run (or continue) the federation `spec` in `folder`; returns its run dir."""
    folder.mkdir(parents=True, exist_ok=True)
    exp_path, run_dir, log = folder / "experiment.yaml", folder / "run", folder / "federate.log"
    if completed_rounds(run_dir) >= rounds:
        return run_dir
    if spec.get("client_dp", {}).get("enabled") and run_dir.exists():
        shutil.rmtree(run_dir)
    exp_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    command = [
        sys.executable,
        "-m",
        "fl_server.cli",
        "federate",
        "--config",
        str(exp_path),
        "--run-dir",
        str(run_dir),
    ]
    if (run_dir / "history.jsonl").exists():
        command.append("--resume")
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    with log.open("a") as handle:
        code = subprocess.run(
            command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False
        ).returncode
    done = completed_rounds(run_dir)
    if code != 0 or done < rounds:
        tail = log.read_text()[-TAIL:].strip().splitlines()
        raise RuntimeError(
            f"federation {spec['name']} stopped after {done}/{rounds} rounds (exit {code}); "
            f"see {log}; last line: {tail[-1] if tail else '(no output)'}"
        )
    return run_dir


def global_checkpoint(run_dir: Path, *, index: int) -> Path:
    path = run_dir / "global" / f"round-{index:04d}.safetensors"
    if not path.is_file():
        raise ValueError(f"{path} is missing: the federation did not complete round {index}")
    return path


def history(run_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in (run_dir / "history.jsonl").read_text().splitlines()
        if line.strip()
    ]


def spent_epsilon(run_dir: Path) -> dict[str, float]:
    """Each site's cumulative epsilon after the last training round (empty without DP)."""
    records = [r for r in history(run_dir) if "epsilon" in r]
    return {s: float(e) for s, e in records[-1]["epsilon"]["sites"].items()} if records else {}


def federation_evaluation(run_dir: Path) -> dict[str, dict[str, float]]:
    """The evaluate round's metrics per site, as the sites reported them."""
    records = [r for r in history(run_dir) if r.get("phase") == "evaluate"]
    return records[-1].get("metrics", {}) if records else {}


def summary(*, config: ReproduceConfig, run_dir: Path) -> dict[str, Any]:
    """The cell result of a finished federation."""
    fed = config.federation
    final = planned_rounds(config) - 1  # the global model after the last fine-tuning round
    evaluation = federation_evaluation(run_dir)
    return {
        "run_dir": str(run_dir),
        "pretrained": str(global_checkpoint(run_dir, index=fed.pretrain_rounds)),
        "final": str(global_checkpoint(run_dir, index=final)),
        "site_evaluation": {
            s: {k: v for k, v in m.items() if k in ("macro_auc", "mean_dice")}
            for s, m in evaluation.items()
        },
        "epsilon_sites": spent_epsilon(run_dir),
        "wall_s": round(sum(r.get("wall_s", 0.0) for r in history(run_dir)), 1),
        "summary": f"{len(history(run_dir))} rounds",
    }
