"""Stanford MRNet reader: `ROOT/{train,valid}/{sagittal,coronal,axial}/NNNN.npy` + label CSVs.

MRNet arrays (uint8, (S, 256, 256)) carry no geometry, so the view comes from the folder
name: the one place where the view is not derived from the slice normal. Each volume gets a
synthetic affine: unit spacing, the standard DICOM orientation of its view (normal -x for
sagittal, +y for coronal, +z for axial), origin 0.

Labels: `{split}-{abnormal,acl,meniscus}.csv`, rows `0000,1` without header. Volumes are
loaded on demand (`MRNetCase.volume`), since a full MRNet set as float32 is ~30 GB.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.data.volume import Volume, slice_affine, standard_orientation
from core.views import LABELS, VIEWS, Joint, View

SPLITS = ("train", "valid")
MRNET_TASKS = ("abnormal", "acl", "meniscus")


@dataclass(frozen=True)
class MRNetCase:
    """One MRNet exam: id like `train-0000`, its .npy file per view and its labels."""

    case_id: str
    split: str
    files: dict[View, Path]
    labels: dict[str, int] = field(default_factory=dict)

    def volume(self, view: View) -> Volume:
        """Load one view as a Volume with a synthetic geometry."""
        if view not in self.files:
            raise ValueError(f"MRNet case {self.case_id} has no {view} volume")
        return load_mrnet_volume(self.files[view], view=view)


def read_mrnet(root: Path) -> list[MRNetCase]:
    """All cases of an MRNet tree, sorted by id; ValueError naming the file for bad layouts."""
    root = Path(root)
    splits = [s for s in SPLITS if (root / s).is_dir()]
    if not splits:
        raise ValueError(f"{root}: no MRNet 'train' or 'valid' folder")
    cases: list[MRNetCase] = []
    for split in splits:
        files = _split_files(root / split)
        labels = _split_labels(root, split=split, known=set(files))
        cases += [
            MRNetCase(
                case_id=f"{split}-{number}",
                split=split,
                files=files[number],
                labels=labels.get(number, {}),
            )
            for number in sorted(files)
        ]
    return cases


def load_mrnet_volume(path: Path, *, view: View | str) -> Volume:
    """One MRNet .npy (S, R, C) as a float32 Volume with unit spacing and the view's normal."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read MRNet array ({err})") from None
    if array.ndim != 3:
        raise ValueError(
            f"{path}: MRNet array must be 3D (slices, rows, columns), got {array.shape}"
        )
    row, col = standard_orientation(view)
    spacing = (1.0, 1.0, 1.0)
    affine = slice_affine(origin=np.zeros(3), row_cosines=row, col_cosines=col, spacing=spacing)
    return Volume(
        array=array.astype(np.float32),
        affine=affine,
        spacing=spacing,
        normal=affine[:3, 0].copy(),
        source=str(path),
        series_uid=None,
        description=f"MRNet {View(view).value}",
    )


def mrnet_knee_labels(labels: dict[str, int]) -> dict[str, int | None]:
    """Map MRNet labels onto the knee label set; None = unknown (mask it in the loss).

    - acl -> acl_tear.
    - meniscus 0 -> no tear in either meniscus; meniscus 1 -> a tear, side unknown, so
      medial_meniscus_tear and lateral_meniscus_tear stay None.
    - abnormal 0 means a normal knee: every knee label is 0 (MRNet's abnormal covers any
      finding). abnormal 1 says nothing about the other labels, which stay None.
    - abnormal itself has no knee column; it stays in `MRNetCase.labels` as an extra.
    """
    mapped: dict[str, int | None] = dict.fromkeys(LABELS[Joint.KNEE])
    if labels.get("abnormal") == 0:
        mapped = dict.fromkeys(LABELS[Joint.KNEE], 0)
    if "acl" in labels:
        mapped["acl_tear"] = labels["acl"]
    if labels.get("meniscus") == 0:
        mapped["medial_meniscus_tear"] = mapped["lateral_meniscus_tear"] = 0
    elif labels.get("meniscus") == 1:
        mapped["medial_meniscus_tear"] = mapped["lateral_meniscus_tear"] = None
    return mapped


def _split_files(split_dir: Path) -> dict[str, dict[View, Path]]:
    """{case number: {view: .npy path}} for one split."""
    files: dict[str, dict[View, Path]] = {}
    for view in VIEWS:
        for path in sorted((split_dir / view.value).glob("*.npy")):
            files.setdefault(path.stem, {})[view] = path
    if not files:
        raise ValueError(f"{split_dir}: no .npy volumes under sagittal/, coronal/ or axial/")
    return files


def _split_labels(root: Path, *, split: str, known: set[str]) -> dict[str, dict[str, int]]:
    """{case number: {task: 0|1}} from `{split}-{task}.csv` files that exist."""
    labels: dict[str, dict[str, int]] = {}
    for task in MRNET_TASKS:
        path = root / f"{split}-{task}.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as handle:
            for line, row in enumerate(csv.reader(handle), start=1):
                if not row or not "".join(row).strip():
                    continue
                number, value = _label_row(row, where=f"{path.name} line {line}")
                if number not in known:
                    raise ValueError(
                        f"{path.name} line {line}: case {number} has no volumes under {split}/"
                    )
                labels.setdefault(number, {})[task] = value
    return labels


def _label_row(row: list[str], *, where: str) -> tuple[str, int]:
    if len(row) != 2:
        raise ValueError(f"{where}: expected 'case,label', got {','.join(row)!r}")
    number, raw = row[0].strip(), row[1].strip()
    if number.isdigit():
        number = number.zfill(4)
    if raw not in ("0", "1"):
        raise ValueError(f"{where}: label {raw!r} for case {number} is not 0 or 1")
    return number, int(raw)
