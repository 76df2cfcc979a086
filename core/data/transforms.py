"""Preprocessing of view volumes with MONAI transforms (reference: central 16 slices,
in-plane 256x256, intensities min-max scaled to [-1, 1]).

Every view is first put in a canonical orientation so that the slice axis comes first and
rows/columns follow the usual display convention of that view; then the central slices are
kept (padded when fewer), slices are resized in-plane and intensities scaled.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    Orientation,
    Resize,
    ResizeWithPadOrCrop,
    ScaleIntensityRangePercentiles,
)

from core.config import PreprocessConfig
from core.data.volume import Volume
from core.views import View

# MONAI axcodes (RAS letters: the direction each array axis increases towards).
# slice axis first; rows top->bottom = superior->inferior (sag/cor) or anterior->posterior
# (axial); columns toward posterior (sagittal) or toward the patient's left (radiological).
CANONICAL_AXCODES: dict[View, str] = {
    View.SAGITTAL: "RIP",
    View.CORONAL: "AIL",
    View.AXIAL: "SPL",
}

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def _as_meta(array: np.ndarray, affine_lps: np.ndarray) -> MetaTensor:
    tensor = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))[None]
    return MetaTensor(tensor, affine=torch.as_tensor(_LPS_TO_RAS @ affine_lps))


def _spatial(config: PreprocessConfig, view: View, *, labels: bool) -> Compose:
    mode = "nearest" if labels else "area"
    return Compose(
        [
            Orientation(axcodes=CANONICAL_AXCODES[view], labels=_RAS_LABELS),
            ResizeWithPadOrCrop(spatial_size=(config.slices, -1, -1), mode="constant"),
            Resize(spatial_size=(-1, config.size, config.size), mode=mode),
        ]
    )


def preprocess_volume(volume: Volume, *, view: View, config: PreprocessConfig) -> np.ndarray:
    """A view volume -> float16 array (1, slices, size, size) in [-1, 1]."""
    return preprocess_with_affine(volume, view=view, config=config)[0]


def preprocess_with_affine(
    volume: Volume, *, view: View, config: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray]:
    """`preprocess_volume` plus the LPS affine (d, h, w) -> mm of its output grid (as MONAI
    tracks it through reorientation, central crop/pad and resize), so that model outputs can
    be mapped back onto the original series."""
    if volume.array.ndim != 3:
        raise ValueError(f"{volume.source}: expected a 3D volume, got shape {volume.array.shape}")
    image = _spatial(config, view, labels=False)(_as_meta(volume.array, volume.affine))
    affine = _LPS_TO_RAS @ np.asarray(image.affine, dtype=np.float64)
    scale = ScaleIntensityRangePercentiles(
        lower=config.lower_percentile,
        upper=config.upper_percentile,
        b_min=-1.0,
        b_max=1.0,
        clip=True,
    )
    image = scale(image)
    return np.asarray(image.detach().cpu().numpy(), dtype=np.float16), affine


def resample_labels(labels: np.ndarray, labels_affine: np.ndarray, *, target: Volume) -> np.ndarray:
    """Nearest-neighbour resampling of a label volume (LPS affine) onto `target`'s voxel grid."""
    from scipy.ndimage import map_coordinates

    if labels.ndim != 3:
        raise ValueError(f"mask must be 3D, got shape {labels.shape}")
    grid = np.indices(target.array.shape, dtype=np.float64).reshape(3, -1)
    homog = np.vstack([grid, np.ones((1, grid.shape[1]))])
    to_labels = np.linalg.inv(labels_affine) @ target.affine
    coords = (to_labels @ homog)[:3]
    out = map_coordinates(labels, coords, order=0, mode="constant", cval=0)
    return out.reshape(target.array.shape).astype(np.uint8)


def preprocess_mask(
    labels: np.ndarray,
    labels_affine: np.ndarray,
    *,
    target: Volume,
    view: View,
    config: PreprocessConfig,
) -> np.ndarray:
    """A label volume -> uint8 (slices, size, size) on the preprocessed grid of `target`."""
    on_grid = resample_labels(labels, labels_affine, target=target)
    out = _spatial(config, view, labels=True)(_as_meta(on_grid.astype(np.float32), target.affine))
    return np.asarray(out[0].detach().cpu().numpy()).round().astype(np.uint8)
