"""The reproduction's federated fine-tuning budget: a per-round step floor, on validation sites.

`make reproduce` scores (rows 2, 4 and 5) a federation that fine-tunes its heads for
`finetune_rounds` rounds of `finetune_epochs` linear epochs: about 25 optimizer steps a round
on each knee site's ~33 cases. This study runs that federation (configs/reproduce.yaml's model,
pretraining and fine-tuning settings) on the reproduction's two knee profiles generated with
another phantom seed, never used by the reproduction: their held-out split serves as a
validation split, and the reproduction's own held-out split is never read. Per seed it
pretrains once, then fine-tunes from that pretrained global model once per floor
(`federation.finetune_min_steps`, the experiment's `finetune.train.min_steps`) and records each
site's macro AUC and mean Dice, with the fine-tuning rounds' wall time. With `--epsilon E`
each floor (`federation.dp_finetune_min_steps`) runs the reproduction's row-4 federation
instead: client DP in both phases, the noise planned for a whole-federation epsilon E at that
floor (a floor means more steps, so more noise), pretraining included (it spends the same
budget, so it is not shared).
Writes OUT/federation_floor_study.json and OUT/federation_floor_study.md.

    python bench/federation_floor_study.py --out /tmp/floor --floors 0 100 200 --seeds 2
    python bench/federation_floor_study.py --out /tmp/floor-dp --floors 0 100 --epsilon 8
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

# Modules that pull torch/MONAI/Flower are imported inside the functions: `--help` stays fast.


def _pretrained(config, *, sites: list[Path], seed: int, folder: Path) -> Path:
    """The global model after the pretraining rounds (no fine-tuning, no evaluation)."""
    from reproduce import federations

    spec = federations.experiment(
        name=f"pretrain-s{seed}", seed=seed, config=config, sites=sites, joints=["knee"]
    )
    spec["finetune"]["rounds"] = 0
    spec["evaluate"]["enabled"] = False
    rounds = config.federation.pretrain_rounds
    run_dir = federations.federate(spec=spec, folder=folder, rounds=rounds)
    return federations.global_checkpoint(run_dir, index=rounds)


def _finetuned(config, *, sites: list[Path], seed: int, init: Path, floor: int, folder: Path):
    """Per-site metrics and fine-tuning seconds of the federation's fine-tuning from `init`."""
    from reproduce import federations

    floored = replace(config, federation=replace(config.federation, finetune_min_steps=floor))
    spec = federations.experiment(
        name=f"floor-{floor}-s{seed}", seed=seed, config=floored, sites=sites, joints=["knee"]
    )
    spec["pretrain"]["rounds"] = 0
    spec["init_checkpoint"] = str(init)
    run_dir = federations.federate(
        spec=spec, folder=folder, rounds=config.federation.finetune_rounds + 1
    )
    return _outcome(run_dir)


def _outcome(run_dir: Path) -> dict:
    """Each site's held-out macro AUC and mean Dice, and the fine-tuning rounds' wall time."""
    from reproduce import federations

    seconds = sum(
        r.get("wall_s", 0.0) for r in federations.history(run_dir) if r.get("phase") == "finetune"
    )
    evaluation = federations.federation_evaluation(run_dir)
    return {
        "sites": {
            s: {k: m.get(k) for k in ("macro_auc", "mean_dice")} for s, m in evaluation.items()
        },
        "finetune_s": round(seconds, 1),
    }


def _private(config, *, sites: list[Path], seed: int, floor: int, epsilon: float, folder: Path):
    """Per-site metrics of a whole client-DP federation (row 4) at `floor`, and its epsilon."""
    from reproduce import federations, privacy
    from reproduce.local import model_config
    from reproduce.sites import SiteCases

    floored = replace(config, federation=replace(config.federation, dp_finetune_min_steps=floor))
    cases = SiteCases({p.name: p for p in sites}, model_config=model_config(config.model))
    dp = privacy.client_dp(
        epsilon,
        sites=[cases.cases(p.name) for p in sites],
        fed=floored.federation,
        privacy=config.privacy,
    )
    spec = federations.experiment(
        name=f"dp-floor-{floor}-s{seed}",
        seed=seed,
        config=floored,
        sites=sites,
        joints=["knee"],
        client_dp=dp,
    )
    run_dir = federations.federate(
        spec=spec, folder=folder, rounds=federations.planned_rounds(config)
    )
    return {
        **_outcome(run_dir),
        "noise_multiplier": dp["noise_multiplier"],
        "epsilon": max(federations.spent_epsilon(run_dir).values()),
    }


def _site_mean(cell: dict, key: str) -> float:
    values = [m[key] for m in cell["sites"].values() if m.get(key) is not None]
    return float(np.mean(values)) if values else float("nan")


def _markdown(cells: dict, *, floors: list[int], seeds: int) -> str:
    lines = [
        "| floor (steps/round) | seed | " + "macro AUC, mean of sites | mean Dice, mean of sites "
        "| fine-tuning s |",
        "|---|---|---|---|---|",
    ]
    for floor in floors:
        for seed in range(seeds):
            cell = cells[f"{floor}/{seed}"]
            lines.append(
                f"| {floor} | {seed} | {_site_mean(cell, 'macro_auc'):.3f} | "
                f"{_site_mean(cell, 'mean_dice'):.3f} | {cell['finetune_s']:.0f} |"
            )
    lines += ["", "Paired differences against the first floor (mean over seeds, per seed):", ""]
    base = floors[0]
    for floor in floors[1:]:
        for key in ("macro_auc", "mean_dice"):
            diffs = [
                _site_mean(cells[f"{floor}/{s}"], key) - _site_mean(cells[f"{base}/{s}"], key)
                for s in range(seeds)
            ]
            per_seed = ", ".join(f"{d:+.3f}" for d in diffs)
            lines.append(f"- {floor} - {base}, {key}: {np.mean(diffs):+.3f} ({per_seed})")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/federation-floor-study"))
    parser.add_argument("--config", type=Path, default=None, help="reproduce config file")
    parser.add_argument("--floors", nargs="+", type=int, default=[0, 100, 200])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument(
        "--phantom-seed", type=int, default=51, help="the validation sites' generator seed"
    )
    parser.add_argument(
        "--epsilon", type=float, default=None, help="client DP: whole-federation epsilon target"
    )
    args = parser.parse_args()
    if any(f < 0 for f in args.floors) or args.seeds < 1:
        parser.error("--floors must be >= 0 and --seeds >= 1")
    if args.epsilon is not None and not args.epsilon > 0:
        parser.error("--epsilon must be > 0")

    from reproduce.config import load_reproduce_config
    from reproduce.sites import ensure_site

    config = load_reproduce_config(args.config)
    config.phantom.seed = args.phantom_seed
    out = args.out.resolve()
    sites = [
        ensure_site(out / "sites", spec=s, phantom=config.phantom)
        for s in config.phantom.sites
        if s.joint == "knee"
    ]
    cells: dict[str, dict] = {}
    for seed in range(args.seeds):
        if args.epsilon is None:
            init = _pretrained(config, sites=sites, seed=seed, folder=out / f"s{seed}" / "pretrain")
        for floor in args.floors:
            folder = out / f"s{seed}" / f"floor-{floor}"
            if args.epsilon is None:
                cell = _finetuned(
                    config, sites=sites, seed=seed, init=init, floor=floor, folder=folder
                )
            else:
                cell = _private(
                    config, sites=sites, seed=seed, floor=floor, epsilon=args.epsilon, folder=folder
                )
            cells[f"{floor}/{seed}"] = cell
            print(
                f"seed {seed}, floor {floor}: macro AUC {_site_mean(cell, 'macro_auc'):.3f}, "
                f"mean Dice {_site_mean(cell, 'mean_dice'):.3f}, {cell['finetune_s']:.0f} s"
                + (
                    f", sigma {cell['noise_multiplier']:.2f}, epsilon {cell['epsilon']:.2f}"
                    if "epsilon" in cell
                    else ""
                ),
                flush=True,
            )
    (out / "federation_floor_study.json").write_text(json.dumps(cells, indent=2))
    text = _markdown(cells, floors=args.floors, seeds=args.seeds)
    (out / "federation_floor_study.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
