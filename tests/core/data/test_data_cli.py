"""`orthofed data init|check|prepare` through the real CLI: exit codes 0/1/2, JSON contract,
one-line errors without tracebacks, and the site folder left untouched."""

from __future__ import annotations

import hashlib
import json

from typer.testing import CliRunner

from core.cli import build_app
from core.views import VIEWS
from tests.core.data import dicom_factory as factory

RUNNER = CliRunner()


def _run(*args: str):
    return RUNNER.invoke(build_app(), list(args))


def _site(root, *, labels: str):
    for c in range(2):
        for i, view in enumerate(VIEWS):
            factory.write_series(
                root / f"case-{c}" / f"s{i}", view=view.value, n_slices=10, seed=c * 10 + i
            )
    (root / "labels.csv").write_text(
        "case_id,atfl_injury,cfl_injury,achilles_tendon_rupture,osteochondral_lesion_talus\n"
        + labels
    )
    return root


def _hashes(root):
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_clean_site_exits_0_with_json_contract(tmp_path):
    site = _site(tmp_path / "s", labels="case-0,1,0,0,1\n")
    before = _hashes(site)
    result = _run("data", "check", str(site), "--joint", "ankle", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) == {"ok", "joint", "problems", "cases"} and report["ok"] is True
    case = report["cases"][0]
    assert set(case) == {"case_id", "ok", "views", "missing_views", "labels", "problems"}
    assert case["views"]["sagittal"]["slices"] == 10
    assert report["cases"][1]["labels"] is None  # unlabelled cases are fine
    assert _hashes(site) == before


def test_problems_exit_1_and_name_case_and_file(tmp_path):
    site = _site(tmp_path / "s", labels="case-0,2,0,0,1\ncase-9,0,0,0,0\n")
    factory.write_garbage(site / "case-1" / "s0" / "IM7777.dcm")
    result = _run("data", "check", str(site), "--joint", "ankle")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "case-1" in text and "IM7777" in text
    assert "case-9" in text  # a label row for an unknown case


def test_usage_errors_exit_2_without_traceback(tmp_path):
    result = _run("data", "check", str(tmp_path / "missing"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    (tmp_path / "empty").mkdir()
    result = _run("data", "check", str(tmp_path / "empty"))  # no manifest and no --joint
    assert result.exit_code == 2 and "--joint" in result.output


def test_init_then_prepare_is_a_noop_the_second_time(tmp_path):
    site = _site(tmp_path / "s", labels="case-0,1,0,0,1\n")
    result = _run("data", "init", str(site), "--joint", "ankle", "--cache-dir", str(tmp_path / "c"))
    assert result.exit_code == 0 and (site / "site.yaml").is_file()
    first = _run("data", "prepare", str(site), "--slices", "8", "--size", "16")
    assert first.exit_code == 0 and "2 prepared" in first.output
    second = _run("data", "prepare", str(site), "--slices", "8", "--size", "16")
    assert second.exit_code == 0 and "0 prepared, 2 unchanged" in second.output


def _one_line_error(result) -> str:
    assert "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    return line


def test_check_refuses_one_case_folder(tmp_path):
    site = _site(tmp_path / "s", labels="case-0,1,0,0,1\n")
    result = _run("data", "check", str(site / "case-0"), "--joint", "ankle")
    assert result.exit_code == 2, result.output
    line = _one_line_error(result)
    assert "looks like one case" in line and "point data check at the site folder" in line
    factory.write_series(tmp_path / "flat", view="sagittal", n_slices=10)  # images at its top
    result = _run("data", "prepare", str(tmp_path / "flat"), "--joint", "knee")
    assert result.exit_code == 2 and "looks like one case" in _one_line_error(result)
    assert not (tmp_path / "flat" / "site.yaml").exists()


def test_init_refuses_a_folder_without_case_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _run("data", "init", str(tmp_path / "empty"), "--joint", "knee")
    assert result.exit_code == 1 and "no case folders found" in _one_line_error(result)
    assert list((tmp_path / "empty").iterdir()) == []  # nothing written
    site = _site(tmp_path / "s", labels="")
    result = _run("data", "init", str(site / "case-1"), "--joint", "ankle")
    assert result.exit_code == 2 and "point data init at the site folder" in result.output
    assert not (site / "case-1" / "site.yaml").exists()
    result = _run("data", "init", str(site), "--joint", "ankle")
    assert result.exit_code == 0 and "joint: ankle" in (site / "site.yaml").read_text()


def test_prepare_on_junk_exits_1(tmp_path):
    junk = tmp_path / "junk"
    for c in range(2):
        factory.write_garbage(junk / f"case-{c}" / "IM0001.dcm", seed=c)
    (junk / "case-2").mkdir()
    (junk / "case-2" / "notes.txt").write_text("not an image")
    args = ["--joint", "knee", "--slices", "8", "--size", "16"]
    result = _run("data", "prepare", str(junk), *args)
    assert result.exit_code == 1, result.output
    assert "nothing usable found" in _one_line_error(result)
    (tmp_path / "none").mkdir()
    result = _run("data", "prepare", str(tmp_path / "none"), *args)
    assert result.exit_code == 1 and "no case folders found" in _one_line_error(result)
