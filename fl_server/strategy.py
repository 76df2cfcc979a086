"""Flower adapter: FedAvg whose `aggregate_train` aggregates per weight group.

Stock FedAvg requires every reply to carry the same ArrayRecord keys, but a site sends only
the groups it trained (its joint's heads, the views it has). So this subclass overrides the
narrowest hook, `aggregate_train`, and hands the maths to `core.federation.aggregate_round`
(validation, per-group weighted/robust/DP aggregation, accounting). Nothing numeric here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg

from core.federation.config import AggregationConfig, ServerDPConfig
from core.federation.groups import group_of
from core.federation.server_round import RoundResult, aggregate_round
from core.federation.updates import GroupUpdate, SiteUpdate
from fl_client.records import NUM_EXAMPLES, arrays_to_record, parse_reply, record_bytes


@dataclass
class RoundContext:
    """What `aggregate_train` needs besides the replies (set by the ServerApp each round)."""

    global_state: dict[str, np.ndarray]
    node_sites: dict[int, str]
    sample_rate: float
    rng: np.random.Generator
    min_sites_per_group: int = 1


@dataclass
class RoundOutcome:
    result: RoundResult | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    bytes_up: int = 0


def _to_site_update(site_id: str, parsed: Mapping[str, Any]) -> SiteUpdate:
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in parsed["arrays"].items():
        groups.setdefault(group_of(key), {})[key] = value
    missing = sorted(set(groups) - set(parsed["examples"]))
    if missing:
        raise ValueError(f"malformed reply: no example count for group(s) {missing}")
    return SiteUpdate(
        site_id=site_id,
        groups={
            g: GroupUpdate(arrays=a, num_examples=parsed["examples"][g]) for g, a in groups.items()
        },
    )


class PerGroupFedAvg(FedAvg):
    """FedAvg with per-group aggregation; see the module docstring."""

    def __init__(
        self,
        *,
        aggregation: AggregationConfig,
        server_dp: ServerDPConfig,
        accountant: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aggregation = aggregation
        self.server_dp = server_dp
        self.accountant = accountant
        self.context: RoundContext | None = None
        self.outcome = RoundOutcome()

    def _collect(self, replies: Iterable[Message]) -> list[SiteUpdate]:
        ctx = self.context
        updates: list[SiteUpdate] = []
        for msg in replies:
            site = ctx.node_sites.get(msg.metadata.src_node_id, f"node-{msg.metadata.src_node_id}")
            if msg.has_error():
                self.outcome.failures.append({"site": site, "reason": msg.error.reason})
                continue
            try:
                self.outcome.bytes_up += record_bytes(msg.content)
                parsed = parse_reply(msg.content)
                site = parsed["site_id"] or site
                if parsed["refused"]:
                    self.outcome.failures.append({"site": site, "reason": parsed["refused"]})
                    continue
                self.outcome.metrics[site] = dict(parsed["metrics"])
                updates.append(_to_site_update(site, parsed))
            except (ValueError, KeyError, TypeError) as err:
                reason = str(err) if "malformed" in str(err) else f"malformed reply: {err}"
                self.outcome.failures.append({"site": site, "reason": reason})
        return updates

    def _enough_sites(self, updates: list[SiteUpdate]) -> tuple[list[SiteUpdate], list[dict]]:
        """Drop groups sent by fewer than `min_sites_per_group` sites (they keep their value)."""
        need = self.context.min_sites_per_group
        counts: dict[str, int] = {}
        for update in updates:
            for group in update.groups:
                counts[group] = counts.get(group, 0) + 1
        thin = {g for g, n in counts.items() if n < need}
        if not thin:
            return updates, []
        kept = [
            SiteUpdate(
                site_id=u.site_id, groups={g: v for g, v in u.groups.items() if g not in thin}
            )
            for u in updates
        ]
        reasons = [
            {"group": g, "reason": f"only {counts[g]} site(s) sent it; min_sites_per_group={need}"}
            for g in sorted(thin)
        ]
        return kept, reasons

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self.context is None:
            raise RuntimeError("PerGroupFedAvg.context must be set before aggregate_train")
        self.outcome = RoundOutcome()
        updates, thin = self._enough_sites(self._collect(replies))
        result = aggregate_round(
            global_state=self.context.global_state,
            updates=updates,
            config=self.aggregation,
            dp=self.server_dp,
            rng=self.context.rng,
            accountant=self.accountant,
            sample_rate=self.context.sample_rate,
        )
        if thin:
            result = RoundResult(
                state=result.state,
                groups=result.groups,
                rejected=result.rejected,
                privacy=result.privacy,
                skipped=[*result.skipped, *thin],
            )
        self.outcome.result = result
        examples = sum(int(v["examples"]) for v in result.groups.values())
        return arrays_to_record(result.state), MetricRecord({NUM_EXAMPLES: examples})
