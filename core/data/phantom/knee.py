"""Right knee phantom: bones, cartilage, menisci, cruciate/collateral ligaments, tendons, muscle.

Local frame (mm): x to the patient's left (= medial for a right knee), y posterior,
z superior, origin near the centre of the joint line.
"""

from __future__ import annotations

import numpy as np

from core.data.phantom.builders import (
    Jitter,
    blob,
    bone,
    cartilage,
    curve,
    tendon,
    thickened,
    torn_tendon,
)
from core.data.phantom.profiles import Tissue
from core.data.phantom.scene import LesionRegion, Part, Scene
from core.data.phantom.shapes import (
    Column,
    Difference,
    Ellipsoid,
    HalfSpace,
    Intersection,
    Offset,
    Slab,
    Tube,
    Union,
    WedgeRing,
    rotation,
)
from core.views import KNEE_STRUCTURES, View

L = {name: i + 1 for i, name in enumerate(KNEE_STRUCTURES)}
X, Y, Z = np.eye(3, dtype=np.float32)


def _bones(j: Jitter) -> dict:
    a: dict = {}
    condyle_m = Ellipsoid(center=j.p(22, 6, 22), radii=j.r(18, 30, 20))
    condyle_l = Ellipsoid(center=j.p(-22, 4, 23), radii=j.r(17, 29, 19))
    meta = Intersection(
        (
            Ellipsoid(center=j.p(0, 4, 18), radii=j.r(38, 25, 62)),
            HalfSpace(point=np.array([0, 0, 14.0]), normal=-Z),
        )
    )
    shaft = Tube(points=np.array([j.p(0, 5, 40), j.p(0, 2, 260)]), radii=j.r(15, 13), width_dir=X)
    notch = Tube(points=np.array([j.p(0, 40, 5), j.p(0, -6, 14)]), radii=j.r(9, 7), width_dir=X)
    a["notch"] = notch
    a["femur"] = Difference(Union((meta, condyle_m, condyle_l, shaft), blend=8.0), notch)
    a["femur_shaft"] = shaft
    a["physis_z"] = 38.0 * j.scale + j.u(-3, 3)
    plateau_z, slope = -3.0 * j.scale + j.u(-1, 1), j.u(0.06, 0.14)
    a["plateau_z"], a["slope"] = plateau_z, slope
    top = HalfSpace(
        point=np.array([0, 0, plateau_z], np.float32), normal=np.array([0, slope, 1], np.float32)
    )
    head = Intersection((Ellipsoid(center=j.p(0, 4, -8), radii=j.r(42, 31, 50)), top))
    spines = Union(
        (
            Ellipsoid(center=j.p(5, 2, -3), radii=j.r(3.5, 7, 5)),
            Ellipsoid(center=j.p(-5, 2, -3), radii=j.r(3.5, 7, 5)),
        )
    )
    tib_shaft = Tube(
        points=np.array([j.p(0, 6, -40), j.p(0, 8, -260)]), radii=j.r(16, 14), width_dir=X
    )
    tubercle = Ellipsoid(center=j.p(0, -22, -42), radii=j.r(12, 8, 14))
    a["tibia"] = Union((head, spines, tib_shaft, tubercle), blend=6.0)
    a["fibula"] = Union(
        (
            Ellipsoid(center=j.p(-38, 22, -40), radii=j.r(10, 10, 12)),
            Tube(
                points=np.array([j.p(-38, 22, -40), j.p(-36, 24, -260)]),
                radii=j.r(7, 7),
                width_dir=X,
            ),
        ),
        blend=4.0,
    )
    a["patella_c"] = j.p(0, -40, 28)
    a["patella_r"] = j.r(21, 8.5, 22)
    return a


def _soft(j: Jitter) -> dict:
    a: dict = {}
    knots = np.array([-240.0, -60.0, 0.0, 120.0, 260.0])
    rx, ry = j.r(50, 55, 62, 70, 78), j.r(52, 55, 58, 68, 76)
    a["body"] = Column(z=knots, cx=np.zeros(5), cy=8.0 + j.rng.normal(0, 1.5, 5), rx=rx, ry=ry)
    a["fat_depth"] = j.u(5, 12)
    a["muscles"] = [
        Ellipsoid(center=j.p(0, -2, 160), radii=j.r(60, 52, 110)),  # quadriceps
        Ellipsoid(center=j.p(36, 4, 72), radii=j.r(22, 24, 42)),  # vastus medialis obliquus
        Ellipsoid(center=j.p(30, 42, 80), radii=j.r(17, 17, 90)),  # semimembranosus
        Ellipsoid(center=j.p(-38, 34, 70), radii=j.r(15, 16, 95)),  # biceps femoris
        Ellipsoid(center=j.p(24, 44, -50), radii=j.r(20, 17, 85)),  # medial gastrocnemius
        Ellipsoid(center=j.p(-22, 42, -45), radii=j.r(17, 15, 75)),  # lateral gastrocnemius
        Ellipsoid(center=j.p(46, 22, 60), radii=j.r(9, 9, 120)),  # sartorius
        Ellipsoid(center=j.p(0, 28, -38), radii=j.r(26, 7, 12)),  # popliteus
        Ellipsoid(center=j.p(-22, -14, -125), radii=j.r(14, 14, 80)),  # tibialis anterior
        Ellipsoid(center=j.p(0, 42, -150), radii=j.r(35, 18, 80)),  # soleus
    ]
    a["hoffa"] = Ellipsoid(center=j.p(0, -30, -2), radii=j.r(24, 11, 15))
    a["recess"] = j.p(0, -28, 50)
    a["artery"] = np.array([j.p(2, 38, -90), j.p(-2, 36, 130)])
    a["vein"] = np.array([j.p(8, 42, -90), j.p(4, 41, 130)])
    return a


def _ligaments(j: Jitter) -> dict:
    a: dict = {}
    a["acl"] = (curve([j.p(-11, 20, 16), j.p(-5, 6, 8), j.p(4, -10, -3)]), j.r(4.5, 3.5), X)
    a["pcl"] = (curve([j.p(9, 2, 17), j.p(6, 24, 10), j.p(1, 28, -14)]), j.r(5.5, 4.5), X)
    a["mcl"] = (
        curve([j.p(44, 6, 40), j.p(45, 4, 0), j.p(39, 2, -28), j.p(24, 0, -58)]),
        j.r(7, 1.8),
        Y,
    )
    a["lcl"] = (curve([j.p(-45, 12, 30), j.p(-46, 18, 0), j.p(-43, 22, -33)]), j.r(2.6, 2.6), Y)
    a["pt"] = (np.array([j.p(0, -46, 10), j.p(0, -33, -44)]), j.r(13, 3.2), X)
    a["qt"] = (np.array([j.p(0, -47, 46), j.p(0, -38, 120)]), j.r(16, 4.0), X)
    a["menisci"] = {
        "medial": dict(
            center=j.p(21, 5, 0)[:2], outer=j.r(18, 24), width=j.u(10, 12), height=j.u(5.5, 7)
        ),
        "lateral": dict(
            center=j.p(-21, 3, 0)[:2], outer=j.r(17, 19), width=j.u(9, 11), height=j.u(5, 6.5)
        ),
    }
    return a


def _lesion_params(rng: np.random.Generator) -> dict[str, dict]:
    u = rng.uniform
    return {
        "acl_tear": {"frac": u(0.35, 0.65), "gap": u(4, 8)},
        "pcl_tear": {"frac": u(0.3, 0.6), "gap": u(4, 8)},
        "medial_meniscus_tear": {"angle": u(-25, 25), "tilt": u(-30, 30), "depth": u(0.3, 0.6)},
        "lateral_meniscus_tear": {"angle": u(-35, 35), "tilt": u(-30, 30), "depth": u(0.3, 0.6)},
        "mcl_injury": {"factor": u(1.6, 2.2), "edema": u(1.5, 3)},
        "lcl_injury": {"factor": u(1.4, 1.9), "edema": u(1.5, 3)},
        "patellar_dislocation": {"shift": u(12, 20), "tilt": u(12, 25)},
        "joint_effusion": {"depth": u(4, 8), "width": u(26, 34), "height": u(18, 26)},
    }


def knee_scene(
    rng_anat: np.random.Generator, rng_lesion: np.random.Generator, present: dict[str, bool]
) -> Scene:
    """Anatomy of one knee with the lesions flagged in `present`."""
    j = Jitter(rng_anat, scale=float(np.exp(rng_anat.normal(0, 0.06))))
    a = {**_bones(j), **_soft(j), **_ligaments(j)}
    lp = _lesion_params(rng_lesion)
    scene = Scene(
        parts=[],
        view_centres={
            View.SAGITTAL: np.array([0.0, 2.0, 5.0]),
            View.CORONAL: np.array([0.0, 6.0, 4.0]),
            View.AXIAL: np.array([0.0, 0.0, 10.0]),
        },
    )
    scene.parts += _soft_parts(a, scene, lp, present)
    scene.parts += _articular_parts(a, scene, lp, present)
    scene.parts += _ligament_parts(a, scene, lp, present)
    scene.parts += _bone_parts(a, scene, lp, present)
    scene.lesion_params = {k: v for k, v in lp.items() if present[k]}
    return scene


def _soft_parts(a, scene: Scene, lp, present) -> list[Part]:
    body = a["body"]
    inner = Offset(body, a["fat_depth"])
    parts = [Part("skin", Tissue.SKIN, body), Part("subcutaneous_fat", Tissue.FAT, body, inset=2)]
    parts += [Part(f"muscle_{i}", Tissue.MUSCLE, m, clip=inner) for i, m in enumerate(a["muscles"])]
    parts += [Part("hoffa_fat_pad", Tissue.FAT, a["hoffa"])]
    parts += [
        Part("popliteal_artery", Tissue.VESSEL, Tube(points=a["artery"], radii=[3.2, 3.2])),
        Part("popliteal_vein", Tissue.SKIN, Tube(points=a["vein"], radii=[4.0, 3.5])),
    ]
    r = a["recess"]
    parts.append(blob("suprapatellar_recess", Tissue.FLUID, r, [28, 1.6, 16]))
    if present["joint_effusion"]:
        e = lp["joint_effusion"]
        parts.append(
            blob("effusion", Tissue.FLUID, r + [0, -1, 3], [e["width"], e["depth"], e["height"]])
        )
    scene.lesion_regions["joint_effusion"] = LesionRegion(centre=r + [0, -1, 3], radius=44.0)
    return parts


def _patella_frame(a, lp, present) -> tuple[np.ndarray, np.ndarray]:
    c = a["patella_c"].copy()
    axes = np.eye(3, dtype=np.float32)
    if present["patellar_dislocation"]:
        d = lp["patellar_dislocation"]
        c = c + np.array([-d["shift"], 4.0, 0.0], np.float32)
        axes = rotation(Z, -d["tilt"]).astype(np.float32)
    return c, axes


def _articular_parts(a, scene: Scene, lp, present) -> list[Part]:
    femur, tibia = a["femur"], a["tibia"]
    pc, axes = _patella_frame(a, lp, present)
    patella = Ellipsoid(center=pc, radii=a["patella_r"], axes=axes)
    a["patella"] = patella
    back = HalfSpace(point=pc + axes @ np.array([0, 2, 0], np.float32), normal=-(axes @ Y))
    parts = [
        cartilage(
            "femoral_cartilage",
            femur,
            thickness=2.4,
            label=L["femoral_cartilage"],
            clip=_femoral_articular(a),
        ),
        cartilage(
            "medial_tibial_cartilage",
            tibia,
            thickness=2.2,
            label=L["medial_tibial_cartilage"],
            clip=_plateau_clip(a, 8, 40),
        ),
        cartilage(
            "lateral_tibial_cartilage",
            tibia,
            thickness=2.2,
            label=L["lateral_tibial_cartilage"],
            clip=_plateau_clip(a, -40, -8),
        ),
        cartilage(
            "patellar_cartilage", patella, thickness=3.0, label=L["patellar_cartilage"], clip=back
        ),
    ]
    ctr = a["patella_c"]
    scene.lesion_regions["patellar_dislocation"] = LesionRegion(
        centre=ctr + [-8, 0, 0], radius=68.0
    )
    return _menisci(a, scene, lp, present) + parts


def _femoral_articular(a):
    """Distal, posterior-condylar and trochlear surfaces, not the notch or the side walls."""
    distal = HalfSpace(point=np.array([0, 0, 10.0]), normal=Z)
    posterior = Intersection(
        (
            HalfSpace(point=np.array([0, 12.0, 0]), normal=-Y),
            HalfSpace(point=np.array([0, 0, 32.0]), normal=Z),
        )
    )
    trochlea = Intersection(
        (
            HalfSpace(point=np.array([0, -10.0, 0]), normal=Y),
            HalfSpace(point=np.array([0, 0, 52.0]), normal=Z),
        )
    )
    sides = Slab(point=np.zeros(3), normal=X, thickness=78)
    return Difference(
        Intersection((Union((distal, posterior, trochlea)), sides)), Offset(a["notch"], -1.5)
    )


def _plateau_clip(a, x0: float, x1: float):
    z = a["plateau_z"]
    return Intersection(
        (
            HalfSpace(point=np.array([0, 0, z - 4.0]), normal=-Z),
            Slab(point=np.array([(x0 + x1) / 2, 0, 0]), normal=X, thickness=abs(x1 - x0)),
        )
    )


def _menisci(a, scene: Scene, lp, present) -> list[Part]:
    parts = []
    for side, sign in (("medial", 1.0), ("lateral", -1.0)):
        m = a["menisci"][side]
        shape = WedgeRing(
            center=m["center"],
            outer=m["outer"],
            base_z=a["plateau_z"] + 0.6,
            width=m["width"],
            height=m["height"],
            slope=a["slope"],
        )
        horns = HalfSpace(point=np.array([sign * 7.0, 0, 0]), normal=-sign * X)
        label = L[f"{side}_meniscus"]
        parts.append(Part(f"{side}_capsule", Tissue.SYNOVIUM, Offset(shape, -1.2), clip=horns))
        parts.append(
            Part(f"{side}_meniscus", Tissue.FIBROCARTILAGE, shape, clip=horns, label=label)
        )
        name = f"{side}_meniscus_tear"
        t = lp[name]
        ang = np.radians(t["angle"])
        c, (ra, rb) = m["center"], m["outer"]
        spot = np.array(
            [
                c[0] + sign * 0.35 * ra * np.sin(ang),
                c[1] + 0.8 * rb * np.cos(ang),
                a["plateau_z"]
                + 0.6
                - a["slope"] * (c[1] + 0.8 * rb * np.cos(ang))
                + m["height"] * t["depth"],
            ],
            np.float32,
        )
        normal = rotation(X, t["tilt"]) @ Z
        if present[name]:
            cleft = Intersection(
                (
                    Slab(point=spot, normal=normal, thickness=1.0),
                    shape,
                    Ellipsoid(center=spot, radii=np.array([9.0, 9.0, 9.0])),
                )
            )
            parts.append(Part(name, Tissue.FLUID, cleft, clip=horns, label=label))
        scene.lesion_regions[name] = LesionRegion(centre=spot, radius=16.0)
    return parts


def _ligament_parts(a, scene: Scene, lp, present) -> list[Part]:
    parts: list[Part] = []
    for name, label in (("acl", "acl_tear"), ("pcl", "pcl_tear")):
        pts, radii, wd = a[name]
        if present[label]:
            torn, region = torn_tendon(
                name,
                pts,
                radii,
                width_dir=wd,
                label=L[name],
                frac=lp[label]["frac"],
                gap=lp[label]["gap"],
            )
            parts += torn
        else:
            parts.append(tendon(name, pts, radii, width_dir=wd, label=L[name]))
            _, region = torn_tendon(
                name, pts, radii, width_dir=wd, frac=lp[label]["frac"], gap=lp[label]["gap"]
            )
        scene.lesion_regions[label] = region
    for name, label in (("mcl", "mcl_injury"), ("lcl", "lcl_injury")):
        pts, radii, wd = a[name]
        sprain, region = thickened(name, pts, radii, width_dir=wd, **lp[label])
        parts += sprain if present[label] else [tendon(name, pts, radii, width_dir=wd)]
        scene.lesion_regions[label] = region
    pc, axes = _patella_frame(a, lp, present)
    pr = a["patella_r"]
    for name in ("pt", "qt"):
        pts, radii, wd = a[name]
        pole = pc + axes @ np.array([0, -4.0, (-1 if name == "pt" else 1) * pr[2] * 0.8])
        pts = np.vstack([pole, (pts[0] + pts[1]) / 2, pts[1]]).astype(np.float32)
        parts.append(tendon(f"{name}_tendon", pts, radii, width_dir=wd))
    if present["patellar_dislocation"]:
        parts.append(
            blob("medial_retinaculum_edema", Tissue.EDEMA, a["patella_c"] + [28, 6, 0], [10, 5, 14])
        )
    return parts


def _bone_parts(a, scene: Scene, lp, present) -> list[Part]:
    femur = a["femur"]
    parts = bone("femur", femur, cortex=1.6, label=L["femur"])
    inner = Offset(a["femur_shaft"], 4.0)
    parts.append(
        Part(
            "femur_shaft_cortex",
            Tissue.CORTEX,
            Intersection(
                (
                    Difference(a["femur_shaft"], inner),
                    HalfSpace(point=np.array([0, 0, 80.0]), normal=-Z),
                )
            ),
            label=L["femur"],
        )
    )
    parts.append(
        Part(
            "femur_physeal_scar",
            Tissue.CORTEX,
            Slab(point=np.array([0, 0, a["physis_z"]]), normal=Z + 0.15 * Y, thickness=0.9),
            clip=Offset(femur, 2.0),
            label=L["femur"],
        )
    )
    parts += bone("tibia", a["tibia"], cortex=1.5, label=L["tibia"])
    parts += bone("fibula", a["fibula"], cortex=1.5)
    parts += bone("patella", a["patella"], cortex=1.4, label=L["patella"])
    return parts
