"""One training round and the final evaluation round, as history.jsonl records."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from flwr.app import MessageType

from core.federation.accounting import carry_privacy
from core.federation.rundir import Phase
from core.federation.spool import UpdateSpool
from fl_client import records
from fl_server.cross_site import evaluate_contents, finish_cross_site
from fl_server.federation import Federation
from fl_server.messaging import (
    base_record,
    push,
    select_sites,
    send_and_collect,
    site_name,
    stream_replies,
)
from fl_server.strategy import aggregate_collected, collect_replies

log = logging.getLogger("orthofed.server")


def run_train_round(fed: Federation, *, phase: str, round_: int, index: int) -> dict[str, Any]:
    plan = getattr(fed.experiment, phase)
    chosen, sample_rate = select_sites(
        fed, index=index, fraction=plan.fraction, min_sites=plan.min_sites
    )
    content = fed.instruction(phase=phase, round_=round_, index=index)
    ids, bytes_down = push(fed, chosen=chosen, content=content, message_type=MessageType.TRAIN)
    del content
    node_sites = {n: site_name(fed, n) for n in chosen}
    with UpdateSpool(parent=fed.run.root, global_state=fed.state) as spool:
        collected = collect_replies(
            stream_replies(fed.grid, ids, timeout_s=plan.timeout_s),
            node_sites=node_sites,
            node_joints={n: str(fed.sites.get(n, {}).get("joint", "")) for n in chosen},
            message_nodes=dict(zip(ids, chosen, strict=True)),
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
    record = base_record(fed, phase=phase, round_=round_, index=index, chosen=chosen)
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
            "missing": sorted(site_name(fed, n) for n in chosen if n not in collected.answered),
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
    chosen, _ = select_sites(fed, index=index, fraction=1.0, min_sites=plan.min_sites)
    content = fed.instruction(phase=Phase.EVALUATE, round_=round_, index=index)
    per_node = None
    if plan.cross_site:
        per_node = evaluate_contents(fed, base=content, chosen=chosen)
    replies, bytes_down = send_and_collect(
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
        site = site_name(fed, reply.metadata.src_node_id)
        if reply.has_error():
            failures.append({"site": site, "group": "*", "reason": reply.error.reason})
            continue
        parsed = records.parse_reply(reply.content)
        bytes_up += records.record_bytes(reply.content)
        metrics[parsed["site_id"] or site] = dict(parsed["metrics"])
    answered = {r.metadata.src_node_id for r in replies}
    record = base_record(fed, phase=Phase.EVALUATE, round_=round_, index=index, chosen=chosen)
    record.update(
        {
            "groups": {},
            "rejected": failures,
            "missing": sorted(site_name(fed, n) for n in chosen if n not in answered),
            "bytes_down": int(bytes_down),
            "bytes_up": int(bytes_up),
            "metrics": metrics,
        }
    )
    if plan.cross_site:
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
