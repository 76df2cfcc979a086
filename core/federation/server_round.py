"""One server round: validate the site updates, aggregate per group (robust or DP), account.

This is the single entry point the Flower strategy calls; it knows nothing about Flower.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from core.federation.aggregate import GroupSummary, aggregate_updates
from core.federation.config import AggregationConfig, AggregationRule, ServerDPConfig
from core.federation.dp import dp_aggregate_updates
from core.federation.updates import SiteUpdate, contributions_by_group, without_groups
from core.federation.validate import validate_updates

if TYPE_CHECKING:  # importing Opacus pulls in torch; only the type is needed here
    from core.federation.accounting import GroupPrivacyAccountant


@dataclass(frozen=True)
class RoundResult:
    """Outcome of one round, in the shapes history.jsonl records.

    `groups`: `{group: {"sites": [...], "examples": int}}` for aggregated groups.
    `rejected`: `{"site", "group", "reason"}` per rejected update.
    `privacy`: `{group: {"epsilon", "noise_multiplier", "sample_rate", "steps", "delta",
    "accountant"}}` for every group that has spent budget (empty without server DP).
    `skipped`: `{"group", "reason"}` for groups left unchanged because of the privacy budget.
    """

    state: dict[str, np.ndarray]
    groups: GroupSummary
    rejected: list[dict[str, str]]
    privacy: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)


def _over_budget(
    *,
    groups: Sequence[str],
    dp: ServerDPConfig,
    accountant: GroupPrivacyAccountant,
    sample_rate: float,
) -> list[dict[str, str]]:
    """Groups whose epsilon would pass `dp.max_epsilon` after this round, with the reason."""
    if dp.max_epsilon is None:
        return []
    skipped = []
    for group in groups:
        epsilon = accountant.epsilon_after_step(
            group=group,
            noise_multiplier=dp.noise_multiplier,
            sample_rate=sample_rate,
            delta=dp.delta,
        )
        if epsilon > dp.max_epsilon:
            reason = (
                f"privacy budget exhausted: epsilon would reach {epsilon:.3g} > max_epsilon "
                f"{dp.max_epsilon:g} (delta {dp.delta:g}); the group keeps its weights"
            )
            skipped.append({"group": group, "reason": reason})
    return skipped


def _dp_round(
    *,
    global_state: Mapping[str, np.ndarray],
    updates: Sequence[SiteUpdate],
    dp: ServerDPConfig,
    rng: np.random.Generator | None,
    accountant: GroupPrivacyAccountant,
    sample_rate: float,
) -> tuple[dict[str, np.ndarray], GroupSummary, list[dict[str, str]]]:
    """DP aggregation of the groups still within budget; steps their accountants."""
    sent = list(contributions_by_group(updates))
    skipped = _over_budget(groups=sent, dp=dp, accountant=accountant, sample_rate=sample_rate)
    kept = without_groups(updates, [s["group"] for s in skipped])
    if rng is None and not dp.secure_noise:
        rng = np.random.default_rng()
    state, summary, _ = dp_aggregate_updates(
        global_state=global_state,
        updates=kept,
        clip_norm=dp.clip_norm,
        noise_multiplier=dp.noise_multiplier,
        rng=rng,
        secure=dp.secure_noise,
    )
    for group in summary:
        accountant.step(group=group, noise_multiplier=dp.noise_multiplier, sample_rate=sample_rate)
    return state, summary, skipped


def aggregate_round(
    *,
    global_state: Mapping[str, np.ndarray],
    updates: Sequence[SiteUpdate],
    config: AggregationConfig,
    dp: ServerDPConfig | None = None,
    rng: np.random.Generator | None = None,
    accountant: GroupPrivacyAccountant | None = None,
    sample_rate: float = 1.0,
) -> RoundResult:
    """Validate `updates` against `global_state`, aggregate each group, account DP spend.

    Without DP (or `dp.enabled` false) each group uses `config.rule`. With DP, each group is
    DP-FedAvg aggregated (clipped, unweighted, noised; `config.rule` must be weighted_mean
    since the noise is calibrated to a mean), `accountant` is stepped in place for every
    aggregated group and `sample_rate` is the fraction of sites sampled this round. `rng`
    seeds the noise (a fresh OS-seeded generator if None; unused with secure noise).
    """
    checked = validate_updates(
        global_state=global_state,
        updates=updates,
        norm_factor=config.norm_factor,
        norm_min_sites=config.norm_min_sites,
        max_relative_norm=config.max_relative_norm,
    )
    if dp is None or not dp.enabled:
        state, summary = aggregate_updates(
            global_state=global_state,
            updates=checked.accepted,
            rule=config.rule,
            trim_fraction=config.trim_fraction,
        )
        return RoundResult(state=state, groups=summary, rejected=checked.rejected)
    if config.rule != AggregationRule.WEIGHTED_MEAN:
        raise ValueError(
            f"aggregation.rule={config.rule} cannot be combined with server DP: the DP noise "
            "is calibrated to a mean of clipped updates; use weighted_mean or disable privacy"
        )
    if accountant is None:
        raise ValueError("server DP is enabled but no privacy accountant was given")
    state, summary, skipped = _dp_round(
        global_state=global_state,
        updates=checked.accepted,
        dp=dp,
        rng=rng,
        accountant=accountant,
        sample_rate=sample_rate,
    )
    return RoundResult(
        state=state,
        groups=summary,
        rejected=checked.rejected,
        privacy=accountant.report(delta=dp.delta),
        skipped=skipped,
    )
