"""Crafted checkpoint files on the loading paths users hit (issue 15, "Hostile files"): a
huge header length, a truncated file, a manifest that lies about the model's shapes. Each
is one line naming the file, exit code 2, no traceback, and it is refused before anything
of the size it claims is read or allocated. (Junk bytes and a missing manifest:
tests/core/test_checkpoint.py.)"""

from __future__ import annotations

import json
import resource
import struct
import tracemalloc

import pytest
import typer
from typer.testing import CliRunner

from core.checkpoint import load_checkpoint, save_checkpoint
from core.commands import model as model_commands
from core.config import ModelConfig, load_config, to_dict
from core.data.manifest import SiteManifest, write_manifest
from core.models.loading import model_from_checkpoint
from core.models.registry import build_model
from tests.core.tiny_model import TINY_MODEL

BODY = 32 << 20  # bytes of junk after a crafted header: reading them would show


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real tiny knee checkpoint (weights + manifest)."""
    model = build_model(load_config(ModelConfig, data=TINY_MODEL), joint="knee", seed=0)
    path = tmp_path_factory.mktemp("good") / "checkpoint.safetensors"
    save_checkpoint(
        path,
        tensors=model.state_dict(),
        config={"model": to_dict(model.config)},
        preset="test",
        preprocess_key="abc",
        extra={"joint": "knee"},
    )
    return path


def _crafted(good, folder, kind: str):
    """`folder/<kind>.safetensors` and its manifest, damaged as `kind` says."""
    weights = good.read_bytes()
    manifest = json.loads(good.with_suffix(".json").read_text())
    if kind == "huge_header_length":  # claims a 4 EiB header, then 32 MiB of junk
        weights = struct.pack("<Q", 1 << 62) + b'{"a":' + bytes(BODY)
    elif kind == "header_beyond_the_file":  # a plausible length, larger than the file
        weights = struct.pack("<Q", BODY * 4) + b"{" + bytes(BODY)
    elif kind == "truncated":
        weights = weights[: len(weights) // 2]
    elif kind == "tensor_beyond_the_file":  # a 40 GB tensor in a 16-byte body
        header = {"a": {"dtype": "F32", "shape": [100_000, 100_000], "data_offsets": [0, 4e10]}}
        blob = json.dumps(header).encode()
        weights = struct.pack("<Q", len(blob)) + blob + bytes(16)
    elif kind == "manifest_lies_big":  # 2^20 channels: terabytes if a model were built
        manifest["config"]["model"]["backbone"]["channels"] = [1 << 20, 1 << 21]
    elif kind == "manifest_lies_small":
        manifest["config"]["model"]["backbone"]["channels"] = [16, 32]
    elif kind == "manifest_config_not_a_mapping":
        manifest["config"] = 5
    else:
        raise AssertionError(kind)
    path = folder / f"{kind}.safetensors"
    path.write_bytes(weights)
    path.with_suffix(".json").write_text(json.dumps(manifest))
    return path


DAMAGED_WEIGHTS = {
    "huge_header_length": "header too large",
    "header_beyond_the_file": "not a readable safetensors checkpoint",
    "truncated": "not fully covered",
    "tensor_beyond_the_file": "not a readable safetensors checkpoint",
}
LYING_MANIFESTS = {
    "manifest_lies_big": "does not fit the model its manifest describes: shape differences",
    "manifest_lies_small": "does not fit the model its manifest describes: shape differences",
    "manifest_config_not_a_mapping": "manifest has no model configuration",
}


@pytest.mark.parametrize("kind", list(DAMAGED_WEIGHTS))
def test_damaged_weights_are_refused_before_the_body_is_read(good, tmp_path, kind):
    path = _crafted(good, tmp_path, kind)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=DAMAGED_WEIGHTS[kind]) as caught:
            load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated to refuse {path.stat().st_size}"
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


@pytest.mark.parametrize("kind", list(LYING_MANIFESTS))
def test_a_lying_manifest_is_refused_before_its_model_is_built(good, tmp_path, kind):
    path = _crafted(good, tmp_path, kind)
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=LYING_MANIFESTS[kind]) as caught:
        model_from_checkpoint(path, joint="knee")
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - grew  # KiB
    assert grew < 200 << 10, f"peak memory grew by {grew} KiB"
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


# --- the commands --------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the site was read for a checkpoint that cannot be used")

    monkeypatch.setattr(model_commands, "_site_cases", refuse)
    app = typer.Typer()
    model_commands.register(app)
    return app


@pytest.fixture
def site(tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    write_manifest(SiteManifest(joint="knee", site_id="s1"), folder / "site.yaml")
    return folder


def _commands(path, site, out) -> dict[str, list[str]]:
    return {
        "info": ["info", str(path)],
        "evaluate": ["evaluate", "--site", str(site), "--checkpoint", str(path)]
        + ["--out", str(out)],
        "finetune": ["finetune", "--site", str(site), "--init", str(path), "--out", str(out)],
    }


# `info` checks the card against the weights' header: it reads no tensor, builds no model
CASES = [(k, c) for k in {**DAMAGED_WEIGHTS, **LYING_MANIFESTS} for c in _commands("", "", "")]


@pytest.mark.parametrize(("kind", "command"), CASES)
def test_commands_refuse_a_hostile_checkpoint_in_one_line(cli, site, good, tmp_path, kind, command):
    path = _crafted(good, tmp_path, kind)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, _commands(path, site, out)[command])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    expected = {**DAMAGED_WEIGHTS, **LYING_MANIFESTS}[kind]
    assert line.startswith(f"error: {path}: ") and expected in line, line
    assert not out.exists()  # nothing written


def test_info_still_shows_the_card_of_a_sound_checkpoint(cli, good):
    result = CliRunner().invoke(cli, ["info", str(good)])
    assert result.exit_code == 0, result.output
    assert "knee" in result.output
