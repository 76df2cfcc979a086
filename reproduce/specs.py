"""What the tables show: the settings of each row (cell key suffixes), the metric lines, the
paired contrasts, and the paper's claim per row.

A cell's key is `s<seed>.<suffix>`; the suffix names the setting, identical across seeds,
so a table line is one suffix + one metric path over every seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.views import KNEE_STRUCTURES
from reproduce.config import KNEE, ReproduceConfig

ROWS = {
    "1": "Label efficiency (knee)",
    "2": "Value of federation (knee)",
    "3": "Transfer from knee pretraining",
    "4": "Privacy cost (client DP, knee)",
    "5": "Knee segmentation",
}

# The paper's claims (reference/orthodiffusion.md); rows 2 and 4 are this project's
# federated extension, on which the centralized paper says nothing.
CLAIMS = {
    "1": "Performance kept with as little as 10% of the labels (SSL features; linear probe "
    "and fine-tuning)",
    "2": "No claim (the paper is centralized). Federated MRNet studies report ~83% accuracy "
    "across simulated sites",
    "3": "Knee-pretrained backbones transfer to ankle and shoulder by fine-tuning",
    "4": "No claim (federated extension)",
    "5": "High accuracy on knee segmentation (Dice per structure)",
}

# Fine-tuning methods of rows 1 and 3: suffix part -> (label, initial backbone, mode).
METHODS = {
    "fed-linear": ("federated SSL backbone + linear probe", "pretrained", "linear"),
    "fed-partial": ("federated SSL backbone + partial fine-tune", "pretrained", "partial"),
    "scratch-full": ("scratch: random init, whole model trained (full)", "random", "full"),
    "random-linear": ("random frozen backbone + linear probe", "random", "linear"),
}
# Row 1 leaves out `scratch-full` (since 2026-12-07): its from-scratch baselines are the
# supervised CNN (detection) and, in row 5, the BasicUNet (segmentation), which beat it in the
# 2026-12-06 run (macro AUC 0.645 vs 0.602 at 100% labels, mean Dice 0.768 vs 0.484), while
# its three knee-pool cells took ~15 of a seed's ~67 min (full training through three UNets at
# 400+ steps). Row 3 keeps it: "transfer beats scratch" has no other baseline there.
LABEL_EFFICIENCY_METHODS = ("fed-linear", "fed-partial", "random-linear")
CNN_LABEL = "supervised multi-view 3D CNN from scratch (no diffusion backbone)"
TRANSFER_METHODS = {
    "fed-linear": "knee federated SSL backbone + linear probe",
    "fed-partial": "knee federated SSL backbone + partial fine-tune",
    "scratch-full": "scratch: random init, full",
    "random-linear": "random frozen backbone + linear probe",
}


@dataclass(frozen=True)
class Line:
    row: str
    setting: str
    suffix: str
    metric: str  # dotted path into the cell result, e.g. "metrics.macro_auc"
    name: str = "macro AUC"  # the metric as the table shows it


@dataclass(frozen=True)
class Contrast:
    row: str
    label: str
    better: str  # suffix expected to be higher
    worse: str
    metric: str = "metrics.macro_auc"


def pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def r1(method: str, fraction: float) -> str:
    return f"r1.{method}.f{fraction:g}"


def r2(model: str) -> str:
    return f"r2.{model}"


def r3(site: str, method: str) -> str:
    return f"r3.{site}.{method}"


def r1_cnn(fraction: float) -> str:
    return f"r1.cnn.f{fraction:g}"


def r5_unet(fraction: float) -> str:
    return f"r5.unet.f{fraction:g}"


def r4(epsilon: float | None) -> str:
    return "r4.eps-inf" if epsilon is None else f"r4.eps{epsilon:g}"


def r2_models(config: ReproduceConfig) -> dict[str, str]:
    """Suffix part -> label of the row 2 models."""
    local = {f"local-{s}": f"local-only ({s})" for s in config.sites_of(KNEE)}
    return {**local, "federated": "federated", "centralized": "centralized (pooled data)"}


def transfer_sites(config: ReproduceConfig) -> list[str]:
    return [s.profile for s in config.phantom.sites if s.joint != KNEE]


def row1_sites(config: ReproduceConfig) -> list[str]:
    """The knee sites row 1 is also shown on one by one (its pool's held-out cases per site,
    since 2026-12-07; a pooled AUC can average a site where the labels can be learnt with one
    where they cannot, docs/feature-study.md §17). None when the pool is one site."""
    knee = config.sites_of(KNEE)
    return knee if len(knee) > 1 else []


def lines(config: ReproduceConfig) -> list[Line]:
    """Every line of the results table, in order."""
    out = []
    row1 = [
        (f"{METHODS[m][0]} @ {pct(f)} labels", r1(m, f))
        for m in LABEL_EFFICIENCY_METHODS
        for f in config.label_fractions
    ]
    row1 += [(f"{CNN_LABEL} @ {pct(f)} labels", r1_cnn(f)) for f in config.label_fractions]
    for setting, suffix in row1:
        out.append(Line("1", setting, suffix, "metrics.macro_auc"))
        out += [
            Line("1", f"{setting} -> {site}", suffix, f"per_site.{site}.macro_auc")
            for site in row1_sites(config)
        ]
    for model, label in r2_models(config).items():
        out += [
            Line("2", f"{label} -> {site}", r2(model), f"per_site.{site}.macro_auc")
            for site in config.sites_of(KNEE)
        ]
        out.append(Line("2", f"{label}, mean over sites", r2(model), "metrics.macro_auc"))
    out += [
        Line("3", f"{site}: {label}", r3(site, m), "metrics.macro_auc")
        for site in transfer_sites(config)
        for m, label in TRANSFER_METHODS.items()
    ]
    for eps in [None, *config.privacy.epsilons]:
        name = "epsilon = inf (no client DP)" if eps is None else f"epsilon target {eps:g}"
        out.append(Line("4", name, r4(eps), "metrics.macro_auc"))
        if eps is not None:
            out.append(Line("4", name, r4(eps), "epsilon", "epsilon spent (worst site)"))
    by_fraction = mask_fraction_models(config)  # mean Dice of these is listed there
    for suffix, label in segmentation_models(config).items():
        if suffix not in by_fraction:
            out.append(Line("5", label, suffix, "metrics.mean_dice", "mean Dice"))
        out += [Line("5", label, suffix, f"metrics.dice.{s}", f"Dice {s}") for s in KNEE_STRUCTURES]
    for suffix, label in mask_fraction_models(config).items():
        out.append(Line("5", label, suffix, "metrics.mean_dice", "mean Dice"))
    return out


def segmentation_models(config: ReproduceConfig) -> dict[str, str]:
    """Row 5 reuses the knee models of rows 4 and 1 and the supervised UNet (at the largest
    label fraction), with every structure's Dice."""
    top = max(config.label_fractions)
    return {
        r4(None): "federated (federated SSL + federated linear fine-tune)",
        r1("fed-partial", top): f"federated SSL + pooled-knee partial fine-tune ({pct(top)})",
        r5_unet(top): f"supervised BasicUNet from scratch ({pct(top)})",
    }


def mask_fraction_models(config: ReproduceConfig) -> dict[str, str]:
    """Row 5 at every label fraction of the masks: the heads of row 1's linear and partial
    cells (they train the segmentation head on the same subset) and the supervised UNet."""
    out = {}
    for f in config.label_fractions:
        out[r1("fed-linear", f)] = f"federated SSL + linear heads @ {pct(f)} masks"
        out[r1("fed-partial", f)] = f"federated SSL + partial fine-tune @ {pct(f)} masks"
        out[r1("random-linear", f)] = f"random frozen backbone + linear heads @ {pct(f)} masks"
        out[r5_unet(f)] = f"supervised BasicUNet from scratch @ {pct(f)} masks"
    return out


def contrasts(config: ReproduceConfig) -> list[Contrast]:
    """Paired (same seed) differences that test each claim."""
    out = []
    for f in config.label_fractions:
        out += [
            Contrast(
                "1",
                f"SSL probe - random probe @ {pct(f)}",
                r1("fed-linear", f),
                r1("random-linear", f),
            ),
            Contrast("1", f"SSL probe - supervised CNN @ {pct(f)}", r1("fed-linear", f), r1_cnn(f)),
            Contrast(
                "1", f"SSL partial - supervised CNN @ {pct(f)}", r1("fed-partial", f), r1_cnn(f)
            ),
        ]
        for site in row1_sites(config):
            metric = f"per_site.{site}.macro_auc"
            out += [
                Contrast(
                    "1",
                    f"SSL probe - random probe @ {pct(f)}, {site}",
                    r1("fed-linear", f),
                    r1("random-linear", f),
                    metric=metric,
                ),
                Contrast(
                    "1",
                    f"SSL probe - supervised CNN @ {pct(f)}, {site}",
                    r1("fed-linear", f),
                    r1_cnn(f),
                    metric=metric,
                ),
            ]
    for site in config.sites_of(KNEE):
        out.append(
            Contrast(
                "2",
                f"federated - local-only ({site}), mean over sites",
                r2("federated"),
                r2(f"local-{site}"),
            )
        )
    out.append(
        Contrast(
            "2", "centralized - federated, mean over sites", r2("centralized"), r2("federated")
        )
    )
    for site in transfer_sites(config):
        out += [
            Contrast(
                "3",
                f"{site}: transfer probe - scratch",
                r3(site, "fed-linear"),
                r3(site, "scratch-full"),
            ),
            Contrast(
                "3",
                f"{site}: transfer partial - scratch",
                r3(site, "fed-partial"),
                r3(site, "scratch-full"),
            ),
            Contrast(
                "3",
                f"{site}: transfer probe - random probe",
                r3(site, "fed-linear"),
                r3(site, "random-linear"),
            ),
        ]
    out += [
        Contrast("4", f"epsilon inf - epsilon {eps:g}", r4(None), r4(eps))
        for eps in config.privacy.epsilons
    ]
    for f in config.label_fractions:
        out += [
            Contrast(
                "5",
                f"SSL heads - supervised UNet @ {pct(f)} masks (mean Dice)",
                r1("fed-linear", f),
                r5_unet(f),
                metric="metrics.mean_dice",
            ),
            Contrast(
                "5",
                f"SSL partial - supervised UNet @ {pct(f)} masks (mean Dice)",
                r1("fed-partial", f),
                r5_unet(f),
                metric="metrics.mean_dice",
            ),
            Contrast(
                "5",
                f"SSL heads - random heads @ {pct(f)} masks (mean Dice)",
                r1("fed-linear", f),
                r1("random-linear", f),
                metric="metrics.mean_dice",
            ),
        ]
    return out
