"""Resumable cells: finished cells are skipped, failures are kept apart, writes are atomic."""

from __future__ import annotations

import io
import json

import pytest

from reproduce.cells import Cell, CellCache, run_cells
from reproduce.config import load_reproduce_config
from reproduce.runner import check_fingerprint


def _counter(calls: list[str], key: str, value: float):
    def run():
        calls.append(key)
        return {"metrics": {"macro_auc": value}}

    return run


def _failing(calls: list[str], key: str):
    def run():
        calls.append(key)
        raise RuntimeError("boom")

    return run


def test_finished_cells_are_skipped_on_rerun(tmp_path):
    cache, calls, out = CellCache(tmp_path / "cells"), [], io.StringIO()
    cells = [
        Cell(key=f"s0.c{i}", run=_counter(calls, f"c{i}", 0.5 + i / 10), seed=0) for i in range(3)
    ]
    first = run_cells(cells, cache=cache, out=out)
    assert first.done == ["s0.c0", "s0.c1", "s0.c2"] and calls == ["c0", "c1", "c2"]
    saved = json.loads((tmp_path / "cells" / "s0.c1.json").read_text())
    assert saved["metrics"]["macro_auc"] == pytest.approx(0.6) and saved["seed"] == 0
    assert "seconds" in saved
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("[1/3] s0.c0: macro_auc 0.500")
    assert "elapsed" in lines[0]
    calls.clear()
    again = run_cells(cells, cache=cache, out=io.StringIO())
    assert calls == [] and again.cached == ["s0.c0", "s0.c1", "s0.c2"]


def test_a_failure_skips_its_dependents_only_and_a_rerun_resumes(tmp_path):
    cache, calls = CellCache(tmp_path / "cells"), []
    log = tmp_path / "failures.log"
    cells = [
        Cell(key="s0.fed", run=_failing(calls, "fed")),
        Cell(key="s0.uses-fed", run=_counter(calls, "uses-fed", 0.7), needs=["s0.fed"]),
        Cell(key="s0.other", run=_counter(calls, "other", 0.8)),
    ]
    outcome = run_cells(cells, cache=cache, out=io.StringIO(), log=log)
    assert calls == ["fed", "other"]
    assert set(outcome.failed) == {"s0.fed", "s0.uses-fed"}
    assert "boom" in outcome.failed["s0.fed"] and "RuntimeError: boom" in log.read_text()
    assert not cache.path("s0.fed").exists() and cache.get("s0.other") is not None
    # the fix is in: only the failed cell and its dependent run again
    calls.clear()
    cells[0].run = _counter(calls, "fed", 0.9)
    outcome = run_cells(cells, cache=cache, out=io.StringIO())
    assert calls == ["fed", "uses-fed"] and not outcome.failed
    assert outcome.cached == ["s0.other"]


def test_unreadable_cell_file_is_redone_and_no_temp_files_are_left(tmp_path):
    cache, calls = CellCache(tmp_path / "cells"), []
    cache.root.mkdir(parents=True)
    cache.path("s0.a").write_text('{"metrics": ')  # a torn file from some other writer
    run_cells([Cell(key="s0.a", run=_counter(calls, "a", 0.6))], cache=cache, out=io.StringIO())
    assert calls == ["a"] and cache.get("s0.a")["metrics"]["macro_auc"] == pytest.approx(0.6)
    assert sorted(p.name for p in cache.root.iterdir()) == ["s0.a.json"]


def test_bad_cell_keys_are_refused():
    with pytest.raises(ValueError, match="cell key"):
        Cell(key="s0/../x", run=dict)


def test_work_folder_of_another_configuration_is_refused(tmp_path):
    config = load_reproduce_config(quick=True)
    check_fingerprint(tmp_path, config)
    check_fingerprint(tmp_path, config)  # same configuration: fine
    config.federation.pretrain_steps += 1
    with pytest.raises(ValueError, match="another configuration"):
        check_fingerprint(tmp_path, config)
