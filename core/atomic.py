"""Atomic file writes: temp file in the same folder, fsync, rename. A crash at any moment
leaves either the old file or the new one, never a half-written one.

A full disk (ENOSPC, or a quota: EDQUOT) raises an OSError naming the file that could not be
written (a write's own error names none), after the temp file is removed; the old file is
left as it was. A kill leaves at most a temp file `.<name>.<random>.tmp` beside the target,
never mistaken for it (`leftover_temp_files` finds them for cleanup).
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_CHUNK = 1 << 24  # bytes per write call
_TEMP = re.compile(r"\..+\.[^.]+\.tmp")  # .<name>.<random>.tmp, as written below


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_no_space(err: BaseException) -> bool:
    """Whether `err` is a full disk or an exhausted quota."""
    return isinstance(err, OSError) and err.errno in NO_SPACE


def no_space_error(err: OSError, path: Path) -> OSError:
    """`err` (ENOSPC/EDQUOT) naming `path`, the file that could not be written."""
    return OSError(err.errno, os.strerror(err.errno), str(path))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view[:_CHUNK])
        if written <= 0:  # a regular file never does this; never loop on it
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        if is_no_space(err):
            raise no_space_error(err, path) from None
        raise
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if is_no_space(err):
            raise no_space_error(err, path) from None
        raise
    _fsync_dir(path.parent)


def append_bytes_durable(path: Path, data: bytes) -> None:
    """Append `data` to `path` and fsync. On an error (a full disk) the file is cut back to
    its old length, so no partial record stays; a kill can still leave one (readers of
    append-only files must ignore a torn last line)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as err:
        if is_no_space(err):
            raise no_space_error(err, path) from None
        raise
    try:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except BaseException as err:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            if is_no_space(err):
                raise no_space_error(err, path) from None
            raise
    finally:
        os.close(fd)


def leftover_temp_files(folder: Path, *, prefix: str = "") -> list[Path]:
    """Temp files an interrupted `write_bytes_atomic` left in `folder` (for targets whose name
    starts with `prefix`). Only call this where no other process is writing into `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.glob(f".{prefix}*.tmp") if _TEMP.fullmatch(p.name) and p.is_file()
    )


def write_json_atomic(path: Path, obj: Any, *, sort_keys: bool = False) -> None:
    """The project's one JSON writer: indented, a final newline, written atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n").encode())


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
