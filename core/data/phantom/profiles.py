"""Site profiles: how one hospital's scanner and protocol make a phantom site look different.

A profile fixes the acquisition (matrix, field of view, slice count and thickness), the
contrast (signal per tissue class), the noise level, the vendor tags written into DICOM and a
multiplier on label prevalence. Presets are named; each joint has a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from core.views import Joint, View, parse_joint


class Tissue(IntEnum):
    """Tissue classes the anatomy is painted with (each has one signal level per contrast)."""

    AIR = 0
    FAT = 1
    SKIN = 2
    MUSCLE = 3
    CORTEX = 4
    MARROW = 5
    CARTILAGE = 6
    FIBROCARTILAGE = 7  # menisci, labrum
    TENDON = 8  # tendons and ligaments
    FLUID = 9
    EDEMA = 10
    VESSEL = 11
    SYNOVIUM = 12  # joint capsule with a film of fluid


# Signal (fluid ~ 1) per tissue for the contrasts the presets use.
CONTRASTS: dict[str, dict[Tissue, float]] = {
    # proton density, fat saturated: fluid bright, fat and marrow suppressed
    "pd_fs": {
        Tissue.AIR: 0.0,
        Tissue.FAT: 0.15,
        Tissue.SKIN: 0.30,
        Tissue.MUSCLE: 0.26,
        Tissue.CORTEX: 0.03,
        Tissue.MARROW: 0.19,
        Tissue.CARTILAGE: 0.48,
        Tissue.FIBROCARTILAGE: 0.05,
        Tissue.TENDON: 0.05,
        Tissue.FLUID: 0.95,
        Tissue.EDEMA: 0.62,
        Tissue.VESSEL: 0.06,
        Tissue.SYNOVIUM: 0.34,
    },
    # intermediate-weighted fast spin echo without fat saturation: fat and marrow bright too
    "pd": {
        Tissue.AIR: 0.0,
        Tissue.FAT: 0.82,
        Tissue.SKIN: 0.55,
        Tissue.MUSCLE: 0.36,
        Tissue.CORTEX: 0.03,
        Tissue.MARROW: 0.70,
        Tissue.CARTILAGE: 0.52,
        Tissue.FIBROCARTILAGE: 0.07,
        Tissue.TENDON: 0.08,
        Tissue.FLUID: 0.92,
        Tissue.EDEMA: 0.72,
        Tissue.VESSEL: 0.10,
        Tissue.SYNOVIUM: 0.55,
    },
    # T2 fat saturated: darker cartilage and muscle, very bright fluid
    "t2_fs": {
        Tissue.AIR: 0.0,
        Tissue.FAT: 0.10,
        Tissue.SKIN: 0.25,
        Tissue.MUSCLE: 0.22,
        Tissue.CORTEX: 0.02,
        Tissue.MARROW: 0.15,
        Tissue.CARTILAGE: 0.42,
        Tissue.FIBROCARTILAGE: 0.05,
        Tissue.TENDON: 0.05,
        Tissue.FLUID: 1.0,
        Tissue.EDEMA: 0.58,
        Tissue.VESSEL: 0.06,
        Tissue.SYNOVIUM: 0.40,
    },
}

# Relative amplitude of the smooth tissue texture (marrow trabeculae, muscle fibres, fat).
TEXTURE: dict[Tissue, float] = {
    Tissue.FAT: 0.06,
    Tissue.MUSCLE: 0.08,
    Tissue.MARROW: 0.10,
    Tissue.CARTILAGE: 0.04,
    Tissue.SKIN: 0.05,
    Tissue.FLUID: 0.02,
}

TRANSFER_SYNTAXES = ("explicit", "rle", "jpegls")


@dataclass(frozen=True)
class SiteProfile:
    name: str
    joint: Joint | None  # None: any joint (test profile)
    description: str
    size: int  # in-plane matrix (rows = columns)
    fov_mm: float
    slices: int
    slice_thickness: float
    slice_gap: float
    snr: float  # fluid signal over the noise standard deviation
    contrast: str
    manufacturer: str
    model: str
    field_strength: float
    institution: str
    series_names: dict[View, str] = field(default_factory=dict)
    transfer_syntax: str = "explicit"
    rescale_slope: float | None = None  # stored = value / slope when set
    prevalence_scale: float = 1.0
    max_obliquity_deg: float = 10.0
    max_offset_mm: float = 4.0
    bias_strength: float = 0.2
    supersample: int = 3  # samples across the slice thickness (odd: the middle is the centre)
    # Series the site acquires; a site without a view is realistic (and exercises per-view
    # aggregation: the federation averages that view's backbone over the other sites).
    views: tuple[View, ...] = (View.SAGITTAL, View.CORONAL, View.AXIAL)


def _names(sag: str, cor: str, ax: str) -> dict[View, str]:
    return {View.SAGITTAL: sag, View.CORONAL: cor, View.AXIAL: ax}


PROFILES: dict[str, SiteProfile] = {
    p.name: p
    for p in (
        SiteProfile(
            name="knee-3t",
            joint=Joint.KNEE,
            description="3 T knee, PD fat-sat, high SNR",
            size=256,
            fov_mm=160.0,
            slices=24,
            slice_thickness=3.0,
            slice_gap=0.3,
            snr=40.0,
            contrast="pd_fs",
            manufacturer="SIEMENS",
            model="MAGNETOM Skyra",
            field_strength=3.0,
            institution="Northfield University Hospital",
            series_names=_names("pd_tse_fs_sag", "pd_tse_fs_cor", "pd_tse_fs_tra"),
        ),
        SiteProfile(
            name="knee-15t",
            joint=Joint.KNEE,
            description="1.5 T knee, intermediate-weighted without fat-sat, lower SNR, JPEG-LS",
            size=192,
            fov_mm=160.0,
            slices=20,
            slice_thickness=3.5,
            slice_gap=0.5,
            snr=22.0,
            contrast="pd",
            manufacturer="GE MEDICAL SYSTEMS",
            model="SIGNA Explorer",
            field_strength=1.5,
            institution="Riverside Community Imaging",
            series_names=_names("Sag FSE PD", "Cor FSE PD", "Ax FSE PD"),
            transfer_syntax="jpegls",
            prevalence_scale=1.2,
            bias_strength=0.3,
            views=(View.SAGITTAL, View.CORONAL),
        ),
        SiteProfile(
            name="ankle-std",
            joint=Joint.ANKLE,
            description="1.5 T ankle, PD SPAIR, RLE",
            size=224,
            fov_mm=150.0,
            slices=22,
            slice_thickness=3.0,
            slice_gap=0.5,
            snr=30.0,
            contrast="pd_fs",
            manufacturer="Philips Medical Systems",
            model="Ingenia",
            field_strength=1.5,
            institution="St. Aldric Orthopaedic Clinic",
            series_names=_names("SAG PD SPAIR", "COR PD SPAIR", "TRA PD SPAIR"),
            transfer_syntax="rle",
            rescale_slope=1.5,
        ),
        SiteProfile(
            name="shoulder-std",
            joint=Joint.SHOULDER,
            description="3 T shoulder, T2 fat-sat",
            size=224,
            fov_mm=170.0,
            slices=22,
            slice_thickness=3.5,
            slice_gap=0.4,
            snr=30.0,
            contrast="t2_fs",
            manufacturer="Canon Medical Systems",
            model="Vantage Galan 3T",
            field_strength=3.0,
            institution="Harbour Sports Medicine Centre",
            series_names=_names("T2 FS SAG OBL", "T2 FS COR OBL", "T2 FS AX"),
        ),
        SiteProfile(
            name="tiny",
            joint=None,
            description="small test site (any joint)",
            size=128,
            fov_mm=160.0,
            slices=16,
            slice_thickness=4.0,
            slice_gap=1.0,
            snr=30.0,
            contrast="pd_fs",
            manufacturer="ORTHOFED",
            model="Phantom Scanner",
            field_strength=1.5,
            institution="Phantom Test Site",
            series_names=_names("SAG PD FS", "COR PD FS", "AX PD FS"),
        ),
    )
}

DEFAULT_PROFILE: dict[Joint, str] = {
    Joint.KNEE: "knee-3t",
    Joint.ANKLE: "ankle-std",
    Joint.SHOULDER: "shoulder-std",
}


def get_profile(name: str | None, *, joint: Joint | str) -> SiteProfile:
    """The named profile (default for `joint` when None); ValueError lists the choices."""
    j = parse_joint(joint)
    if name is None:
        return PROFILES[DEFAULT_PROFILE[j]]
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if profile.joint is not None and profile.joint != j:
        usable = [n for n, p in PROFILES.items() if p.joint in (None, j)]
        raise ValueError(
            f"profile {name!r} is for the {profile.joint.value}; for the {j.value} use one of "
            f"{', '.join(usable)}"
        )
    return profile
