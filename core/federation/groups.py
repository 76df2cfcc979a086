"""Weight groups: the units the server aggregates separately.

A model state is a flat ordered mapping `key -> array` whose keys start with their group:
`backbone.<view>.<param path>` (one backbone per view, shared by all joints) and
`head.<joint>.<cls|seg>.<param path>` (task heads per joint). A site sends whole groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

import numpy as np

from core.views import VIEWS, Joint

BACKBONE = "backbone"
HEAD = "head"
HEAD_KINDS: tuple[str, ...] = ("cls", "seg")
# Number of dotted parts that name the group, by the key's first part.
_GROUP_DEPTH = {BACKBONE: 2, HEAD: 3}


@cache  # constant (from the enums), asked once per state key: a tuple, so never mutated
def all_group_names() -> tuple[str, ...]:
    """Every valid group name: backbones in view order, then heads per joint and kind."""
    backbones = tuple(f"{BACKBONE}.{view.value}" for view in VIEWS)
    heads = tuple(f"{HEAD}.{joint.value}.{kind}" for joint in Joint for kind in HEAD_KINDS)
    return backbones + heads


def validate_group_name(name: str) -> str:
    """Return `name` if it is a valid group name, else raise a ValueError listing the forms."""
    if name not in all_group_names():
        views = "|".join(v.value for v in VIEWS)
        joints = "|".join(j.value for j in Joint)
        raise ValueError(
            f"invalid weight group {name!r}: expected {BACKBONE}.<{views}> or "
            f"{HEAD}.<{joints}>.<{'|'.join(HEAD_KINDS)}>"
        )
    return name


def group_of(key: str) -> str:
    """The group a state key belongs to, e.g. `head.knee.cls.proj.weight` -> `head.knee.cls`."""
    parts = str(key).split(".")
    depth = _GROUP_DEPTH.get(parts[0])
    if depth is None or len(parts) <= depth or not all(parts):
        raise ValueError(
            f"state key {key!r} does not name a weight group: keys must look like "
            f"'{BACKBONE}.<view>.<param>' or '{HEAD}.<joint>.<cls|seg>.<param>'"
        )
    group = ".".join(parts[:depth])
    try:
        return validate_group_name(group)
    except ValueError as err:
        raise ValueError(f"state key {key!r}: {err}") from None


def split_groups(state: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Split a flat state into `{group: {key: array}}`; groups and keys keep their order.

    Groups appear in the order of their first key. Raises ValueError on a key outside any group.
    """
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, array in state.items():
        groups.setdefault(group_of(key), {})[key] = array
    return groups


def merge_groups(
    groups: Mapping[str, Mapping[str, np.ndarray]],
    *,
    key_order: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Flatten `{group: {key: array}}` back into one state.

    Each key must belong to the group it is filed under. With `key_order` (e.g. the global
    model's keys) the result follows that order and must hold exactly those keys.
    """
    merged: dict[str, np.ndarray] = {}
    for group, arrays in groups.items():
        for key, array in arrays.items():
            if group_of(key) != group:
                raise ValueError(f"state key {key!r} is filed under group {group!r}")
            if key in merged:
                raise ValueError(f"state key {key!r} appears in more than one group")
            merged[key] = array
    if key_order is None:
        return merged
    expected = set(key_order)
    missing = [k for k in key_order if k not in merged]
    extra = [k for k in merged if k not in expected]
    if missing or extra:
        raise ValueError(
            f"merged state does not match the expected keys: missing {missing[:5]}, "
            f"unexpected {extra[:5]}"
        )
    return {key: merged[key] for key in key_order}
