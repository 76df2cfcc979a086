"""Right shoulder phantom: humeral head, glenoid and labrum, acromion, clavicle, coracoid,
rotator cuff tendons and muscles, long head of biceps, subacromial bursa, deltoid.

Local frame (mm): x to the patient's left (= medial), y posterior, z superior; origin at the
centre of the humeral head.
"""

from __future__ import annotations

import numpy as np

from core.data.phantom.builders import (
    Jitter,
    blob,
    bone,
    cartilage,
    curve,
    point_at,
    tendon,
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
    rotation,
)
from core.views import View

X, Y, Z = np.eye(3, dtype=np.float32)


def _arc(j: Jitter, radius: float, angles, plane_y: float) -> np.ndarray:
    """Points over the top of the head in the coronal plane (angle from +x towards +z)."""
    t = np.radians(np.asarray(angles, float))
    pts = np.stack([radius * np.cos(t), np.full_like(t, plane_y), radius * np.sin(t)], 1)
    return (pts * j.scale + j.rng.normal(0, 0.6, pts.shape)).astype(np.float32)


def _body(j: Jitter) -> dict:
    arm = Column(
        z=np.array([-260.0, -40.0, 10.0]),
        cx=np.array([-22.0, -12.0, -6.0]),
        cy=np.zeros(3) + j.rng.normal(0, 1.5, 3),
        rx=j.r(42, 50, 52),
        ry=j.r(44, 50, 52),
    )
    top = Tube(
        points=np.array([j.p(-6, 4, 10), j.p(60, 10, 45), j.p(160, 10, 55)]),
        radii=np.array([j.r(50, 52), j.r(52, 56), j.r(60, 60)]),
        width_dir=Z,
    )
    chest = Ellipsoid(center=j.p(130, 8, -60), radii=j.r(100, 75, 140))
    return {
        "body": Union((arm, top, chest), blend=25.0),
        "fat_depth": j.u(4, 9),
        "muscles": [
            Ellipsoid(center=j.p(-8, 0, -12), radii=j.r(50, 52, 62)),  # deltoid
            Ellipsoid(center=j.p(70, 16, 38), radii=j.r(46, 14, 14)),  # supraspin.
            Ellipsoid(center=j.p(75, 42, -18), radii=j.r(50, 12, 45)),  # infraspin.
            Ellipsoid(center=j.p(70, 8, -18), radii=j.r(45, 11, 45)),  # subscap.
            Ellipsoid(center=j.p(70, -46, -25), radii=j.r(55, 13, 40)),
        ],
    }  # pectoral


def _bones(j: Jitter) -> dict:
    a: dict = {}
    head = Ellipsoid(center=j.p(0, 0, 0, sd=0.3), radii=j.r(23, 24, 24, sd=0.03))
    greater = Ellipsoid(center=j.p(-21, -2, 6), radii=j.r(9, 13, 12))
    lesser = Ellipsoid(center=j.p(-2, -21, -4), radii=j.r(7, 7, 10))
    shaft = Tube(
        points=np.array([j.p(-8, 0, -16), j.p(-18, 0, -260)]), radii=j.r(14, 14), width_dir=X
    )
    a["groove"] = np.array([j.p(-12, -22, -90), j.p(-12, -23, 2)])
    groove = Tube(points=a["groove"], radii=[4.0, 4.0], width_dir=X)
    a["humerus"] = Difference(Union((head, greater, lesser, shaft), blend=6.0), groove)
    a["head"] = head
    fossa = Ellipsoid(center=j.p(33, 2, 0), radii=j.r(9, 13, 19))
    neck = Tube(points=np.array([j.p(36, 3, 0), j.p(58, 16, -6)]), radii=j.r(9, 9), width_dir=X)
    blade = Ellipsoid(
        center=j.p(80, 30, -22), radii=j.r(45, 3.5, 52), axes=rotation(Z, 28).astype(np.float32)
    )
    spine = Tube(points=np.array([j.p(90, 44, 30), j.p(30, 26, 36)]), radii=j.r(5, 5), width_dir=X)
    cup = Ellipsoid(center=np.zeros(3, np.float32), radii=np.full(3, 26.5, np.float32))
    a["scapula"] = Difference(Union((fossa, neck, blade, spine), blend=5.0), cup)
    a["glenoid_face"] = j.p(26.5, 2, 0, sd=0.3)
    a["acromion"] = Ellipsoid(
        center=j.p(-2, 6, 38), radii=j.r(22, 20, 5.5), axes=rotation(Y, -8).astype(np.float32)
    )
    a["clavicle"] = curve([j.p(150, -22, 55), j.p(70, -16, 50), j.p(29, -2, 40)])
    a["coracoid"] = curve([j.p(42, 2, 22), j.p(34, -20, 18), j.p(22, -30, 10)])
    return a


def _soft(j: Jitter) -> dict:
    return {
        "ssp": (_arc(j, 28.0, [62, 78, 95, 115, 135, 156], 2.0), j.r(11, 3.0), Y),
        "isp": (
            curve([j.p(34, 40, -4), j.p(6, 32, 4), j.p(-16, 18, 6), j.p(-24, 6, 6)]),
            j.r(11, 3.0),
            Z,
        ),
        "ssc": (curve([j.p(36, -26, -8), j.p(12, -30, -6), j.p(-4, -25, -4)]), j.r(12, 3.0), Z),
        "lhbt": (
            curve(
                [
                    j.p(-12, -22, -90),
                    j.p(-12, -23, -10),
                    j.p(-6, -20, 22),
                    j.p(18, -4, 28),
                    j.p(26, 1, 20),
                ]
            ),
            j.r(2.6, 2.6),
            X,
        ),
        "bursa": _arc(j, 32.5, [70, 88, 106, 124, 142], 2.0),
        "labrum_r": j.r(13, 19),
    }


def _lesion_params(rng: np.random.Generator) -> dict[str, dict]:
    u = rng.uniform
    return {
        "supraspinatus_tear": {"frac": u(0.7, 0.88), "gap": u(5, 11)},
        "infraspinatus_tear": {"frac": u(0.7, 0.88), "gap": u(5, 10)},
        "subscapularis_tear": {"frac": u(0.7, 0.88), "gap": u(4, 8)},
        "lhbt_injury": {"frac": u(0.15, 0.3), "gap": u(3, 6)},
        "acromioclavicular_lesion": {"widen": u(3, 6), "lift": u(2, 5)},
        "glenohumeral_lesion": {"angle": u(40, 140), "size": u(2.5, 4)},
        "lhbt_sheath_effusion": {"thickness": u(2, 3.5)},
        "subacromial_bursitis": {"thickness": u(1.5, 3)},
    }


def shoulder_scene(
    rng_anat: np.random.Generator, rng_lesion: np.random.Generator, present: dict[str, bool]
) -> Scene:
    """Anatomy of one shoulder with the lesions flagged in `present`."""
    j = Jitter(rng_anat, scale=float(np.exp(rng_anat.normal(0, 0.05))))
    a = {**_body(j), **_bones(j), **_soft(j)}
    lp = _lesion_params(rng_lesion)
    scene = Scene(
        parts=[],
        view_centres={
            View.SAGITTAL: np.array([12.0, 0.0, 6.0]),
            View.CORONAL: np.array([10.0, 0.0, 6.0]),
            View.AXIAL: np.array([10.0, 0.0, 4.0]),
        },
    )
    body = a["body"]
    parts = [Part("skin", Tissue.SKIN, body), Part("fat", Tissue.FAT, body, inset=1.5)]
    parts += [
        Part(f"muscle_{i}", Tissue.MUSCLE, m, clip=Offset(body, a["fat_depth"]))
        for i, m in enumerate(a["muscles"])
    ]
    parts += _bursa_parts(a, scene, lp, present)
    parts += _tendon_parts(a, scene, lp, present)
    parts += _joint_parts(a, scene, lp, present)
    scene.parts = parts
    scene.lesion_params = {k: v for k, v in lp.items() if present[k]}
    return scene


def _bursa_parts(a, scene: Scene, lp, present) -> list[Part]:
    parts = []
    arc = a["bursa"]
    if present["subacromial_bursitis"]:
        t = lp["subacromial_bursitis"]["thickness"]
        parts.append(tendon("bursa", arc, [15.0, t], width_dir=Y, tissue=Tissue.FLUID))
    scene.lesion_regions["subacromial_bursitis"] = LesionRegion(point_at(arc, 0.5), 45.0)
    groove = a["groove"]
    if present["lhbt_sheath_effusion"]:
        r = 2.6 + lp["lhbt_sheath_effusion"]["thickness"]
        parts.append(
            Part("lhbt_sheath", Tissue.FLUID, Tube(points=groove + [0, -1, 0], radii=[r, r]))
        )
    scene.lesion_regions["lhbt_sheath_effusion"] = LesionRegion(groove.mean(axis=0), 60.0)
    return parts


def _tendon_parts(a, scene: Scene, lp, present) -> list[Part]:
    parts: list[Part] = []
    for name, label in (
        ("ssp", "supraspinatus_tear"),
        ("isp", "infraspinatus_tear"),
        ("ssc", "subscapularis_tear"),
        ("lhbt", "lhbt_injury"),
    ):
        pts, radii, wd = a[name]
        torn, region = torn_tendon(name, pts, radii, width_dir=wd, **lp[label])
        parts += torn if present[label] else [tendon(name, pts, radii, width_dir=wd)]
        scene.lesion_regions[label] = region
    return parts


def _joint_parts(a, scene: Scene, lp, present) -> list[Part]:
    head, scap = a["head"], a["scapula"]
    face = a["glenoid_face"]
    near_glenoid = Ellipsoid(center=face, radii=np.array([8.0, 16.0, 22.0], np.float32))
    parts = [
        cartilage(
            "humeral_cartilage",
            head,
            thickness=1.4,
            clip=HalfSpace(point=np.array([4.0, 0, 0]), normal=-X),
        ),
        cartilage("glenoid_cartilage", scap, thickness=1.5, clip=near_glenoid),
    ]
    ring = _labrum_ring(face, a["labrum_r"])
    parts.append(Part("labrum", Tissue.FIBROCARTILAGE, Tube(points=ring, radii=[2.8, 2.8])))
    g = lp["glenohumeral_lesion"]
    tip = point_at(ring, g["angle"] / 360.0)
    if present["glenohumeral_lesion"]:
        cleft = Intersection(
            (
                Slab(point=tip, normal=tip - face, thickness=1.0),
                Offset(Tube(points=ring, radii=[2.8, 2.8]), -0.2),
            )
        )
        parts.append(Part("labral_tear", Tissue.FLUID, cleft))
        parts.append(
            blob(
                "chondral_defect",
                Tissue.FLUID,
                face + (tip - face) * 0.45,
                [g["size"]] * 3,
                clip=Offset(scap, -1.5),
            )
        )
    scene.lesion_regions["glenohumeral_lesion"] = LesionRegion(face, 34.0)
    parts += _ac_parts(a, scene, lp, present)
    parts += bone("humerus", a["humerus"], cortex=1.4)
    parts += bone("scapula", scap, cortex=1.4)
    parts += bone("acromion", a["acromion"], cortex=1.3)
    parts += bone("coracoid", Tube(points=a["coracoid"], radii=[6.0, 6.0]), cortex=1.3)
    return parts


def _labrum_ring(face: np.ndarray, radii: np.ndarray) -> np.ndarray:
    t = np.radians(np.arange(0, 361, 20))
    ring = np.stack([np.full_like(t, 0.5), radii[0] * np.cos(t), radii[1] * np.sin(t)], 1)
    return (ring + face).astype(np.float32)


def _ac_parts(a, scene: Scene, lp, present) -> list[Part]:
    clav = a["clavicle"].copy()
    end = clav[-1].copy()
    parts = [blob("ac_capsule", Tissue.SYNOVIUM, end + [-4, 0, 0], [5, 8, 6])]
    if present["acromioclavicular_lesion"]:
        p = lp["acromioclavicular_lesion"]
        w = np.clip(1.0 - np.linalg.norm(clav - end, axis=1) / 35.0, 0.0, 1.0)[:, None]
        clav = clav + w * np.array([p["widen"], 0.0, p["lift"]], np.float32)
        parts.append(blob("ac_edema", Tissue.EDEMA, end + [-2, 0, 1], [12, 12, 10]))
        parts.append(blob("ac_fluid", Tissue.FLUID, end + [-3, 0, 1], [3 + p["widen"] / 2, 7, 6]))
    scene.lesion_regions["acromioclavicular_lesion"] = LesionRegion(end, 55.0)
    return parts + bone("clavicle", Tube(points=clav, radii=[8.0, 6.0], width_dir=Y), cortex=1.5)
