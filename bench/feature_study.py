"""Which classification features carry the signal? A study on validation folds of TRAINING cases.

For each tap set (timesteps x blocks), each label fraction and each seed, the classification
head is trained on frozen features of (a) each pretrained backbone given to `--init` (several
pretraining seeds in one run) and (b) the random backbone of the same architecture and seed,
trained once and paired with every pretrained one, and scored (macro AUC) on a validation
fold carved from the site's *training* cases (K folds, stratified by label). The held-out
split is never read.
Prints a table (mean +- sd over folds x seeds, paired SSL - random differences and how many
were > 0; with `--cnn-steps N` also a supervised multi-view 3D CNN trained from scratch on the
same label subset, reproduce/cnn_baseline.py, and SSL - CNN) and writes
OUT/feature_study.json and OUT/feature_study.md.

    python bench/feature_study.py --site SITE --init runs/pre/checkpoint.safetensors \
        --taps 100:middle 10:down.1 10:down.0+10:up.0 --fractions 1.0 0.5 0.1 --seeds 3
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.views import LABELS

# Modules that pull torch/MONAI are imported inside the functions: `--help` stays fast.


def _parse_taps(text: str) -> list[dict]:
    """ "10:down.0+10:up.0" -> [{"timestep": 10, "block": "down.0"}, ...]."""
    taps = []
    for item in text.split("+"):
        timestep, _, block = item.partition(":")
        taps.append({"timestep": int(timestep), "block": block or "middle"})
    return taps


def _folds(cases: list, *, k: int) -> list[list]:
    """K folds, each case placed by a hash of its id (deterministic, order-free)."""
    ranked = sorted(cases, key=lambda c: hashlib.sha256(f"fold:{c.case_id}".encode()).digest())
    return [ranked[i::k] for i in range(k)]


def _head_config(config, heads: list[str]):
    """A copy of the model config with `model.heads` settings replaced (KEY=VALUE)."""
    config = copy.deepcopy(config)
    for item in heads:
        key, _, value = item.partition("=")
        if not hasattr(config.heads, key) or not value:
            raise SystemExit(f"error: --heads {item!r}: not a model.heads KEY=VALUE")
        if key == "seg_taps":  # seg_taps=T:BLOCK+T:BLOCK, as feature_study.py's --taps
            from core.config import FeatureTap

            setattr(config.heads, key, [FeatureTap(**tap) for tap in _parse_taps(value)])
        else:
            setattr(config.heads, key, type(getattr(config.heads, key))(value))
    return config


def _models(
    inits: list[Path],
    *,
    joint: str,
    taps: list[dict],
    noise_draws: int = 1,
    heads: list[str] = (),
):
    """{"random": ..., "ssl:0": ..., "ssl:1": ...} (one per init), and each pretrained model's
    (checkpoint path, pretraining step)."""
    from core.config import FeatureTap
    from core.models.loading import model_from_checkpoint
    from core.models.registry import build_model

    models, sources = {}, {}
    for index, init in enumerate(inits):
        pretrained, checkpoint = model_from_checkpoint(init, joint=joint)
        config = _head_config(pretrained.config, list(heads))
        config.features.taps = [FeatureTap(**t) for t in taps]
        config.features.noise_draws = noise_draws
        if "random" not in models:  # the initialisation pretraining started from
            models["random"] = build_model(config, joint=joint)
        ssl = build_model(config, joint=joint)
        ssl.backbone.load_state_dict(pretrained.backbone.state_dict())
        models[f"ssl:{index}"] = ssl
        sources[f"ssl:{index}"] = (init, checkpoint.manifest.get("step"))
    return models, sources


def _score(model, cases) -> float | None:
    import torch

    from core.eval.metrics import mean_defined, roc_auc_per_label
    from core.models.encode import encode_cases

    model.eval()
    with torch.no_grad():
        batch = encode_cases(model, cases, with_seg=False)
        probs = torch.sigmoid(model.classify(batch.features, batch.present)).numpy()
    aucs = roc_auc_per_label(probs, batch.labels.numpy(), names=LABELS[model.joint])
    return mean_defined(aucs)


def _cell(
    model, *, train, val, fraction: float, seed: int, feature_root: Path, train_cfg
) -> float | None:
    from core.train.finetune import finetune

    trained = copy.deepcopy(model)
    config = replace(train_cfg, label_fraction=fraction, seed=seed)
    finetune(trained, train, config=config, feature_root=feature_root)
    return _score(trained, val)


def _cnn_cell(*, train, val, fraction: float, seed: int, joint, steps: int) -> float | None:
    """The supervised multi-view 3D CNN on the probe's label subset, scored on `val`."""
    from reproduce.cnn_baseline import CNNBudget, cnn_macro_auc, label_subset, train_cnn

    chosen = label_subset(train, fraction=fraction, seed=seed)
    net = train_cnn(chosen, joint=joint, budget=CNNBudget(steps=steps), seed=seed)
    return cnn_macro_auc(net, val, joint=joint)


def _summary(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "n/a"


def _row(*, ssl: list, random: list, cnn: list, taps: str, fraction: float) -> dict:
    """One backbone's scores, paired cell by cell with the random backbone (and the CNN)."""
    kept_cnn = [(s, c) for s, c in zip(ssl, cnn, strict=False) if c is not None]
    return {
        "taps": taps,
        "fraction": fraction,
        "ssl": ssl,
        "random": random,
        "diff": [s - r for s, r in zip(ssl, random, strict=True)],
        "cnn": [c for _, c in kept_cnn],
        "ssl_minus_cnn": [s - c for s, c in kept_cnn],
    }


def _line(row: dict) -> str:
    diffs, cnn_diffs = row["diff"], row["ssl_minus_cnn"]
    text = (
        f"ssl {_summary(row['ssl'])}  random {_summary(row['random'])}  ssl-random "
        f"{_summary(diffs)} ({sum(d > 0 for d in diffs)}/{len(diffs)} > 0)"
    )
    if row["cnn"]:
        text += (
            f"  cnn {_summary(row['cnn'])}  ssl-cnn {_summary(cnn_diffs)} "
            f"({sum(d > 0 for d in cnn_diffs)}/{len(cnn_diffs)} > 0)"
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, required=True)
    parser.add_argument(
        "--init",
        type=Path,
        nargs="+",
        required=True,
        help="pretrained checkpoint(s) of one architecture, e.g. several pretraining seeds: "
        "each is paired with the same random backbone, whose cells are trained once",
    )
    parser.add_argument("--out", type=Path, default=Path("results/feature-study"))
    parser.add_argument("--taps", nargs="+", default=["100:middle", "10:down.1"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[1.0, 0.5, 0.1])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument(
        "--noise-draws",
        type=int,
        default=1,
        help="average each case's probe features over this many noise draws (model key "
        "features.noise_draws; default 1)",
    )
    parser.add_argument(
        "--cnn-steps",
        type=int,
        default=0,
        help="also train the supervised multi-view 3D CNN baseline (reproduce/cnn_baseline.py) "
        "this many steps on each cell's label subset (default 0: not trained)",
    )
    parser.add_argument(
        "--heads",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="classification head settings (model.heads keys), e.g. pool_grid=2 view_dim=64",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="fine-tuning settings (configs/train/finetune.yaml keys), e.g. lr=1e-3",
    )
    args = parser.parse_args()

    from core.config import FinetuneConfig, load_config
    from core.data.cache import load_site_tensors
    from core.data.manifest import load_site
    from core.models.loading import model_from_checkpoint
    from core.models.presets import CONFIGS_DIR, preprocess_for

    site = load_site(args.site)
    probe, _ = model_from_checkpoint(args.init[0], joint=site.joint.value)
    cases = load_site_tensors(site, preprocess=preprocess_for(probe.config), progress=True)
    # classification only: masks dropped, held-out cases never read
    training = [replace(c, mask=None) for c in cases if not c.heldout and c.labels is not None]
    train_cfg = load_config(
        FinetuneConfig, path=CONFIGS_DIR / "train" / "finetune.yaml", overrides=args.overrides
    )
    folds = _folds(training, k=args.folds)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, started = [], time.perf_counter()
    cnn_scores: dict[tuple, float | None] = {}  # (fraction, fold, seed): taps do not matter
    for taps_text in args.taps:
        models, sources = _models(
            args.init,
            joint=site.joint.value,
            taps=_parse_taps(taps_text),
            noise_draws=args.noise_draws,
            heads=args.heads,
        )
        for fraction in args.fractions:
            scores: dict[str, list[float]] = {name: [] for name in models}
            cells: list[tuple[int, int]] = []  # (fold, seed) of each kept pair
            for k, val in enumerate(folds):
                train = [c for j, f in enumerate(folds) if j != k for c in f]
                for seed in range(args.seeds):
                    pair = {
                        name: _cell(
                            model,
                            train=train,
                            val=val,
                            fraction=fraction,
                            seed=seed,
                            feature_root=args.out / "features",
                            train_cfg=train_cfg,
                        )
                        for name, model in models.items()
                    }
                    if None in pair.values():
                        continue
                    for name, value in pair.items():
                        scores[name].append(value)
                    cells.append((k, seed))
                    if args.cnn_steps > 0 and (fraction, k, seed) not in cnn_scores:
                        cnn_scores[(fraction, k, seed)] = _cnn_cell(
                            train=train,
                            val=val,
                            fraction=fraction,
                            seed=seed,
                            joint=site.joint,
                            steps=args.cnn_steps,
                        )
            cnn = [cnn_scores.get((fraction, k, seed)) for k, seed in cells]
            for name, (init, step) in sources.items():
                row = _row(
                    ssl=scores[name],
                    random=scores["random"],
                    cnn=cnn if args.cnn_steps > 0 else [],
                    taps=taps_text,
                    fraction=fraction,
                )
                row.update(backbone=str(init), pretrain_step=step)
                rows.append(row)
                print(
                    f"{taps_text:28s} {fraction:>4.0%}  {name:6s} {_line(row)}  "
                    f"[{time.perf_counter() - started:.0f} s]",
                    flush=True,
                )
    payload = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "n_training_cases": len(training),
        "rows": rows,
    }
    (args.out / "feature_study.json").write_text(json.dumps(payload, indent=1))
    lines = [
        f"{len(training)} training cases, {args.folds} validation folds x {args.seeds} seeds "
        "(held-out split not used); macro AUC on the validation fold.",
        "",
        "| taps | backbone | labels | SSL probe | random probe | SSL - random | > 0 | CNN "
        "| SSL - CNN | > 0 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['taps']} | {Path(r['backbone']).parent.name} | {r['fraction']:.0%} "
            f"| {_summary(r['ssl'])} | {_summary(r['random'])} "
            f"| {_summary(r['diff'])} | {sum(d > 0 for d in r['diff'])}/{len(r['diff'])} "
            f"| {_summary(r['cnn'])} | {_summary(r['ssl_minus_cnn'])} "
            f"| {sum(d > 0 for d in r['ssl_minus_cnn'])}/{len(r['ssl_minus_cnn'])} |"
        )
    (args.out / "feature_study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
