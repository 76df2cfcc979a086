"""The model card of a checkpoint (`orthofed info`) and the operating thresholds stored with it.

The card is read from the checkpoint's JSON manifest: preset and preprocessing, joints and
labels, how it was trained (local: site, examples per group, steps or epochs; federated: rounds
per phase, sites and examples per group, epsilon per site and group, from the run's history),
the held-out metrics `orthofed evaluate` recorded, and the thresholds. Never case ids.

A checkpoint's JSON manifest may hold, per joint, the decision threshold of every label and
where it came from:

    "thresholds": {"knee": {"values": {"acl_tear": 0.41, ...},
                            "methods": {"acl_tear": "youden", ...},
                            "source": "Youden J on 42 labeled training cases of site knee-3t
                                       (orthofed finetune, 2026-12-03T10:00:00+0000)"}}

They are chosen on a site's labeled *training* cases only (never held-out ones): by
`orthofed finetune` when it writes the checkpoint and by `orthofed evaluate`, which records the
thresholds it used into the evaluated checkpoint's manifest. A checkpoint without them (e.g. a
federated global model no site has evaluated yet) decides at 0.5 and says so.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from core.atomic import write_json_atomic
from core.eval.thresholds import DEFAULT_THRESHOLD
from core.federation.rundir import Phase
from core.views import LABELS, parse_joint

THRESHOLDS_KEY = "thresholds"


def threshold_source(*, n_cases: int, site_id: str | None, command: str) -> str:
    """A one-line description of where thresholds were chosen."""
    where = f"site {site_id}" if site_id else "the site"
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return f"Youden J on {n_cases} labeled training cases of {where} ({command}, {when})"


def thresholds_entry(
    *, thresholds: dict[str, float], methods: dict[str, str], source: str
) -> dict[str, Any]:
    """The manifest entry of one joint (values, how each was chosen, where)."""
    return {
        "values": {name: float(value) for name, value in thresholds.items()},
        "methods": dict(methods),
        "source": source,
    }


def record_thresholds(manifest_path: str | Path, *, joint: str, entry: dict[str, Any]) -> None:
    """Store `entry` as `joint`'s thresholds in an existing checkpoint manifest (atomically;
    the weights are untouched, other joints' thresholds kept)."""
    path = Path(manifest_path)
    manifest = json.loads(path.read_text())
    stored = dict(manifest.get(THRESHOLDS_KEY) or {})
    stored[joint] = entry
    manifest[THRESHOLDS_KEY] = stored
    write_json_atomic(path, manifest)


def stored_thresholds(
    manifest: dict[str, Any], *, joint: str, labels: tuple[str, ...] | list[str]
) -> tuple[dict[str, float], str]:
    """Per-label thresholds of `joint` and a line saying where they came from.

    Labels without a stored value (or a checkpoint without any) decide at 0.5.
    """
    entry = (manifest.get(THRESHOLDS_KEY) or {}).get(joint)
    if not entry:
        default = dict.fromkeys(labels, DEFAULT_THRESHOLD)
        return default, (
            f"default {DEFAULT_THRESHOLD} for every label: this checkpoint stores no "
            f"{joint} thresholds (run `orthofed evaluate` on a site's data to choose them)"
        )
    values = entry.get("values", {})
    chosen = {name: float(values.get(name, DEFAULT_THRESHOLD)) for name in labels}
    missing = [name for name in labels if name not in values]
    source = str(entry.get("source", "stored in the checkpoint manifest"))
    if missing:
        source += f"; default {DEFAULT_THRESHOLD} for {', '.join(missing)}"
    return chosen, source


EVALUATIONS_KEY = "evaluations"
_HEADLINE = ("macro_auc", "mean_dice", "n_cases")


def record_evaluation(
    manifest_path: str | Path, *, joint: str, site_id: str, report: dict[str, Any]
) -> None:
    """Keep the headline held-out metrics of `orthofed evaluate` in the checkpoint manifest
    (per joint and site; no case ids), with the thresholds that evaluation chose."""
    path = Path(manifest_path)
    manifest = json.loads(path.read_text())
    evaluations = dict(manifest.get(EVALUATIONS_KEY) or {})
    entry = {k: report[k] for k in _HEADLINE if k in report}
    entry["dice"] = report.get("dice")
    entry["auc"] = report.get("auc")
    entry["evaluated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    evaluations[f"{joint}/{site_id}"] = {k: v for k, v in entry.items() if v is not None}
    manifest[EVALUATIONS_KEY] = evaluations
    write_json_atomic(path, manifest)


def federated_training(history: list[dict[str, Any]]) -> dict[str, Any]:
    """How a global checkpoint was trained, from the run's history records up to it:
    rounds per phase, participating sites, per group the sites and examples, epsilon."""
    rounds: dict[str, int] = {}
    sites: set[str] = set()
    groups: dict[str, dict[str, Any]] = {}
    epsilon: dict[str, dict[str, float]] = {}
    evaluation: dict[str, Any] = {}
    for record in history:
        phase = str(record.get("phase"))
        rounds[phase] = rounds.get(phase, 0) + 1
        sites.update(record.get("sampled", []))
        for group, info in (record.get("groups") or {}).items():
            entry = groups.setdefault(group, {"sites": set(), "rounds": 0, "examples": 0})
            entry["sites"].update(info.get("sites", []))
            entry["rounds"] += 1
            entry["examples"] = int(info.get("examples", 0))  # the latest round's count
        for scope, values in (record.get("epsilon") or {}).items():
            epsilon.setdefault(scope, {}).update(values)
        if phase == Phase.EVALUATE and record.get("metrics"):
            evaluation = {
                site: {k: v for k, v in m.items() if k in _HEADLINE}
                for site, m in record["metrics"].items()
            }
    return {
        "rounds": rounds,
        "sites": sorted(sites),
        "groups": {g: {**e, "sites": sorted(e["sites"])} for g, e in sorted(groups.items())},
        "epsilon": epsilon,
        "evaluation": evaluation,
    }


def model_card(manifest: dict[str, Any]) -> dict[str, Any]:
    """What `orthofed info` shows: the model, how it was trained, privacy, metrics and
    thresholds, taken from a checkpoint manifest (no case ids or patient identifiers)."""

    model = (manifest.get("config") or {}).get("model") or {}
    joints = manifest.get("joints") or ([manifest["joint"]] if manifest.get("joint") else [])
    groups = list(manifest.get("groups", []))
    card = {
        "kind": manifest.get("kind", "unknown"),
        "created": manifest.get("created"),
        "orthofed": (manifest.get("versions") or {}).get("orthofed"),
        "preset": manifest.get("preset"),
        "input": f"{model.get('input_slices')} slices x {model.get('input_size')}^2",
        "preprocess_key": manifest.get("preprocess_key"),
        "groups": groups,
        "joints": {
            j: {
                "labels": list(LABELS[parse_joint(j)]),
                "segmentation": f"head.{j}.seg" in groups,
                "heads": any(g.startswith(f"head.{j}.") for g in groups),
            }
            for j in joints
        },
        "training": _training(manifest),
        "evaluations": manifest.get(EVALUATIONS_KEY) or {},
        "thresholds": {
            j: {"source": e.get("source"), "values": e.get("values", {})}
            for j, e in (manifest.get(THRESHOLDS_KEY) or {}).items()
        },
    }
    return card


def _training(manifest: dict[str, Any]) -> dict[str, Any]:
    kind = manifest.get("kind")
    if kind in ("federated", "local_only"):
        return {
            "experiment": manifest.get("experiment"),
            "phase": manifest.get("phase"),
            "round": manifest.get("round"),
            **(manifest.get("training") or {}),
        }
    fields = ("site_id", "step", "num_examples", "best_epochs")
    out = {k: manifest[k] for k in fields if k in manifest}
    if "epoch_losses" in manifest:
        out["epochs"] = len(manifest["epoch_losses"])
    if manifest.get("init"):
        out["init"] = Path(str(manifest["init"])).name
    train = (manifest.get("config") or {}).get("train") or {}
    for key in ("mode", "label_fraction", "steps", "lr"):
        if key in train:
            out[key] = train[key]
    return out


def card_text(card: dict[str, Any]) -> str:
    """The card as indented plain text (what `orthofed info` prints)."""
    lines = [
        f"kind: {card['kind']} (created {card['created']}, orthofed {card['orthofed']})",
        f"model: preset {card['preset']}, input {card['input']}, "
        f"preprocessing {card['preprocess_key']}",
        f"groups: {', '.join(card['groups'])}",
    ]
    for joint, info in card["joints"].items():
        heads = "with heads" if info["heads"] else "no heads yet (pretrained backbones)"
        seg = ", knee structure segmentation" if info["segmentation"] else ""
        lines.append(f"joint {joint}: {heads}{seg}; labels {', '.join(info['labels'])}")
    lines.append("training:")
    lines += _nested(card["training"], indent=2)
    for title in ("evaluations", "thresholds"):
        if card[title]:
            lines.append(f"{title}:")
            lines += _nested(card[title], indent=2)
        else:
            lines.append(f"{title}: none stored")
    return "\n".join(lines)


def _nested(value: Any, *, indent: int) -> list[str]:
    pad = " " * indent
    if not isinstance(value, dict):
        return [pad + _scalar(value)]
    lines = []
    for key, item in value.items():
        if isinstance(item, dict) and item:
            lines.append(f"{pad}{key}:")
            lines += _nested(item, indent=indent + 2)
        else:
            lines.append(f"{pad}{key}: {_scalar(item)}")
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_scalar(v) for v in value) or "-"
    if isinstance(value, dict):
        return "-"
    return str(value)
