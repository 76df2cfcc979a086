"""Views, joints, label sets and the geometry rule that maps a slice normal to a view.

These names are the project's vocabulary: label column names follow the reference file
(`labels.csv` columns, in order), structure names are the knee segmentation classes.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class View(StrEnum):
    SAGITTAL = "sagittal"
    CORONAL = "coronal"
    AXIAL = "axial"


class Joint(StrEnum):
    KNEE = "knee"
    ANKLE = "ankle"
    SHOULDER = "shoulder"


VIEWS: tuple[View, ...] = (View.SAGITTAL, View.CORONAL, View.AXIAL)

LABELS: dict[Joint, tuple[str, ...]] = {
    Joint.KNEE: (
        "acl_tear",
        "pcl_tear",
        "medial_meniscus_tear",
        "lateral_meniscus_tear",
        "mcl_injury",
        "lcl_injury",
        "patellar_dislocation",
        "joint_effusion",
    ),
    Joint.ANKLE: (
        "atfl_injury",
        "cfl_injury",
        "achilles_tendon_rupture",
        "osteochondral_lesion_talus",
    ),
    Joint.SHOULDER: (
        "supraspinatus_tear",
        "infraspinatus_tear",
        "subscapularis_tear",
        "lhbt_injury",
        "acromioclavicular_lesion",
        "glenohumeral_lesion",
        "lhbt_sheath_effusion",
        "subacromial_bursitis",
    ),
}

# The 11 knee structures segmented by the knee head (label value = index + 1; 0 = background).
# Bones, cartilages, menisci and cruciate ligaments, as in OAI-ZIB/SKM-TEA style label sets
# extended with the two ligaments the reference mentions.
KNEE_STRUCTURES: tuple[str, ...] = (
    "femur",
    "tibia",
    "patella",
    "femoral_cartilage",
    "medial_tibial_cartilage",
    "lateral_tibial_cartilage",
    "patellar_cartilage",
    "medial_meniscus",
    "lateral_meniscus",
    "acl",
    "pcl",
)

# Patient axes (DICOM LPS: x right->left, y anterior->posterior, z inferior->superior)
# whose direction a slice normal follows for each view.
_AXIS_VIEW: tuple[View, ...] = (View.SAGITTAL, View.CORONAL, View.AXIAL)


def parse_joint(value: str) -> Joint:
    """Return the Joint named by `value`, or raise a ValueError listing the choices."""
    try:
        return Joint(str(value).strip().lower())
    except ValueError:
        choices = ", ".join(j.value for j in Joint)
        raise ValueError(f"unknown joint {value!r}: choose one of {choices}") from None


def view_from_normal(normal: np.ndarray, *, max_obliquity_deg: float = 30.0) -> View:
    """The view whose patient axis the slice normal follows (sign ignored).

    Raises ValueError when the normal is further than `max_obliquity_deg` from every patient
    axis (e.g. a double-oblique series near 45 degrees): such a series is ambiguous.
    """
    n = np.asarray(normal, dtype=float).reshape(3)
    norm = float(np.linalg.norm(n))
    if not np.isfinite(norm) or norm < 1e-6:
        raise ValueError("slice normal is zero or not finite")
    cosines = np.abs(n / norm)
    axis = int(np.argmax(cosines))
    angle = float(np.degrees(np.arccos(min(1.0, cosines[axis]))))
    if angle > max_obliquity_deg:
        raise ValueError(
            f"ambiguous orientation: slice normal is {angle:.0f} degrees from the nearest "
            f"patient axis (limit {max_obliquity_deg:.0f})"
        )
    return _AXIS_VIEW[axis]
