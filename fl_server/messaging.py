"""Messaging with the sites: who is connected, who is asked, sending, and replies as they come.

The round loop (`fl_server.rounds`, `fl_server.cross_site`) composes these; nothing here
aggregates or writes the run dir. Sampling is drawn over site ids with a generator seeded by
(experiment seed, round index), so a resumed run asks the same sites.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping

import numpy as np
from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fl_client import records
from fl_server.federation import Federation

log = logging.getLogger("orthofed.server")

# Seconds between sweeps over the replies still pending (Flower's own grids: 0.1 in
# simulation, 3 in deployment; a grid's `pull_interval`, where it has one, wins).
PULL_INTERVAL_S = 0.5


def wait_for_nodes(grid: Grid, *, minimum: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def discover_sites(grid: Grid, nodes: list[int], known: dict[int, dict]) -> dict[int, dict]:
    """Ask new nodes who they are (site id, joint, case counts: aggregates only)."""
    new = [n for n in nodes if n not in known]
    if new:
        msgs = [Message(RecordDict({}), dst_node_id=n, message_type=MessageType.QUERY) for n in new]
        for reply in grid.send_and_receive(msgs, timeout=120):
            if reply.has_error():
                log.warning(
                    "node %s did not identify itself: %s",
                    reply.metadata.src_node_id,
                    reply.error.reason,
                )
                continue
            info = dict(reply.content[records.STATUS])
            known[reply.metadata.src_node_id] = info
    return known


def sample_sites(
    sites: dict[int, dict], *, fraction: float, minimum: int, rng: np.random.Generator
) -> list[int]:
    """Nodes to ask this round, drawn over site ids (not Flower's random node ids)."""
    by_site = sorted(sites.items(), key=lambda item: str(item[1].get(records.SITE_ID)))
    count = min(len(by_site), max(minimum, int(round(fraction * len(by_site)))))
    chosen = rng.choice(len(by_site), size=count, replace=False) if count else []
    return sorted(by_site[i][0] for i in chosen)


def select_sites(
    fed: Federation, *, index: int, fraction: float, min_sites: int
) -> tuple[list[int], float]:
    nodes = wait_for_nodes(fed.grid, minimum=min_sites, timeout_s=fed.settings.node_wait_s)
    discover_sites(fed.grid, nodes, fed.sites)
    live = {n: fed.sites[n] for n in nodes if n in fed.sites}
    if len(live) < min_sites:
        raise RuntimeError(
            f"round {index}: only {len(live)} site(s) connected, min_sites={min_sites}"
        )
    rng = np.random.default_rng([fed.experiment.seed, index, 0])
    chosen = sample_sites(live, fraction=fraction, minimum=min_sites, rng=rng)
    return chosen, len(chosen) / max(1, len(live))


def push(
    fed: Federation,
    *,
    chosen: list[int],
    content,
    message_type: str,
    per_node: dict | None = None,
) -> tuple[list[str], int]:
    """Push `content` (or `per_node[node]` where given) to every chosen node; ids and bytes."""
    contents = {n: (per_node or {}).get(n, content) for n in chosen}
    msgs = [Message(contents[n], dst_node_id=n, message_type=message_type) for n in chosen]
    bytes_down = sum(records.record_bytes(c) for c in contents.values())
    return list(fed.grid.push_messages(msgs)), bytes_down


def reply_node(reply: Message, message_nodes: Mapping[str, int]) -> int:
    """The node a reply is about: the destination of the message it answers (the SuperLink
    itself writes the error reply for a node that stopped sending heartbeats), else its
    source."""
    return message_nodes.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)


def stream_replies(grid, message_ids: list[str], *, timeout_s: float) -> Iterator[Message]:
    """Each reply as soon as it is there (pulled one id at a time, so only the reply being
    handled is in this process), until all have come or `timeout_s` has passed."""
    pending = list(message_ids)
    interval = float(getattr(grid, "pull_interval", PULL_INTERVAL_S))
    deadline = time.monotonic() + timeout_s
    while pending:
        for message_id in list(pending):
            for reply in grid.pull_messages([message_id]):
                pending.remove(message_id)
                yield reply
        if not pending or time.monotonic() >= deadline:
            return
        time.sleep(interval)


def send_and_collect(
    fed: Federation,
    *,
    chosen: list[int],
    content,
    message_type: str,
    timeout_s: float,
    per_node: dict | None = None,
):
    """Send to every chosen node and wait for all replies (small replies: metrics, models
    of the local-only round); training rounds stream theirs instead."""
    ids, bytes_down = push(
        fed, chosen=chosen, content=content, message_type=message_type, per_node=per_node
    )
    return list(stream_replies(fed.grid, ids, timeout_s=timeout_s)), bytes_down


def site_name(fed: Federation, node: int) -> str:
    return str(fed.sites.get(node, {}).get(records.SITE_ID, f"node-{node}"))


def base_record(fed: Federation, *, phase: str, round_: int, index: int, chosen: list[int]) -> dict:
    return {
        "phase": phase,
        "round": round_,
        "index": index,
        "sampled": sorted(site_name(fed, n) for n in chosen),
    }
