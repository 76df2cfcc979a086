"""How fast does pretraining converge? Learning-rate schedules, scored on TRAINING-case volumes.

For each schedule (`lr:schedule:warmup`, e.g. `1e-4:constant:0` or `1e-3:cosine:50`), one view
backbone of the given model is pretrained for `--steps` steps from the same initialisation and
seed, and every `--eval-every` steps its EMA weights are scored by the denoising loss on
validation volumes carved from the site's training cases (held-out cases are never read) at
fixed timesteps and fixed noise, so that curves are comparable across schedules and steps
(the training loss is not: it is drawn at random timesteps). Prints the curves and writes
OUT/pretrain_study.json.

    python bench/pretrain_study.py --site SITE --out /tmp/pretrain-study --steps 400 \
        --schedules 1e-4:constant:0 1e-3:cosine:50 --view sagittal --model \
        "model.backbone.channels=[8,16,32]" model.backbone.norm_num_groups=4 \
        model.backbone.num_head_channels=8 model.heads.view_dim=64
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from core.config import LrSchedule, PretrainConfig, PretrainRunConfig, load_config
from core.data.manifest import load_site
from core.views import View

# Modules that pull MONAI are imported inside the functions: `--help` stays fast.

# Timesteps at which validation loss is measured: small t (what the feature taps read)
# through large t (what the denoiser spends most of its capacity on).
EVAL_TIMESTEPS = (10, 50, 100, 250, 500, 750)


def _split(volumes: list[tuple[str, np.ndarray]], *, n_val: int) -> tuple[list, list]:
    """Validation volumes = the n_val cases first by a hash of their id (order-free)."""
    ranked = sorted(volumes, key=lambda item: hashlib.sha256(f"val:{item[0]}".encode()).digest())
    return [a for _, a in ranked[n_val:]], [a for _, a in ranked[:n_val]]


@torch.no_grad()
def validation_loss(unet, scheduler, volumes: list[np.ndarray], *, seed: int = 1234) -> dict:
    """Mean epsilon MSE per fixed timestep (fixed noise), and their mean."""
    from core.diffusion.ddpm import noised

    unet.eval()
    clean = torch.from_numpy(np.stack([np.asarray(v, dtype=np.float32) for v in volumes]))
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for t in EVAL_TIMESTEPS:
        noise = torch.randn(clean.shape, generator=generator)
        steps = torch.full((clean.shape[0],), t, dtype=torch.long)
        prediction = unet(noised(scheduler, clean, timesteps=steps, noise=noise), steps)
        out[str(t)] = float(torch.mean((prediction.float() - noise) ** 2))
    out["mean"] = float(np.mean([out[str(t)] for t in EVAL_TIMESTEPS]))
    return out


def _run(schedule: str, *, model, base_train, view, train_vols, val_vols, args) -> dict:
    from core.train.pretrain import Pretrainer

    lr, kind, warmup = schedule.split(":")
    train = replace(
        base_train,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=float(lr),
        lr_schedule=LrSchedule(kind),
        warmup_steps=int(warmup),
        seed=args.seed,
    )
    trainer = Pretrainer(
        config=PretrainRunConfig(model=model, train=train), volumes={view: train_vols}
    )
    curve, started, losses = [], time.perf_counter(), []
    ema = trainer.emas[view].module
    curve.append({"step": 0, **validation_loss(ema, trainer.scheduler, val_vols)})
    while trainer.step < args.steps:
        losses.append(trainer.train_step()[view])
        if trainer.step % args.eval_every == 0 or trainer.step == args.steps:
            record = {
                "step": trainer.step,
                "train_loss": float(np.mean(losses[-args.eval_every :])),
                **validation_loss(ema, trainer.scheduler, val_vols),
            }
            curve.append(record)
            print(
                f"{schedule:>18} step {trainer.step:5d}  train {record['train_loss']:.4f}  "
                f"val {record['mean']:.4f}  (t=10 {record['10']:.4f}, t=100 {record['100']:.4f})",
                flush=True,
            )
    return {"schedule": schedule, "seconds": time.perf_counter() - started, "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("results/pretrain-study"))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--view", default="sagittal")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--val-cases", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedules", nargs="+", default=["1e-4:constant:0", "1e-3:cosine:50"])
    parser.add_argument(
        "--model", dest="overrides", nargs="*", default=[], help="model.* overrides"
    )
    args = parser.parse_args()

    from core.data.cache import load_site_tensors
    from core.models.presets import CONFIGS_DIR, load_model_config, preprocess_for

    model = load_model_config(
        args.preset, overrides=[o.removeprefix("model.") for o in args.overrides]
    )
    base_train = load_config(PretrainConfig, path=CONFIGS_DIR / "train" / "pretrain.yaml")
    view = View(args.view)
    site = load_site(args.site)
    cases = load_site_tensors(site, preprocess=preprocess_for(model), progress=True)
    volumes = [(c.case_id, c.views[view]) for c in cases if not c.heldout and view in c.views]
    train_vols, val_vols = _split(volumes, n_val=args.val_cases)
    print(f"{len(train_vols)} training and {len(val_vols)} validation volumes ({view.value})")
    runs = [
        _run(s, model=model, base_train=base_train, view=view, train_vols=train_vols,
             val_vols=val_vols, args=args)
        for s in args.schedules
    ]  # fmt: skip
    print("\nschedule            final val   best val (step)   seconds")
    for run in runs:
        best = min(run["curve"], key=lambda r: r["mean"])
        print(
            f"{run['schedule']:>18}  {run['curve'][-1]['mean']:.4f}     "
            f"{best['mean']:.4f} ({best['step']})     {run['seconds']:.0f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"site": str(args.site), "view": view.value, "steps": args.steps,
              "batch_size": args.batch_size, "seed": args.seed, "overrides": args.overrides,
              "n_train": len(train_vols), "n_val": len(val_vols), "runs": runs}  # fmt: skip
    (args.out / "pretrain_study.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
