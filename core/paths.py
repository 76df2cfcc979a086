"""Output paths a command writes to: a folder where a folder is needed, a file where a file
is needed. Checked before any work, so a collision costs one clear line (a ValueError naming
the path and the fix) instead of a traceback after minutes of training, and nothing is written.
"""

from __future__ import annotations

from pathlib import Path


def file_in_the_way(path: Path) -> Path | None:
    """`path` or its nearest existing ancestor when that is not a folder (a folder cannot be
    created there); None when the path is, or can become, a folder."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def check_out_folder(path: str | Path, *, option: str = "--out") -> Path:
    """`path` as a Path; ValueError when it, or a folder above it, is an existing file."""
    path = Path(path)
    blocker = file_in_the_way(path)
    if blocker == path:
        raise ValueError(
            f"{option} {path} is a file, not a folder: choose a folder (new or existing), "
            "or move the file away"
        )
    if blocker is not None:
        raise ValueError(f"{option} {path}: {blocker} is a file, not a folder: choose another path")
    return path


def check_out_file(path: str | Path, *, option: str = "--out", example: str) -> Path:
    """`path` as a Path; ValueError when it is an existing folder (suggesting
    `path/example`) or when a folder above it is an existing file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"{option} {path} is a folder, not a file: give a file name, e.g. {path / example}"
        )
    blocker = file_in_the_way(path.parent)
    if blocker is not None:
        raise ValueError(f"{option} {path}: {blocker} is a file, not a folder: choose another path")
    return path


def clash_message(err: OSError) -> str:
    """One line for an OSError raised where a file stands where a folder is needed (or the
    reverse): names the path in the way and the fix; else the error's own text."""
    for name in (err.filename2, err.filename):
        if not name:
            continue
        path = Path(name)
        blocker = file_in_the_way(path)
        if blocker is not None and not isinstance(err, IsADirectoryError):
            return f"{blocker} is a file where a folder is needed: choose another path"
        if isinstance(err, IsADirectoryError) and path.is_dir():
            return f"{path} is a folder where a file is needed: choose a file path"
    return str(err)
