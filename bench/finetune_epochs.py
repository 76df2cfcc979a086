"""Per-epoch validation losses of one fine-tuning run of `make reproduce`'s row 1, and the
held-out metrics of the model it keeps (docs/feature-study.md §10).

Fine-tunes a backbone of a reproduction's output folder (default: seed 0's federated SSL
backbone) on the knee pool's training cases with the reproduction's model and fine-tuning
settings, prints each epoch's training loss and per-head validation losses (the validation
split is carved from the training cases), the epochs kept, and the held-out macro AUC and Dice.

    python bench/finetune_epochs.py --out /work/repro --mode partial --fraction 1.0
    python bench/finetune_epochs.py --out /work/repro --mode partial --keep-last

`--keep-last` skips restoring the kept epoch (evaluates the model of the last epoch).
Extra arguments are FinetuneConfig overrides (`lr=2e-3`, `min_steps=1000`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# Modules that pull torch/MONAI are imported inside the functions: `--help` stays fast.


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="a `python -m reproduce --out` folder"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default="fed", help="fed (SSL backbone) or random-init")
    parser.add_argument("--mode", default="partial", choices=["linear", "partial", "full"])
    parser.add_argument("--fraction", type=float, default=1.0, help="label fraction")
    parser.add_argument("--keep-last", action="store_true", help="evaluate the last epoch")
    parser.add_argument("--json", type=Path, help="write the epochs and metrics here")
    parser.add_argument("overrides", nargs="*", help="FinetuneConfig key=value")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    from core.config import FinetuneRunConfig, load_config
    from core.models.loading import model_from_checkpoint
    from core.models.predict import evaluate
    from core.models.presets import load_run_config
    from core.train.finetune import finetune
    from core.train.validation import Validation
    from reproduce.config import KNEE, ReproduceConfig, validate
    from reproduce.local import model_config, model_overrides
    from reproduce.sites import SiteCases

    work = args.out / "reproduce"
    saved = json.loads((work / "config.json").read_text())["config"]  # the run's own settings
    config = validate(load_config(ReproduceConfig, data=saved))
    names = config.sites_of(KNEE)
    folders = {name: work / "sites" / name for name in names}
    cases = SiteCases(folders, model_config=model_config(config.model)).pooled(names)
    cell = json.loads((work / "cells" / f"s{args.seed}.{args.init}.json").read_text())
    init = cell["checkpoint"] if args.init == "random-init" else cell["pretrained"]
    ft = config.finetune
    epochs = {"linear": ft.linear_epochs, "partial": ft.partial_epochs, "full": ft.full_epochs}
    train = {
        "mode": args.mode,
        "epochs": epochs[args.mode],
        "batch_size": ft.batch_size,
        "lr": ft.lr,
        "min_steps": ft.min_steps,
        "label_fraction": args.fraction,
        "seed": args.seed,
    }
    overrides = [
        *(f"train.{k}={v}" for k, v in train.items()),
        *map("train.{}".format, args.overrides),
    ]
    run = load_run_config(
        FinetuneRunConfig,
        preset=config.model.preset,
        train="finetune",
        overrides=[*model_overrides(config.model), *overrides],
    )
    model, _ = model_from_checkpoint(init, joint=KNEE, require_heads=False)
    if args.keep_last:
        Validation.restore_best = lambda self: None  # this run only: evaluate the last epoch
    started, rows = time.monotonic(), []

    def on_epoch(*, epoch: int, loss: float, validation: dict) -> None:
        rows.append(
            {"epoch": epoch, "loss": loss, **{f"val_{k}": v for k, v in validation.items()}}
        )
        vals = " ".join(f"val {k} {v:.4f}" for k, v in validation.items())
        print(f"epoch {epoch:3d}  {time.monotonic() - started:6.0f} s  loss {loss:.4f}  {vals}")

    result = finetune(model, cases, config=run.train, on_epoch=on_epoch)
    metrics = evaluate(model, cases)
    print(f"kept: {result.best_epochs}{' (not restored: --keep-last)' if args.keep_last else ''}")
    print(f"held-out macro AUC {metrics['macro_auc']:.3f}, mean Dice {metrics['mean_dice']:.3f}")
    print("Dice " + ", ".join(f"{k} {v:.3f}" for k, v in metrics["dice"].items()))
    if args.json:
        kept = {"best_epochs": result.best_epochs, "keep_last": args.keep_last}
        scores = {k: metrics[k] for k in ("macro_auc", "mean_dice", "dice")}
        args.json.write_text(
            json.dumps({"train": train, "epochs": rows, **kept, **scores}, indent=2)
        )


if __name__ == "__main__":
    main()
