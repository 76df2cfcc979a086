"""Site check: read every case, labels and masks of a site and report what is wrong.

`check_site` returns a JSON-ready dict with this exact contract (checked by tooling):
    {"ok": bool, "joint": str, "problems": [str],
     "cases": [{"case_id": str, "ok": bool,
                "views": {"<view>": {"shape": [S, R, C], "spacing": [gap, row, col], "slices": S}},
                "missing_views": [str], "labels": {label: 0|1} | null, "problems": [str]}]}
Top-level problems concern the site (labels file, masks without a case); case problems come
from `scan_case` and the case's mask. A check only reads: it never writes or modifies files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from core.config import DataConfig
from core.data.labels import read_labels
from core.data.manifest import Site
from core.data.nifti import read_mask
from core.data.scan import CaseScan, scan_case
from core.views import KNEE_STRUCTURES, VIEWS, Joint

MASK_SUFFIX = ".nii.gz"
# progress(done, total, case_id) is called after each case.
Progress = Callable[[int, int, str], None]


def check_site(site: Site, *, config: DataConfig, progress: Progress | None = None) -> dict:
    """Check a site's cases, labels.csv and masks; see the module docstring for the result."""
    case_dirs = site.case_dirs()
    case_ids = [d.name for d in case_dirs]
    problems: list[str] = [] if case_dirs else [f"{site.data_root}: no case folders"]
    labels: dict[str, dict[str, int]] = {}
    if site.labels_path.is_file():
        labels, label_problems = read_labels(site.labels_path, joint=site.joint)
        problems += label_problems
        problems += [
            f"{site.labels_path.name}: labels for unknown case '{case_id}' (no case "
            "folder with that name)"
            for case_id in sorted(set(labels) - set(case_ids))
        ]
    mask_files, mask_problems = _mask_files(site, case_ids=set(case_ids))
    problems += mask_problems
    cases = []
    for index, case_dir in enumerate(case_dirs, start=1):
        scan = scan_case(case_dir, config=config)
        mask = mask_files.get(scan.case_id)
        if mask is not None:
            scan.problems += _mask_problems(mask, site=site)
        cases.append(_case_report(scan, labels=labels.get(scan.case_id)))
        if progress is not None:
            progress(index, len(case_dirs), scan.case_id)
    ok = not problems and all(case["ok"] for case in cases)
    return {"ok": ok, "joint": site.joint.value, "problems": problems, "cases": cases}


def _case_report(scan: CaseScan, *, labels: dict[str, int] | None) -> dict[str, Any]:
    views = {
        view.value: {
            "shape": list(volume.shape),
            "spacing": [round(float(s), 4) for s in volume.spacing],
            "slices": volume.slices,
        }
        for view, volume in scan.views.items()
    }
    return {
        "case_id": scan.case_id,
        "ok": not scan.problems,
        "views": views,
        "missing_views": [view.value for view in scan.missing_views],
        "labels": dict(labels) if labels is not None else None,
        "problems": list(scan.problems),
    }


def _mask_files(site: Site, *, case_ids: set[str]) -> tuple[dict[str, Path], list[str]]:
    """{case_id: mask path} for masks named after a case; problems for the others."""
    folder = site.masks_dir
    if not folder.is_dir():
        return {}, []
    masks: dict[str, Path] = {}
    problems = []
    for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        shown = f"{folder.name}/{path.name}"
        if not path.is_file() or not path.name.endswith(MASK_SUFFIX):
            problems.append(
                f"{shown}: not a mask file (expected {folder.name}/<case_id>{MASK_SUFFIX})"
            )
            continue
        case_id = path.name[: -len(MASK_SUFFIX)]
        if case_id not in case_ids:
            problems.append(
                f"{shown}: mask for unknown case '{case_id}' (no case folder with that name)"
            )
            continue
        masks[case_id] = path
    return masks, problems


def _mask_problems(path: Path, *, site: Site) -> list[str]:
    """Problems of one case's mask: unreadable, or labels outside the joint's structures."""
    shown = f"{site.masks_dir.name}/{path.name}"
    try:
        labels, _ = read_mask(path, name=shown)
    except ValueError as err:
        return [str(err)]
    if site.joint == Joint.KNEE and labels.size and int(labels.max()) > len(KNEE_STRUCTURES):
        return [
            f"{shown}: label {int(labels.max())} is not a knee structure (1..."
            f"{len(KNEE_STRUCTURES)}, 0 = background)"
        ]
    return []


def problem_lines(report: dict) -> Iterator[str]:
    """One line per problem: site problems as they are, case problems as 'case: problem'."""
    yield from report["problems"]
    for case in report["cases"]:
        for problem in case["problems"]:
            yield f"{case['case_id']}: {problem}"


def format_check_table(report: dict) -> Table:
    """Human summary of a check report: one row per case, one line per view in each cell.

    Shape and spacing are compact (`24x256x256`, `3.3x0.62x0.62` mm: slice, row, column) and
    never wrap, so each view stays on one line.
    """

    def compact(values, fmt) -> str:
        return "x".join(fmt(v) for v in values)

    def mm(v: float) -> str:
        return f"{v:.2f}".rstrip("0").rstrip(".")

    status = "[green]ok[/green]" if report["ok"] else "[red]problems found[/red]"
    table = Table(
        title=f"{report['joint']} site check: {status}",
        caption=f"{len(report['problems'])} site-level problem(s)",
    )
    for column in ("case", "views", "shape", "spacing", "labels", "problems"):
        table.add_column(column, no_wrap=column in ("views", "shape", "spacing"))
    for case in report["cases"]:
        present = [v.value for v in VIEWS if v.value in case["views"]]
        table.add_row(
            case["case_id"],
            "\n".join(present) or "-",
            "\n".join(compact(case["views"][v]["shape"], str) for v in present) or "-",
            "\n".join(compact(case["views"][v]["spacing"], mm) for v in present) or "-",
            _labels_cell(case["labels"]),
            "[green]ok[/green]" if case["ok"] else f"[red]{len(case['problems'])}[/red]",
        )
    return table


def _labels_cell(labels: dict[str, int] | None) -> str:
    if labels is None:
        return "unlabeled"
    positives = [name for name, value in labels.items() if value == 1]
    return f"{len(positives)}/{len(labels)} positive" + (
        f"\n{', '.join(positives)}" if positives else ""
    )
