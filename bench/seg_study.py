"""Segmentation with few masks: diffusion features + head against a supervised UNet.

The foundation model's case for segmentation: with a fraction of a site's masks, does a head on
the frozen features of a *pretrained* backbone beat (a) the same head on a *random* backbone
and (b) a plain supervised MONAI `BasicUNet` (sagittal image -> 12 classes, DiceCE, AdamW)
trained from scratch on the same masks? Every cell is scored on a validation fold carved from
the site's *training* cases (seed s uses fold s mod K and draws its own mask subset); the
held-out split is never read. Prints per cell the mean Dice over the 11 structures and the
bones, then mean +- sd over seeds and the paired differences; writes OUT/seg_study.json and
OUT/seg_study.md.

    python bench/seg_study.py --site SITE --init runs/pre/checkpoint.safetensors \
        --fractions 0.1 --seeds 3 --folds 3 [--heads seg_channels=32 ...] \
        [--self-train REPEAT | --augment COPIES] [-- min_steps=400 ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

# bench/ is on sys.path when run as a script
from feature_study import _folds, _head_config, _summary

# Modules that pull torch/MONAI are imported inside the functions: `--help` stays fast.

BONES = ("femur", "tibia", "patella")
METHODS = ("ssl", "random", "unet")


def _pseudo_labelled(model, cases: list, *, config, feature_root) -> list:
    """`cases` with their masks replaced by the model's own argmax prediction."""
    import torch

    from core.models.encode import encode_cases
    from core.train.finetune import feature_cache_for

    cache = feature_cache_for(model, config=config, root=feature_root)
    model.eval()
    labelled = []
    with torch.no_grad():
        for start in range(0, len(cases), 8):
            chunk = [replace(c, mask=None) for c in cases[start : start + 8]]
            batch = encode_cases(model, chunk, cache=cache)
            guess = model.segment(batch.seg_image, batch.seg_maps).argmax(dim=1)
            labelled += [
                replace(c, mask=guess[i].numpy().astype(np.uint8)) for i, c in enumerate(chunk)
            ]
    model.train()
    return labelled


def _self_trained(model, *, train, chosen_ids, config, feature_root, repeat: int) -> None:
    """A second stage: the unlabeled training cases, pseudo-labelled by the trained head, join
    the real masks (each real case `repeat` times) for another fine-tuning run under the same
    settings, continued from the first stage's head (on the larger set `epochs`, not the
    `min_steps` floor, usually decides the steps: 1000 against the first stage's 400 in the
    feature study's screen)."""
    from core.train.finetune import finetune

    real = [c for c in train if c.case_id in chosen_ids]
    unlabeled = [c for c in train if c.case_id not in chosen_ids]
    pseudo = _pseudo_labelled(model, unlabeled, config=config, feature_root=feature_root)
    stage2 = replace(config, label_fraction=1.0, val_fraction=0.0)
    finetune(model, real * repeat + pseudo, config=stage2, feature_root=feature_root)


def _augmented(cases: list, *, copies: int, seed: int) -> list:
    """`copies` randomly deformed copies of each case's sagittal image and mask (MONAI: a small
    in-plane rotation, scaling and shift, nearest for the mask; a bias field and a gamma on
    the image), each its own case id so that its frozen features are cached apart."""
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandBiasFieldd,
    )

    from core.views import View

    augment = Compose(
        [
            RandAffined(
                keys=["image", "mask"],
                prob=1.0,
                rotate_range=(0.2, 0.0, 0.0),
                scale_range=(0.0, 0.1, 0.1),
                translate_range=(1, 4, 4),
                mode=("bilinear", "nearest"),
                padding_mode="border",
            ),
            RandBiasFieldd(keys=["image"], prob=0.5, coeff_range=(0.0, 0.3)),
            RandAdjustContrastd(keys=["image"], prob=0.5, gamma=(0.7, 1.5)),
        ]
    )
    augment.set_random_state(seed=seed)
    copied = []
    for case in cases:
        pair = {
            "image": np.asarray(case.views[View.SAGITTAL], dtype=np.float32),
            "mask": case.mask[None].astype(np.float32),
        }
        for k in range(copies):
            out = augment(pair)
            copied.append(
                replace(
                    case,
                    case_id=f"{case.case_id}~aug{seed}.{k}",
                    views={View.SAGITTAL: np.clip(np.asarray(out["image"]), -1, 1)},
                    mask=np.asarray(out["mask"])[0].round().astype(np.uint8),
                    labels=None,
                )
            )
    return copied


def _head_cell(
    model, *, train, val, fraction, seed, feature_root, train_cfg, self_train=0, augment=0
) -> dict:
    from core.models.predict import predict
    from core.train.finetune import finetune, select_training_cases
    from reproduce.baselines import dice_summary

    trained = copy.deepcopy(model)
    config = replace(train_cfg, label_fraction=fraction, seed=seed)
    n_masks = None
    if augment:  # the same mask subset, then its deformed copies; no validation split
        chosen = select_training_cases(train, model=trained, config=config)
        n_masks = len(chosen)  # the masks drawn; the copies are not more masks
        train = chosen + _augmented(chosen, copies=augment, seed=seed)
        config = replace(config, label_fraction=1.0, val_fraction=0.0)
    result = finetune(trained, train, config=config, feature_root=feature_root)
    first = {}
    if self_train:
        trained.eval()
        first = {"stage1": dice_summary(predict(trained, val, batch_size=4).dice)}
        print(f"  stage 1 mean Dice {first['stage1']['mean_dice']:.3f}", flush=True)
        _self_trained(
            trained,
            train=train,
            chosen_ids=set(result.case_ids),
            config=config,
            feature_root=feature_root,
            repeat=self_train,
        )
    trained.eval()
    scores = dice_summary(predict(trained, val, batch_size=4).dice)
    return {
        **scores,
        **first,
        "n_masks": n_masks or result.num_examples,
        "best_epochs": result.best_epochs,
    }


def _unet_cell(*, train, val, fraction, seed, budget) -> dict:
    """MONAI BasicUNet on the sagittal image, the heads' mask subset (reproduce/baselines.py)."""
    from reproduce.baselines import mask_subset, train_unet, unet_dice

    chosen = mask_subset(train, fraction=fraction, seed=seed)
    return {**unet_dice(train_unet(chosen, budget=budget, seed=seed), val), "n_masks": len(chosen)}


def _bones(cell: dict) -> float:
    return float(np.mean([cell["dice"][b] for b in BONES if cell["dice"][b] is not None]))


def _models(init: Path, heads: list[str]):
    from core.models.loading import model_from_checkpoint
    from core.models.registry import build_model

    loaded, checkpoint = model_from_checkpoint(init, joint="knee")
    config = _head_config(loaded.config, heads)
    ssl = loaded
    if heads:  # fresh heads of the new shape on the loaded backbones
        ssl = build_model(config, joint="knee")
        ssl.backbone.load_state_dict(loaded.backbone.state_dict())
    random = build_model(copy.deepcopy(config), joint="knee")  # pretraining's start
    return {"ssl": ssl, "random": random}, checkpoint.manifest.get("step")


def _paired(cells: list[dict], method: str, other: str) -> str:
    if method == other or not cells or not all("mean_dice" in r[other] for r in cells):
        return ""
    diffs = [r[method]["mean_dice"] - r[other]["mean_dice"] for r in cells]
    return f"{_summary(diffs)} ({sum(d > 0 for d in diffs)}/{len(diffs)} > 0)"


def _report(rows: list[dict], *, n_training: int, args) -> list[str]:
    lines = [
        f"{n_training} training cases with masks, {args.folds} validation folds, seeds "
        f"0-{args.seeds - 1} (seed s: fold s mod {args.folds}, its own mask subset); held-out "
        "split not read. Mean Dice over the 11 structures (bones: femur, tibia, patella).",
        "",
        "| masks | method | mean Dice | bones | minus unet | minus random |",
        "|---|---|---|---|---|---|",
    ]
    for fraction in args.fractions:
        cells = [r for r in rows if r["fraction"] == fraction]
        for method in [m for m in METHODS if m in args.methods]:
            mine = [r[method] for r in cells]
            lines.append(
                f"| {fraction:.0%} ({mine[0]['n_masks'] if mine else 0}) | {method} "
                f"| {_summary([m['mean_dice'] for m in mine])} "
                f"| {_summary([_bones(m) for m in mine])} "
                f"| {_paired(cells, method, 'unet')} | {_paired(cells, method, 'random')} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, required=True, help="a knee site with masks")
    parser.add_argument("--init", type=Path, required=True, help="pretrained checkpoint")
    parser.add_argument("--out", type=Path, default=Path("results/seg-study"))
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.1])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--unet-steps", type=int, default=400)
    parser.add_argument("--unet-batch", type=int, default=4)
    parser.add_argument("--unet-lr", type=float, default=2e-3)
    parser.add_argument(
        "--self-train",
        type=int,
        default=0,
        metavar="REPEAT",
        help="after the heads train, pseudo-label the training cases without a mask with "
        "them and train again on both, each real mask REPEAT times (0: off)",
    )
    parser.add_argument(
        "--augment",
        type=int,
        default=0,
        metavar="COPIES",
        help="train the heads also on COPIES deformed copies of each mask's case (0: off)",
    )
    parser.add_argument(
        "--heads",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="head architecture (model.heads keys), e.g. seg_proj=16 seg_channels=32 "
        "seg_taps=2:up.2+2:up.1+2:up.0+2:down.0",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="fine-tuning settings (configs/train/finetune.yaml keys), e.g. epochs=60",
    )
    args = parser.parse_args()
    if args.self_train and args.augment:
        parser.error("--self-train and --augment are separate screens: give one of them")

    from core.config import FinetuneConfig, load_config
    from core.data.cache import load_site_tensors
    from core.data.manifest import load_site
    from core.models.presets import CONFIGS_DIR, preprocess_for
    from reproduce.baselines import UNetBudget

    site = load_site(args.site)
    models, step = _models(args.init, args.heads)
    cases = load_site_tensors(site, preprocess=preprocess_for(models["ssl"].config), progress=True)
    # segmentation only: labels dropped, held-out cases never read
    training = [replace(c, labels=None) for c in cases if not c.heldout and c.mask is not None]
    train_cfg = load_config(
        FinetuneConfig, path=CONFIGS_DIR / "train" / "finetune.yaml", overrides=args.overrides
    )

    folds = _folds(training, k=args.folds)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, started = [], time.perf_counter()
    for fraction in args.fractions:
        for seed in range(args.seeds):
            k = seed % args.folds
            val = [replace(c, heldout=True) for c in folds[k]]
            train = [c for j, f in enumerate(folds) if j != k for c in f]
            row: dict = {"fraction": fraction, "seed": seed, "fold": k, "ssl": {}, "random": {}}
            for name, model in models.items():
                if name not in args.methods:
                    continue
                t0 = time.perf_counter()
                row[name] = _head_cell(
                    model,
                    train=train,
                    val=val,
                    fraction=fraction,
                    seed=seed,
                    feature_root=args.out / "features",
                    train_cfg=train_cfg,
                    self_train=args.self_train,
                    augment=args.augment,
                )
                row[name]["seconds"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            row["unet"] = (
                {}
                if "unet" not in args.methods
                else _unet_cell(
                    train=train,
                    val=val,
                    fraction=fraction,
                    seed=seed,
                    budget=UNetBudget(
                        steps=args.unet_steps, batch_size=args.unet_batch, lr=args.unet_lr
                    ),
                )
            )
            if row["unet"]:
                row["unet"]["seconds"] = time.perf_counter() - t0
            done = [m for m in METHODS if m in args.methods]
            rows.append(row)
            print(
                f"{fraction:>4.0%} seed {seed} fold {k}: "
                + "  ".join(
                    f"{m} {row[m]['mean_dice']:.3f} (bones {_bones(row[m]):.3f}, "
                    f"{row[m]['seconds']:.0f} s)"
                    for m in done
                )
                + f"  [{time.perf_counter() - started:.0f} s]",
                flush=True,
            )
    payload = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "pretrain_step": step,
        "n_training_cases": len(training),
        "rows": rows,
    }
    (args.out / "seg_study.json").write_text(json.dumps(payload, indent=1))
    lines = _report(rows, n_training=len(training), args=args)
    (args.out / "seg_study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
