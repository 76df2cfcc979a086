"""One training round and the final evaluation round, as history.jsonl records."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Message, MessageType

from core.federation.accounting import carry_privacy
from core.federation.spool import UpdateSpool
from fl_client import records
from fl_server.strategy import aggregate_collected, collect_replies

if TYPE_CHECKING:
    from fl_server.app import Federation

log = logging.getLogger("orthofed.server")

# Seconds between sweeps over the replies still pending (Flower's own grids: 0.1 in
# simulation, 3 in deployment; a grid's `pull_interval`, where it has one, wins).
PULL_INTERVAL_S = 0.5


def _select(
    fed: Federation, *, index: int, fraction: float, min_sites: int
) -> tuple[list[int], float]:
    from fl_server.app import discover_sites, sample_sites, wait_for_nodes

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


def _push(
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


def _send(
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
    ids, bytes_down = _push(
        fed, chosen=chosen, content=content, message_type=message_type, per_node=per_node
    )
    return list(stream_replies(fed.grid, ids, timeout_s=timeout_s)), bytes_down


def _site_name(fed: Federation, node: int) -> str:
    return str(fed.sites.get(node, {}).get(records.SITE_ID, f"node-{node}"))


def _base_record(
    fed: Federation, *, phase: str, round_: int, index: int, chosen: list[int]
) -> dict:
    return {
        "phase": phase,
        "round": round_,
        "index": index,
        "sampled": sorted(_site_name(fed, n) for n in chosen),
    }


def run_train_round(fed: Federation, *, phase: str, round_: int, index: int) -> dict[str, Any]:
    plan = getattr(fed.experiment, phase)
    chosen, sample_rate = _select(
        fed, index=index, fraction=plan.fraction, min_sites=plan.min_sites
    )
    content = fed.instruction(phase=phase, round_=round_, index=index)
    ids, bytes_down = _push(fed, chosen=chosen, content=content, message_type=MessageType.TRAIN)
    del content
    node_sites = {n: _site_name(fed, n) for n in chosen}
    with UpdateSpool(parent=fed.run.root, global_state=fed.state) as spool:
        collected = collect_replies(
            stream_replies(fed.grid, ids, timeout_s=plan.timeout_s),
            node_sites=node_sites,
            node_joints={n: str(fed.sites.get(n, {}).get("joint", "")) for n in chosen},
            spool=spool,
        )
        if collected.ok_replies < plan.min_sites:
            raise RuntimeError(
                f"{phase} round {round_}: {collected.ok_replies} site(s) answered, "
                f"min_sites={plan.min_sites}; the round is not saved (resume with --resume "
                "once sites are back)"
            )
        result = aggregate_collected(
            collected,
            global_state=fed.state,
            aggregation=fed.experiment.aggregation,
            server_dp=fed.experiment.server_dp,
            accountant=fed.accountant,
            sample_rate=sample_rate,
            rng=np.random.default_rng([fed.experiment.seed, index, 1]),
            min_sites_per_group=plan.min_sites_per_group,
        )
    fed.state = result.state
    record = _base_record(fed, phase=phase, round_=round_, index=index, chosen=chosen)
    record.update(
        {
            "groups": result.groups,
            "rejected": [
                *result.rejected,
                *[
                    {"site": f["site"], "group": "*", "reason": f["reason"]}
                    for f in collected.failures
                ],
            ],
            "skipped_groups": result.skipped,
            "missing": sorted(_site_name(fed, n) for n in chosen if n not in collected.answered),
            "bytes_down": int(bytes_down),
            "bytes_up": int(collected.bytes_up),
            "metrics": collected.metrics,
        }
    )
    _add_privacy(fed, record, result.privacy)
    return record


def _add_privacy(fed: Federation, record: dict, privacy: dict) -> None:
    """This round's epsilon and DP inputs (site metrics, server `privacy`) carried over the
    run's earlier ones (`carry_privacy`): every history line holds the cumulative record."""
    site_eps = {s: m["epsilon"] for s, m in record["metrics"].items() if "epsilon" in m}
    site_dp = {}
    for site, m in record["metrics"].items():
        if "dp_noise_multiplier" in m:
            site_dp[site] = {
                "noise_multiplier": float(m["dp_noise_multiplier"]),
                "sample_rate": float(m["dp_sample_rate"]),
                "steps": int(m["dp_steps"]),
                "delta": float(m["dp_delta"]),
                "accountant": fed.experiment.client_dp.accountant,
            }
    group_eps = {g: float(v["epsilon"]) for g, v in privacy.items()}
    group_dp = {
        g: {k: v[k] for k in ("noise_multiplier", "sample_rate", "steps", "delta", "accountant")}
        for g, v in privacy.items()
    }
    current = {
        "epsilon": {"sites": site_eps, "groups": group_eps},
        "dp": {"sites": site_dp, "groups": group_dp},
    }
    record.update(carry_privacy(previous=_last_privacy(fed), current=current))


def _last_privacy(fed: Federation) -> dict | None:
    """The run's last history line that carries epsilon (it holds the cumulative values)."""
    return next((r for r in reversed(fed.run.read_history()) if r.get("epsilon")), None)


def run_evaluate_round(fed: Federation, *, round_: int, index: int) -> dict[str, Any]:
    plan = fed.experiment.evaluate
    chosen, _ = _select(fed, index=index, fraction=1.0, min_sites=plan.min_sites)
    content = fed.instruction(phase="evaluate", round_=round_, index=index)
    per_node = None
    if plan.cross_site:
        from fl_server.cross_site import evaluate_contents

        per_node = evaluate_contents(fed, base=content, chosen=chosen)
    replies, bytes_down = _send(
        fed,
        chosen=chosen,
        content=content,
        message_type=MessageType.EVALUATE,
        timeout_s=plan.timeout_s,
        per_node=per_node,
    )
    metrics: dict[str, dict[str, float]] = {}
    failures = []
    bytes_up = 0
    for reply in replies:
        site = _site_name(fed, reply.metadata.src_node_id)
        if reply.has_error():
            failures.append({"site": site, "group": "*", "reason": reply.error.reason})
            continue
        parsed = records.parse_reply(reply.content)
        bytes_up += records.record_bytes(reply.content)
        metrics[parsed["site_id"] or site] = dict(parsed["metrics"])
    answered = {r.metadata.src_node_id for r in replies}
    record = _base_record(fed, phase="evaluate", round_=round_, index=index, chosen=chosen)
    record.update(
        {
            "groups": {},
            "rejected": failures,
            "missing": sorted(_site_name(fed, n) for n in chosen if n not in answered),
            "bytes_down": int(bytes_down),
            "bytes_up": int(bytes_up),
            "metrics": metrics,
        }
    )
    if plan.cross_site:
        from fl_server.cross_site import finish_cross_site

        finish_cross_site(fed, record)
    record["weighted"] = weighted_metrics(metrics)
    _add_privacy(fed, record, {})  # nothing is spent here; the line still says what was
    return record


def weighted_metrics(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """Case-weighted mean of each metric over the sites that reported it (weight: n_cases)."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for values in metrics.values():
        n = float(values.get("n_cases", 0))
        for name, value in values.items():
            if (
                name in ("n_cases", "compute_s")
                or value is None
                or not np.isfinite(value)
                or n <= 0
            ):
                continue
            sums[name] = sums.get(name, 0.0) + n * float(value)
            weights[name] = weights.get(name, 0.0) + n
    return {name: sums[name] / weights[name] for name in sorted(sums)}
