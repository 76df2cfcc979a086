"""A federation in which one simulated site hangs on its first training message.

Run as `python -m tests.fl.hanging_site EXPERIMENT RUN_DIR MARKER SECONDS [key=value ...]`: the real
ServerApp and ClientApps in Flower's simulation engine, with a client mod that makes
partition 0 sleep SECONDS before its first train message (MARKER records that it did).
Two Ray workers (one core each), so the other sites keep training while it hangs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from flwr.app import MessageType

from fl_server.simulation import run_embedded


def hang_once(*, marker: Path, seconds: float):
    def mod(msg, context, call_next):
        first = int(context.node_config["partition-id"]) == 0 and not marker.exists()
        if msg.metadata.message_type == MessageType.TRAIN and first:
            marker.write_text(f"hung at {time.time():.1f}\n")
            time.sleep(seconds)
        return call_next(msg, context)

    return mod


if __name__ == "__main__":
    experiment, run_dir, marker, seconds = sys.argv[1:5]
    run_embedded(
        experiment_path=experiment, run_dir=run_dir, cpus_per_site=1, overrides=sys.argv[5:],
        client_mods=[hang_once(marker=Path(marker), seconds=float(seconds))],
    )
