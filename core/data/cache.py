"""Per-site cache of preprocessed view tensors (float16), built once, keyed by preprocessing.

Layout: `<cache_dir>/<preprocess key>/<case_id>/<view>.npy` (+ `mask.npy` for knee masks) and
`index.json` recording each case's source fingerprint, so a re-run re-reads only cases whose
files changed and epochs never touch DICOM. Writes go to a temp folder renamed into place, so
an interrupted prepare never leaves a half-written case behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from core.atomic import write_json_atomic
from core.config import DataConfig, PreprocessConfig
from core.data.labels import read_labels
from core.data.manifest import Site
from core.data.nifti import read_mask
from core.data.scan import scan_case
from core.data.transforms import preprocess_mask, preprocess_volume
from core.views import LABELS, View

INDEX_NAME = "index.json"
MASK_VIEW = View.SAGITTAL  # knee masks are segmented on the sagittal view


@dataclass(frozen=True)
class CaseTensors:
    case_id: str
    views: dict[View, np.ndarray]  # float16 (1, D, H, W) in [-1, 1]; missing views absent
    labels: np.ndarray | None  # float32 (n_labels,) in LABELS[joint] order; None = unlabeled
    mask: np.ndarray | None  # uint8 (D, H, W) on the sagittal grid; None if absent
    heldout: bool


@dataclass
class PrepareSummary:
    cache_root: Path
    prepared: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def fingerprint(paths: list[Path], *, root: Path) -> str:
    """Hash of relative path, size and mtime of each file: changes when the data changes."""
    digest = hashlib.sha256()
    for path in sorted(p.resolve() for p in paths):
        stat = path.stat()
        # relative to the site, so a moved site keeps its cache; absolute if outside it
        name = path.relative_to(root) if path.is_relative_to(root) else path
        digest.update(f"{name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _case_files(case_dir: Path) -> list[Path]:
    return [p for p in case_dir.rglob("*") if p.is_file()]


def _mask_path(site: Site, case_id: str) -> Path | None:
    for suffix in (".nii.gz", ".nii"):
        path = site.masks_dir / f"{case_id}{suffix}"
        if path.is_file():
            return path
    return None


def cache_root(site: Site, preprocess: PreprocessConfig) -> Path:
    return site.cache_dir / preprocess.key()


def feature_root(site: Site, preprocess: PreprocessConfig) -> Path:
    """Frozen-backbone feature cache of a site (see core/models/feature_cache.py)."""
    return site.cache_dir / "features" / preprocess.key()


def _read_index(root: Path) -> dict:
    path = root / INDEX_NAME
    if not path.is_file():
        return {"cases": {}}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"cases": {}}  # a damaged index only costs a rebuild


def _write_index(root: Path, index: dict) -> None:
    write_json_atomic(root / INDEX_NAME, index, sort_keys=True)


def _prepare_case(
    *, site: Site, case_dir: Path, config: DataConfig, out_dir: Path
) -> tuple[list[str], bool]:
    """Read, validate and preprocess one case into `out_dir`; returns (views, has_mask)."""

    scan = scan_case(case_dir, config=config)
    if scan.problems:
        raise ValueError("; ".join(scan.problems))
    if not scan.views:
        raise ValueError("no usable image series")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for view, volume in scan.views.items():
        array = preprocess_volume(volume, view=view, config=config.preprocess)
        np.save(tmp / f"{view.value}.npy", array)
    mask_path = _mask_path(site, case_dir.name)
    has_mask = mask_path is not None and MASK_VIEW in scan.views
    if has_mask:
        labels, affine = read_mask(mask_path)
        mask = preprocess_mask(
            labels,
            affine,
            target=scan.views[MASK_VIEW],
            view=MASK_VIEW,
            config=config.preprocess,
        )
        np.save(tmp / "mask.npy", mask)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return [v.value for v in scan.views], has_mask


def prepare_site(
    site: Site,
    *,
    config: DataConfig,
    on_case: Callable[[str], None] | None = None,
) -> PrepareSummary:
    """Build (or bring up to date) the cache of a site; unchanged cases are not re-read."""
    root = cache_root(site, config.preprocess)
    root.mkdir(parents=True, exist_ok=True)
    index = _read_index(root)
    index["preprocess"] = asdict(config.preprocess)
    index["joint"] = site.joint.value
    summary = PrepareSummary(cache_root=root)
    for case_dir in site.case_dirs():
        case_id = case_dir.name
        mask_path = _mask_path(site, case_id)
        files = _case_files(case_dir) + ([mask_path] if mask_path else [])
        fp = fingerprint(files, root=site.root.resolve()) if files else "empty"
        entry = index["cases"].get(case_id)
        unchanged = bool(entry) and entry.get("fingerprint") == fp
        if unchanged and (entry.get("skipped") or (root / case_id).is_dir()):
            if entry.get("skipped"):
                summary.skipped[case_id] = entry["skipped"]
            else:
                summary.reused.append(case_id)
        else:
            try:
                views, has_mask = _prepare_case(
                    site=site, case_dir=case_dir, config=config, out_dir=root / case_id
                )
                index["cases"][case_id] = {"fingerprint": fp, "views": views, "mask": has_mask}
                summary.prepared.append(case_id)
            except ValueError as err:
                index["cases"][case_id] = {"fingerprint": fp, "skipped": str(err)}
                summary.skipped[case_id] = str(err)
            _write_index(root, index)
        if on_case:
            on_case(case_id)
    present = {d.name for d in site.case_dirs()}
    for stale in set(index["cases"]) - present:
        index["cases"].pop(stale)
        shutil.rmtree(root / stale, ignore_errors=True)
    _write_index(root, index)
    return summary


def _labels_for(site: Site) -> dict[str, np.ndarray]:

    if not site.labels_path.is_file():
        return {}
    rows, problems = read_labels(site.labels_path, joint=site.joint)
    if problems:
        raise ValueError(f"{site.labels_path}: {problems[0]} (run 'orthofed data check')")
    names = LABELS[site.joint]
    # A row with empty cells is partly labelled; the heads train on complete label vectors,
    # so such a case counts as unlabelled (it still serves pretraining).
    return {
        case: np.array([row[n] for n in names], dtype=np.float32)
        for case, row in rows.items()
        if all(n in row for n in names)
    }


def load_site_tensors(
    site: Site,
    *,
    preprocess: PreprocessConfig,
    progress: bool = False,
    data_config: DataConfig | None = None,
) -> list[CaseTensors]:
    """All usable cases of a site as tensors, preparing the cache first when needed."""
    config = replace(data_config or DataConfig(), preprocess=preprocess)
    if progress:
        summary = prepare_with_progress(site, config=config)
    else:
        summary = prepare_site(site, config=config)
    index = _read_index(summary.cache_root)
    labels = _labels_for(site)
    cases = []
    for case_id in sorted(index["cases"]):
        entry = index["cases"][case_id]
        if entry.get("skipped"):
            continue
        case_dir = summary.cache_root / case_id
        views = {View(v): np.load(case_dir / f"{v}.npy", mmap_mode="r") for v in entry["views"]}
        mask = np.load(case_dir / "mask.npy") if entry.get("mask") else None
        cases.append(
            CaseTensors(
                case_id=case_id,
                views=views,
                labels=labels.get(case_id),
                mask=mask,
                heldout=site.is_heldout(case_id),
            )
        )
    if not cases:
        raise ValueError(f"{site.root}: no usable cases (run 'orthofed data check {site.root}')")
    return cases


def prepare_with_progress(site: Site, *, config: DataConfig) -> PrepareSummary:
    """`prepare_site` with a rich progress bar over cases (on stderr)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    total = len(site.case_dirs())
    columns = (
        TextColumn("[bold]preparing {task.fields[site]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("prepare", total=total, site=site.site_id)
        return prepare_site(site, config=config, on_case=lambda _case: bar.advance(task))
