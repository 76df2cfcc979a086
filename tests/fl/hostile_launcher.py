"""A registered site turned hostile, for tests only: `fl_client.warm_launcher` serving a
SuperNode's tasks, but each forked child wraps the real ClientApp and tampers with its
reply's weights before Flower sends it (issue 15's hostile updates, through a real TLS
deployment). Never part of the FAB or the product.

    python -m tests.fl.hostile_launcher --runtime-api-address 127.0.0.1:PORT --parent-pid PID

What it sends, by pretraining round (the honest reply's groups, each spoilt one way):
round 1: NaN in backbone.sagittal, a wrong shape in backbone.coronal, float64 in
backbone.axial, and a group the global model has not (head.shoulder.seg); round 2: a 1e6-norm
backbone.sagittal, an unknown key in backbone.coronal, Inf in backbone.axial.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from flwr.app import Message

from fl_client import records, warm_launcher

# round -> {group: (attack, part of the reason the server records)}
ATTACKS = {
    1: {
        "backbone.sagittal": ("nan", "non-finite"),
        "backbone.coronal": ("shape", "wrong shape"),
        "backbone.axial": ("float64", "wrong dtype"),
        "head.shoulder.seg": ("foreign", "not part of the global model"),
    },
    2: {
        "backbone.sagittal": ("norm", "update norm"),
        "backbone.coronal": ("unknown_key", "unknown keys"),
        "backbone.axial": ("inf", "non-finite"),
    },
}


def spoil(arrays: dict[str, np.ndarray], *, group: str, attack: str) -> None:
    """Spoil `group` of `arrays` in place."""
    keys = [k for k in arrays if k.startswith(group + ".")]
    first = keys[0] if keys else ""
    if attack == "nan":
        arrays[first] = arrays[first].copy()
        arrays[first].flat[0] = np.nan
    elif attack == "inf":
        arrays[first] = arrays[first].copy()
        arrays[first].flat[-1] = np.inf
    elif attack == "shape":
        arrays[first] = arrays[first].reshape(-1)[:-1].copy()
    elif attack == "float64":
        arrays[first] = arrays[first].astype(np.float64)
    elif attack == "unknown_key":
        arrays[f"{group}.smuggled.weight"] = np.zeros((2, 2), np.float32)
    elif attack == "norm":  # finite, right shapes: a delta of L2 norm ~1e6 over the group
        size = sum(arrays[k].size for k in keys)
        for key in keys:
            arrays[key] = arrays[key] + np.float32(1e6 / np.sqrt(size))
    elif attack == "foreign":
        arrays[f"{group}.conv.weight"] = np.full((2, 3), 1e6, np.float32)


class HostileApp:
    """Calls the real ClientApp, then spoils its pretraining reply."""

    def __init__(self, honest) -> None:
        self.honest = honest

    def __call__(self, *, message: Message, context) -> Message:
        reply = self.honest(message=message, context=context)
        if reply.has_error() or records.CONFIG not in message.content:  # e.g. discovery
            return reply
        config = message.content[records.CONFIG]
        round_ = int(config.get(records.ROUND, 0))
        if config.get(records.PHASE) != "pretrain" or round_ not in ATTACKS:
            return reply
        parsed = records.parse_reply(reply.content)
        arrays, examples = dict(parsed["arrays"]), dict(parsed["examples"])
        for group, (attack, _) in ATTACKS[round_].items():
            spoil(arrays, group=group, attack=attack)
            examples.setdefault(group, 5)
        content = records.build_reply(
            site_id=parsed["site_id"], arrays=arrays, examples=examples, metrics=parsed["metrics"]
        )
        return Message(content, reply_to=message)


class HostileExecutor(warm_launcher.ForkExecutor):
    def launch(self, spec):
        if spec.task_type != warm_launcher.CLIENTAPP_TASK:
            return super().launch(spec)
        pid = os.fork()
        if pid == 0:
            _wrap_the_clientapp_loader()
            os._exit(warm_launcher._run_child(spec))
        self.children.add(pid)
        return warm_launcher.LaunchResult.accepted()


def _wrap_the_clientapp_loader() -> None:
    from flwr.supernode.runtime import run_clientapp

    real = run_clientapp.get_load_client_app_fn

    def loader(*args, **kwargs):
        load = real(*args, **kwargs)
        return lambda *ids: HostileApp(load(*ids))

    run_clientapp.get_load_client_app_fn = loader


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args()
    from flwr.supercore.app_utils import start_parent_process_monitor

    start_parent_process_monitor(args.parent_pid)
    warm_launcher.serve(runtime_api_address=args.runtime_api_address, executor=HostileExecutor())


if __name__ == "__main__":
    main()
