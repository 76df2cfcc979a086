"""Label-efficiency subsets: a deterministic, stratified fraction of the annotated cases.

Each case falls in one stratum: the rarest label it is positive for (rarity counted over all
candidates), "negative" (labeled, no positive) or "unlabeled" (e.g. mask only). Each stratum
keeps its share of the `round(fraction x n)` cases (largest-remainder rounding, at least one
case overall); within a stratum cases are ranked by a hash of seed and case id, so the subset
does not depend on the order cases are listed in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np


def _stratum(labels: np.ndarray | None, counts: np.ndarray) -> str:
    if labels is None:
        return "unlabeled"
    positives = np.flatnonzero(np.asarray(labels) > 0.5)
    if positives.size == 0:
        return "negative"
    rarest = min(positives, key=lambda i: (counts[i], i))
    return f"label-{int(rarest):03d}"


def _rank(seed: int, case_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{case_id}".encode()).digest()


def _quotas(sizes: dict[str, int], *, fraction: float) -> dict[str, int]:
    total = max(1, round(fraction * sum(sizes.values())))
    exact = {s: fraction * n for s, n in sizes.items()}
    quotas = {s: math.floor(x) for s, x in exact.items()}
    by_remainder = sorted(sizes, key=lambda s: (-(exact[s] - quotas[s]), s))
    for stratum in by_remainder[: max(0, total - sum(quotas.values()))]:
        quotas[stratum] += 1
    return quotas


def stratified_subset(
    cases: Sequence[tuple[str, np.ndarray | None]], *, fraction: float, seed: int = 0
) -> list[str]:
    """Sorted case ids of a stratified `fraction` of `(case_id, labels or None)` pairs."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if not cases:
        raise ValueError("no annotated training cases to choose a label fraction from")
    ids = [case_id for case_id, _ in cases]
    if fraction == 1.0:
        return sorted(ids)
    labeled = [np.asarray(lab) > 0.5 for _, lab in cases if lab is not None]
    counts = np.sum(labeled, axis=0) if labeled else np.zeros(0)
    strata: dict[str, list[str]] = {}
    for case_id, labels in cases:
        strata.setdefault(_stratum(labels, counts), []).append(case_id)
    quotas = _quotas({s: len(m) for s, m in strata.items()}, fraction=fraction)
    chosen = []
    for stratum, members in strata.items():
        chosen += sorted(members, key=lambda c: _rank(seed, c))[: quotas[stratum]]
    return sorted(chosen)
