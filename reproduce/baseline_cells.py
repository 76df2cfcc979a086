"""The supervised baselines' cells: row 5's BasicUNet and row 1's multi-view 3D CNN, each
trained from scratch at every label fraction on the subsets the heads draw, scored on the
knee pool's held-out cases (what `plan.seed_cells` adds after the SSL cells)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.views import Joint
from reproduce import baselines, cnn_baseline, specs
from reproduce.cells import Cell

if TYPE_CHECKING:
    from reproduce.plan import Context


def segmentation_baseline_cells(ctx: Context, seed: int) -> list[Cell]:
    """Row 5's supervised BasicUNet at every label fraction of the knee pool's masks."""
    spec = ctx.config.baselines
    budget = baselines.UNetBudget(
        steps=spec.unet_steps, batch_size=spec.unet_batch, lr=spec.unet_lr
    )

    def cell(fraction: float) -> Cell:
        def run() -> dict[str, Any]:
            cases = ctx.knee_pool()
            chosen = baselines.mask_subset(cases, fraction=fraction, seed=seed)
            net = baselines.train_unet(chosen, budget=budget, seed=seed)
            metrics = baselines.unet_dice(net, [c for c in cases if c.heldout])
            return {"metrics": metrics, "n_train": len(chosen), "budget": vars(spec)}

        return Cell(
            key=f"s{seed}.{specs.r5_unet(fraction)}",
            run=run,
            row="5",
            setting=specs.mask_fraction_models(ctx.config)[specs.r5_unet(fraction)],
            seed=seed,
            needs=[f"site.{s}" for s in ctx.knee_sites()],
        )

    return [cell(f) for f in ctx.config.label_fractions]


def detection_baseline_cells(ctx: Context, seed: int) -> list[Cell]:
    """Row 1's supervised multi-view 3D CNN at every label fraction of the knee pool."""
    spec = ctx.config.baselines
    budget = cnn_baseline.CNNBudget(steps=spec.cnn_steps, batch_size=spec.cnn_batch, lr=spec.cnn_lr)

    def cell(fraction: float) -> Cell:
        def run() -> dict[str, Any]:
            cases = ctx.knee_pool()
            chosen = cnn_baseline.label_subset(cases, fraction=fraction, seed=seed)
            net = cnn_baseline.train_cnn(chosen, joint=Joint.KNEE, budget=budget, seed=seed)
            heldout = [c for c in cases if c.heldout]

            def auc(scored: list) -> dict[str, float | None]:
                return {"macro_auc": cnn_baseline.cnn_macro_auc(net, scored, joint=Joint.KNEE)}

            labeled = [c for c in heldout if c.labels is not None]
            per_site = {  # a site without labeled held-out cases is left out, not an error
                site: auc(scored)
                for site, ids in ctx.knee_pool_sites().items()
                if (scored := [c for c in labeled if c.case_id in ids])
            }
            return {
                "metrics": auc(heldout),
                "per_site": per_site,
                "n_train": len(chosen),
                "budget": vars(spec),
            }

        return Cell(
            key=f"s{seed}.{specs.r1_cnn(fraction)}",
            run=run,
            row="1",
            setting=f"{specs.CNN_LABEL} @ {specs.pct(fraction)} labels",
            seed=seed,
            needs=[f"site.{s}" for s in ctx.knee_sites()],
        )

    return [cell(f) for f in ctx.config.label_fractions]
