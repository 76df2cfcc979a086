"""Which labels a phantom case has: base prevalence per label plus realistic co-occurrence.

Labels are decided in a fixed order with one uniform draw each (so the generator advances the
same way whatever comes out); a present "cause" raises the probability of its "effects"
(an ACL tear brings an effusion and a lateral meniscus tear more often, and so on).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from core.views import LABELS, Joint

BASE_PREVALENCE: dict[Joint, dict[str, float]] = {
    Joint.KNEE: {
        "acl_tear": 0.20,
        "pcl_tear": 0.10,
        "medial_meniscus_tear": 0.22,
        "lateral_meniscus_tear": 0.12,
        "mcl_injury": 0.13,
        "lcl_injury": 0.10,
        "patellar_dislocation": 0.10,
        "joint_effusion": 0.16,
    },
    Joint.ANKLE: {
        "atfl_injury": 0.30,
        "cfl_injury": 0.08,
        "achilles_tendon_rupture": 0.14,
        "osteochondral_lesion_talus": 0.15,
    },
    Joint.SHOULDER: {
        "supraspinatus_tear": 0.30,
        "infraspinatus_tear": 0.07,
        "subscapularis_tear": 0.12,
        "lhbt_injury": 0.10,
        "acromioclavicular_lesion": 0.18,
        "glenohumeral_lesion": 0.15,
        "lhbt_sheath_effusion": 0.10,
        "subacromial_bursitis": 0.12,
    },
}

# (cause, effect, added probability); causes are decided before their effects.
CO_OCCURRENCE: dict[Joint, tuple[tuple[str, str, float], ...]] = {
    Joint.KNEE: (
        ("acl_tear", "joint_effusion", 0.45),
        ("acl_tear", "lateral_meniscus_tear", 0.25),
        ("acl_tear", "mcl_injury", 0.15),
        ("patellar_dislocation", "joint_effusion", 0.40),
        ("medial_meniscus_tear", "joint_effusion", 0.10),
    ),
    Joint.ANKLE: (
        ("atfl_injury", "cfl_injury", 0.35),
        ("atfl_injury", "osteochondral_lesion_talus", 0.10),
    ),
    Joint.SHOULDER: (
        ("supraspinatus_tear", "infraspinatus_tear", 0.25),
        ("supraspinatus_tear", "subacromial_bursitis", 0.35),
        ("subscapularis_tear", "lhbt_injury", 0.30),
        ("lhbt_injury", "lhbt_sheath_effusion", 0.40),
        ("supraspinatus_tear", "lhbt_sheath_effusion", 0.10),
    ),
}


def decision_order(joint: Joint) -> list[str]:
    """Labels ordered so that every cause comes before its effects."""
    effects = {e for _, e, _ in CO_OCCURRENCE[joint]}
    labels = LABELS[joint]
    return [n for n in labels if n not in effects] + [n for n in labels if n in effects]


def sample_labels(
    rng: np.random.Generator,
    *,
    joint: Joint,
    prevalence_scale: float = 1.0,
    force: Mapping[str, bool] | None = None,
) -> dict[str, bool]:
    """Present/absent per label of `joint` (in LABELS order); `force` overrides single labels."""
    force = dict(force or {})
    unknown = set(force) - set(LABELS[joint])
    if unknown:
        raise ValueError(f"unknown {joint.value} labels {sorted(unknown)}: use {LABELS[joint]}")
    order = decision_order(joint)
    draws = dict(zip(order, rng.uniform(size=len(order)), strict=True))
    present: dict[str, bool] = {}
    for name in order:
        p = BASE_PREVALENCE[joint][name] * prevalence_scale
        p += sum(d for c, e, d in CO_OCCURRENCE[joint] if e == name and present.get(c))
        present[name] = bool(force.get(name, draws[name] < min(p, 0.95)))
    return {name: present[name] for name in LABELS[joint]}
