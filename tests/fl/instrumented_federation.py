"""A real simulated federation with client mods that fault or watch the sites.

Run as `python -m tests.fl.instrumented_federation EXPERIMENT RUN_DIR [--hang-marker FILE
--hang-seconds S] [--capture DIR] [key=value ...]`: the real ServerApp and ClientApps in
Flower's simulation engine, with two Ray workers (one core each) so that other sites keep
training while one hangs.

- `--hang-marker/--hang-seconds`: partition 0 sleeps S seconds before its first train
  message (the marker file records that it did).
- `--capture DIR`: every reply a site sends is written to DIR as raw bytes (arrays) and
  JSON (configs, metrics), for the PHI scan.
- `--rss-log FILE`: after each train message a site appends one JSON line to FILE: its
  partition, the resident memory of its own process and of the server's (this one), in MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from flwr.app import MessageType

from fl_server.simulation import run_embedded


def hang_once(*, marker: Path, seconds: float):
    def mod(msg, context, call_next):
        first = int(context.node_config["partition-id"]) == 0 and not marker.exists()
        if msg.metadata.message_type == MessageType.TRAIN and first:
            marker.write_text(f"hung at {time.time():.3f}\n")
            time.sleep(seconds)
            with marker.open("a") as out:
                out.write(f"woke at {time.time():.3f}\n")
        return call_next(msg, context)

    return mod


def dump_reply(reply, *, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if reply.has_error():
        (folder / f"{name}.error.txt").write_text(str(reply.error.reason))
        return
    with (folder / f"{name}.bin").open("wb") as out:
        for key, record in reply.content.array_records.items():
            out.write(key.encode())
            for array_key, array in record.items():
                out.write(array_key.encode())
                out.write(array.data)
    texts = {
        key: dict(record)
        for key, record in [
            *reply.content.config_records.items(),
            *reply.content.metric_records.items(),
        ]
    }
    (folder / f"{name}.json").write_text(json.dumps(texts, default=str))


def capture_replies(*, folder: Path):
    def mod(msg, context, call_next):
        reply = call_next(msg, context)
        name = f"{context.node_config['partition-id']}-{msg.metadata.message_type}-{time.time_ns()}"
        dump_reply(reply, folder=folder, name=name)
        return reply

    return mod


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid` now (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def log_rss(*, path: Path, server_pid: int):
    def mod(msg, context, call_next):
        reply = call_next(msg, context)
        if msg.metadata.message_type == MessageType.TRAIN:
            line = {
                "partition": int(context.node_config["partition-id"]),
                "site_rss": rss_mib(os.getpid()),
                "server_rss": rss_mib(server_pid),
            }
            with path.open("a") as out:
                out.write(json.dumps(line) + "\n")
        return reply

    return mod


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("experiment")
    parser.add_argument("run_dir")
    parser.add_argument("--hang-marker", type=Path)
    parser.add_argument("--hang-seconds", type=float, default=0.0)
    parser.add_argument("--capture", type=Path)
    parser.add_argument("--rss-log", type=Path)
    args, overrides = parser.parse_known_args()
    mods = []
    if args.hang_marker:
        mods.append(hang_once(marker=args.hang_marker, seconds=args.hang_seconds))
    if args.capture:
        mods.append(capture_replies(folder=args.capture))
    if args.rss_log:
        mods.append(log_rss(path=args.rss_log, server_pid=os.getpid()))
    run_embedded(
        experiment_path=args.experiment,
        run_dir=args.run_dir,
        cpus_per_site=1,
        overrides=overrides,
        client_mods=mods,
    )


if __name__ == "__main__":
    main()
