"""Atomic file writes: temp file in the same folder, fsync, rename. A crash at any moment
leaves either the old file or the new one, never a half-written one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def save_arrays_atomic(
    path: Path, arrays: Mapping[str, np.ndarray], *, metadata: dict[str, str] | None = None
) -> None:
    """safetensors file of numpy arrays, written atomically (no pickle anywhere)."""
    from safetensors.numpy import save

    blob = save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=metadata)
    write_bytes_atomic(path, blob)


def load_arrays(path: Path, *, order: list[str] | None = None) -> dict[str, np.ndarray]:
    """Arrays from a safetensors file, in `order` when given (safetensors does not keep it)."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: weights file not found")
    try:
        arrays = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types on corrupt headers
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    if order is None:
        return arrays
    missing = [k for k in order if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing {len(missing)} arrays, e.g. {missing[:3]}")
    return {k: arrays[k] for k in order}
