"""Flower adapter for one training round: replies in, `core.federation.aggregate_round` out.

Stock FedAvg requires every reply to carry the same ArrayRecord keys and holds all replies
until the round ends, but a site sends only the groups it trained (its joint's heads, the
views it has) and 30 sites' replies would not fit in a coordinator's memory. So no Flower
strategy is used: `collect_replies` turns each reply, as it arrives, into a `SiteUpdate`
spooled to disk (`core.federation.spool`) and `aggregate_collected` hands them to the
per-group maths in `core`. Nothing numeric here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, RecordDict

from core.federation.config import AggregationConfig, ServerDPConfig
from core.federation.groups import group_of
from core.federation.server_round import RoundResult, aggregate_round
from core.federation.spool import UpdateSpool
from core.federation.updates import GroupUpdate, SiteUpdate
from fl_client.records import (
    ARRAYS,
    layout_offsets,
    parse_reply,
    record_bytes,
    record_layout,
    unpack,
)
from fl_server.messaging import reply_node


@dataclass
class CollectedReplies:
    """A round's replies, reduced to what aggregation and history.jsonl need."""

    updates: list[SiteUpdate] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)  # {"site", "reason"}
    rejected: list[dict[str, str]] = field(default_factory=list)  # {"site", "group", "reason"}
    answered: set[int] = field(default_factory=set)  # node ids that replied at all
    ok_replies: int = 0  # replies without a Flower error
    bytes_up: int = 0


def _spool_reply(
    content: RecordDict,
    *,
    site_id: str,
    examples: Mapping[str, int],
    spool: UpdateSpool,
    joint: str | None,
) -> SiteUpdate:
    """The reply's arrays, group by group, onto disk; each group's bytes are dropped from
    the message once written, so a reply never exists twice in memory."""
    record = content[ARRAYS] if ARRAYS in content else ArrayRecord()
    layout = record_layout(record) if len(record) else []
    offsets = layout_offsets(layout)
    entries_by_group: dict[str, list] = {}
    for entry in layout:
        entries_by_group.setdefault(group_of(entry[0]), []).append(entry)
    missing = sorted(set(entries_by_group) - set(examples))
    if missing:
        raise ValueError(f"malformed reply: no example count for group(s) {missing}")
    spooled: dict[str, GroupUpdate] = {}
    for group, entries in entries_by_group.items():
        arrays = unpack(record, entries, offsets=offsets)
        for pack in {pack for _, pack, _ in entries}:
            del record[pack]
        update = SiteUpdate(
            site_id=site_id,
            groups={group: GroupUpdate(arrays=arrays, num_examples=examples[group])},
        )
        del arrays
        spooled.update(spool.add(update, joint=joint).groups)
    return SiteUpdate(site_id=site_id, groups=spooled)


def _collect_one(
    msg: Message,
    *,
    node_sites: Mapping[int, str],
    message_nodes: Mapping[str, int],
    node_joints: Mapping[int, str],
    spool: UpdateSpool,
    out: CollectedReplies,
) -> None:
    node = reply_node(msg, message_nodes)
    site = node_sites.get(node, f"node-{node}")
    out.answered.add(node)
    if msg.has_error():
        out.failures.append({"site": site, "reason": msg.error.reason})
        return
    out.ok_replies += 1
    try:
        out.bytes_up += record_bytes(msg.content)
        parsed = parse_reply(msg.content, with_arrays=False)
        site = parsed["site_id"] or site
        if parsed["refused"]:
            out.failures.append({"site": site, "reason": parsed["refused"]})
            return
        update = _spool_reply(
            msg.content,
            site_id=site,
            examples=parsed["examples"],
            spool=spool,
            joint=node_joints.get(node),
        )
    except (ValueError, KeyError, TypeError) as err:
        reason = str(err) if "malformed" in str(err) else f"malformed reply: {err}"
        out.failures.append({"site": site, "reason": reason})
        return
    out.metrics[site] = dict(parsed["metrics"])
    out.updates.append(update)


def collect_replies(
    replies: Iterable[Message],
    *,
    node_sites: Mapping[int, str],
    spool: UpdateSpool,
    node_joints: Mapping[int, str] | None = None,
    message_nodes: Mapping[str, int] | None = None,
) -> CollectedReplies:
    """Parse and spool each reply as `replies` yields it; nothing keeps the message after.

    `node_joints`: each node's joint as it declared it when discovered; a head of another
    joint in its reply is rejected (a knee site cannot have trained `head.ankle.cls`).
    `message_nodes`: `{message id: node}` of the messages sent, so that a reply the SuperLink
    wrote for a node that died is recorded under that node's site."""
    out = CollectedReplies()
    for msg in replies:
        _collect_one(
            msg,
            node_sites=node_sites,
            message_nodes=message_nodes or {},
            node_joints=node_joints or {},
            spool=spool,
            out=out,
        )
    out.rejected = list(spool.rejected)
    return out


def _enough_sites(
    updates: list[SiteUpdate], *, need: int
) -> tuple[list[SiteUpdate], list[dict[str, str]]]:
    """Drop groups sent by fewer than `need` sites (they keep their value), with reasons."""
    counts: dict[str, int] = {}
    for update in updates:
        for group in update.groups:
            counts[group] = counts.get(group, 0) + 1
    thin = {g for g, n in counts.items() if n < need}
    if not thin:
        return updates, []
    kept = [
        SiteUpdate(site_id=u.site_id, groups={g: v for g, v in u.groups.items() if g not in thin})
        for u in updates
    ]
    reasons = [
        {"group": g, "reason": f"only {counts[g]} site(s) sent it; min_sites_per_group={need}"}
        for g in sorted(thin)
    ]
    return kept, reasons


def aggregate_collected(
    collected: CollectedReplies,
    *,
    global_state: dict[str, np.ndarray],
    aggregation: AggregationConfig,
    server_dp: ServerDPConfig,
    accountant: Any,
    sample_rate: float,
    rng: np.random.Generator,
    min_sites_per_group: int = 1,
) -> RoundResult:
    """The round's new global state; rejections on arrival and thin groups included."""
    updates, thin = _enough_sites(collected.updates, need=min_sites_per_group)
    result = aggregate_round(
        global_state=global_state,
        updates=updates,
        config=aggregation,
        dp=server_dp,
        rng=rng,
        accountant=accountant,
        sample_rate=sample_rate,
    )
    rejected = sorted(
        [*collected.rejected, *result.rejected], key=lambda r: (r["site"], r["group"])
    )
    return RoundResult(
        state=result.state,
        groups=result.groups,
        rejected=rejected,
        privacy=result.privacy,
        skipped=[*result.skipped, *thin],
    )
