"""The cells of one seed: which models are trained, from what, on which data.

Shared artifacts (one per seed, reused honestly across rows):
- `fed`: ONE knee-only federation (all knee sites): federated SSL pretraining, then federated
  linear fine-tuning and per-site evaluation. Its pretraining checkpoint is the backbone of
  rows 1 and 3 (it has seen no ankle or shoulder image, so row 3 is true transfer); its final
  model is row 2's "federated", row 4's epsilon = inf and row 5's federated model.
- `random-init`: the same architecture at step 0 (seeded): rows 1 and 3's random-probe
  baselines and row 3's scratch baseline.
- `fed-eps<e>`: the same federation with client DP in both phases (row 4).
- `pretrain-local-<site>` / `pretrain-central`: row 2's baselines, with the federation's
  compute: a local-only site trains pretrain_rounds x pretrain_steps steps (what it computes
  inside the federation) and fine-tunes finetune_rounds x finetune_epochs epochs; the
  centralized model pools every knee site's training cases (held-out splits stay held out)
  and trains n_sites x as many steps (the federation's total), with the same epochs.
Rows 1 and 5 fine-tune and evaluate on the knee pool: every knee site's training cases
(label fractions are stratified subsets of them) and every knee site's held-out split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reproduce import federations, local, specs
from reproduce.baseline_cells import detection_baseline_cells, segmentation_baseline_cells
from reproduce.cells import Cell, CellCache
from reproduce.config import KNEE, FederationSpec, ReproduceConfig
from reproduce.privacy import client_dp as dp_settings
from reproduce.sites import SiteCases, counts, pooled_ids


@dataclass
class Context:
    config: ReproduceConfig
    work: Path
    cache: CellCache
    sites: SiteCases

    def folder(self, seed: int, name: str) -> Path:
        return self.work / "runs" / f"seed-{seed}" / name

    def knee_sites(self) -> list[str]:
        return self.config.sites_of(KNEE)

    def knee_pool(self) -> list:
        return self.sites.pooled(self.knee_sites())

    def knee_pool_sites(self) -> dict[str, set[str]]:
        """The held-out case ids of each knee site within `knee_pool()`."""
        return pooled_ids(self.knee_pool(), self.knee_sites())


def site_cells(ctx: Context) -> list[Cell]:
    def load(name: str):
        return lambda: {
            "summary": f"{counts(ctx.sites.cases(name))}",
            "cases": counts(ctx.sites.cases(name)),
        }

    return [Cell(key=f"site.{name}", run=load(name)) for name in ctx.sites.folders]


def _federation(ctx: Context, seed: int, epsilon: float | None) -> Cell:
    name = "fed" if epsilon is None else f"fed-eps{epsilon:g}"

    def run() -> dict[str, Any]:
        client_dp = None
        if epsilon is not None:
            client_dp = dp_settings(
                epsilon,
                sites=[ctx.sites.cases(s) for s in ctx.knee_sites()],
                fed=ctx.config.federation,
                privacy=ctx.config.privacy,
            )
        spec = federations.experiment(
            name=f"reproduce-{name}-s{seed}",
            seed=seed,
            config=ctx.config,
            sites=[ctx.sites.folders[s] for s in ctx.knee_sites()],
            joints=[KNEE],
            client_dp=client_dp,
        )
        run_dir = federations.federate(
            spec=spec, folder=ctx.folder(seed, name), rounds=federations.planned_rounds(ctx.config)
        )
        result = federations.summary(config=ctx.config, run_dir=run_dir)
        if client_dp is not None:
            result.update(
                noise_multiplier=client_dp["noise_multiplier"],
                epsilon_target=epsilon,
                epsilon=max(result["epsilon_sites"].values()),
            )
        return result

    return Cell(
        key=f"s{seed}.{name}", run=run, seed=seed, needs=[f"site.{s}" for s in ctx.knee_sites()]
    )


def _pretraining(ctx: Context, seed: int, *, name: str, site_names: list[str], steps: int) -> Cell:
    fed = ctx.config.federation

    def run() -> dict[str, Any]:
        return local.pretrain(
            ctx.sites.pooled(site_names),
            model=ctx.config.model,
            run_dir=ctx.folder(seed, name),
            steps=steps,
            batch=fed.pretrain_batch,
            lr=fed.pretrain_lr,
            lr_schedule=fed.pretrain_lr_schedule,
            warmup_steps=fed.pretrain_warmup_steps,
            seed=seed,
            info={"reproduce": name, "sites": site_names},
        )

    return Cell(key=f"s{seed}.{name}", run=run, seed=seed, needs=[f"site.{s}" for s in site_names])


def _finetune_cell(
    ctx: Context,
    seed: int,
    *,
    suffix: str,
    row: str,
    setting: str,
    init_key: str,
    init_field: str,
    site_names: list[str],
    train: dict[str, Any],
    eval_sites: list[str] | None = None,
) -> Cell:
    """Fine-tune on `site_names`' training cases; evaluate on their held-out cases (pooled,
    and per site under `per_site` when there are several), or on each of `eval_sites`
    separately (then `metrics` is the mean over those sites)."""

    def run() -> dict[str, Any]:
        init = ctx.cache.need(f"s{seed}.{init_key}")[init_field]
        evaluations = {s: ctx.sites.cases(s) for s in eval_sites} if eval_sites else None
        cases = ctx.sites.pooled(site_names)
        groups = pooled_ids(cases, site_names) if len(site_names) > 1 and not eval_sites else None
        result = local.finetune_and_evaluate(
            cases,
            init=init,
            joint=ctx.sites.joint(site_names[0]),
            model=ctx.config.model,
            run_dir=ctx.folder(seed, f"tmp-{suffix}"),
            train={**train, "seed": seed},
            evaluations=evaluations,
            groups=groups,
        )
        if eval_sites:
            result["metrics"] = _site_mean(result["per_site"])
        return result

    return Cell(
        key=f"s{seed}.{suffix}",
        run=run,
        row=row,
        setting=setting,
        seed=seed,
        needs=[f"s{seed}.{init_key}"],
    )


def _site_mean(per_site: dict[str, dict[str, Any]]) -> dict[str, Any]:
    values = [m.get("macro_auc") for m in per_site.values()]
    defined = [v for v in values if v is not None]
    return {"macro_auc": sum(defined) / len(defined) if defined else None}


def _method_train(ctx: Context, method: str, fraction: float) -> dict[str, Any]:
    ft = ctx.config.finetune
    _, _, mode = specs.METHODS[method]
    epochs = {"linear": ft.linear_epochs, "partial": ft.partial_epochs, "full": ft.full_epochs}
    train = {
        "mode": mode,
        "epochs": epochs[mode],
        "batch_size": ft.batch_size,
        "lr": ft.lr,
        "min_steps": ft.min_steps,
        "label_fraction": fraction,
    }
    if method == "scratch-full":
        train["backbone_lr_scale"] = ft.scratch_backbone_lr_scale
    return train


def _backbone(method: str) -> tuple[str, str]:
    """(init cell suffix, field) of a method's starting checkpoint."""
    return (
        ("fed", "pretrained")
        if specs.METHODS[method][1] == "pretrained"
        else ("random-init", "checkpoint")
    )


def label_efficiency_cells(ctx: Context, seed: int) -> list[Cell]:
    cells = []
    for method in specs.LABEL_EFFICIENCY_METHODS:
        label = specs.METHODS[method][0]
        init_key, init_field = _backbone(method)
        for fraction in ctx.config.label_fractions:
            cells.append(
                _finetune_cell(
                    ctx,
                    seed,
                    suffix=specs.r1(method, fraction),
                    row="1",
                    setting=f"{label} @ {specs.pct(fraction)} labels",
                    init_key=init_key,
                    init_field=init_field,
                    site_names=ctx.knee_sites(),
                    train=_method_train(ctx, method, fraction),
                )
            )
    return cells


def transfer_cells(ctx: Context, seed: int) -> list[Cell]:
    cells = []
    for site in specs.transfer_sites(ctx.config):
        for method, label in specs.TRANSFER_METHODS.items():
            init_key, init_field = _backbone(method)
            cell = _finetune_cell(
                ctx,
                seed,
                suffix=specs.r3(site, method),
                row="3",
                setting=f"{site}: {label}",
                init_key=init_key,
                init_field=init_field,
                site_names=[site],
                train=_method_train(ctx, method, 1.0),
            )
            cell.needs.append(f"site.{site}")
            cells.append(cell)
    return cells


def federation_compute(fed: FederationSpec) -> dict[str, Any]:
    """Row 2's local and centralized fine-tuning: the federation's epochs and its per-round
    step floor, over all its rounds."""
    return {
        "mode": "linear",
        "epochs": fed.finetune_rounds * fed.finetune_epochs,
        "batch_size": fed.finetune_batch,
        "lr": fed.finetune_lr,
        "min_steps": fed.finetune_rounds * fed.finetune_min_steps,
    }


def federation_value_cells(ctx: Context, seed: int) -> list[Cell]:
    fed, knee = ctx.config.federation, ctx.knee_sites()
    local_steps = fed.pretrain_rounds * fed.pretrain_steps
    train = federation_compute(fed)
    cells = []
    for site in knee:
        cells.append(
            _pretraining(
                ctx, seed, name=f"pretrain-local-{site}", site_names=[site], steps=local_steps
            )
        )
    cells.append(
        _pretraining(
            ctx, seed, name="pretrain-central", site_names=knee, steps=local_steps * len(knee)
        )
    )
    models = specs.r2_models(ctx.config)
    for site in knee:
        cells.append(
            _finetune_cell(
                ctx,
                seed,
                suffix=specs.r2(f"local-{site}"),
                row="2",
                setting=models[f"local-{site}"],
                init_key=f"pretrain-local-{site}",
                init_field="checkpoint",
                site_names=[site],
                train=train,
                eval_sites=knee,
            )
        )
    cells.append(
        _finetune_cell(
            ctx,
            seed,
            suffix=specs.r2("centralized"),
            row="2",
            setting=models["centralized"],
            init_key="pretrain-central",
            init_field="checkpoint",
            site_names=knee,
            train=train,
            eval_sites=knee,
        )
    )
    cells.append(
        _evaluation_cell(
            ctx,
            seed,
            suffix=specs.r2("federated"),
            row="2",
            setting=models["federated"],
            fed_key="fed",
            per_site=True,
        )
    )
    return cells


def _evaluation_cell(
    ctx: Context,
    seed: int,
    *,
    suffix: str,
    row: str,
    setting: str,
    fed_key: str,
    per_site: bool = False,
) -> Cell:
    """Evaluate a federation's final global model (no training)."""

    def run() -> dict[str, Any]:
        fed = ctx.cache.need(f"s{seed}.{fed_key}")
        result: dict[str, Any] = {"init": fed["final"]}
        if per_site:
            result["per_site"] = {
                s: local.evaluate_checkpoint(fed["final"], joint=KNEE, cases=ctx.sites.cases(s))
                for s in ctx.knee_sites()
            }
            result["metrics"] = _site_mean(result["per_site"])
        else:
            result["metrics"] = local.evaluate_checkpoint(
                fed["final"], joint=KNEE, cases=ctx.knee_pool()
            )
        for name in ("epsilon", "epsilon_target", "noise_multiplier", "epsilon_sites"):
            if name in fed:
                result[name] = fed[name]
        return result

    return Cell(
        key=f"s{seed}.{suffix}",
        run=run,
        row=row,
        setting=setting,
        seed=seed,
        needs=[f"s{seed}.{fed_key}"],
    )


def privacy_cells(ctx: Context, seed: int) -> list[Cell]:
    cells = [
        _evaluation_cell(
            ctx,
            seed,
            suffix=specs.r4(None),
            row="4",
            setting="epsilon = inf (no client DP)",
            fed_key="fed",
        )
    ]
    for eps in ctx.config.privacy.epsilons:
        cells.append(_federation(ctx, seed, eps))
        cells.append(
            _evaluation_cell(
                ctx,
                seed,
                suffix=specs.r4(eps),
                row="4",
                setting=f"epsilon target {eps:g}",
                fed_key=f"fed-eps{eps:g}",
            )
        )
    return cells


def seed_cells(ctx: Context, seed: int) -> list[Cell]:
    """Every cell of one seed, each after the cells it needs."""
    random_init = _pretraining(ctx, seed, name="random-init", site_names=ctx.knee_sites(), steps=0)
    return [
        _federation(ctx, seed, None),
        random_init,
        *label_efficiency_cells(ctx, seed),
        *transfer_cells(ctx, seed),
        *federation_value_cells(ctx, seed),
        *privacy_cells(ctx, seed),
        *segmentation_baseline_cells(ctx, seed),
        *detection_baseline_cells(ctx, seed),
    ]
