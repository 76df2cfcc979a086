"""Server memory during one aggregated round: peak RSS against the global model's size.

    python bench/server_memory.py --sites 30 --preset paper --json runs/bench/server_memory.json

The global model of the preset (all joints' heads, three view backbones) is built once and
written to a temporary safetensors file. A fresh process then plays the server's side of a
training round: it loads that model, receives one synthetic reply per site as a real Flower
`Message` (every group of the model, weights = global + small noise, example counts that
differ), and runs the same code a ServerApp runs (`fl_server.strategy.collect_replies` with
the on-disk spool, then `aggregate_collected`). Its peak RSS (VmHWM) is the figure.

`--in-memory` measures the path the server used before replies were spooled: every parsed
reply held until the round ends, then aggregated. The process imports what that round path
needs (Flower, numpy, safetensors); a whole ServerApp also holds torch and MONAI, whose
import RSS is printed separately (`server_import_rss_bytes`) because it does not grow with
the model or the number of sites.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Imports stay inside the functions: what each measured process loads is part of its RSS.


def build_global_state(preset: str, path: Path) -> int:
    """The preset's global model (every joint) saved to `path`; returns its bytes."""
    from safetensors.numpy import save_file

    from core.federation.model_state import to_numpy_state
    from core.models.presets import load_model_config
    from core.models.registry import build_model
    from core.views import Joint

    config = load_model_config(preset)
    state = {}
    for joint in Joint:
        for key, value in to_numpy_state(build_model(config, joint=joint, seed=0)).items():
            state.setdefault(key, value)
    save_file(state, str(path))
    return sum(v.nbytes for v in state.values())


def _perturbed(value, *, rng):
    """A site's trained weights: the global ones plus small noise (integers unchanged)."""
    import numpy as np

    if not np.issubdtype(value.dtype, np.floating):
        return value.copy()
    noise = rng.standard_normal(value.shape, dtype=np.float32).astype(value.dtype, copy=False)
    return value + noise * value.dtype.type(1e-3)


def _synthetic_replies(global_state: dict, *, sites: int):
    """One Flower reply Message per site, made only when the server asks for it."""
    import numpy as np
    from flwr.app import Array, ArrayRecord, MessageType, Metadata
    from flwr.app.message import make_message

    from core.federation.groups import split_groups
    from fl_client.records import ARRAYS, build_reply

    groups = split_groups(global_state)
    for index in range(sites):
        rng = np.random.default_rng(index)
        examples = {group: 10 + index for group in groups}
        content = build_reply(site_id=f"site-{index:02d}", arrays={}, examples=examples, metrics={})
        # Array by array, as bytes only: what a reply off the wire holds (one copy of the model).
        content[ARRAYS] = ArrayRecord(
            {key: Array(_perturbed(value, rng=rng)) for key, value in global_state.items()}
        )
        metadata = Metadata(
            run_id=1,
            message_id=f"reply-{index}",
            src_node_id=index + 1,
            dst_node_id=0,
            reply_to_message_id=f"instruction-{index}",
            group_id="",
            created_at=0.0,
            ttl=3600.0,
            message_type=MessageType.TRAIN,
        )
        yield make_message(metadata=metadata, content=content)


def _status_bytes(field: str) -> int:
    """A `/proc/self/status` memory figure (VmRSS now, VmHWM peak) in bytes. Not ru_maxrss:
    Linux carries that over fork and exec, so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} (this bench needs Linux)")


def measure(state_path: Path, *, sites: int, in_memory: bool) -> dict:
    """Runs in a fresh process: one round's collection and aggregation, peak RSS."""
    import numpy as np
    from safetensors.numpy import load_file

    from core.federation.config import AggregationConfig, ServerDPConfig
    from core.federation.spool import UpdateSpool
    from fl_server.strategy import aggregate_collected, collect_replies

    global_state = load_file(str(state_path))
    baseline = _status_bytes("VmRSS")
    node_sites = {i + 1: f"site-{i:02d}" for i in range(sites)}
    with (
        tempfile.TemporaryDirectory() as tmp,
        UpdateSpool(parent=Path(tmp), global_state=global_state) as spool,
    ):
        replies = _synthetic_replies(global_state, sites=sites)
        if in_memory:
            collected = _collect_in_memory(replies)
        else:
            collected = collect_replies(replies, node_sites=node_sites, spool=spool)
        result = aggregate_collected(
            collected,
            global_state=global_state,
            aggregation=AggregationConfig(),
            server_dp=ServerDPConfig(),
            accountant=None,
            sample_rate=1.0,
            rng=np.random.default_rng(0),
        )
    return {
        "baseline_rss_bytes": int(baseline),
        "peak_rss_bytes": _status_bytes("VmHWM"),
        "aggregated_groups": len(result.groups),
    }


def _collect_in_memory(replies):
    """The pre-spool path: every reply parsed into numpy and held until the round ends."""
    from core.federation.groups import group_of
    from core.federation.updates import GroupUpdate, SiteUpdate
    from fl_client.records import parse_reply
    from fl_server.strategy import CollectedReplies

    out = CollectedReplies()
    for msg in replies:
        parsed = parse_reply(msg.content)
        groups: dict = {}
        for key, value in parsed["arrays"].items():
            groups.setdefault(group_of(key), {})[key] = value
        out.updates.append(
            SiteUpdate(
                site_id=parsed["site_id"],
                groups={
                    g: GroupUpdate(arrays=a, num_examples=parsed["examples"][g])
                    for g, a in groups.items()
                },
            )
        )
    return out


def server_import_rss() -> int:
    """RSS of a process that has imported what a ServerApp imports (torch, MONAI, Flower)."""
    code = (
        "import fl_server.app, fl_server.rounds, bench.server_memory as b;"
        "print(b._status_bytes('VmHWM'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=30, help="sites replying (default 30)")
    parser.add_argument("--preset", default="paper", help="model preset (default paper)")
    parser.add_argument("--in-memory", action="store_true", help="the pre-spool path")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sites < 1:
        parser.error("--sites must be >= 1")
    if args.measure:
        print(json.dumps(measure(args.measure, sites=args.sites, in_memory=args.in_memory)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        state_path = Path(tmp) / "global.safetensors"
        model_bytes = build_global_state(args.preset, state_path)
        command = [
            sys.executable,
            __file__,
            "--measure",
            str(state_path),
            "--sites",
            str(args.sites),
        ]
        if args.in_memory:
            command.append("--in-memory")
        run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if run.returncode:
            sys.stderr.write(run.stderr)
            return run.returncode
        figures = json.loads(run.stdout.strip().splitlines()[-1])
    result = {
        "sites": args.sites,
        "preset": args.preset,
        "mode": "in-memory" if args.in_memory else "spooled",
        "peak_rss_bytes": figures["peak_rss_bytes"],
        "global_model_bytes": model_bytes,
        "ratio": figures["peak_rss_bytes"] / model_bytes,
        "baseline_rss_bytes": figures["baseline_rss_bytes"],
        "server_import_rss_bytes": server_import_rss(),
    }
    mib = 1 << 20
    print(
        f"server memory, {args.sites} sites, preset {args.preset} ({result['mode']}): "
        f"model {model_bytes / mib:.0f} MiB, peak RSS {result['peak_rss_bytes'] / mib:.0f} MiB "
        f"= {result['ratio']:.2f}x the model (after loading it: "
        f"{result['baseline_rss_bytes'] / mib:.0f} MiB); a ServerApp's imports add "
        f"{result['server_import_rss_bytes'] / mib:.0f} MiB"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
