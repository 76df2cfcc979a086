"""Seeds as parallel processes: `python -m reproduce --jobs N`.

The cells of one seed never need another seed's (plan.seed_cells), so seeds can run side by
side, each in its own `python -m reproduce --only-seed K` process pinned to its own share of
the cores (`--cores`), writing its finished cells into the same cache; the parent then reads
every cell from the cache and writes the tables. On the 2-core machine two single-core seeds
did 1.13-1.28x the work of one seed on both cores (README "Reproducing the paper's claims"; our
guess at why: the tiny UNets' operations are too small to keep two threads busy). The
federations' `orthofed federate` subprocesses and their Ray workers inherit the pin, so each
seed's threads stay on its own cores.

With more seeds than cores (`--jobs auto`: 3 seeds on 2 cores), every seed starts at once on
one core, the extra ones sharing a core, and when a seed finishes a seed that shares its core
moves (with its threads and subprocesses) to the freed one. Waves instead would leave a core
idle under the last seed, or give it a second thread that does less than a second seed
(above). A proxy of the 2-core machine (three single-thread tiny-UNet pretraining loops of 100
steps against two, then one on both cores): 46 s against 50 s.

Nothing here is a scheduler library's job: the unit is a whole seed (tens of minutes), there
are a few seeds, and the cache already makes every process resumable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from core.device import available_cores

REPO = Path(__file__).resolve().parents[1]
POLL_S = 1.0
# Polls after a move at which a seed is pinned again: threads or processes started while it
# moved follow; later ones inherit the moved parent's pin.
REPIN_POLLS = 3


def parse_jobs(value: str) -> int | str:
    """`--jobs`: a positive count or `auto` (every seed at once, at most two per core)."""
    if value == "auto":
        return value
    try:
        jobs = int(value)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise ValueError(f"--jobs {value!r}: give a positive number of processes, or 'auto'")
    return jobs


def resolve_jobs(jobs: int | str, *, seeds: int, cores: int) -> int:
    """How many seed processes to run at once: a count never exceeds the seeds or the cores;
    `auto` starts every seed (at most two per core), sharing cores when seeds outnumber them;
    on one core it runs the seeds in turn (sharing it would only add memory). With more than
    two seeds per core the next wave waits for the slowest seed of the last."""
    if jobs == "auto":
        return max(1, min(seeds, 2 * cores)) if cores > 1 else 1
    return max(1, min(int(jobs), seeds, cores))


def parse_cores(value: str) -> list[int]:
    """`--cores 0,1`: the CPU ids this process is pinned to."""
    try:
        cores = sorted({int(part) for part in value.split(",") if part.strip()})
    except ValueError:
        cores = []
    if not cores or min(cores) < 0:
        raise ValueError(f"--cores {value!r}: give CPU ids separated by commas, e.g. 0,1")
    return cores


def pin_to(cores: Sequence[int]) -> None:
    """Pin this process (and what it starts later) to `cores`, and size OpenMP on them; call
    before torch is imported. Where the OS cannot pin (no sched_setaffinity), only the thread
    count is set."""
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, set(cores))
        except OSError as err:
            cores_text = ",".join(map(str, cores))
            raise ValueError(f"--cores {cores_text}: cannot pin here ({err})") from None
    os.environ["OMP_NUM_THREADS"] = str(len(cores))


def core_groups(cores: Sequence[int], jobs: int) -> list[list[int]]:
    """`cores` split into `jobs` contiguous groups whose sizes differ by at most one."""
    cores = sorted(cores)
    jobs = max(1, min(jobs, len(cores)))
    size, extra = divmod(len(cores), jobs)
    groups, start = [], 0
    for index in range(jobs):
        end = start + size + (1 if index < extra else 0)
        groups.append(cores[start:end])
        start = end
    return groups


def start_groups(count: int, cores: Sequence[int]) -> list[list[int]]:
    """The cores of `count` seeds started together: disjoint groups (`core_groups`) when the
    cores suffice, else one core each, taken in turn (two seeds on the first core of 2 ...)."""
    cores = sorted(cores)
    if count <= len(cores):
        return core_groups(cores, count)
    return [[cores[index % len(cores)]] for index in range(count)]


def moves(pins: dict[int, list[int]], cores: Sequence[int]) -> dict[int, list[int]]:
    """Which running seeds (seed -> its cores, in start order) move now, and where: a seed on
    one core that an earlier seed also runs on moves to a core no seed uses, while any is."""
    used = {core for group in pins.values() for core in group}
    free = [core for core in sorted(cores) if core not in used]
    taken: set[int] = set()
    out = {}
    for seed, group in pins.items():
        if free and len(group) == 1 and group[0] in taken:
            out[seed] = [free.pop(0)]
        else:
            taken.update(group)
    return out


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc (Linux): a seed's federations and Ray workers."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # "pid (comm) state ppid ..."
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def repin_tree(pid: int, cores: Sequence[int]) -> int:
    """Pin every thread of a running process and of its descendants to `cores`; returns how
    many threads moved (0 where the OS has no /proc or cannot pin). Threads already started
    keep their count: a seed pinned to one core runs one thread wherever it moves."""
    if not hasattr(os, "sched_setaffinity") or not Path("/proc").is_dir():
        return 0
    moved = 0
    for process in _process_tree(pid):
        try:
            threads = [int(t.name) for t in Path(f"/proc/{process}/task").iterdir()]
        except OSError:
            continue
        for thread in threads:
            try:
                os.sched_setaffinity(thread, set(cores))
                moved += 1
            except OSError:
                pass
    return moved


def usable_cores() -> list[int]:
    """The CPU ids this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(available_cores()))


@dataclass
class SeedProcess:
    seed: int
    process: subprocess.Popen
    cores: list[int]
    repins_left: int = 0  # polls at which it is pinned to `cores` again after a move


def seed_command(*, config_path: Path, out: Path, seeds: int, seed: int, cores: list[int]):
    """The child's command line: the same config and work folder, one seed, pinned."""
    return [
        sys.executable,
        "-m",
        "reproduce",
        "--config",
        str(config_path),
        "--out",
        str(out),
        "--seeds",
        str(seeds),
        "--only-seed",
        str(seed),
        "--cores",
        ",".join(map(str, cores)),
    ]


def _start(seed: int, cores: list[int], *, command, stream: TextIO) -> SeedProcess:
    print(f"seed {seed}: started on core(s) {','.join(map(str, cores))}", file=stream, flush=True)
    # Its own session, so that stopping the seed stops its federations' subprocesses with it
    # (killpg); its progress lines go to the parent's stdout (each names its seed: sK.<cell>).
    process = subprocess.Popen(command(seed, cores), cwd=REPO, start_new_session=True)
    return SeedProcess(seed=seed, process=process, cores=list(cores))


def _stop(children: list[SeedProcess]) -> None:
    """SIGTERM to each child's process group, then SIGKILL to what is left after 30 s."""
    for child in children:
        _signal_group(child.process, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(child.process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def run_seeds(*, seeds: list[int], jobs: int, command, stream: TextIO) -> dict[int, int]:
    """Run `command(seed, cores)` for every seed in waves of at most `jobs`; returns each
    seed's exit code. A wave's seeds get their own groups of all the cores, or, when they
    outnumber the cores, one core each, shared (`start_groups`); as seeds exit, a seed that
    shares a core moves to a freed one (`moves`, `repin_tree`). A signal or an error here
    stops every child before it propagates: no seed is left running unseen (each keeps its
    finished cells in the cache, so a rerun resumes)."""
    queue, codes = list(seeds), {}
    running: list[SeedProcess] = []
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while queue:
            wave, queue = queue[:jobs], queue[jobs:]
            cores = usable_cores()
            running = [
                _start(seed, group, command=command, stream=stream)
                for seed, group in zip(wave, start_groups(len(wave), cores), strict=True)
            ]
            while running:
                time.sleep(POLL_S)
                exited = [c for c in running if c.process.poll() is not None]
                for child in exited:
                    running.remove(child)
                    codes[child.seed] = child.process.returncode
                    print(f"seed {child.seed}: exited {codes[child.seed]}", file=stream, flush=True)
                if exited:
                    _rebalance(running, cores=cores, stream=stream)
                for child in running:
                    if child.repins_left > 0:
                        child.repins_left -= 1
                        repin_tree(child.process.pid, child.cores)
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(running)
    return codes


def _rebalance(running: list[SeedProcess], *, cores: list[int], stream: TextIO) -> None:
    """Move seeds that share a core onto cores the exited seeds freed."""
    by_seed = {child.seed: child for child in running}
    for seed, group in moves({c.seed: c.cores for c in running}, cores).items():
        child = by_seed[seed]
        if repin_tree(child.process.pid, group) == 0:  # no /proc, or not allowed: it stays
            continue
        child.cores, child.repins_left = group, REPIN_POLLS
        cores_text = ",".join(map(str, group))
        print(f"seed {seed}: moved to core(s) {cores_text}", file=stream, flush=True)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
