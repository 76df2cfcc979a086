"""The knee label map as a DICOM Segmentation (`seg.dcm`, highdicom) over the source series.

BINARY segmentation type (Segmentation Storage, read by PACS viewers, OHIF and 3D Slicer;
the newer Label Map SOP class is not yet widely supported), one segment per knee structure
(`core.inference.structures`: names, colours, codes), segment number = label value. The
object references every instance of the sagittal series (source images in slice order),
shares its Frame of Reference and copies its patient and study modules, as any derived
series must for a viewer to file and overlay it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from core.data.volume import Volume
from core.inference.structures import CATEGORY, knee_structures, label_text

SEG_SERIES_NUMBER = 9900
SEG_DESCRIPTION = "orthofed knee segmentation"
CONTENT_LABEL = "ORTHOFED_KNEE"
# A source slice must sit this close (in slices) to a slice of the volume.
POSITION_TOLERANCE = 0.1


@dataclass(frozen=True)
class Algorithm:
    """Who made the segmentation: written into the SEG's algorithm and equipment fields."""

    version: str  # orthofed version
    model: str  # e.g. "knee model, preset tiny"
    serial: str  # digest of the checkpoint weights


def source_images(files: list[Path], *, volume: Volume) -> tuple[list[Dataset], np.ndarray]:
    """(datasets in slice order, slice index of every source frame in that order).

    Single-frame series: one dataset per slice. One multi-frame file: its frames in file
    order. ValueError when the files do not cover the volume's slices exactly once.
    """
    datasets = _unique([pydicom.dcmread(p) for p in files])
    if len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        positions = _frame_positions(datasets[0])
        return datasets, _slice_indices(positions, volume=volume)
    indices = _slice_indices([d.ImagePositionPatient for d in datasets], volume=volume)
    order = np.argsort(indices)
    return [datasets[i] for i in order], indices[order]


def _unique(datasets: list[Dataset]) -> list[Dataset]:
    seen: dict[str, Dataset] = {}
    for ds in datasets:
        seen.setdefault(str(ds.SOPInstanceUID), ds)
    return list(seen.values())


def _frame_positions(ds: Dataset) -> list:
    return [
        group.PlanePositionSequence[0].ImagePositionPatient
        for group in ds.PerFrameFunctionalGroupsSequence
    ]


def _slice_indices(positions: list, *, volume: Volume) -> np.ndarray:
    """Slice index of each position; ValueError unless they are 0..S-1 exactly once."""
    world = np.array([[float(v) for v in p] + [1.0] for p in positions]).T
    index = (np.linalg.inv(volume.affine) @ world)[0]
    rounded = np.rint(index).astype(np.int64)
    if np.max(np.abs(index - rounded)) > POSITION_TOLERANCE or sorted(rounded.tolist()) != list(
        range(volume.slices)
    ):
        raise ValueError(
            f"the sagittal files do not match its {volume.slices} slices one to one; "
            "no DICOM SEG written"
        )
    return rounded


def _descriptions(algorithm: Algorithm) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    identification = hd.AlgorithmIdentificationSequence(
        name="orthofed",
        version=algorithm.version,
        family=codes.cid7162.ArtificialIntelligence,
    )
    category = hd.sr.CodedConcept(*CATEGORY)
    return [
        hd.seg.SegmentDescription(
            segment_number=s.number,
            segment_label=label_text(s.name),
            segmented_property_category=category,
            segmented_property_type=hd.sr.CodedConcept(*s.code),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification,
            display_color=hd.color.CIELabColor.from_rgb(*s.rgb),
        )
        for s in knee_structures()
    ]


def write_dicom_seg(
    path: Path, labels: np.ndarray, *, volume: Volume, files: list[Path], algorithm: Algorithm
) -> Path:
    """Write `labels` (on `volume`'s (S, R, C) grid) as a DICOM SEG over the series `files`."""
    import highdicom as hd

    if labels.shape != volume.shape:
        raise ValueError(f"label map {labels.shape} is not on the series grid {volume.shape}")
    sources, indices = source_images(files, volume=volume)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=np.ascontiguousarray(labels[indices]).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_descriptions(algorithm),
        series_instance_uid=hd.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="orthofed",
        manufacturer_model_name=algorithm.model[:64],
        software_versions=algorithm.version,
        device_serial_number=algorithm.serial,
        content_label=CONTENT_LABEL,
        content_description="knee structures predicted by orthofed (research use)",
    )
    seg.SeriesDescription = SEG_DESCRIPTION
    seg.save_as(path)
    return path
