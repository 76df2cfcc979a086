"""Seeds as parallel pinned processes (reproduce/parallel.py): core groups, the --jobs/--cores
arguments, and run_seeds with real child processes that report their own pin."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from reproduce import parallel
from reproduce.__main__ import main


@pytest.mark.parametrize(
    ("cores", "jobs", "expected"),
    [
        ([0, 1], 2, [[0], [1]]),
        ([0, 1], 1, [[0, 1]]),
        ([0, 1], 5, [[0], [1]]),
        ([3, 1, 2, 0, 4], 2, [[0, 1, 2], [3, 4]]),
        (list(range(16)), 3, [list(range(6)), list(range(6, 11)), list(range(11, 16))]),
    ],
)
def test_core_groups_split_every_core_once_evenly(cores, jobs, expected):
    groups = parallel.core_groups(cores, jobs)
    assert groups == expected
    assert sorted(c for g in groups for c in g) == sorted(cores)


@pytest.mark.parametrize(
    ("jobs", "seeds", "cores", "expected"),
    [(4, 3, 16, 3), (2, 3, 1, 1), (1, 3, 16, 1), (3, 3, 2, 2)],
)
def test_resolve_jobs_count_never_exceeds_seeds_or_cores(jobs, seeds, cores, expected):
    assert parallel.resolve_jobs(jobs, seeds=seeds, cores=cores) == expected


@pytest.mark.parametrize(
    ("seeds", "cores", "expected"), [(3, 2, 3), (3, 16, 3), (5, 2, 4), (1, 2, 1), (2, 1, 1)]
)
def test_resolve_auto_starts_every_seed_at_most_two_per_core_on_several(seeds, cores, expected):
    assert parallel.resolve_jobs("auto", seeds=seeds, cores=cores) == expected


@pytest.mark.parametrize(
    ("count", "cores", "expected"),
    [
        (2, [0, 1], [[0], [1]]),
        (1, [0, 1], [[0, 1]]),
        (3, [1, 0], [[0], [1], [0]]),
        (4, [0, 1], [[0], [1], [0], [1]]),
    ],
)
def test_start_groups_share_single_cores_only_when_seeds_outnumber_them(count, cores, expected):
    assert parallel.start_groups(count, cores) == expected


@pytest.mark.parametrize(
    ("pins", "cores", "expected"),
    [
        ({0: [0], 2: [0]}, [0, 1], {2: [1]}),  # seed 1 left core 1: the later sharer moves
        ({0: [0], 1: [1]}, [0, 1], {}),  # nobody shares
        ({0: [0], 2: [0]}, [0], {}),  # nowhere to go
        ({1: [1], 2: [0], 3: [1]}, [0, 1, 2], {3: [2]}),
        ({0: [0, 1]}, [0, 1, 2, 3], {}),  # groups of several cores stay
    ],
)
def test_moves_send_a_core_sharer_to_a_free_core(pins, cores, expected):
    assert parallel.moves(pins, cores) == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_bad_jobs_is_one_line(value, capsys):
    assert main(["--jobs", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --jobs {value!r}") and err.count("\n") == 1


@pytest.mark.parametrize("value", ["a,b", "", "-1"])
def test_bad_cores_is_one_line(value, capsys):
    assert main(["--cores", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --cores {value!r}") and err.count("\n") == 1


def test_only_seed_outside_the_run_is_refused_before_any_work(tmp_path, capsys):
    assert main(["--quick", "--only-seed", "1", "--out", str(tmp_path / "r")]) == 2
    assert "error: --only-seed 1: the run has seeds 0-0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


REPORT_PIN = """
import json, os, sys
from reproduce import parallel
parallel.pin_to(parallel.parse_cores(sys.argv[2]))
seed = int(sys.argv[1])
report = {"cores": sorted(os.sched_getaffinity(0)), "omp": os.environ["OMP_NUM_THREADS"]}
with open(sys.argv[3] + f"/seed-{seed}.json", "w") as handle:
    json.dump(report, handle)
sys.exit(seed)
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="pinning needs Linux")
def test_run_seeds_pins_each_child_to_its_own_group_in_waves(tmp_path):
    mine = parallel.usable_cores()
    jobs = min(2, len(mine))

    def command(seed: int, cores: list[int]) -> list[str]:
        pin = ",".join(map(str, cores))
        return [sys.executable, "-c", REPORT_PIN, str(seed), pin, str(tmp_path)]

    stream = io.StringIO()
    codes = parallel.run_seeds(seeds=[0, 1, 2], jobs=jobs, command=command, stream=stream)
    assert codes == {0: 0, 1: 1, 2: 2}  # every seed ran once, its own exit code kept
    seen = [json.loads((tmp_path / f"seed-{s}.json").read_text()) for s in range(3)]
    for report in seen:
        assert report["omp"] == str(len(report["cores"]))
    if jobs == 2:  # the first wave: two seeds side by side on disjoint groups
        assert [seen[0]["cores"], seen[1]["cores"]] == parallel.core_groups(mine, 2)
    assert seen[2]["cores"] == mine  # the last wave's one seed takes every core
    text = stream.getvalue()
    assert text.count("started on core(s)") == 3 and "seed 2: exited 2" in text


def test_seed_command_names_the_same_config_and_work_folder():
    command = parallel.seed_command(
        config_path=Path("/c/r.yaml"), out=Path("/o"), seeds=3, seed=1, cores=[2, 3]
    )
    assert command[1:] == [
        "-m", "reproduce", "--config", "/c/r.yaml", "--out", "/o", "--seeds", "3",
        "--only-seed", "1", "--cores", "2,3",
    ]  # fmt: skip


WAIT_FOR_MOVE = """
import json, os, subprocess, sys, threading, time
from reproduce import parallel
parallel.pin_to(parallel.parse_cores(sys.argv[2]))
seed, folder = int(sys.argv[1]), sys.argv[3]
if seed == 1:  # leaves first, freeing its core
    sys.exit(0)
started = sorted(os.sched_getaffinity(0))
worker = threading.Thread(target=time.sleep, args=(30,), daemon=True)
worker.start()
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # a grandchild
deadline = time.monotonic() + 20
other = os.path.join(folder, "seed-2.json")
while time.monotonic() < deadline:  # seed 2 until it moves, seed 0 until seed 2 reported
    moved = sorted(os.sched_getaffinity(0)) != started
    if (seed == 2 and moved) or (seed == 0 and os.path.exists(other)):
        break
    time.sleep(0.05)
report = {
    "started": started,
    "now": sorted(os.sched_getaffinity(0)),
    "thread": sorted(os.sched_getaffinity(worker.native_id)),
    "grandchild": sorted(os.sched_getaffinity(helper.pid)),
}
helper.kill()
with open(folder + f"/seed-{seed}.json", "w") as handle:
    json.dump(report, handle)
"""


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(parallel.usable_cores()) < 2,
    reason="moving a seed between cores needs Linux and two cores",
)
def test_more_seeds_than_cores_share_one_then_move_to_the_freed_core(tmp_path, monkeypatch):
    """Three seeds on two cores: seeds 0 and 2 start on the first core, seed 1 on the second;
    when seed 1 exits, seed 2 moves to its core, with the threads it had started."""
    cores = parallel.usable_cores()[:2]

    def command(seed: int, group: list[int]) -> list[str]:
        pin = ",".join(map(str, group))
        return [sys.executable, "-c", WAIT_FOR_MOVE, str(seed), pin, str(tmp_path)]

    stream = io.StringIO()
    monkeypatch.setattr(parallel, "usable_cores", lambda: cores)  # two, whatever the machine
    codes = parallel.run_seeds(seeds=[0, 1, 2], jobs=3, command=command, stream=stream)
    assert codes == {0: 0, 1: 0, 2: 0}
    seed0, seed2 = (json.loads((tmp_path / f"seed-{s}.json").read_text()) for s in (0, 2))
    assert seed0["started"] == seed2["started"] == [cores[0]]
    # moved, with its thread and the process it had started
    assert seed2["now"] == seed2["thread"] == seed2["grandchild"] == [cores[1]]
    assert seed0["now"] == seed0["grandchild"] == [cores[0]]  # the earlier sharer stays
    assert f"seed 2: moved to core(s) {cores[1]}" in stream.getvalue()
