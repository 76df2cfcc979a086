"""Suite-wide ordering for `make test` (two workers, one file at a time, `--dist loadfile
--no-loadscope-reorder`, so that xdist hands out files in this order instead of by test
count): the longest files first, longest-processing-time-first, so that the workers end
together on the many short tests instead of one waiting on a long file started last.
The order is by measured minutes (`make test PYTEST_ADDOPTS=--durations=0`, summed per file,
2-core machine, 2026-12): a Flower deployment, `reproduce --quick`, the simulation faults and
soak, the simulation contract, the hostile deployment, cross-site; then the rest of the
Flower and reproduction tests, then everything else in collection order."""

from __future__ import annotations

LONGEST_FIRST = (
    "tests/fl/test_deployment.py",  # ~240 s of one worker
    "tests/reproduce/test_quick_run.py",  # ~165 s (two runs, the second with 2 seeds in parallel)
    "tests/fl/test_simulation_faults.py",  # ~160 s
    "tests/fl/test_simulation.py",  # ~100 s
    "tests/fl/test_deployment_hostile.py",  # ~60 s
    "tests/fl/test_cross_site.py",  # ~50 s
    "tests/fl/test_no_phi.py",  # ~20 s
)
SLOW_DIRS = ("tests/fl/", "tests/reproduce/")


def _rank(nodeid: str) -> int:
    path = nodeid.split("::", 1)[0]
    if path in LONGEST_FIRST:
        return LONGEST_FIRST.index(path)
    return len(LONGEST_FIRST) + (0 if path.startswith(SLOW_DIRS) else 1)


def pytest_collection_modifyitems(config, items) -> None:
    items.sort(key=lambda item: _rank(item.nodeid))  # stable: file order kept within a rank
