"""Site updates held on disk while a round's replies arrive, so server memory stays bounded.

Why hand-written: Flower's strategies keep every reply in memory until the round ends (about
one model per site), and aggregation here must stay bit-identical whatever order replies
arrive in (sites summed in id order, float64) and must see every site's update norm before
it can reject outliers. Folding replies into running sums on arrival cannot give both, so
each reply is checked, written group by group to a safetensors file in a round-scoped
folder and dropped; `aggregate_round` then reads one array at a time back from disk in site
order. Memory: the global model, the new one being built, one array per site for `median`
and `trimmed_mean` (they need every site's value of one key at once), one float64 array for
`weighted_mean`, and one float64 group for server DP (its clipping needs a whole-group norm).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import save_file

from core.atomic import is_no_space
from core.federation.groups import split_groups
from core.federation.updates import GroupUpdate, SiteUpdate, rejection
from core.federation.validate import group_problem

SPOOL_PREFIX = ".spool-"


# safetensors' dtype names -> little-endian numpy dtypes (the format stores little-endian)
_NUMPY_DTYPES = {
    "BOOL": "|b1",
    "U8": "|u1",
    "I8": "|i1",
    "U16": "<u2",
    "I16": "<i2",
    "F16": "<f2",
    "U32": "<u4",
    "I32": "<i4",
    "F32": "<f4",
    "U64": "<u8",
    "I64": "<i8",
    "F64": "<f8",
}


class SpooledArrays(Mapping[str, np.ndarray]):
    """One group's arrays in a safetensors file; each lookup reads that one array from disk.

    Why not `safe_open` per lookup: it re-parses the file's header each time (0.3 ms for a
    300-array file, and growing with the array count), which was most of a tiny federation
    round's server time; a handle held open instead maps the whole file, and mapped pages
    count in the server's resident memory. So the header is parsed once, here, and each
    lookup reads only that array's bytes (a plain read, nothing left mapped)."""

    def __init__(self, path: Path, keys: list[str]) -> None:
        self._path = path
        self._keys = list(keys)
        self._known = set(keys)
        self._layout: dict[str, tuple[str, tuple[int, ...], int, int]] | None = None

    def __contains__(self, key: object) -> bool:  # Mapping's default would read the array
        return key in self._known

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._known:
            raise KeyError(key)
        if self._layout is None:
            self._layout = _read_layout(self._path)
        dtype, shape, offset, size = self._layout[key]
        count = size // np.dtype(dtype).itemsize
        array = np.fromfile(self._path, dtype=dtype, count=count, offset=offset)
        return array.reshape(shape).astype(array.dtype.newbyteorder("="), copy=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class UpdateSpool:
    """A round's accepted-so-far updates on disk under `parent/.spool-*` (removed on close).

    `add` checks each group against the global model right away (count, keys, shapes,
    dtypes, finite values: the checks of `core.federation.validate`); a failing group is
    recorded in `rejected` and never written. What is written is re-read lazily.
    """

    def __init__(self, *, parent: Path, global_state: Mapping[str, np.ndarray]) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_spools(parent)
        self.directory = Path(tempfile.mkdtemp(prefix=SPOOL_PREFIX, dir=parent))
        self._global_groups = split_groups(global_state)
        self._count = 0
        self.rejected: list[dict[str, str]] = []

    def add(self, update: SiteUpdate, *, joint: str | None = None) -> SiteUpdate:
        """Write `update`'s good groups to disk; return it with arrays read from there.

        `joint`: the site's joint as it declared it, when known (heads of others are refused)."""
        kept: dict[str, GroupUpdate] = {}
        for group, group_update in update.groups.items():
            problem = group_problem(
                group=group, update=group_update, global_groups=self._global_groups, joint=joint
            )
            if problem:
                self.rejected.append(rejection(site=update.site_id, group=group, reason=problem))
                continue
            self._count += 1
            path = self.directory / f"{self._count:05d}.safetensors"
            arrays = {key: np.ascontiguousarray(a) for key, a in group_update.arrays.items()}
            _save(arrays, path)
            kept[group] = GroupUpdate(
                arrays=SpooledArrays(path, list(arrays)), num_examples=group_update.num_examples
            )
        return SiteUpdate(site_id=update.site_id, groups=kept)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> UpdateSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _save(arrays: dict[str, np.ndarray], path: Path) -> None:
    """safetensors' own writer; a full disk becomes an OSError naming the spool folder (its
    error names no file), never an error blamed on the site whose update was being written."""
    try:
        save_file(arrays, str(path))
    except (SafetensorError, OSError) as err:
        if is_no_space(err) or "os error 28" in str(err) or "os error 122" in str(err):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path.parent)) from None
        raise


def _read_layout(path: Path) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
    """key -> (numpy dtype, shape, byte offset in the file, byte size), from the safetensors
    header (8 bytes of little-endian header length, then the JSON header, then the data)."""
    with path.open("rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_len))
    start = 8 + header_len
    layout = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = _NUMPY_DTYPES[info["dtype"]]  # the spool writes numpy arrays: always mapped
        layout[key] = (dtype, tuple(info["shape"]), start + begin, end - begin)
    return layout


def remove_stale_spools(parent: Path) -> None:
    """Spool folders left by a process that was killed mid-round (never part of a result)."""
    for stale in parent.glob(f"{SPOOL_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
