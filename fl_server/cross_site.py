"""The cross-site rounds (`evaluate.cross_site`): Flower messages around core.federation.cross_site.

1. `local-only` round (before evaluate): every site gets the federation's initial weights and
   schedule, trains its local-only model alone, and sends it; the server keeps each as a full
   checkpoint in RUN_DIR/local/ (the global model is unchanged by this round).
2. The evaluate round then sends every site the global model plus the local-only models of
   its joint (extra ArrayRecords `local/<site>`); each site reports `cross/<site>/macro_auc`
   next to its usual metrics, and the server writes RUN_DIR/cross_site.json.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flwr.app import MessageType, RecordDict

from core.config import to_dict
from core.federation.cross_site import (
    cross_site_matrix,
    load_local_models,
    local_model_path,
    merge_local_model,
    save_local_model,
    write_cross_site,
)
from core.federation.model_state import initial_global_state, round_manifest
from core.train.local_only import LocalOnlyPlan
from core.train.site_task import CROSS_PREFIX, LOCAL_ONLY
from fl_client import records
from fl_server.federation import Federation
from fl_server.messaging import base_record, select_sites, send_and_collect, site_name

log = logging.getLogger("orthofed.server")


def local_only_instruction(fed: Federation, *, index: int, initial: dict[str, Any]) -> RecordDict:

    exp = fed.experiment
    plan = LocalOnlyPlan(
        pretrain=exp.pretrain.train,
        finetune=exp.finetune.train,
        pretrain_rounds=exp.pretrain.rounds,
        finetune_rounds=exp.finetune.rounds,
    )
    params = {"model": json.dumps(to_dict(fed.model_config)), "train": json.dumps(plan.to_json())}
    return records.build_instruction(
        arrays=initial,
        phase=LOCAL_ONLY,
        round_=1,
        index=index,
        seed=exp.seed,
        params=params,
    )


def local_only_timeout(fed: Federation) -> float:
    """As long as the federation's own training rounds may take, one after another."""
    exp = fed.experiment
    return max(
        exp.evaluate.timeout_s,
        exp.pretrain.timeout_s * exp.pretrain.rounds + exp.finetune.timeout_s * exp.finetune.rounds,
    )


def run_local_only_round(fed: Federation, *, round_: int, index: int) -> dict[str, Any]:

    chosen, _ = select_sites(
        fed, index=index, fraction=1.0, min_sites=fed.experiment.evaluate.min_sites
    )
    initial = initial_global_state(fed.experiment, model_config=fed.model_config)
    content = local_only_instruction(fed, index=index, initial=initial)
    replies, bytes_down = send_and_collect(
        fed,
        chosen=chosen,
        content=content,
        message_type=MessageType.TRAIN,
        timeout_s=local_only_timeout(fed),
    )
    failures, metrics, bytes_up = [], {}, 0
    for reply in replies:
        site = site_name(fed, reply.metadata.src_node_id)
        try:
            if reply.has_error():
                raise ValueError(reply.error.reason)
            parsed = records.parse_reply(reply.content)
            bytes_up += records.record_bytes(reply.content)
            site = parsed["site_id"] or site
            state = merge_local_model(
                initial=initial, arrays=parsed["arrays"], examples=parsed["examples"]
            )
        except ValueError as err:
            failures.append({"site": site, "group": "*", "reason": str(err)})
            continue
        manifest = round_manifest(
            fed.experiment,
            model_config=fed.model_config,
            phase=LOCAL_ONLY,
            round_=round_,
            keys=list(state),
        )
        save_local_model(
            fed.run.root, site=site, state=state, manifest={**manifest, "kind": LOCAL_ONLY}
        )
        metrics[site] = dict(parsed["metrics"])
    answered = {r.metadata.src_node_id for r in replies}
    record = base_record(fed, phase=LOCAL_ONLY, round_=round_, index=index, chosen=chosen)
    record.update(
        {
            "groups": {},
            "rejected": failures,
            "metrics": metrics,
            "missing": sorted(site_name(fed, n) for n in chosen if n not in answered),
            "bytes_down": int(bytes_down),
            "bytes_up": int(bytes_up),
        }
    )
    return record


def evaluate_contents(
    fed: Federation, *, base: RecordDict, chosen: list[int]
) -> dict[int, RecordDict]:
    """Per node: the evaluate instruction plus the local-only models of that node's joint."""
    joints = {n: str(fed.sites.get(n, {}).get("joint", "")) for n in chosen}
    names = sorted(site_name(fed, n) for n in chosen)
    models = load_local_models(fed.run.root, sites=names, order=list(fed.state))
    joint_of_site = {site_name(fed, n): joints[n] for n in chosen}
    contents = {}
    for node in chosen:
        content = RecordDict(dict(base.items()))
        for site, state in models.items():
            if joint_of_site.get(site) == joints[node]:
                content[f"{records.LOCAL_MODEL_PREFIX}{site}"] = records.arrays_to_record(state)
        contents[node] = content
    return contents


def finish_cross_site(fed: Federation, record: dict[str, Any]) -> None:
    """Move `cross/...` metrics out of the per-site metrics into the matrix file."""
    reported = {
        k[len(CROSS_PREFIX) :].rsplit("/", 1)[0]
        for m in record["metrics"].values()
        for k in m
        if k.startswith(CROSS_PREFIX)
    }
    kept = {s for s in record["sampled"] if local_model_path(fed.run.root, s).is_file()}
    local_sites = sorted(reported | kept)  # a model nobody could score still gets a null row
    matrix = cross_site_matrix(record["metrics"], local_sites=local_sites, prefix=CROSS_PREFIX)
    for values in record["metrics"].values():
        for key in [k for k in values if k.startswith(CROSS_PREFIX)]:
            values.pop(key)
    record["cross_site"] = matrix
    path = write_cross_site(fed.run.root, matrix)
    log.info("cross-site matrix: %s", path)
