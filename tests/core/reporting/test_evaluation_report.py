"""`orthofed evaluate` writes metrics.json and a self-contained report.html (site reading
mocked with tiny random cases; the checkpoint is a freshly built tiny model)."""

import dataclasses
import json
import re

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from core.checkpoint import save_checkpoint
from core.commands import model as model_commands
from core.config import ModelConfig, PreprocessConfig, load_config, to_dict
from core.data.manifest import SiteManifest, load_site, write_manifest
from core.models.registry import build_model
from core.reporting.evaluation_report import representative_slice
from core.views import KNEE_STRUCTURES, LABELS, VIEWS, Joint
from tests.core.tiny_model import TINY_MODEL, random_case


def _checkpoint(path, *, joint: Joint):
    config = load_config(ModelConfig, data=TINY_MODEL)
    model = build_model(config, joint=joint)
    save_checkpoint(
        path,
        tensors=model.state_dict(),
        config={"model": to_dict(config)},
        preset="test",
        preprocess_key="k",
        extra={"joint": joint.value},
    )
    return path


def _cli(tmp_path, monkeypatch, *, joint: Joint):
    site_dir = tmp_path / f"site-{joint.value}"
    site_dir.mkdir()
    write_manifest(SiteManifest(joint=joint.value, site_id="hospital-a"), site_dir / "site.yaml")
    rng = np.random.default_rng(0)
    cases = [
        random_case(
            f"c{i}", joint=joint, rng=rng, heldout=i >= 6, missing=(VIEWS[1],) if i == 7 else ()
        )
        for i in range(10)
    ]
    cases[9] = dataclasses.replace(cases[9], labels=None)  # unlabeled held-out case

    def fake_site_cases(site_path, *, model_config):
        return load_site(site_path), cases, PreprocessConfig(slices=8, size=32).key()

    monkeypatch.setattr(model_commands, "_site_cases", fake_site_cases)
    cli = typer.Typer()
    model_commands.register(cli)
    return cli, site_dir


def _evaluate(cli, *, site, checkpoint, out):
    args = ["evaluate", "--site", str(site), "--checkpoint", str(checkpoint), "--out", str(out)]
    return CliRunner().invoke(cli, args)


@pytest.mark.parametrize("joint", [Joint.KNEE, Joint.ANKLE])
def test_evaluate_writes_metrics_and_a_self_contained_report(tmp_path, monkeypatch, joint):
    cli, site = _cli(tmp_path, monkeypatch, joint=joint)
    ckpt = _checkpoint(tmp_path / "ft" / "checkpoint.safetensors", joint=joint)
    result = _evaluate(cli, site=site, checkpoint=ckpt, out=tmp_path / "rep")
    assert result.exit_code == 0, result.output
    assert "4 held-out cases (1 unlabeled, skipped)" in result.output
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert (metrics["n_cases"], metrics["n_labeled"], metrics["n_unlabeled_skipped"]) == (4, 3, 1)
    assert metrics["n_threshold_cases"] == 6
    for key in ("auc", "auc_ci", "threshold", "sensitivity", "specificity"):
        assert list(metrics[key]) == list(LABELS[joint])
    assert {"macro_auc", "macro_auc_ci", "calibration_error"} <= set(metrics)
    html = (tmp_path / "rep" / "report.html").read_text()
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)  # nothing outside the file
    images = re.findall(r'src="data:image/png;base64,', html)
    assert str(ckpt) in html and "hospital-a" in html and f"joint {joint.value}" in html
    for label in LABELS[joint]:
        assert f'<td class="text">{label}</td>' in html
    for title in ("Summary", "ROC curves", "Calibration", "Case counts"):
        assert f"<h2>{title}</h2>" in html
    assert "1 of 4 held-out cases have no labels" in html
    assert "6 labeled training cases" in html
    if joint == Joint.KNEE:
        assert set(metrics["hd95"]) == set(KNEE_STRUCTURES) and metrics["n_masks"] == 4
        assert "<h2>Segmentation (knee)</h2>" in html and "sagittal view only" in html
        assert len(images) == 3  # ROC, reliability, overlays
    else:
        assert "hd95" not in metrics and "Segmentation" not in html
        assert len(images) == 2


def test_checkpoint_for_another_joint_names_the_heads_it_has(tmp_path, monkeypatch):
    cli, site = _cli(tmp_path, monkeypatch, joint=Joint.ANKLE)
    ckpt = _checkpoint(tmp_path / "knee" / "checkpoint.safetensors", joint=Joint.KNEE)
    result = _evaluate(cli, site=site, checkpoint=ckpt, out=tmp_path / "rep")
    assert result.exit_code == 2
    assert "no ankle heads in this checkpoint" in result.output
    assert "heads for knee (classification, segmentation)" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "rep").exists()


def test_representative_slice_has_the_most_foreground():
    mask = np.zeros((5, 4, 4), dtype=np.uint8)
    mask[1, :2] = 3
    mask[3] = 1
    assert representative_slice(mask) == 3
    assert representative_slice(np.zeros((6, 4, 4))) == 3


def test_report_renders_when_no_heldout_case_is_labeled():
    from core.models.predict import evaluate_cases
    from core.reporting.evaluation_report import render_evaluation_report

    rng = np.random.default_rng(1)
    cases = [random_case(f"c{i}", joint=Joint.KNEE, rng=rng, heldout=i >= 2) for i in range(4)]
    cases = [dataclasses.replace(c, labels=None) if c.heldout else c for c in cases]
    model = build_model(load_config(ModelConfig, data=TINY_MODEL), joint=Joint.KNEE)
    evaluation = evaluate_cases(model, cases, keep_masks=1)
    report = evaluation.report
    assert (report["n_labeled"], report["n_unlabeled_skipped"]) == (0, 2)
    assert report["macro_auc"] is None and report["calibration_error"] is None
    assert set(report["sensitivity"].values()) == {None}
    html = render_evaluation_report(
        evaluation=evaluation, cases=cases, checkpoint="ck.safetensors", site_id="s"
    )
    assert "No labeled held-out cases." in html and "2 of 2 held-out cases" in html
