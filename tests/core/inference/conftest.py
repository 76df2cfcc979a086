"""Phantom studies (one exam each, the project's own generator on a small grid) and tiny
checkpoints per joint, shared by the inference tests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from core.checkpoint import save_checkpoint
from core.config import ModelConfig, load_config, to_dict
from core.data.phantom.profiles import get_profile
from core.data.phantom.site import generate_site
from core.models.registry import build_model
from core.views import Joint
from tests.core.tiny_model import TINY_MODEL

# 10 slices of 40 x 40: the tiny model (8 x 32 x 32) crops two slices and resizes in-plane.
PROFILE = dataclasses.replace(get_profile("tiny", joint="knee"), name="micro", size=40, slices=10)
CASE = "case-0001"


@pytest.fixture(scope="session")
def phantom_sites(tmp_path_factory) -> dict[Joint, Path]:
    """One phantom site of one case per joint (read-only: copy a study before changing it)."""
    root = tmp_path_factory.mktemp("phantom")
    sites = {}
    for joint in Joint:
        out = root / joint.value
        generate_site(out_dir=out, joint=joint, n_cases=1, seed=5, profile=PROFILE)
        sites[joint] = out
    return sites


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[Joint, Path]:
    """A freshly initialised tiny model per joint, saved as a checkpoint."""
    root = tmp_path_factory.mktemp("checkpoints")
    config = load_config(ModelConfig, data=TINY_MODEL)
    paths = {}
    for joint in Joint:
        path = root / f"{joint.value}.safetensors"
        save_checkpoint(
            path,
            tensors=build_model(config, joint=joint).state_dict(),
            config={"model": to_dict(config)},
            preset="test",
            preprocess_key="k",
            extra={"joint": joint.value},
        )
        paths[joint] = path
    return paths


@pytest.fixture
def study_copy(phantom_sites, tmp_path):
    """A writable copy of a joint's phantom study: study_copy(joint, name=...) -> folder."""

    def make(joint: Joint, *, name: str = "study-a") -> Path:
        target = tmp_path / "studies" / name
        shutil.copytree(phantom_sites[joint] / CASE, target)
        return target

    return make


def series_folder(site: Path, view: str) -> str:
    """The folder name of a view's series in the phantom case (from phantom.json)."""
    facts = json.loads((site / "phantom.json").read_text())
    return facts["cases"][CASE]["series"][view]


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (and the empty folders) under `folder`."""
    listing = {}
    for path in sorted(Path(folder).rglob("*")):
        name = path.relative_to(folder).as_posix()
        listing[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return listing
