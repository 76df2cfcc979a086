"""Checks every site's group updates against the global model before aggregation.

A failed check rejects that one (site, group) with a reason a coordinator can act on; the
site's other groups still count. Rejected updates are never aggregated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.federation.groups import HEAD, split_groups, validate_group_name
from core.federation.updates import (
    GroupUpdate,
    SiteUpdate,
    contributions_by_group,
    rejection,
    sorted_by_site,
)


@dataclass(frozen=True)
class ValidationResult:
    """Updates that passed (only their accepted groups) and `{"site","group","reason"}` dicts."""

    accepted: list[SiteUpdate]
    rejected: list[dict[str, str]]


def _count_problem(num_examples: object) -> str | None:
    is_int = isinstance(num_examples, int | np.integer) and not isinstance(num_examples, bool)
    if not is_int:
        return f"num_examples={num_examples!r} is not a whole number of training cases"
    if num_examples <= 0:
        return f"num_examples={num_examples}: a group update must come from at least one case"
    return None


def _key_problem(arrays: Mapping[str, object], reference: Mapping[str, np.ndarray]) -> str | None:
    unknown = [k for k in arrays if k not in reference]
    if unknown:
        return f"unknown keys not in the global group: {unknown[:5]}"
    missing = [k for k in reference if k not in arrays]
    if missing:
        return f"missing keys (a site must send whole groups): {missing[:5]}"
    return None


def _array_problem(key: str, array: object, reference: np.ndarray) -> str | None:
    if not isinstance(array, np.ndarray):
        return f"{key}: not a numpy array ({type(array).__name__})"
    if array.shape != reference.shape:
        return f"{key}: wrong shape {array.shape}, global model has {reference.shape}"
    if array.dtype != reference.dtype:
        return f"{key}: wrong dtype {array.dtype}, global model has {reference.dtype}"
    if np.issubdtype(array.dtype, np.inexact):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            return f"{key}: {bad} non-finite values (NaN or Inf)"
    return None


def check_group_update(*, update: GroupUpdate, reference: Mapping[str, np.ndarray]) -> str | None:
    """The reason this group update is unusable, or None if its count, keys and arrays pass."""
    problem = _count_problem(update.num_examples) or _key_problem(update.arrays, reference)
    if problem:
        return problem
    for key, ref in reference.items():
        problem = _array_problem(key, update.arrays[key], ref)
        if problem:
            return problem
    return None


def group_problem(
    *,
    group: str,
    update: GroupUpdate,
    global_groups: Mapping[str, Mapping[str, np.ndarray]],
    joint: str | None = None,
) -> str | None:
    """Why one site's update of `group` is unusable on its own (name, membership in the
    global model, a head of another joint than the site's `joint` when known, count, keys,
    arrays), or None; the norm check needs the other sites too."""
    try:
        validate_group_name(group)
    except ValueError as err:
        return str(err)
    if group not in global_groups:
        return f"group {group!r} is not part of the global model"
    parts = group.split(".")
    if joint and parts[0] == HEAD and parts[1] != joint:
        return f"a {joint} site cannot have trained {group!r} (heads of {parts[1]} sites only)"
    return check_group_update(update=update, reference=global_groups[group])


def update_norm(*, arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """L2 norm of (update - global) over all arrays of one group, computed in float64."""
    total = 0.0
    for key, ref in reference.items():
        diff = arrays[key].astype(np.float64) - ref.astype(np.float64)
        total += float(np.dot(diff.ravel(), diff.ravel()))
    return float(np.sqrt(total))


def group_norm(reference: Mapping[str, np.ndarray]) -> float:
    """L2 norm of one global group's floating-point arrays, in float64."""
    total = 0.0
    for array in reference.values():
        if np.issubdtype(array.dtype, np.floating):
            flat = array.astype(np.float64).ravel()
            total += float(np.dot(flat, flat))
    return float(np.sqrt(total))


def norm_outliers(norms: Mapping[str, float], *, factor: float, min_sites: int) -> dict[str, str]:
    """`{site: reason}` for update norms above `factor` x the median of the group's sites.

    Skipped with fewer than `min_sites` sites, and when the median is 0 (no scale to compare).
    """
    if len(norms) < min_sites:
        return {}
    median = float(np.median(list(norms.values())))
    if median <= 0.0:
        return {}
    return {
        site: (
            f"update norm {norm:.4g} is {norm / median:.1f}x the median {median:.4g} of "
            f"{len(norms)} sites (limit {factor:g}x)"
        )
        for site, norm in norms.items()
        if norm > factor * median
    }


def _group_rejections(
    *,
    group: str,
    contributions: list[tuple[str, GroupUpdate]],
    global_groups: Mapping[str, Mapping[str, np.ndarray]],
    norm_factor: float,
    norm_min_sites: int,
    max_relative_norm: float,
) -> dict[str, str]:
    """`{site: reason}` for the sites whose update of `group` fails a check."""
    reasons: dict[str, str] = {}
    norms: dict[str, float] = {}
    scale: float | None = None
    for site, update in contributions:
        problem = group_problem(group=group, update=update, global_groups=global_groups)
        if problem:
            reasons[site] = problem
            continue
        reference = global_groups[group]
        norm = update_norm(arrays=update.arrays, reference=reference)
        scale = group_norm(reference) if scale is None else scale
        if scale > 0 and norm > max_relative_norm * scale:
            reasons[site] = (
                f"update norm {norm:.4g} is {norm / scale:.3g}x the norm {scale:.4g} of the "
                f"global group (limit {max_relative_norm:g}x)"
            )
        else:
            norms[site] = norm
    reasons.update(norm_outliers(norms, factor=norm_factor, min_sites=norm_min_sites))
    return reasons


def validate_updates(
    *,
    global_state: Mapping[str, np.ndarray],
    updates: Sequence[SiteUpdate],
    norm_factor: float = 10.0,
    norm_min_sites: int = 3,
    max_relative_norm: float = 100.0,
) -> ValidationResult:
    """Check every (site, group); return the accepted part of each update and the rejections.

    Rejections are sorted by site then group, accepted updates by site id.
    """
    global_groups = split_groups(global_state)
    rejected_groups: dict[str, set[str]] = {}
    rejected: list[dict[str, str]] = []
    for group, contributions in contributions_by_group(updates).items():
        reasons = _group_rejections(
            group=group,
            contributions=contributions,
            global_groups=global_groups,
            norm_factor=norm_factor,
            norm_min_sites=norm_min_sites,
            max_relative_norm=max_relative_norm,
        )
        for site, reason in reasons.items():
            rejected_groups.setdefault(site, set()).add(group)
            rejected.append(rejection(site=site, group=group, reason=reason))
    accepted = []
    for update in sorted_by_site(updates):
        dropped = rejected_groups.get(update.site_id, set())
        kept = {g: u for g, u in update.groups.items() if g not in dropped}
        if kept:
            accepted.append(SiteUpdate(site_id=update.site_id, groups=kept))
    rejected.sort(key=lambda r: (r["site"], r["group"]))
    return ValidationResult(accepted=accepted, rejected=rejected)
