"""The knee structures as written into segmentation outputs: one table of names, display
colours (sRGB, also used by the HTML overlays) and SNOMED CT property codes.

Segment number = label value in `seg.nii.gz` = index in `core.views.KNEE_STRUCTURES` + 1.
Codes come from pydicom's SNOMED CT dictionary; where it has no code for the exact structure
(cartilage plates, the two menisci, the cruciate ligaments) the general type is used and the
segment label names the structure.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.views import KNEE_STRUCTURES


@dataclass(frozen=True)
class Structure:
    number: int  # segment number and label value (1-based)
    name: str  # as in core.views.KNEE_STRUCTURES
    rgb: tuple[int, int, int]  # recommended display colour
    code: tuple[str, str, str]  # SNOMED CT (value, scheme, meaning) of the property type


# Category of every segment: SCT 91723000 "Anatomical Structure".
CATEGORY = ("91723000", "SCT", "Anatomical Structure")
_BONE = {
    "femur": ("71341001", "SCT", "Femur"),
    "tibia": ("12611008", "SCT", "Tibia"),
    "patella": ("64234005", "SCT", "Patella"),
}
_CARTILAGE = ("309312004", "SCT", "Cartilage")
_MENISCUS = ("74135004", "SCT", "Meniscus")
_LIGAMENT = ("52082005", "SCT", "Ligament")

# name -> (colour, code); bones in bone tones, cartilage in blues, menisci green, ligaments red.
_TABLE: dict[str, tuple[tuple[int, int, int], tuple[str, str, str]]] = {
    "femur": ((241, 214, 145), _BONE["femur"]),
    "tibia": ((221, 130, 101), _BONE["tibia"]),
    "patella": ((183, 156, 220), _BONE["patella"]),
    "femoral_cartilage": ((111, 184, 210), _CARTILAGE),
    "medial_tibial_cartilage": ((47, 120, 200), _CARTILAGE),
    "lateral_tibial_cartilage": ((0, 151, 156), _CARTILAGE),
    "patellar_cartilage": ((160, 200, 255), _CARTILAGE),
    "medial_meniscus": ((120, 200, 80), _MENISCUS),
    "lateral_meniscus": ((30, 140, 60), _MENISCUS),
    "acl": ((230, 60, 60), _LIGAMENT),
    "pcl": ((250, 160, 30), _LIGAMENT),
}


def knee_structures() -> tuple[Structure, ...]:
    """Every knee structure in label order (ValueError if the table misses one)."""
    missing = [name for name in KNEE_STRUCTURES if name not in _TABLE]
    if missing:
        raise ValueError(f"no display colour/code for knee structures {', '.join(missing)}")
    return tuple(
        Structure(number=i + 1, name=name, rgb=_TABLE[name][0], code=_TABLE[name][1])
        for i, name in enumerate(KNEE_STRUCTURES)
    )


def label_text(name: str) -> str:
    """A readable segment label: 'medial_tibial_cartilage' -> 'medial tibial cartilage'."""
    return {"acl": "ACL", "pcl": "PCL"}.get(name, name.replace("_", " "))
