"""Load a checkpoint for prediction and run it on one study's views.

The checkpoint's own preprocessing (`preprocess_for(model.config)`), its joint (from the
manifest, or `--joint` when it has heads for several), its stored thresholds. A study is one
case: encode -> classify -> sigmoid, and for a model with a knee segmentation head the
argmax label map on the model's sagittal grid.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.checkpoint import load_manifest
from core.config import PreprocessConfig
from core.data.cache import CaseTensors
from core.model_card import stored_thresholds
from core.models.encode import encode_cases
from core.models.loading import heads_in, model_from_checkpoint
from core.models.presets import preprocess_for
from core.models.registry import SEG_VIEW, OrthoModel
from core.views import LABELS, Joint, View, parse_joint

# Every study is encoded under this id: the diffusion noise of the feature taps is seeded by
# the case id, so a fixed one makes a prediction independent of the folder's name.
CASE_ID = "study"


@dataclass
class Predictor:
    """A loaded model with what prediction needs around it."""

    model: OrthoModel
    joint: Joint
    labels: tuple[str, ...]
    thresholds: dict[str, float]
    thresholds_source: str
    preprocess: PreprocessConfig
    segments: bool  # the checkpoint holds this joint's segmentation head
    checkpoint: Path
    preset: str  # the manifest's preset name
    digest: str  # sha256 of the weights file, first 16 hex digits


@dataclass
class ModelOutput:
    probabilities: dict[str, float]
    seg: np.ndarray | None  # uint8 (D, H, W) on the model's sagittal grid


def choose_joint(manifest: dict, *, joint: str | None, source: Path) -> Joint:
    """`joint` if given, else the manifest's joint or its only one; ValueError otherwise."""
    if joint:
        return parse_joint(joint)
    if manifest.get("joint"):
        return parse_joint(str(manifest["joint"]))
    joints = list(manifest.get("joints") or [])
    if len(joints) == 1:
        return parse_joint(str(joints[0]))
    if joints:
        raise ValueError(
            f"{source}: the checkpoint has heads for several joints ({', '.join(joints)}): "
            "pass --joint"
        )
    raise ValueError(f"{source}: the manifest names no joint: pass --joint")


def load_predictor(checkpoint: str | Path, *, joint: str | None = None) -> Predictor:
    """The model of `checkpoint` for one joint; ValueError (one line) when it cannot predict."""
    path = Path(checkpoint)
    chosen = choose_joint(load_manifest(path), joint=joint, source=path)
    model, loaded = model_from_checkpoint(path, joint=chosen, require_heads=True)
    heads = heads_in(loaded.tensors).get(chosen.value, [])
    if "cls" not in heads:
        raise ValueError(
            f"{path}: no {chosen.value} classification head in this checkpoint: fine-tune it first"
        )
    model.eval()
    thresholds, source = stored_thresholds(
        loaded.manifest, joint=chosen.value, labels=LABELS[chosen]
    )
    return Predictor(
        model=model,
        joint=chosen,
        labels=LABELS[chosen],
        thresholds=thresholds,
        thresholds_source=source,
        preprocess=preprocess_for(model.config),
        segments="seg" in heads and model.seg_head is not None,
        checkpoint=path,
        preset=str(loaded.manifest.get("preset") or "custom"),
        digest=hashlib.sha256(path.read_bytes()).hexdigest()[:16],
    )


@torch.no_grad()
def run_model(predictor: Predictor, views: dict[View, np.ndarray]) -> ModelOutput:
    """Probabilities per label (and the segmentation) of one study's preprocessed views
    (float16 (1, D, H, W) each; missing views absent)."""
    if not views:
        raise ValueError("no usable view to predict from")
    case = CaseTensors(case_id=CASE_ID, views=views, labels=None, mask=None, heldout=True)
    model = predictor.model
    with_seg = predictor.segments and SEG_VIEW in views
    batch = encode_cases(model, [case], with_seg=with_seg)
    probabilities = torch.sigmoid(model.classify(batch.features, batch.present)).float()[0]
    seg = None
    if with_seg and batch.seg_maps is not None:
        logits = model.segment(batch.seg_image, batch.seg_maps)
        seg = logits.argmax(dim=1)[0].numpy().astype(np.uint8)
    return ModelOutput(
        probabilities={n: float(p) for n, p in zip(predictor.labels, probabilities, strict=True)},
        seg=seg,
    )
