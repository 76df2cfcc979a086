import json

import pytest
import torch

from core.checkpoint import load_checkpoint, load_state, save_checkpoint
from core.config import ModelConfig, load_config, to_dict
from core.models.registry import build_model
from tests.core.tiny_model import TINY_MODEL

SMALL = TINY_MODEL


def _model(seed=0, **backbone):
    data = {**SMALL, "backbone": {**SMALL["backbone"], **backbone}}
    return build_model(load_config(ModelConfig, data=data), joint="knee", seed=seed)


def _save(model, path):
    return save_checkpoint(
        path,
        tensors=model.state_dict(),
        config={"model": to_dict(model.config)},
        preset="test",
        preprocess_key="abc123",
    )


def test_round_trip_restores_every_tensor_and_manifest(tmp_path):
    source, target = _model(seed=1), _model(seed=2)
    path = tmp_path / "run" / "checkpoint.safetensors"
    manifest_path = _save(source, path)
    loaded = load_checkpoint(path)
    load_state(target, loaded.tensors)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    manifest = json.loads(manifest_path.read_text())
    assert manifest["groups"] == [
        "backbone.sagittal",
        "backbone.coronal",
        "backbone.axial",
        "head.knee.cls",
        "head.knee.seg",
    ]
    assert manifest["preprocess_key"] == "abc123" and manifest["preset"] == "test"
    assert {"torch", "monai", "safetensors"} <= set(manifest["versions"])
    assert manifest["config"]["model"]["backbone"]["channels"] == [8, 16]
    assert not list(path.parent.glob("*.tmp"))


def test_different_architecture_is_refused_with_named_keys(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    _save(_model(), path)
    wider = _model(channels=[8, 24])
    with pytest.raises(ValueError, match=r"shape differences: backbone\.sagittal\.") as err:
        load_state(wider, load_checkpoint(path).tensors)
    assert "does not fit this model" in str(err.value)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    model = _model()
    tensors = dict(model.state_dict())
    tensors.pop("backbone.axial.conv_in.conv.weight")
    tensors["backbone.axial.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="missing keys: backbone.axial.conv_in.conv.weight") as err:
        load_state(model, tensors)
    assert "unexpected keys: backbone.axial.extra.weight" in str(err.value)


def test_partial_load_allows_absent_groups_only():
    model = _model()
    backbones = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    load_state(_model(seed=3), backbones, partial=True)
    with pytest.raises(ValueError, match="missing keys: head.knee.cls"):
        load_state(_model(seed=3), backbones)
    backbones.pop("backbone.coronal.out.2.conv.bias")
    with pytest.raises(ValueError, match="missing keys: backbone.coronal.out.2.conv.bias"):
        load_state(_model(seed=3), backbones, partial=True)


def test_bad_paths_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="must end in .safetensors"):
        _save(_model(), tmp_path / "model.pt")
    with pytest.raises(ValueError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "junk.safetensors")


def test_checkpoint_without_manifest_is_incomplete(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    _save(_model(), path)
    path.with_suffix(".json").unlink()
    with pytest.raises(ValueError, match="manifest checkpoint.json is missing"):
        load_checkpoint(path)


def test_checkpoint_of_the_previous_format_is_refused_in_one_line(tmp_path):
    path = tmp_path / "old" / "checkpoint.safetensors"
    manifest_path = _save(_model(), path)
    manifest = json.loads(manifest_path.read_text())
    manifest["format"] = "orthofed-checkpoint/1"  # heads of the bottleneck decoder era
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="older orthofed") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_checkpoint_older_than_seg_timestep_keeps_its_t10_taps(tmp_path):
    # its manifest's model config has no heads.seg_timestep: loading it must not move its
    # segmentation head onto the presets' t = 2 features
    from core.models.backbone import seg_taps
    from core.models.loading import model_from_checkpoint

    model = _model()
    config = to_dict(model.config)
    del config["heads"]["seg_timestep"]
    path = tmp_path / "old" / "checkpoint.safetensors"
    save_checkpoint(
        path,
        tensors=model.state_dict(),
        config={"model": config},
        preset="test",
        preprocess_key="abc123",
    )
    loaded, _ = model_from_checkpoint(path, joint="knee")
    assert {t.timestep for t in seg_taps(loaded.config)} == {10}
