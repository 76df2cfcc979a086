"""Tiny model states and site updates for the federation tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from core.federation.groups import split_groups
from core.federation.updates import GroupUpdate, SiteUpdate

# Two arrays per group, tiny shapes; the second key sorts before the first on purpose.
PARAM_SHAPES: dict[str, tuple[int, ...]] = {"conv.weight": (2, 3), "a_norm.bias": (3,)}


def build_state(
    groups: Sequence[str], *, seed: int = 0, dtype: type = np.float32
) -> dict[str, np.ndarray]:
    """A state with PARAM_SHAPES arrays for each group, groups in the given order."""
    rng = np.random.default_rng(seed)
    return {
        f"{group}.{name}": rng.normal(size=shape).astype(dtype)
        for group in groups
        for name, shape in PARAM_SHAPES.items()
    }


def site_update(
    site_id: str,
    state: dict[str, np.ndarray],
    *,
    groups: Sequence[str] | None = None,
    num_examples: int | dict[str, int] = 1,
) -> SiteUpdate:
    """A SiteUpdate sending `groups` (default: all) of `state`."""
    split = split_groups(state)
    chosen = list(groups) if groups is not None else list(split)
    counts = num_examples if isinstance(num_examples, dict) else dict.fromkeys(chosen, num_examples)
    return SiteUpdate(
        site_id=site_id,
        groups={g: GroupUpdate(arrays=dict(split[g]), num_examples=counts[g]) for g in chosen},
    )


@pytest.fixture
def make_state() -> Callable[..., dict[str, np.ndarray]]:
    return build_state


@pytest.fixture
def make_update() -> Callable[..., SiteUpdate]:
    return site_update
