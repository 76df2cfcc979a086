"""The cross-site matrix of a federation (`evaluate.cross_site`), framework-free.

Rows are models (the global model, then each site's local-only model), columns are the sites
whose held-out split evaluated them, values are macro AUC (null where a model was not
evaluated there, e.g. a local-only ankle model on a knee site). Local-only models are kept
as full checkpoints in `RUN_DIR/local/<site>.safetensors` (+ manifest), so that a resumed
run evaluates the same models and `orthofed evaluate` accepts them like any checkpoint.
Flower has no notion of this (its evaluation is of the one global model), hence this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import load_arrays, save_arrays_atomic, write_json_atomic
from core.federation.groups import split_groups
from core.federation.updates import GroupUpdate
from core.federation.validate import check_group_update

LOCAL_DIR = "local"
CROSS_SITE_FILE = "cross_site.json"
GLOBAL_MODEL = "global"


def local_model_name(site: str) -> str:
    return f"local {site}"


def local_model_path(root: Path, site: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", site).strip("._") or "site"
    return Path(root) / LOCAL_DIR / f"{safe}.safetensors"


def merge_local_model(
    *,
    initial: Mapping[str, np.ndarray],
    arrays: Mapping[str, np.ndarray],
    examples: Mapping[str, int],
) -> dict[str, np.ndarray]:
    """The site's trained groups laid over the initial weights, each group checked like a
    federated update (whole group, shapes, dtypes, finite values, a case count). Raises
    ValueError naming the first bad group; a site that trained nothing is an error too."""
    reference = split_groups(initial)
    sent = split_groups(arrays) if arrays else {}
    if not sent:
        raise ValueError("sent no trained weights for its local-only model")
    merged = dict(initial)
    for group, group_arrays in sent.items():
        if group not in reference:
            raise ValueError(f"local-only model has unknown group {group!r}")
        update = GroupUpdate(arrays=dict(group_arrays), num_examples=examples.get(group, 0))
        problem = check_group_update(update=update, reference=reference[group])
        if problem:
            raise ValueError(f"local-only model, group {group}: {problem}")
        merged.update(group_arrays)
    return merged


def save_local_model(
    root: Path, *, site: str, state: Mapping[str, np.ndarray], manifest: Mapping[str, Any]
) -> Path:
    """Weights then manifest, each atomic (a manifest that exists describes whole weights)."""
    path = local_model_path(root, site)
    save_arrays_atomic(path, dict(state), metadata={"format": "orthofed-local-only"})
    write_json_atomic(path.with_suffix(".json"), {**manifest, "site": site, "keys": list(state)})
    return path


def load_local_models(
    root: Path, *, sites: Sequence[str], order: list[str]
) -> dict[str, dict[str, np.ndarray]]:
    """The saved local-only models of `sites` that are complete (manifest present)."""
    models = {}
    for site in sites:
        path = local_model_path(root, site)
        if path.is_file() and path.with_suffix(".json").is_file():
            models[site] = load_arrays(path, order=order)
    return models


def cross_site_matrix(
    metrics: Mapping[str, Mapping[str, float]], *, local_sites: Sequence[str], prefix: str
) -> dict[str, Any]:
    """{"models", "sites", "macro_auc"} from the evaluate round's per-site metrics, where a
    site reports the global model as `macro_auc` and local-only model X as
    `<prefix>X/macro_auc` (the shape `orthofed report` reads)."""
    sites = sorted(metrics)
    rows = [[_number(metrics[s].get("macro_auc")) for s in sites]]
    for model_site in local_sites:
        key = f"{prefix}{model_site}/macro_auc"
        rows.append([_number(metrics[s].get(key)) for s in sites])
    return {
        "models": [GLOBAL_MODEL, *(local_model_name(s) for s in local_sites)],
        "sites": sites,
        "macro_auc": rows,
    }


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and np.isfinite(value):
        return float(value)
    return None


def write_cross_site(root: Path, matrix: Mapping[str, Any]) -> Path:
    path = Path(root) / CROSS_SITE_FILE
    write_json_atomic(path, dict(matrix))
    return path
