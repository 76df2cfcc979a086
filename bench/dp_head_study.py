"""Heads under client DP: which settings let DP-SGD fine-tuning still segment and detect?

The reproduction's client-DP federations fine-tune the heads by DP-SGD on frozen backbones and
end with mean Dice 0.000 and macro AUC at chance (README, row 4). This screens the settings a
site controls (batch size, optimizer steps, learning rate, the segmentation head's width, the
per-case clipping of the two heads) at a fixed fine-tuning epsilon, with the project's own
`finetune_privately`, on validation folds carved from a knee site's *training* cases (seed s
uses fold s mod K; the held-out split is never read). Each variant's noise multiplier is the
smallest that keeps its planned steps within `--epsilon` (Opacus RDP, one round), so the
variants spend the same budget. A `nodp` variant fine-tunes the same heads without DP for the
same number of steps (the ceiling). Prints mean Dice over the 11 structures, the bones and
macro AUC per variant (mean ± sd over seeds); writes OUT/dp_head_study.json.

    python bench/dp_head_study.py --site SITE --init runs/pre/checkpoint.safetensors \
        --epsilon 3 --seeds 3 --variant "now:" \
        --variant "b32:batch_size=32,min_steps=60" \
        --variant "narrow:heads.seg_proj=4,heads.seg_channels=8,heads.seg_context_pool=0"

A variant is NAME:KEY=VALUE,... with KEYs of configs/train/finetune.yaml (batch_size, epochs,
min_steps, lr, ...), `heads.<model.heads key>` (fresh heads of that shape on the loaded
backbones), `dp.<client_dp key>` (max_grad_norm, ...) and `nodp=1`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

# bench/ is on sys.path when run as a script
from feature_study import _folds, _summary
from seg_study import _bones, _head_config


def _parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, body = text.partition(":")
    items = [part for part in body.split(",") if part.strip()]
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"error: --variant {text!r}: {item!r} is not KEY=VALUE")
        settings[key.strip()] = value.strip()
    if not name:
        raise SystemExit(f"error: --variant {text!r}: give it a NAME before the colon")
    return name, settings


def _typed(target, key: str, value: str, *, what: str):
    if not hasattr(target, key):
        raise SystemExit(f"error: {what}.{key} is not a setting")
    current = getattr(target, key)
    return type(current)(value) if current is not None else float(value)


def _variant_model(base, settings: dict[str, str]):
    """The loaded model, or fresh heads of another shape on its backbones."""
    from core.models.registry import build_model

    heads = [
        f"{key.removeprefix('heads.')}={value}"
        for key, value in settings.items()
        if key.startswith("heads.")
    ]
    if not heads:
        return copy.deepcopy(base)
    model = build_model(_head_config(base.config, heads), joint="knee")
    model.backbone.load_state_dict(base.backbone.state_dict())
    return model


def _variant_configs(settings: dict[str, str], *, train_cfg, epsilon: float, clip: float):
    from core.train.privacy import ClientDPConfig

    train = train_cfg
    dp = ClientDPConfig(enabled=True, target_epsilon=epsilon, max_grad_norm=clip)
    for key, value in settings.items():
        if key.startswith("heads.") or key in ("nodp", "only", "perhead"):
            continue
        if key.startswith("dp."):
            name = key.removeprefix("dp.")
            fixed = {"target_epsilon": None} if name == "noise_multiplier" else {}
            dp = replace(dp, **{name: _typed(dp, name, value, what="dp")}, **fixed)
        else:
            train = replace(train, **{key: _typed(train, key, value, what="train")})
    return train, dp


@contextlib.contextmanager
def _screened(settings: dict[str, str], *, clip: float):
    """The screen's two DP-side levers, patched into `core.train.dp_finetune` for one cell:
    `only=PREFIX+PREFIX` trains only the head parameters whose names start so (e.g.
    `knee.cls+knee.seg.classifier`); `perhead=1` clips each head's per-case gradient to
    clip / sqrt(heads) before the joint clip, so that neither head's share is crowded out."""
    import torch

    import core.train.dp_finetune as dpf

    saved = (dpf.build_optimizer, dpf._per_case_gradients)
    only = [p for p in settings.get("only", "").split("+") if p]
    if only:

        def build(model, *, backbone_params, config):
            chosen = [p for n, p in model.head.named_parameters() if n.startswith(tuple(only))]
            if not chosen:
                raise SystemExit(f"error: only={'+'.join(only)} matches no head parameter")
            return torch.optim.AdamW(chosen, lr=config.lr, weight_decay=config.weight_decay)

        dpf.build_optimizer = build
    if settings.get("perhead"):

        def per_case(model, batch, *, params):
            grads = saved[1](model, batch, params=params)
            heads = [head for head, _ in dpf._param_names(model, params)]
            names = sorted(set(heads))
            for head in names:
                mine = [g for g, h in zip(grads, heads, strict=True) if h == head]
                norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in mine))
                scale = (clip / len(names) ** 0.5 / (norms + 1e-12)).clamp(max=1.0)
                for g in mine:
                    g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
            return grads

        dpf._per_case_gradients = per_case
    try:
        yield
    finally:
        dpf.build_optimizer, dpf._per_case_gradients = saved


def _score(model, val) -> dict:
    from core.eval.metrics import mean_defined, roc_auc_per_label
    from core.models.predict import predict
    from core.views import LABELS
    from reproduce.baselines import dice_summary

    model.eval()
    scored = predict(model, val, batch_size=4)
    rows = scored.has_labels
    auc = roc_auc_per_label(
        scored.probabilities[rows], scored.labels[rows], names=LABELS[model.joint]
    )
    dice = dice_summary(scored.dice)
    return {**dice, "bones": _bones(dice), "macro_auc": mean_defined(auc)}


def _cell(base, settings, *, train, val, seed: int, train_cfg, epsilon: float, clip: float):
    from core.train.dp_finetune import dp_steps, finetune_privately
    from core.train.finetune import finetune, select_training_cases
    from core.train.privacy import sample_rate

    model = _variant_model(base, settings)
    config, dp = _variant_configs(
        settings, train_cfg=replace(train_cfg, seed=seed), epsilon=epsilon, clip=clip
    )
    chosen = select_training_cases(train, model=model, config=config)
    rate = sample_rate(batch_size=config.batch_size, cases=len(chosen))
    steps = dp_steps(epochs=config.epochs, rate=rate, min_steps=config.min_steps)
    if settings.get("nodp"):  # same steps, same batch, no clipping or noise
        epochs = max(1, round(steps * config.batch_size / len(chosen)))
        finetune(model, train, config=replace(config, epochs=epochs, min_steps=steps))
        sigma = 0.0
    else:
        with tempfile.TemporaryDirectory() as state, _screened(settings, clip=dp.max_grad_norm):
            outcome, _ = finetune_privately(
                model, train, config=config, dp=dp, state_dir=Path(state), index=0, site_id="s"
            )
            if outcome.refused:
                raise SystemExit(f"error: refused: {outcome.refused}")
            sigma = float(outcome.metrics["dp_noise_multiplier"])
    return {**_score(model, val), "steps": steps, "rate": rate, "sigma": sigma}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, required=True, help="a knee site with masks")
    parser.add_argument("--init", type=Path, required=True, help="pretrained checkpoint")
    parser.add_argument("--out", type=Path, default=Path("results/dp-head-study"))
    parser.add_argument("--epsilon", type=float, default=3.0, help="fine-tuning epsilon")
    parser.add_argument("--clip", type=float, default=1.0, help="per-case L2 clip")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument(
        "--variant", action="append", required=True, help="NAME:KEY=VALUE,... (repeatable)"
    )
    parser.add_argument("overrides", nargs="*", help="finetune.yaml settings for every variant")
    args = parser.parse_args()
    variants = [_parse_variant(v) for v in args.variant]

    from core.config import FinetuneConfig, load_config
    from core.data.cache import load_site_tensors
    from core.data.manifest import load_site
    from core.models.loading import model_from_checkpoint
    from core.models.presets import CONFIGS_DIR, preprocess_for

    base, _ = model_from_checkpoint(args.init, joint="knee")
    site = load_site(args.site)
    cases = load_site_tensors(site, preprocess=preprocess_for(base.config), progress=True)
    training = [c for c in cases if not c.heldout]
    # the reproduction's federation: a fixed epoch budget, no validation split, no cache
    train_cfg = load_config(
        FinetuneConfig,
        path=CONFIGS_DIR / "train" / "finetune.yaml",
        overrides=["epochs=5", "min_steps=0", "val_fraction=0", "precision=fp32", *args.overrides],
    )
    folds = _folds(training, k=args.folds)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(args.seeds):
        k = seed % args.folds
        val = [replace(c, heldout=True) for c in folds[k]]
        train = [c for j, f in enumerate(folds) if j != k for c in f]
        for name, settings in variants:
            t0 = time.perf_counter()
            cell = _cell(
                base,
                settings,
                train=train,
                val=val,
                seed=seed,
                train_cfg=train_cfg,
                epsilon=args.epsilon,
                clip=args.clip,
            )
            cell.update(variant=name, seed=seed, fold=k, seconds=time.perf_counter() - t0)
            rows.append(cell)
            print(
                f"{name:>12} seed {seed}: Dice {cell['mean_dice']:.3f} bones {cell['bones']:.3f} "
                f"AUC {cell['macro_auc']:.3f} (steps {cell['steps']}, q {cell['rate']:.3f}, "
                f"sigma {cell['sigma']:.2f}, {cell['seconds']:.0f} s)",
                flush=True,
            )
            (args.out / "dp_head_study.json").write_text(json.dumps(rows, indent=1))
    print(f"\nepsilon {args.epsilon} (fine-tuning alone), clip {args.clip}")
    print("| variant | mean Dice | bones | macro AUC | steps | sigma |\n|---|---|---|---|---|---|")
    for name, _ in variants:
        mine = [r for r in rows if r["variant"] == name]
        print(
            f"| {name} | {_summary([r['mean_dice'] for r in mine])} "
            f"| {_summary([r['bones'] for r in mine])} "
            f"| {_summary([r['macro_auc'] for r in mine])} | {mine[0]['steps']} "
            f"| {mine[0]['sigma']:.2f} |"
        )


if __name__ == "__main__":
    main()
