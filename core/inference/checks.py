"""Refusals and warnings about a study before the model sees it.

Refused (the study fails with one line): a series of another imaging modality (CT ...), a
series whose BodyPartExamined names another joint than the model's. Warned about: missing
views, oblique series, slices cropped or padded to the model's depth, an in-plane field of
view stretched to the model's square input, a body part that names no joint.
"""

from __future__ import annotations

import re

import numpy as np

from core.config import PreprocessConfig
from core.data.volume import Volume
from core.inference.headers import SeriesFacts
from core.views import VIEWS, Joint, View

# Imaging modalities other than MR that a study may hold and the model must never read.
OTHER_IMAGING_MODALITIES = frozenset({"CT", "PT", "NM", "US", "CR", "DX", "MG", "XA", "RF"})
# Words of BodyPartExamined that name each joint (DICOM defined terms and common variants).
BODY_PART_WORDS: dict[Joint, frozenset[str]] = {
    Joint.KNEE: frozenset({"KNEE"}),
    Joint.ANKLE: frozenset({"ANKLE", "FOOT"}),
    Joint.SHOULDER: frozenset({"SHOULDER"}),
}
# A series further than this from the patient axes gets a warning (the data layer accepts
# up to DataConfig.max_obliquity_deg and refuses beyond).
OBLIQUE_WARNING_DEG = 15.0
# In-plane field-of-view aspect ratio beyond which the square resize visibly distorts.
ASPECT_WARNING = 1.1


class StudyError(ValueError):
    """A study that cannot be predicted; the message is one line for the summary."""


def refuse_other_modalities(series: dict[str, SeriesFacts]) -> None:
    """StudyError naming the first series of a non-MR imaging modality (e.g. CT)."""
    for facts in series.values():
        if facts.modality in OTHER_IMAGING_MODALITIES:
            raise StudyError(
                f"{facts.label} is {facts.modality}, not MR: this model reads MR series only"
            )


def joints_named(body_part: str) -> set[Joint]:
    """The joints a BodyPartExamined value names (e.g. 'KNEE', 'RIGHT ANKLE', 'L_SHOULDER')."""
    words = set(re.split(r"[^A-Z]+", body_part.upper()))
    return {joint for joint, names in BODY_PART_WORDS.items() if words & names}


def check_joint(used: list[SeriesFacts], *, joint: Joint) -> list[str]:
    """StudyError when a used series names another joint only; warnings when none is named."""
    warnings = []
    for facts in used:
        named = joints_named(facts.body_part)
        if named and joint not in named:
            others = ", ".join(sorted(j.value for j in named))
            raise StudyError(
                f"{facts.label} has BodyPartExamined {facts.body_part!r} ({others}) but the "
                f"model is for the {joint.value}: use a {others} model or pick its --joint"
            )
        if not facts.body_part:
            warnings.append(
                f"{facts.label} has no BodyPartExamined: not checked to be a {joint.value}"
            )
        elif not named:
            warnings.append(
                f"{facts.label} has BodyPartExamined {facts.body_part!r}, which names no joint: "
                f"check that this is a {joint.value} exam"
            )
    return warnings


def obliquity_deg(volume: Volume) -> float:
    """Angle (degrees) between the slice normal and the nearest patient axis."""
    cosines = np.abs(np.asarray(volume.normal, dtype=float))
    return float(np.degrees(np.arccos(min(1.0, float(cosines.max())))))


def view_warnings(views: dict[View, Volume], *, preprocess: PreprocessConfig) -> list[str]:
    """Missing views, oblique series, cropped/padded slices, stretched fields of view."""
    warnings = []
    missing = [v.value for v in VIEWS if v not in views]
    if missing:
        used = ", ".join(v.value for v in VIEWS if v in views)
        warnings.append(f"no {' or '.join(missing)} series found: predicted from {used} only")
    for view, volume in views.items():
        warnings += _volume_warnings(view, volume, preprocess=preprocess)
    return warnings


def _volume_warnings(view: View, volume: Volume, *, preprocess: PreprocessConfig) -> list[str]:
    warnings = []
    angle = obliquity_deg(volume)
    if angle > OBLIQUE_WARNING_DEG:
        warnings.append(
            f"{view.value} series is oblique ({angle:.0f} degrees from the patient axes): "
            "check the result"
        )
    depth, slices = preprocess.slices, volume.slices
    if slices > depth:
        warnings.append(
            f"{view.value} series has {slices} slices, the model reads the central {depth}: "
            f"{slices - depth} outer slices cropped"
        )
    elif slices < depth:
        warnings.append(
            f"{view.value} series has {slices} slices, padded with {depth - slices} empty "
            f"slices to the model's {depth}"
        )
    height = volume.shape[1] * volume.spacing[1]
    width = volume.shape[2] * volume.spacing[2]
    if max(height, width) / min(height, width) > ASPECT_WARNING:
        warnings.append(
            f"{view.value} field of view {height:.0f} x {width:.0f} mm is stretched to the "
            "model's square input"
        )
    return warnings
