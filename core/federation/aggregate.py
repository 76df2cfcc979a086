"""Per-group aggregation of (already validated) site updates, on numpy arrays.

Each group is combined over the sites that sent it; a group nobody sent keeps its previous
value and the global key order never changes. Sites are taken in site-id order and sums run
in float64, so the result is bit-identical whatever order the replies arrived in; each
array is cast back to the global model's dtype at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from core.federation.config import AggregationRule, parse_rule
from core.federation.groups import merge_groups, split_groups
from core.federation.updates import Contribution, SiteUpdate, contributions_by_group

GroupSummary = dict[str, dict[str, object]]


def cast_like(value: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`value` (float64) in the dtype of `reference`; integer arrays are rounded first."""
    if not np.issubdtype(reference.dtype, np.inexact):
        value = np.rint(value)
    return value.astype(reference.dtype, copy=False)


def weighted_mean(arrays: Iterable[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """sum_i w_i x_i / sum_i w_i, accumulated in float64 in the given order.

    `arrays` may be a generator: only the running sum and one array are held at a time.
    """
    total = float(sum(weights))
    if not weights or total <= 0:
        raise ValueError("weighted mean needs at least one array and a positive total weight")
    acc: np.ndarray | None = None
    for array, weight in zip(arrays, weights, strict=True):
        if acc is None:
            acc = np.zeros(array.shape, dtype=np.float64)
        acc += float(weight) * array.astype(np.float64)
    return acc / total


def coordinate_median(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Coordinate-wise median over sites (unweighted), in float64."""
    if not arrays:
        raise ValueError("median needs at least one array")
    return np.median(np.stack([a.astype(np.float64) for a in arrays]), axis=0)


def trimmed_mean(arrays: Sequence[np.ndarray], *, trim_fraction: float) -> np.ndarray:
    """Coordinate-wise mean after dropping floor(trim_fraction * n) values at each end.

    With few sites floor(...) can be 0, which makes this the plain (unweighted) mean.
    """
    n = len(arrays)
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(f"trim fraction {trim_fraction} must be in [0, 0.5)")
    if n - 2 * int(trim_fraction * n) < 1:
        raise ValueError(f"trimming {trim_fraction} at each end of {n} sites leaves none")
    stack = np.stack([a.astype(np.float64) for a in arrays])
    return np.asarray(stats.trim_mean(stack, proportiontocut=trim_fraction, axis=0))


def combine(
    arrays: Iterable[np.ndarray],
    *,
    weights: Sequence[float],
    rule: AggregationRule,
    trim_fraction: float,
) -> np.ndarray:
    """Combine one key's arrays from several sites with `rule` (result in float64)."""
    if rule is AggregationRule.WEIGHTED_MEAN:
        return weighted_mean(arrays, weights)
    if rule is AggregationRule.MEDIAN:
        return coordinate_median(arrays)
    return trimmed_mean(arrays, trim_fraction=trim_fraction)


def aggregate_group(
    *,
    reference: Mapping[str, np.ndarray],
    contributions: Sequence[Contribution],
    rule: AggregationRule,
    trim_fraction: float,
) -> dict[str, np.ndarray]:
    """New arrays of one group from its contributions (sites in the order given)."""
    weights = [update.num_examples for _, update in contributions]
    new: dict[str, np.ndarray] = {}
    for key, ref in reference.items():
        arrays = (update.arrays[key] for _, update in contributions)  # read one at a time
        if rule is not AggregationRule.WEIGHTED_MEAN:
            arrays = list(arrays)  # median and trimmed mean need every site's value at once
        value = combine(arrays, weights=weights, rule=rule, trim_fraction=trim_fraction)
        new[key] = cast_like(value, ref)
    return new


def known_contributions(
    *, global_groups: Mapping[str, object], updates: Sequence[SiteUpdate]
) -> dict[str, list[Contribution]]:
    """Contributions per group (sites in id order); every group must exist in the model."""
    by_group = contributions_by_group(updates)
    unknown = sorted(set(by_group) - set(global_groups))
    if unknown:
        raise ValueError(
            f"updates carry groups not in the global model: {unknown} (run validate_updates first)"
        )
    return by_group


def summarize(by_group: Mapping[str, Sequence[Contribution]]) -> GroupSummary:
    """`{group: {"sites": [ids], "examples": total cases}}` (the history.jsonl shape)."""
    return {
        group: {
            "sites": [site for site, _ in contributions],
            "examples": int(sum(update.num_examples for _, update in contributions)),
        }
        for group, contributions in by_group.items()
    }


def aggregate_updates(
    *,
    global_state: Mapping[str, np.ndarray],
    updates: Sequence[SiteUpdate],
    rule: str = AggregationRule.WEIGHTED_MEAN,
    trim_fraction: float = 0.1,
) -> tuple[dict[str, np.ndarray], GroupSummary]:
    """Aggregate validated updates group by group; return the new state and a group summary.

    Groups nobody sent keep their arrays (same objects); the summary lists only groups that
    were aggregated, in global key order. Updates must already have passed `validate_updates`.
    """
    parsed = parse_rule(rule)
    global_groups = split_groups(global_state)
    by_group = known_contributions(global_groups=global_groups, updates=updates)
    new_groups: dict[str, dict[str, np.ndarray]] = {}
    summary_groups: dict[str, list[Contribution]] = {}
    for group, reference in global_groups.items():
        contributions = by_group.get(group)
        if not contributions:
            new_groups[group] = dict(reference)
            continue
        new_groups[group] = aggregate_group(
            reference=reference,
            contributions=contributions,
            rule=parsed,
            trim_fraction=trim_fraction,
        )
        summary_groups[group] = contributions
    new_state = merge_groups(new_groups, key_order=list(global_state))
    return new_state, summarize(summary_groups)
