"""The federation report: a self-contained HTML page from a run folder, finished or not."""

import json
import logging
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.cli import build_app
from core.reporting.federation_report import render_federation_report, write_federation_report
from core.reporting.federation_run import load_federation_run

SITES = ("knee-a", "knee-b", "ankle-c")
REJECT_REASON = "non-finite values in backbone.axial"


def _pretrain(round_: int, *, missing: bool = False) -> dict:
    losses = {
        "knee-a": {"loss/sagittal": 1.0 - 0.1 * round_, "loss/axial": 0.9, "compute_s": 2.0},
        "ankle-c": {"loss/sagittal": 0.8, "loss/coronal": 0.7 / round_, "compute_s": 3.5},
    }
    if not missing:
        losses["knee-b"] = {"loss/sagittal": 0.95, "compute_s": 1.0}
    return {
        "phase": "pretrain",
        "round": round_,
        "index": round_,
        "sampled": list(SITES),
        "groups": {
            "backbone.sagittal": {"sites": sorted(losses), "examples": 12 * len(losses)},
            "backbone.coronal": {"sites": ["ankle-c"], "examples": 8},
        },
        "rejected": [{"site": "knee-a", "group": "backbone.axial", "reason": REJECT_REASON}],
        "skipped_groups": [],
        "missing": ["knee-b"] if missing else [],
        "bytes_down": 3_000_000,
        "bytes_up": 2_500_000,
        "metrics": losses,
        "wall_s": 4.0,
        "epsilon": {
            "sites": {"knee-a": 1.5 * round_, "ankle-c": 2.0 * round_},
            "groups": {"backbone.sagittal": 0.8 * round_},
        },
        "dp": {
            "sites": {"knee-a": {"noise_multiplier": 1.1, "delta": 1e-5}},
            "groups": {"backbone.sagittal": {"noise_multiplier": 0.9, "delta": 1e-5}},
        },
    }


def _finetune(round_: int, index: int) -> dict:
    return {
        "phase": "finetune",
        "round": round_,
        "index": index,
        "sampled": list(SITES),
        "groups": {"head.knee.cls": {"sites": ["knee-a", "knee-b"], "examples": 20}},
        "rejected": [],
        "skipped_groups": [{"group": "head.ankle.cls", "reason": "privacy budget exhausted"}],
        "missing": [],
        "bytes_down": 3_100_000,
        "bytes_up": 40_000,
        "wall_s": 1.0,
        "metrics": {s: {"loss": 1.0 / round_, "compute_s": 0.5} for s in SITES},
    }


def _evaluate(index: int) -> dict:
    metrics = {
        "knee-a": {
            "n_cases": 4.0,
            "macro_auc": 0.75,
            "auc/acl_tear": 0.75,
            "mean_dice": 0.4,
            "dice/femur": 0.4,
        },
        "knee-b": {"n_cases": 2.0, "macro_auc": 0.5, "auc/acl_tear": 0.5},
        "ankle-c": {"n_cases": 3.0, "macro_auc": None, "auc/atfl_injury": float("nan")},
    }
    return {
        "phase": "evaluate",
        "round": 1,
        "index": index,
        "sampled": list(SITES),
        "groups": {},
        "rejected": [],
        "missing": [],
        "bytes_down": 3_100_000,
        "bytes_up": 0,
        "wall_s": 0.5,
        "metrics": metrics,
        "weighted": {"macro_auc": 0.666, "auc/acl_tear": 0.666},
    }


def _write_run(
    root: Path, records: list[dict], *, finished: bool, latest: int | None = None
) -> Path:
    (root / "global").mkdir(parents=True)
    with open(root / "history.jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    if records:
        index = latest if latest is not None else records[-1]["index"]
        checkpoint = f"global/round-{index:04d}.safetensors"
        (root / checkpoint).with_suffix(".json").write_text(
            json.dumps({"experiment": "synthetic-federation", "model_preset": "tiny"})
        )
        (root / "latest.json").write_text(json.dumps({"index": index, "checkpoint": checkpoint}))
    if finished:
        (root / "metrics.json").write_text(json.dumps({"rounds": len(records)}))
    return root


@pytest.fixture
def full_run(tmp_path):
    records = [
        _pretrain(1),
        _pretrain(2, missing=True),
        _finetune(1, 3),
        _finetune(2, 4),
        _evaluate(5),
    ]
    return _write_run(tmp_path / "run", records, finished=True)


def _assert_self_contained(text: str) -> None:
    assert "http://" not in text and "https://" not in text
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in text and "<link" not in text


def test_full_run_report_is_self_contained_and_complete(full_run):
    path = write_federation_report(full_run)
    assert path == full_run / "report.html"
    text = path.read_text()
    _assert_self_contained(text)
    assert len(re.findall(r"<img ", text)) >= 5  # pretrain, finetune, AUC bars, epsilon, traffic
    assert "synthetic-federation" in text and "finished" in text
    for site in SITES:
        assert site in text
    assert REJECT_REASON in text
    assert "did not answer" in text and "privacy budget exhausted" in text
    assert "Differential privacy was off" not in text
    assert "backbone.sagittal" in text and "noise multiplier" in text
    assert "Cross-site" not in text  # no cross_site.json -> section omitted
    assert "0.750" in text and "0.666" in text  # per-site and weighted macro AUC
    assert "<td>3.00</td><td>2.50</td>" in text  # MB down / up of a pretrain round


def test_participation_grid_marks_missing_rejected_and_groups(full_run):
    text = render_federation_report(load_federation_run(full_run))
    grid = text[text.index("Participation per group") : text.index("Per group:")]

    def cells(site: str) -> list[str]:
        row = re.search(rf'<tr><td class="text">{site}</td>(.*?)</tr>', grid).group(1)
        return re.findall(r"<td>(.*?)</td>", row)

    assert cells("knee-b") == ["sagittal", "missing", "knee.cls", "knee.cls", "eval"]
    assert cells("knee-a")[0] == "sagittal ✗ axial"
    assert cells("ankle-c")[2] == "none"  # sampled, its group skipped: contributed nothing


def test_run_in_progress_with_only_pretrain_rounds(tmp_path):
    records = [dict(_pretrain(1), epsilon=None), _pretrain(2)]
    records[1].pop("epsilon")
    records[1].pop("dp")
    extra = _pretrain(3)  # history line written, latest.json not yet: not a completed round
    root = _write_run(tmp_path / "run", [*records, extra], finished=False, latest=2)
    run = load_federation_run(root)
    assert len(run.history) == 2 and not run.finished
    text = write_federation_report(root).read_text()
    _assert_self_contained(text)
    assert "in progress" in text and "No evaluation round yet" in text
    assert "Differential privacy was off" in text
    assert ">P3<" not in text and ">P2<" in text


def test_empty_run_is_a_clear_error(tmp_path):
    root = _write_run(tmp_path / "run", [], finished=False)
    with pytest.raises(ValueError, match="has no completed round yet"):
        write_federation_report(root)
    with pytest.raises(ValueError, match="no such run folder"):
        write_federation_report(tmp_path / "nowhere")


def test_cross_site_matrix_rendered_when_present(full_run):
    matrix = {
        "models": ["global", "local:knee-a"],
        "sites": ["knee-a", "knee-b"],
        "macro_auc": [[0.812, 0.733], [0.901, None]],
    }
    (full_run / "cross_site.json").write_text(json.dumps(matrix))
    text = write_federation_report(full_run).read_text()
    section = text[text.index("Cross-site evaluation") :]
    assert "local:knee-a" in section and "0.812" in section and "0.901" in section
    assert section.count("<img ") == 1
    bad = {**matrix, "macro_auc": [[0.8, 0.7]]}  # one row for two models
    (full_run / "cross_site.json").write_text(json.dumps(bad))
    text = write_federation_report(full_run).read_text()  # the rest of the report still renders
    section = text[text.index("Cross-site evaluation") :]
    assert "one row per model (2)" in section and "<img " not in section
    assert "knee-a" in text[: text.index("Cross-site evaluation")]


def test_cli_writes_the_report_and_rejects_a_missing_folder(full_run, tmp_path):
    runner = CliRunner()
    out = tmp_path / "elsewhere" / "r.html"
    result = runner.invoke(build_app(), ["report", str(full_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "knee-a" in out.read_text()
    assert not (full_run / "report.html").exists()
    missing = runner.invoke(build_app(), ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "no such run folder" in missing.output and "Traceback" not in missing.output


def test_server_hook_warns_instead_of_failing(tmp_path, full_run, caplog):
    from fl_server.app import write_report_safely

    assert write_report_safely(full_run) == full_run / "report.html"
    with caplog.at_level(logging.WARNING, logger="orthofed.server"):
        assert write_report_safely(tmp_path / "no-run") is None
    assert "could not write the federation report" in caplog.text


def test_client_dp_run_without_losses(tmp_path):
    # under client DP sites report epsilon instead of (non-private) losses
    records = [_pretrain(1), _finetune(1, 2)]
    for record in records:
        for values in record["metrics"].values():
            for name in [n for n in values if n.startswith("loss")]:
                values.pop(name)
    root = _write_run(tmp_path / "run", records, finished=False, latest=2)
    text = write_federation_report(root).read_text()
    _assert_self_contained(text)
    assert "No site reported a training loss" in text
    assert "No site reported a fine-tuning loss" in text
