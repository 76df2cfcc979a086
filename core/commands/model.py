"""`orthofed pretrain|finetune|evaluate`: train and evaluate a site's model locally.

Extra `key=value` arguments override the run config, e.g. `train.lr=1e-3` or
`model.backbone.channels=[8,16]` (see configs/model/*.yaml and configs/train/*.yaml).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from core.atomic import write_json_atomic
from core.commands.common import user_errors
from core.model_card import (
    card_text,
    model_card,
    record_evaluation,
    record_thresholds,
    threshold_source,
    thresholds_entry,
)
from core.paths import check_out_folder
from core.tracking import Tracking, require_tracking

# Modules that pull torch/MONAI are imported inside the commands: `orthofed --help` must not.

SITE_HELP = "The site folder (or its site.yaml)."
OVERRIDES_HELP = "Config overrides as key=value (e.g. train.lr=1e-3, train.batch_size=2)."
FINETUNE_OVERRIDES_HELP = (
    "train.* overrides as key=value (e.g. train.lr=1e-3); the model comes from --init."
)
OVERLAY_CASES = 3  # held-out cases shown with segmentation overlays in report.html
TRACKING_HELP = "tensorboard: also write TensorBoard event files to OUT/tensorboard/."


def _site_cases(site_path: Path, *, model_config):
    """Open the site and load its preprocessed cases at the model's input grid."""
    from core.data.cache import load_site_tensors
    from core.data.manifest import load_site
    from core.models.presets import preprocess_for

    site = load_site(site_path)
    preprocess = preprocess_for(model_config)
    return site, load_site_tensors(site, preprocess=preprocess, progress=True), preprocess.key()


def _feature_root(site, *, model_config) -> Path:
    """Where frozen-backbone features of this site are cached (beside its view cache)."""
    from core.data.cache import feature_root
    from core.models.presets import preprocess_for

    return feature_root(site, preprocess_for(model_config))


@user_errors
def pretrain(
    site: Path = typer.Option(..., "--site", help=SITE_HELP),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoint, state, log.jsonl."),
    preset: str = typer.Option(
        "tiny", "--preset", help="Model preset: tiny, paper or a .yaml path."
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="Total optimizer steps per view (0 = the initialisation)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run saved in --out."),
    tracking: Tracking = typer.Option(Tracking.none, "--tracking", help=TRACKING_HELP),
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
) -> None:
    """Self-supervised diffusion pretraining of the three view backbones on one site."""
    from core.config import PretrainRunConfig
    from core.device import resolve_device
    from core.models.presets import load_run_config
    from core.train.loops import check_pretrain_out, run_pretraining
    from core.train.pretrain import check_pretrain_config

    check_pretrain_out(check_out_folder(out), resume=resume)
    require_tracking(tracking)
    extra = list(overrides or []) + ([f"train.steps={steps}"] if steps is not None else [])
    config = load_run_config(PretrainRunConfig, preset=preset, train="pretrain", overrides=extra)
    check_pretrain_config(config.train)  # e.g. --steps -1: refused before data is read
    resolve_device(config.train.device)  # e.g. device=cuda on a machine without a GPU
    opened, cases, key = _site_cases(site, model_config=config.model)
    result = run_pretraining(
        cases,
        config=config,
        run_dir=out,
        preprocess_key=key,
        resume=resume,
        progress=True,
        info={"joint": opened.joint.value, "site_id": opened.site_id},
        tracking=tracking,
    )
    losses = ", ".join(f"{v} {x:.4f}" for v, x in result.losses.items())
    typer.echo(f"pretrained to step {result.step} ({losses}): {result.checkpoint}")


@user_errors
def finetune(
    site: Path = typer.Option(..., "--site", help=SITE_HELP),
    init: Path = typer.Option(..., "--init", help="Checkpoint (.safetensors) to start from."),
    out: Path = typer.Option(..., "--out", help="Run folder for the fine-tuned checkpoint."),
    mode: str = typer.Option(
        "linear", "--mode", help="linear (frozen backbones), partial or full."
    ),
    label_fraction: float = typer.Option(
        1.0, "--label-fraction", help="Fraction of labeled cases used."
    ),
    epochs: int | None = typer.Option(
        None,
        "--epochs",
        help="Training epochs, exactly (without it: up to 100 epochs with early stopping, "
        "raised on small label sets to reach train.min_steps optimizer steps).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace the checkpoint a previous fine-tuning left in --out."
    ),
    tracking: Tracking = typer.Option(Tracking.none, "--tracking", help=TRACKING_HELP),
    overrides: list[str] | None = typer.Argument(None, help=FINETUNE_OVERRIDES_HELP),
) -> None:
    """Fine-tune the task heads (and optionally backbones) of the site's joint."""
    from core.checkpoint import load_checkpoint
    from core.config import to_dict
    from core.models.loading import checked_model_config
    from core.train.finetune import check_finetune_config
    from core.train.loops import check_finetune_out, run_finetuning

    check_finetune_out(check_out_folder(out), force=force)
    _refuse_model_overrides(overrides or [])
    require_tracking(tracking)
    source = load_checkpoint(init)
    extra = [f"train.mode={mode}", f"train.label_fraction={label_fraction}"]
    # an explicit --epochs is the budget: no step floor unless train.min_steps=N says so
    extra += [f"train.epochs={epochs}", "train.min_steps=0"] if epochs is not None else []
    config = _finetune_config(
        to_dict(checked_model_config(source, source=init)), extra + list(overrides or [])
    )
    check_finetune_config(config.train)  # e.g. train.lr=-1: refused before data is read
    opened, cases, key = _site_cases(site, model_config=config.model)
    result = run_finetuning(
        cases,
        init=init,
        config=config,
        joint=opened.joint.value,
        run_dir=out,
        preprocess_key=key,
        progress=True,
        info={"site_id": opened.site_id},
        feature_root=_feature_root(opened, model_config=config.model),
        tracking=tracking,
    )
    best = ", ".join(f"{head} epoch {epoch}" for head, epoch in result.best_epochs.items())
    typer.echo(
        f"fine-tuned ({mode}) on {result.num_examples} cases, {len(result.epoch_losses)} epochs, "
        f"final loss {result.epoch_losses[-1]:.4f}"
        + (f", kept the best validation epoch ({best})" if best else "")
        + f": {result.checkpoint}"
    )


def _refuse_model_overrides(overrides: list[str]) -> None:
    """The architecture comes from the --init checkpoint: a model.* override would be
    silently ignored (run_finetuning uses the checkpoint's model config), so refuse it."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key == "model" or key.startswith("model."):
            raise ValueError(
                f"{item}: finetune takes the model from the --init checkpoint, so model.* "
                "overrides cannot apply; pass train.* overrides only (set the model at pretrain)"
            )


def _finetune_config(model: dict, overrides: list[str]):
    from omegaconf import OmegaConf

    from core.config import FinetuneRunConfig, load_config
    from core.models.presets import CONFIGS_DIR

    train = OmegaConf.to_container(OmegaConf.load(CONFIGS_DIR / "train" / "finetune.yaml"))
    return load_config(
        FinetuneRunConfig, data={"model": model, "train": train}, overrides=overrides
    )


@user_errors
def evaluate(
    site: Path = typer.Option(..., "--site", help=SITE_HELP),
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="Fine-tuned checkpoint (.safetensors)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Report folder: metrics.json and report.html are written there."
    ),
) -> None:
    """Evaluate a checkpoint on the site's held-out split; writes OUT/metrics.json and
    OUT/report.html (thresholds are chosen on the site's labeled training cases)."""
    from core.data.manifest import load_site
    from core.models.loading import model_from_checkpoint
    from core.models.predict import evaluate_cases
    from core.reporting.evaluation_report import write_evaluation_report

    check_out_folder(out)
    joint = load_site(site).joint
    model, _ = model_from_checkpoint(checkpoint, joint=joint, require_heads=True)
    opened, cases, _ = _site_cases(site, model_config=model.config)
    evaluation = evaluate_cases(model, cases, keep_masks=OVERLAY_CASES)
    report = evaluation.report
    write_json_atomic(Path(out) / "metrics.json", report)
    page = write_evaluation_report(
        out, evaluation=evaluation, cases=cases, checkpoint=checkpoint, site_id=opened.site_id
    )
    typer.echo(f"{report['joint']}: {_counts(report)}, {_summary(report)}: {page}")
    _record_in_card(checkpoint, report=report, site_id=opened.site_id)


def _record_in_card(checkpoint: Path, *, report: dict, site_id: str) -> None:
    """Keep the thresholds this evaluation chose (training cases only) and its headline
    metrics in the checkpoint's manifest, for `orthofed predict` and `orthofed info`."""
    from core.checkpoint import manifest_path

    manifest = manifest_path(checkpoint)
    entry = thresholds_entry(
        thresholds=report["threshold"],
        methods=report["threshold_source"],
        source=threshold_source(
            n_cases=report["n_threshold_cases"], site_id=site_id, command="orthofed evaluate"
        ),
    )
    record_thresholds(manifest, joint=report["joint"], entry=entry)
    record_evaluation(manifest, joint=report["joint"], site_id=site_id, report=report)
    typer.echo(f"thresholds and metrics recorded in {manifest} (see `orthofed info`)")


@user_errors
def info(
    checkpoint: Path = typer.Argument(..., help="A checkpoint's .safetensors file."),
    as_json: bool = typer.Option(False, "--json", help="Print the card as JSON."),
) -> None:
    """The model card of a checkpoint: preset and preprocessing, joints and labels, how it
    was trained (local or federated: sites, examples per group, rounds, steps), epsilon per
    site if DP was on, recorded held-out metrics and decision thresholds."""
    from core.models.loading import checked_manifest

    card = model_card(checked_manifest(checkpoint))  # never vouches for damaged weights
    typer.echo(json.dumps(card, indent=2) if as_json else card_text(card))


def _counts(report: dict) -> str:
    text = f"{report['n_cases']} held-out cases"
    if report["n_unlabeled_skipped"]:
        text += f" ({report['n_unlabeled_skipped']} unlabeled, skipped)"
    return text


def _summary(report: dict) -> str:
    ci = report["macro_auc_ci"]
    text = f"macro AUC {_fmt(report['macro_auc'])}"
    if ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    if "mean_dice" in report:
        text += f", mean Dice {_fmt(report['mean_dice'])}"
    return text


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)
    app.command("finetune")(finetune)
    app.command("evaluate")(evaluate)
    app.command("info")(info)
