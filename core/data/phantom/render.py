"""Render one phantom case: labels, anatomy, then an MR-like acquisition of each view.

Every random choice comes from generators derived from (seed, case index), one per concern,
so forcing a lesion on or off changes nothing but that lesion's own parts of the anatomy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from core.data.phantom.ankle import ankle_scene
from core.data.phantom.geometry import ViewGeometry, make_geometry
from core.data.phantom.knee import knee_scene
from core.data.phantom.lesions import sample_labels
from core.data.phantom.profiles import CONTRASTS, TEXTURE, SiteProfile, Tissue, get_profile
from core.data.phantom.scene import LesionRegion, Scene, rasterise
from core.data.phantom.shapes import rotation
from core.data.phantom.shoulder import shoulder_scene
from core.views import VIEWS, Joint, View, parse_joint

SCENES: dict[Joint, Callable[..., Scene]] = {
    Joint.KNEE: knee_scene,
    Joint.ANKLE: ankle_scene,
    Joint.SHOULDER: shoulder_scene,
}
MAX_POSE_DEG = 5.0
MAX_POSE_SHIFT_MM = 5.0


@dataclass
class RenderedView:
    image: np.ndarray  # float32 (slices, rows, columns), fluid ~ 1
    geometry: ViewGeometry  # patient coordinates (LPS, mm)
    labels: np.ndarray | None = None  # knee sagittal only: uint8 (slices, rows, columns)


@dataclass
class RenderedCase:
    joint: Joint
    present: dict[str, bool]
    views: dict[View, RenderedView]
    lesion_regions: dict[str, LesionRegion]  # patient coordinates
    lesion_params: dict[str, dict] = field(default_factory=dict)


def case_generators(seed: int, case_index: int) -> dict[str, np.random.Generator]:
    """Independent generators for labels, anatomy, lesion shapes, acquisition and noise."""
    names = ("labels", "anatomy", "lesions", "acquisition", "noise")
    children = np.random.SeedSequence([int(seed), int(case_index)]).spawn(len(names))
    return {n: np.random.default_rng(s) for n, s in zip(names, children, strict=True)}


def case_labels(
    *, joint: Joint | str, seed: int, case_index: int, profile: SiteProfile | str | None = None
) -> dict[str, bool]:
    """The labels `render_case` (and so `generate_site`) gives this case, without rendering."""
    j = parse_joint(joint)
    prof = profile if isinstance(profile, SiteProfile) else get_profile(profile, joint=j)
    g = case_generators(seed, case_index)
    return sample_labels(g["labels"], joint=j, prevalence_scale=prof.prevalence_scale)


def render_case(
    *,
    joint: Joint | str,
    seed: int,
    case_index: int,
    profile: SiteProfile | str | None = None,
    lesions: Mapping[str, bool] | None = None,
    noise: bool = True,
) -> RenderedCase:
    """Render the three views of case `case_index` of the site generated with `seed`.

    `lesions` forces single labels on/off (the rest as sampled); `noise=False` skips the
    Rician noise so images can be compared voxel by voxel.
    """
    j = parse_joint(joint)
    prof = profile if isinstance(profile, SiteProfile) else get_profile(profile, joint=j)
    g = case_generators(seed, case_index)
    present = sample_labels(
        g["labels"], joint=j, prevalence_scale=prof.prevalence_scale, force=lesions
    )
    scene = SCENES[j](g["anatomy"], g["lesions"], present)
    acq = g["acquisition"]
    rot = rotation(acq.normal(size=3), acq.uniform(0, MAX_POSE_DEG))
    shift = acq.uniform(-MAX_POSE_SHIFT_MM, MAX_POSE_SHIFT_MM, size=3)
    table, amp = _contrast(prof, acq)
    bias = _bias_params(acq, strength=prof.bias_strength, centre=shift)
    views = {}
    for view in VIEWS:
        if view not in prof.views:
            continue
        geom = make_geometry(
            view=view,
            centre=rot @ scene.view_centres[view] + shift,
            size=prof.size,
            fov_mm=prof.fov_mm,
            slices=prof.slices,
            thickness=prof.slice_thickness,
            gap=prof.slice_gap,
            max_obliquity_deg=prof.max_obliquity_deg,
            max_offset_mm=prof.max_offset_mm,
            rng=acq,
        )
        tissue, labels = rasterise(scene.parts, geom.to_local(rot, shift), n_sub=prof.supersample)
        texture = _texture(acq, geom.shape)
        image = _acquire(tissue, table=table, amp=amp, texture=texture, bias=_bias(bias, geom))
        if noise:
            image = _rician(image, sigma=1.0 / prof.snr, rng=g["noise"])
        keep = j is Joint.KNEE and view is View.SAGITTAL
        views[view] = RenderedView(
            image=image.astype(np.float32), geometry=geom, labels=labels if keep else None
        )
    regions = {
        k: LesionRegion(centre=rot @ r.centre + shift, radius=r.radius)
        for k, r in scene.lesion_regions.items()
    }
    return RenderedCase(
        joint=j,
        present=present,
        views=views,
        lesion_regions=regions,
        lesion_params=scene.lesion_params,
    )


def _contrast(prof: SiteProfile, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Signal and texture amplitude per tissue class, with a little per-case variation."""
    base = CONTRASTS[prof.contrast]
    n = len(Tissue)
    jitter = np.exp(rng.normal(0, 0.04, n))
    table = np.array([base[Tissue(i)] for i in range(n)], np.float32) * jitter
    amp = np.array([TEXTURE.get(Tissue(i), 0.03) for i in range(n)], np.float32)
    return table.astype(np.float32), amp


def _texture(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    t = gaussian_filter(
        rng.standard_normal(shape, dtype=np.float32), sigma=(0.6, 2.5, 2.5), truncate=3.0
    )
    t *= 1.0 / (t.std() + 1e-6)
    return t


def _acquire(tissue: np.ndarray, *, table, amp, texture, bias) -> np.ndarray:
    """Average the sub-slice samples (partial volume), add texture, bias and in-plane blur."""
    signal, a = table[tissue[0]], amp[tissue[0]]
    for sub in tissue[1:]:
        signal += table[sub]
        a += amp[sub]
    a *= texture
    a *= 1.0 / len(tissue)
    a += 1.0
    a *= signal
    a *= bias / len(tissue)
    np.maximum(a, 0.0, out=a)
    return gaussian_filter(a, sigma=(0, 0.6, 0.6))


def _bias_params(rng: np.random.Generator, *, strength: float, centre: np.ndarray) -> dict:
    direction = rng.normal(size=3)
    return {
        "centre": centre + rng.uniform(-30, 30, 3),
        "strength": strength,
        "grad": direction / np.linalg.norm(direction),
        "curv": rng.uniform(0.3, 1.0),
    }


def _bias(p: dict, geom: ViewGeometry) -> np.ndarray:
    """Smooth multiplicative coil sensitivity, 1 at `centre`, falling off over ~10 cm.

    The field is quadratic in the slice index, so it is built from in-plane terms per power.
    """
    nk, nr, nc = geom.shape
    step = geom.index_to_patient()[:3, :3] / 100.0  # per column, row, slice (dm)
    o = (geom.origin - p["centre"]) / 100.0
    r, c = np.arange(nr)[:, None], np.arange(nc)[None, :]
    plane = [o[i] + r * step[i, 1] + c * step[i, 0] for i in range(3)]  # (rows, cols) each
    a, g, curv = step[:, 2], p["grad"], p["curv"]
    f0 = sum(g[i] * plane[i] - curv * plane[i] ** 2 for i in range(3))
    f1 = sum(g[i] * a[i] - 2.0 * curv * a[i] * plane[i] for i in range(3))
    k = np.arange(nk, dtype=np.float32)[:, None, None]
    field = f1.astype(np.float32) * k
    field += f0.astype(np.float32)
    field += (-curv * float(a @ a)) * k**2
    field *= p["strength"]
    field += 1.0
    return np.clip(field, 0.5, 1.5, out=field)


def _rician(image: np.ndarray, *, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise."""
    n = rng.standard_normal((2, *image.shape), dtype=np.float32)
    n *= sigma
    n[0] += image
    np.square(n, out=n)
    n[0] += n[1]
    return np.sqrt(n[0], out=n[0])
