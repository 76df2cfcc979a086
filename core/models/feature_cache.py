"""Cache of frozen-backbone features, so heads can train for thousands of steps cheaply.

In `linear` fine-tuning the backbones do not change while heads train, so the features of a
case (every view's classification taps, the sagittal segmentation taps) are computed once
per (case, view, taps, noise seed, backbone weights) and reused across epochs, label
fractions, federated fine-tuning rounds and evaluation.

- Key: `digest` = SHA-256 of the model's feature settings (input grid, backbone, diffusion,
  taps, seed) and of every backbone weight; a new global backbone gets a new digest, so stale
  features are never read.
- Memory: features are held as float16 (half of float32), once, by the caller that asked for
  them (the cache itself keeps them in memory only when it has no disk folder).
- Disk: `<site cache>/features/<digest>/<case_id>.safetensors`, written atomically; only the
  newest `KEEP_DIGESTS` digests are kept (older folders are removed when a new one starts).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes

from core.atomic import write_bytes_atomic
from core.checkpoint import tensors_to_bytes
from core.config import to_dict
from core.models.backbone import seg_taps

KEEP_DIGESTS = 4
CACHE_DTYPE = torch.float16


def feature_digest(model) -> str:
    """Hash of everything a case's frozen features depend on (besides the case itself)."""
    config = to_dict(model.config)
    settings = {
        "input": [config["input_slices"], config["input_size"]],
        "backbone": config["backbone"],
        "diffusion": config["diffusion"],
        "features": config["features"],
        "seg_taps": [to_dict(t) for t in seg_taps(model.config)],
        "seg": model.seg_head is not None,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name, tensor in model.backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


class FeatureCache:
    """Per-case feature tensors of one backbone digest: in memory, and on disk if `root`."""

    def __init__(self, *, digest: str, root: Path | None = None) -> None:
        self.digest = digest
        self.folder = None if root is None else Path(root) / digest
        self._memory: dict[str, dict[str, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            _prune(Path(root), keep=self.folder)

    def get(self, case_id: str) -> dict[str, torch.Tensor] | None:
        found = self._memory.get(case_id)
        if found is None and self.folder is not None:
            found = _read(self.folder / f"{case_id}.safetensors")
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, case_id: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stored = {k: v.detach().to(CACHE_DTYPE).contiguous() for k, v in tensors.items()}
        if self.folder is None:
            self._memory[case_id] = stored
        else:
            write_bytes_atomic(self.folder / f"{case_id}.safetensors", tensors_to_bytes(stored))
        return stored


def _read(path: Path) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        return load_safetensors_bytes(path.read_bytes())
    except (SafetensorError, ValueError, OSError):
        return None  # unreadable (e.g. a disk problem): recompute rather than fail


def _prune(root: Path, *, keep: Path) -> None:
    """Remove all but the newest KEEP_DIGESTS digest folders (`keep` always stays)."""
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in folders[KEEP_DIGESTS - 1 :]:
        shutil.rmtree(old, ignore_errors=True)
