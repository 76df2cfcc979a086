"""Server-side differential privacy per weight group (DP-FedAvg style).

For each group: every site's delta (site - global) is clipped to L2 norm C over the whole
group, the clipped deltas are averaged without weights (fixed denominator n = number of
contributing sites), Gaussian noise of std sigma * C / n is added per coordinate, and the
result is added to the global group. Noise comes from a seeded numpy Generator (reproducible
simulations) or from the OS CSPRNG (`os.urandom`) for deployments.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from core.federation.aggregate import GroupSummary, cast_like, known_contributions, summarize
from core.federation.groups import merge_groups, split_groups
from core.federation.updates import Contribution, SiteUpdate

# Normal pairs drawn per os.urandom call (16 MiB of random bytes), to bound peak memory.
_SECURE_CHUNK_PAIRS = 1 << 20
_TWO_POW_53 = float(2**53)


def clip_delta(
    delta: Mapping[str, np.ndarray], *, clip_norm: float
) -> tuple[dict[str, np.ndarray], float]:
    """Scale a group's delta to L2 norm <= clip_norm (norm over all its arrays).

    Returns the clipped float64 arrays and the norm before clipping.
    """
    if not clip_norm > 0:
        raise ValueError(f"clip norm must be > 0, got {clip_norm}")
    as64 = {key: np.asarray(d, dtype=np.float64) for key, d in delta.items()}
    norm = math.sqrt(sum(float(np.dot(d.ravel(), d.ravel())) for d in as64.values()))
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return {key: d * scale for key, d in as64.items()}, norm


def _squared_norm(array: np.ndarray, reference: np.ndarray) -> float:
    delta = array.astype(np.float64) - reference.astype(np.float64)
    return float(np.dot(delta.ravel(), delta.ravel()))


def _uniform_open_closed(count: int) -> np.ndarray:
    """`count` uniforms in (0, 1] with 53 random bits each, from os.urandom."""
    raw = np.frombuffer(os.urandom(8 * count), dtype=np.uint64)
    return ((raw >> np.uint64(11)).astype(np.float64) + 1.0) / _TWO_POW_53


def secure_standard_normal(size: int) -> np.ndarray:
    """`size` standard normal draws from the OS CSPRNG (vectorised Box-Muller), float64."""
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    out = np.empty(size + (size % 2), dtype=np.float64)
    pairs = out.size // 2
    for start in range(0, pairs, _SECURE_CHUNK_PAIRS):
        stop = min(pairs, start + _SECURE_CHUNK_PAIRS)
        u = _uniform_open_closed(2 * (stop - start))
        radius = np.sqrt(-2.0 * np.log(u[: stop - start]))
        angle = (2.0 * np.pi) * u[stop - start :]
        out[2 * start : 2 * stop : 2] = radius * np.cos(angle)
        out[2 * start + 1 : 2 * stop : 2] = radius * np.sin(angle)
    return out[:size]


def gaussian_noise(
    shape: tuple[int, ...],
    *,
    std: float,
    rng: np.random.Generator | None,
    secure: bool = False,
) -> np.ndarray:
    """Zero-mean Gaussian noise (float64) of the given std: CSPRNG if `secure`, else `rng`."""
    if secure:
        return secure_standard_normal(math.prod(shape)).reshape(shape) * std
    if rng is None:
        raise ValueError("seeded DP noise needs a numpy Generator (or set secure noise)")
    return rng.normal(0.0, std, size=shape)


def dp_aggregate_group(
    *,
    reference: Mapping[str, np.ndarray],
    contributions: Sequence[Contribution],
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator | None,
    secure: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Global group + mean of clipped deltas + noise; returns new arrays and DP facts.

    Facts: `{"sites": n, "clipped": sites whose delta exceeded C, "noise_std": sigma*C/n}`.
    """
    for key, ref in reference.items():
        if not np.issubdtype(ref.dtype, np.floating):
            raise ValueError(f"{key}: server DP needs floating-point weights, got {ref.dtype}")
    if not clip_norm > 0:
        raise ValueError(f"clip norm must be > 0, got {clip_norm}")
    n = len(contributions)
    acc = {key: np.zeros(ref.shape, dtype=np.float64) for key, ref in reference.items()}
    clipped = 0
    for _, update in contributions:
        # Two passes over the site's arrays (norm, then scaled sum), one array in memory at
        # a time: the same float64 operations as `clip_delta` on the whole group.
        norm = math.sqrt(
            sum(_squared_norm(update.arrays[key], ref) for key, ref in reference.items())
        )
        scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
        clipped += int(norm > clip_norm)
        for key, ref in reference.items():
            acc[key] += (update.arrays[key].astype(np.float64) - ref.astype(np.float64)) * scale
    std = noise_multiplier * clip_norm / n
    new = {}
    for key, ref in reference.items():
        noise = gaussian_noise(ref.shape, std=std, rng=rng, secure=secure)
        new[key] = cast_like(ref.astype(np.float64) + acc[key] / n + noise, ref)
    return new, {"sites": n, "clipped": clipped, "noise_std": std}


def dp_aggregate_updates(
    *,
    global_state: Mapping[str, np.ndarray],
    updates: Sequence[SiteUpdate],
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator | None = None,
    secure: bool = False,
) -> tuple[dict[str, np.ndarray], GroupSummary, dict[str, dict[str, object]]]:
    """DP-aggregate validated updates per group, in global key order (noise draws follow it).

    Returns the new state, the group summary and `{group: DP facts}` for aggregated groups.
    """
    global_groups = split_groups(global_state)
    by_group = known_contributions(global_groups=global_groups, updates=updates)
    new_groups: dict[str, dict[str, np.ndarray]] = {}
    facts: dict[str, dict[str, object]] = {}
    for group, reference in global_groups.items():
        contributions = by_group.get(group)
        if not contributions:
            new_groups[group] = dict(reference)
            continue
        new_groups[group], facts[group] = dp_aggregate_group(
            reference=reference,
            contributions=contributions,
            clip_norm=clip_norm,
            noise_multiplier=noise_multiplier,
            rng=rng,
            secure=secure,
        )
    summary = summarize({g: by_group[g] for g in facts})
    return merge_groups(new_groups, key_order=list(global_state)), summary, facts
