"""Does self-supervised diffusion pretraining help? Linear probe: pretrained vs random backbone.

On one generated knee site: pretrain the three view backbones of the `tiny` preset for
`--steps` steps (logging the diffusion loss of every view), then train the same linear probe
(frozen backbone, `linear` fine-tuning) on the pretrained backbone and on the randomly
initialised one it started from (step 0, same seed), over several probe seeds, and evaluate
both on the site's held-out split. Prints the loss curve per view and macro AUC mean +- sd;
writes OUT/ssl_probe.json. Everything is measured in this one run.

    python bench/ssl_probe.py --cases 40 --steps 200 --out results/ssl-probe \
        model.input_size=32 "model.backbone.channels=[8,16,32]" model.backbone.norm_num_groups=4 \
        model.backbone.num_head_channels=8 model.heads.view_dim=64 model.heads.seg_channels=8

(the demo's reduced tiny model: ~3 s per step of three views on 2 cores; the full tiny
preset takes ~15 s per step here, too slow for "a few minutes").
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

# Modules that pull torch/MONAI are imported inside the functions: `--help` stays fast.


def _log_curve(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    curve: dict[str, list[tuple[int, float]]] = {}
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        curve.setdefault(record["view"], []).append((record["step"], record["loss"]))
    return curve


def _window_mean(points: list[tuple[int, float]], *, first: bool, n: int) -> float:
    losses = [loss for _, loss in points]
    part = losses[:n] if first else losses[-n:]
    return float(np.mean(part))


def _site(out: Path, *, cases: int, seed: int, heldout: float) -> Path:
    from core.data.manifest import load_site, write_manifest
    from core.data.phantom.site import generate_site

    site = out / "site"
    if not (site / "site.yaml").exists():
        generate_site(out_dir=site, joint="knee", n_cases=cases, seed=seed, progress=True)
    manifest = load_site(site).manifest
    manifest.heldout_fraction = heldout
    write_manifest(manifest, site / "site.yaml")
    return site


def _pretrain(site: Path, *, out: Path, steps: int, batch: int, overrides: list[str]):
    from core.config import PretrainRunConfig
    from core.data.cache import load_site_tensors
    from core.data.manifest import load_site
    from core.models.presets import load_run_config, preprocess_for
    from core.train.loops import run_pretraining

    runs = {}
    for name, n in (("random", 0), ("pretrained", steps)):
        config = load_run_config(
            PretrainRunConfig,
            preset="tiny",
            train="pretrain",
            overrides=[
                *overrides,
                f"train.steps={n}",
                f"train.batch_size={batch}",
                "train.log_every=5",
                f"train.checkpoint_every={max(min(n, 50), 1)}",
            ],
        )
        loaded = load_site(site)
        cases = load_site_tensors(loaded, preprocess=preprocess_for(config.model), progress=True)
        started = time.perf_counter()
        run_pretraining(
            cases,
            config=config,
            run_dir=out / name,
            resume=True,
            progress=True,
            preprocess_key=preprocess_for(config.model).key(),
        )
        runs[name] = {"dir": out / name, "seconds": time.perf_counter() - started, "cases": cases}
    return runs


def _probe(cases, *, init: Path, out: Path, seed: int, epochs: int) -> dict:
    from core.config import FinetuneRunConfig
    from core.models.loading import model_from_checkpoint
    from core.models.predict import evaluate
    from core.models.presets import load_run_config
    from core.train.loops import run_finetuning

    config = load_run_config(
        FinetuneRunConfig,
        preset="tiny",
        train="finetune",
        overrides=["train.mode=linear", f"train.epochs={epochs}", f"train.seed={seed}"],
    )
    run_finetuning(
        cases, init=init, config=config, joint="knee", run_dir=out, preprocess_key="bench"
    )
    model, _ = model_from_checkpoint(
        out / "checkpoint.safetensors", joint="knee", require_heads=True
    )
    return evaluate(model, cases)


def _parse_taps(text: str) -> list[dict]:
    """ "10:middle,100:up.0" -> [{"timestep": 10, "block": "middle"}, ...]."""
    taps = []
    for item in text.split(","):
        timestep, _, block = item.partition(":")
        taps.append({"timestep": int(timestep), "block": block or "middle"})
    return taps


def _with_taps(checkpoint: Path, *, taps: list[dict], out: Path) -> Path:
    """A copy of `checkpoint` whose model reads features from `taps` (same weights)."""
    manifest = json.loads(checkpoint.with_suffix(".json").read_text())
    manifest["config"]["model"]["features"]["taps"] = taps
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, out / "checkpoint.safetensors")
    (out / "checkpoint.json").write_text(json.dumps(manifest))
    return out / "checkpoint.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/ssl-probe"))
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--site-seed", type=int, default=7)
    parser.add_argument("--heldout", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--probe-epochs", type=int, default=30)
    parser.add_argument("--probe-seeds", type=int, default=3)
    parser.add_argument(
        "--taps", default="", help='probe these feature taps instead, e.g. "10:middle,100:up.0"'
    )
    parser.add_argument(
        "overrides", nargs="*", help="model overrides, e.g. model.features.taps=..."
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    site = _site(args.out, cases=args.cases, seed=args.site_seed, heldout=args.heldout)
    runs = _pretrain(
        site, out=args.out, steps=args.steps, batch=args.batch, overrides=args.overrides
    )
    curve = _log_curve(runs["pretrained"]["dir"])
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "loss": {}, "probe": {}}
    seconds = runs["pretrained"]["seconds"]
    how = f"in {seconds:.0f} s" if seconds > 5 else "(reused from an earlier run in --out)"
    print(f"\npretraining: {args.steps} steps x 3 views {how}")
    for view, points in curve.items():
        early, late = _window_mean(points, first=True, n=3), _window_mean(points, first=False, n=3)
        result["loss"][view] = {"first": early, "last": late, "curve": points}
        print(f"  {view:9s} loss {early:.4f} (first 3 logs) -> {late:.4f} (last 3 logs)")
    cases = runs["pretrained"]["cases"]
    label = args.taps.replace(":", "-").replace(",", "+")
    for name in ("random", "pretrained"):
        init = runs[name]["dir"] / "checkpoint.safetensors"
        if args.taps:
            init = _with_taps(init, taps=_parse_taps(args.taps), out=args.out / f"{name}-{label}")
        scores = []
        for seed in range(args.probe_seeds):
            report = _probe(
                cases,
                init=init,
                out=args.out / f"probe-{name}-{label or 'default'}-{seed}",
                seed=seed,
                epochs=args.probe_epochs,
            )
            scores.append(report["macro_auc"])
        result["probe"][name] = {"macro_auc": scores, "n_heldout": report["n_cases"]}
        print(
            f"linear probe on {name:10s} backbone: macro AUC {np.mean(scores):.3f} +- "
            f"{np.std(scores):.3f} over {len(scores)} probe seeds "
            f"({report['n_cases']} held-out cases)"
        )
    name = f"ssl_probe-{label}.json" if label else "ssl_probe.json"
    (args.out / name).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
