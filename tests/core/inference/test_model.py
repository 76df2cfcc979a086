"""Which joint a checkpoint predicts for, which heads it needs, and what it says without
a segmentation head."""

from pathlib import Path

import pytest

from core.checkpoint import load_checkpoint, save_checkpoint
from core.inference.model import choose_joint, load_predictor
from core.inference.pipeline import predict_study
from core.views import LABELS, Joint
from tests.core.inference.conftest import CASE


@pytest.mark.parametrize("joint", list(Joint))
def test_joint_from_the_manifest_or_the_option(joint):
    source = Path("c.safetensors")
    assert choose_joint({"joint": joint.value}, joint=None, source=source) == joint
    assert choose_joint({"joints": [joint.value]}, joint=None, source=source) == joint
    assert choose_joint({"joints": ["knee", "ankle"]}, joint=joint.value, source=source) == joint
    with pytest.raises(ValueError, match="several joints"):
        choose_joint({"joints": ["knee", "ankle"]}, joint=None, source=source)
    with pytest.raises(ValueError, match="names no joint"):
        choose_joint({}, joint=None, source=source)


@pytest.mark.parametrize("joint", list(Joint))
def test_predictor_knows_labels_thresholds_and_segmentation(joint, checkpoints):
    predictor = load_predictor(checkpoints[joint])
    assert predictor.joint == joint and predictor.labels == LABELS[joint]
    assert set(predictor.thresholds) == set(LABELS[joint])
    assert predictor.segments == (joint == Joint.KNEE)
    assert (predictor.preprocess.slices, predictor.preprocess.size) == (8, 32)
    assert len(predictor.digest) == 16


def _without(checkpoint: Path, tmp_path: Path, *, drop: str) -> Path:
    loaded = load_checkpoint(checkpoint)
    path = tmp_path / f"no-{drop.replace('.', '-')}.safetensors"
    save_checkpoint(
        path,
        tensors={k: v for k, v in loaded.tensors.items() if not k.startswith(drop)},
        config=loaded.manifest["config"],
        preset="test",
        preprocess_key="k",
        extra={"joint": loaded.manifest["joint"]},
    )
    return path


def test_backbones_only_are_refused(checkpoints, tmp_path):
    path = _without(checkpoints[Joint.ANKLE], tmp_path, drop="head.")
    with pytest.raises(ValueError, match="fine-tune it first"):
        load_predictor(path)


def test_knee_checkpoint_without_seg_head_predicts_and_says_so(
    checkpoints, phantom_sites, tmp_path
):
    predictor = load_predictor(_without(checkpoints[Joint.KNEE], tmp_path, drop="head.knee.seg."))
    assert not predictor.segments
    result = predict_study(predictor, phantom_sites[Joint.KNEE] / CASE, out_root=tmp_path / "out")
    assert result.ok, result.error
    assert any("no knee segmentation head" in w for w in result.warnings)
    assert not (tmp_path / "out" / CASE / "seg.nii.gz").exists()
