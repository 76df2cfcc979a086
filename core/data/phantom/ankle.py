"""Right ankle phantom: tibia, fibula, talus, calcaneus, midfoot, Achilles and other tendons,
lateral ligaments (ATFL, CFL), deltoid ligament, muscle and fat.

Local frame (mm): x to the patient's left (= medial), y posterior, z superior; origin at the
top of the talar dome; the foot points towards -y.
"""

from __future__ import annotations

import numpy as np

from core.data.phantom.builders import Jitter, blob, bone, cartilage, curve, tendon, torn_tendon
from core.data.phantom.profiles import Tissue
from core.data.phantom.scene import LesionRegion, Part, Scene
from core.data.phantom.shapes import (
    Column,
    Ellipsoid,
    HalfSpace,
    Intersection,
    Offset,
    Slab,
    Tube,
    Union,
)
from core.views import View

X, Y, Z = np.eye(3, dtype=np.float32)


def _body(j: Jitter) -> dict:
    leg = Column(
        z=np.array([-30.0, 40.0, 240.0]),
        cx=np.zeros(3),
        cy=np.array([14.0, 14.0, 16.0]) + j.rng.normal(0, 1.5, 3),
        rx=j.r(36, 36, 46),
        ry=j.r(48, 46, 50),
    )
    heel = Ellipsoid(center=j.p(0, 18, -42), radii=j.r(34, 46, 30))
    foot = Tube(
        points=np.array([j.p(0, 0, -46), j.p(-2, -70, -48), j.p(-4, -120, -55)]),
        radii=np.array([j.r(38, 30), j.r(40, 24), j.r(42, 18)]),
        width_dir=X,
    )
    return {
        "body": Union((leg, heel, foot), blend=14.0),
        "fat_depth": j.u(3, 7),
        "muscles": [
            Ellipsoid(center=j.p(0, 30, 140), radii=j.r(30, 18, 100)),  # soleus
            Ellipsoid(center=j.p(-6, 22, 60), radii=j.r(13, 10, 50)),  # FHL belly
            Ellipsoid(center=j.p(-10, -16, 120), radii=j.r(12, 10, 80)),  # ant. tib.
            Ellipsoid(center=j.p(-28, 12, 110), radii=j.r(8, 10, 80)),  # peroneus
            Ellipsoid(center=j.p(0, -25, -70), radii=j.r(26, 48, 9)),
        ],
    }  # plantar


def _bones(j: Jitter) -> dict:
    a: dict = {}
    plafond = 3.2 + j.u(-0.5, 0.5)
    a["tibia"] = Union(
        (
            Intersection(
                (
                    Ellipsoid(center=j.p(2, 3, 40), radii=j.r(24, 20, 38)),
                    HalfSpace(point=np.array([0, 0, plafond]), normal=-Z),
                )
            ),
            Ellipsoid(center=j.p(19, 4, 2), radii=j.r(6, 9, 15)),  # medial malleolus
            Tube(points=np.array([j.p(3, 6, 40), j.p(3, 8, 260)]), radii=j.r(13, 12), width_dir=X),
        ),
        blend=4.0,
    )
    a["fibula"] = Union(
        (
            Tube(
                points=np.array([j.p(-22, 12, 20), j.p(-22, 14, 260)]),
                radii=j.r(6.5, 6.5),
                width_dir=X,
            ),
            Ellipsoid(center=j.p(-23, 8, -8), radii=j.r(8, 11, 20)),  # lateral malleolus
        ),
        blend=4.0,
    )
    a["talus"] = Union(
        (
            Ellipsoid(center=j.p(0, 2, -14), radii=j.r(15, 19, 14)),  # dome and body
            Ellipsoid(center=j.p(0, -20, -22), radii=j.r(13, 13, 10)),  # neck
            Ellipsoid(center=j.p(1, -34, -24), radii=j.r(13, 9, 11)),  # head
        ),
        blend=5.0,
    )
    a["calcaneus"] = Union(
        (
            Ellipsoid(center=j.p(0, 20, -46), radii=j.r(19, 30, 16)),
            Ellipsoid(center=j.p(0, 46, -44), radii=j.r(16, 12, 17)),  # tuberosity
            Ellipsoid(center=j.p(14, 6, -34), radii=j.r(8, 10, 5)),  # sustentaculum
            Ellipsoid(center=j.p(-6, -14, -50), radii=j.r(14, 14, 12)),  # anterior process
        ),
        blend=5.0,
    )
    a["navicular"] = Ellipsoid(center=j.p(4, -48, -26), radii=j.r(16, 6, 12))
    a["cuboid"] = Ellipsoid(center=j.p(-16, -36, -52), radii=j.r(11, 12, 10))
    a["cuneiform"] = Ellipsoid(center=j.p(6, -64, -30), radii=j.r(16, 8, 12))
    return a


def _tendons(j: Jitter) -> dict:
    return {
        "achilles": (
            curve([j.p(0, 56, -38), j.p(0, 52, 10), j.p(0, 44, 70), j.p(0, 36, 150)]),
            j.r(7.5, 3.2),
            X,
        ),
        "tib_post": (
            curve([j.p(12, 20, 80), j.p(21, 15, 0), j.p(22, 0, -24), j.p(12, -42, -30)]),
            j.r(3, 2.5),
            Y,
        ),
        "fdl": (
            curve([j.p(10, 24, 80), j.p(19, 20, 0), j.p(20, 6, -30), j.p(8, -40, -60)]),
            j.r(2, 2),
            Y,
        ),
        "fhl": (curve([j.p(4, 30, 60), j.p(5, 24, -14), j.p(10, 4, -44)]), j.r(2.4, 2.4), Y),
        "per_brevis": (
            curve([j.p(-24, 22, 80), j.p(-28, 18, -8), j.p(-27, 4, -36), j.p(-22, -36, -52)]),
            j.r(2.8, 2.2),
            Y,
        ),
        "per_longus": (
            curve([j.p(-23, 27, 80), j.p(-27, 23, -8), j.p(-29, 8, -40), j.p(-18, -30, -62)]),
            j.r(2.4, 2.4),
            Y,
        ),
        "tib_ant": (curve([j.p(-6, -22, 90), j.p(2, -30, 0), j.p(10, -56, -30)]), j.r(3, 2.5), Y),
        "ext_dig": (
            curve([j.p(-14, -20, 90), j.p(-14, -30, 0), j.p(-14, -60, -40)]),
            j.r(2.5, 2),
            Y,
        ),
        "atfl": (np.array([j.p(-25, -3, -14, sd=1), j.p(-15, -21, -18, sd=1)]), j.r(3.5, 1.2), Z),
        "cfl": (
            curve([j.p(-24, 12, -26, sd=1), j.p(-27, 18, -36, sd=1), j.p(-18, 26, -46)]),
            j.r(2.2, 2.2),
            X,
        ),
        "deltoid": (np.array([j.p(19, 2, -10), j.p(15, 4, -30)]), j.r(7, 2.5), Y),
        "vessels": np.array([j.p(14, 24, 90), j.p(16, 20, -10), j.p(14, 0, -50)]),
    }


def _lesion_params(rng: np.random.Generator) -> dict[str, dict]:
    u = rng.uniform
    return {
        # Subtle on purpose (2-4 mm defects, thin edema cuff): with 2.5-5 mm gaps and a 1.6x
        # swollen cuff, a probe on random-init features already reached AUC 0.97 on the ankle.
        "atfl_injury": {"frac": u(0.3, 0.7), "gap": u(2, 4)},
        "cfl_injury": {"frac": u(0.3, 0.7), "gap": u(2, 4)},
        "achilles_tendon_rupture": {"height": u(20, 50), "gap": u(6, 14)},
        "osteochondral_lesion_talus": {
            "side": float(rng.choice([-1.0, 1.0])),
            "y": u(-8, 4),
            "size": u(2, 4),
            "edema": u(3, 6),
        },
    }


def ankle_scene(
    rng_anat: np.random.Generator, rng_lesion: np.random.Generator, present: dict[str, bool]
) -> Scene:
    """Anatomy of one ankle with the lesions flagged in `present`."""
    j = Jitter(rng_anat, scale=float(np.exp(rng_anat.normal(0, 0.06))))
    a = {**_body(j), **_bones(j), **_tendons(j)}
    lp = _lesion_params(rng_lesion)
    scene = Scene(
        parts=[],
        view_centres={
            View.SAGITTAL: np.array([0.0, 0.0, -18.0]),
            View.CORONAL: np.array([0.0, 8.0, -18.0]),
            View.AXIAL: np.array([0.0, 4.0, -14.0]),
        },
    )
    body = a["body"]
    parts = [Part("skin", Tissue.SKIN, body), Part("fat", Tissue.FAT, body, inset=1.5)]
    parts += [
        Part(f"muscle_{i}", Tissue.MUSCLE, m, clip=Offset(body, a["fat_depth"]))
        for i, m in enumerate(a["muscles"])
    ]
    parts.append(blob("kager_fat", Tissue.FAT, j.p(0, 36, 5), j.r(13, 9, 28)))
    parts.append(
        Part("post_tibial_vessels", Tissue.VESSEL, Tube(points=a["vessels"], radii=[2.5, 2.5]))
    )
    parts.append(blob("ankle_joint_fluid", Tissue.SYNOVIUM, [0, -14, -2], [16, 5, 4]))
    parts += _ligament_parts(a, scene, lp, present)
    parts += _articular_parts(a, scene, lp, present)
    scene.parts = parts
    scene.lesion_params = {k: v for k, v in lp.items() if present[k]}
    return scene


def _ligament_parts(a, scene: Scene, lp, present) -> list[Part]:
    parts: list[Part] = []
    for name in (
        "tib_post",
        "fdl",
        "fhl",
        "per_brevis",
        "per_longus",
        "tib_ant",
        "ext_dig",
        "deltoid",
    ):
        pts, radii, wd = a[name]
        parts.append(tendon(name, pts, radii, width_dir=wd))
    for name, label in (("atfl", "atfl_injury"), ("cfl", "cfl_injury")):
        pts, radii, wd = a[name]
        torn, region = torn_tendon(name, pts, radii, width_dir=wd, **lp[label], swell=1.2)
        parts += torn if present[label] else [tendon(name, pts, radii, width_dir=wd)]
        scene.lesion_regions[label] = region
    pts, radii, wd = a["achilles"]
    p = lp["achilles_tendon_rupture"]
    length = float(np.sum(np.linalg.norm(np.diff(pts, axis=0), axis=1)))
    frac = min(0.8, (p["height"] + 12.0) / length)
    torn, region = torn_tendon(
        "achilles", pts, radii, width_dir=wd, frac=frac, gap=p["gap"], swell=1.5
    )
    present_rupture = present["achilles_tendon_rupture"]
    parts += torn if present_rupture else [tendon("achilles", pts, radii, width_dir=wd)]
    scene.lesion_regions["achilles_tendon_rupture"] = LesionRegion(
        region.centre, min(region.radius, 70.0)
    )
    return parts


def _articular_parts(a, scene: Scene, lp, present) -> list[Part]:
    talus, tibia = a["talus"], a["tibia"]
    parts = [
        cartilage(
            "talar_cartilage",
            talus,
            thickness=1.6,
            clip=HalfSpace(point=np.array([0, 0, -9.0]), normal=-Z),
        ),
        cartilage(
            "plafond_cartilage",
            tibia,
            thickness=1.4,
            clip=Intersection(
                (
                    HalfSpace(point=np.array([0, 0, 7.0]), normal=Z),
                    Slab(point=np.array([0, 2, 0]), normal=X, thickness=34),
                )
            ),
        ),
    ]
    for name in ("tibia", "fibula", "talus", "calcaneus", "navicular", "cuboid", "cuneiform"):
        parts += bone(name, a[name], cortex=1.3)
    o = lp["osteochondral_lesion_talus"]
    spot = np.array([o["side"] * 8.0, o["y"], 0.6], np.float32)
    if present["osteochondral_lesion_talus"]:
        marrow = Offset(talus, 1.3)
        parts.append(
            blob("olt_edema", Tissue.EDEMA, spot - [0, 0, 4], [o["edema"]] * 3, clip=marrow)
        )
        parts.append(
            Part(
                "olt_defect",
                Tissue.FLUID,
                Ellipsoid(
                    center=spot, radii=np.array([o["size"], o["size"], o["size"] * 1.2], np.float32)
                ),
                clip=Offset(talus, -1.6),
            )
        )
    scene.lesion_regions["osteochondral_lesion_talus"] = LesionRegion(
        centre=spot, radius=o["edema"] + 12.0
    )
    return parts
