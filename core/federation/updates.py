"""What a site sends back in a round: some whole weight groups, each with its example count."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroupUpdate:
    """One group's new weights from one site; `num_examples` = training cases, not batches."""

    arrays: dict[str, np.ndarray]
    num_examples: int


@dataclass(frozen=True)
class SiteUpdate:
    """One site's reply: the groups it trained this round."""

    site_id: str
    groups: dict[str, GroupUpdate]

    def __post_init__(self) -> None:
        if not isinstance(self.site_id, str) or not self.site_id.strip():
            raise ValueError(f"site update has an empty or non-text site id: {self.site_id!r}")


Contribution = tuple[str, GroupUpdate]


def rejection(*, site: str, group: str, reason: str) -> dict[str, str]:
    """The history.jsonl record of one rejected group update."""
    return {"site": site, "group": group, "reason": reason}


def sorted_by_site(updates: Sequence[SiteUpdate]) -> list[SiteUpdate]:
    """Updates in site-id order (so sums do not depend on arrival order); ids must be unique."""
    ordered = sorted(updates, key=lambda u: u.site_id)
    for before, after in zip(ordered, ordered[1:], strict=False):
        if before.site_id == after.site_id:
            raise ValueError(
                f"two replies carry site id {after.site_id!r} in one round: site ids must be "
                "unique (check each SuperNode's node_config site id)"
            )
    return ordered


def contributions_by_group(updates: Sequence[SiteUpdate]) -> dict[str, list[Contribution]]:
    """`{group: [(site_id, update), ...]}` with sites in id order."""
    by_group: dict[str, list[Contribution]] = {}
    for update in sorted_by_site(updates):
        for group, group_update in update.groups.items():
            by_group.setdefault(group, []).append((update.site_id, group_update))
    return by_group


def without_groups(updates: Sequence[SiteUpdate], groups: Iterable[str]) -> list[SiteUpdate]:
    """The same updates with the named groups removed (sites left with nothing are dropped)."""
    dropped = set(groups)
    kept = []
    for update in updates:
        remaining = {g: u for g, u in update.groups.items() if g not in dropped}
        if remaining:
            kept.append(SiteUpdate(site_id=update.site_id, groups=remaining))
    return kept
