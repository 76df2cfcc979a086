"""`report.html` of one predicted study: findings, warnings, where the thresholds came from,
and for the knee the segmentation over the original sagittal slices (one self-contained page,
images inline)."""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from core.data.volume import Volume  # noqa: E402
from core.inference.structures import knee_structures, label_text  # noqa: E402
from core.reporting.html import esc, figure_block, page, paragraph, section, table  # noqa: E402

# Sagittal slices shown: rows toward inferior, columns toward posterior (anterior on the left).
DISPLAY_AXCODES = ("R", "I", "P")
OVERLAY_SLICES = 3
OVERLAY_ALPHA = 0.45


def findings_section(payload: dict) -> str:
    rows = [
        (
            name,
            f"{entry['probability']:.3f}",
            f"{entry['threshold']:.3f}",
            "positive" if entry["decision"] else "negative",
        )
        for name, entry in payload["labels"].items()
    ]
    return section(
        "Findings",
        table(["label", "probability", "threshold", "decision"], rows),
        paragraph(f"Thresholds: {payload['thresholds_source']}."),
        paragraph(f"Views used: {', '.join(payload['views'])}."),
    )


def warnings_section(warnings: list[str]) -> str:
    if not warnings:
        return section("Warnings", paragraph("None."))
    items = "".join(f"<li>{esc(w)}</li>" for w in warnings)
    return section("Warnings", f'<ul class="note">{items}</ul>')


def _display(array: np.ndarray, volume: Volume) -> np.ndarray:
    """`array` on `volume`'s grid reoriented for sagittal display."""
    current = nib.orientations.io_orientation(volume.to_ras_affine())
    wanted = nib.orientations.axcodes2ornt(DISPLAY_AXCODES)
    transform = nib.orientations.ornt_transform(current, wanted)
    return nib.orientations.apply_orientation(array, transform)


def _chosen_slices(labels: np.ndarray) -> list[int]:
    counts = (labels > 0).reshape(labels.shape[0], -1).sum(axis=1)
    if not counts.any():
        return [labels.shape[0] // 2]
    best = np.argsort(-counts, kind="stable")[:OVERLAY_SLICES]
    return sorted(int(i) for i in best if counts[i] > 0)


def overlay_figure(volume: Volume, labels: np.ndarray):
    """The label map over the sagittal slices with the most segmented voxels."""
    image = _display(volume.array, volume)
    shown = _display(labels, volume)
    structures = knee_structures()
    cmap = ListedColormap([np.array(s.rgb) / 255.0 for s in structures])
    lo, hi = np.percentile(image, [1.0, 99.0])
    picks = _chosen_slices(shown)
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.6), squeeze=False)
    for ax, index in zip(axes[0], picks, strict=True):
        ax.imshow(image[index], cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6))
        mask = np.ma.masked_equal(shown[index].astype(int), 0)
        ax.imshow(
            mask,
            cmap=cmap,
            vmin=0.5,
            vmax=len(structures) + 0.5,
            alpha=OVERLAY_ALPHA,
            interpolation="nearest",
        )
        ax.set_title(f"sagittal slice {index + 1} of {image.shape[0]}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    present = set(np.unique(labels).tolist())
    handles = [
        Patch(color=np.array(s.rgb) / 255.0, label=label_text(s.name))
        for s in structures
        if s.number in present
    ]
    if handles:
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=min(4, len(handles)),
            fontsize=7,
            frameon=False,
            bbox_to_anchor=(0.5, -0.08),
        )
    fig.tight_layout()
    return fig


def segmentation_section(volume: Volume, labels: np.ndarray, *, files: list[str]) -> str:
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=len(knee_structures()) + 1)
    rows = [
        (label_text(s.name), int(counts[s.number]), f"{counts[s.number] * voxel_ml:.2f}")
        for s in knee_structures()
    ]
    caption = (
        "Predicted knee structures on the original sagittal series (anterior on the left); "
        "slices with the most segmented voxels."
    )
    return section(
        "Segmentation (knee)",
        figure_block(overlay_figure(volume, labels), caption=caption),
        table(["structure", "voxels", "volume (mL)"], rows),
        paragraph("Written as " + " and ".join(files) + "."),
    )


def render_report(*, study: str, payload: dict, checkpoint: Path, segmentation: str = "") -> str:
    """The HTML page; `segmentation` is a ready section (knee) or ''."""
    subtitle = (
        f"{payload['joint']} model {checkpoint.name}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}. Research use: not a medical device."
    )
    sections = [findings_section(payload), warnings_section(payload["warnings"])]
    if segmentation:
        sections.append(segmentation)
    return page(title=f"orthofed prediction: {study}", subtitle=subtitle, sections=sections)
