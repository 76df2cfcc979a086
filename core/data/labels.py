"""`labels.csv` of a site: one row per case, a `case_id` column and 0/1 label columns.

Columns other than `case_id` must be label names of the site's joint (`core.views.LABELS`);
a site may provide only some of them. An empty cell means "not labelled" (the label is left
out of that case's dict), so partially labelled cases are fine. Every problem names the
file, the row (line number, header = line 1), the case and the column.
"""

from __future__ import annotations

import csv
from pathlib import Path

from core.views import LABELS, Joint, parse_joint

CASE_COLUMN = "case_id"


def read_labels(path: Path, *, joint: Joint | str) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Parse a labels file: ({case_id: {label: 0|1}}, problems). Never raises for bad content."""
    names = LABELS[parse_joint(str(joint))]
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        return {}, [f"{path.name}: labels file unreadable ({type(err).__name__}: {err})"]
    rows = csv.reader(text.splitlines())
    header = [h.strip() for h in next(rows, [])]
    problems = _header_problems(header, path=path, names=names)
    if CASE_COLUMN not in header:
        return {}, problems
    labels: dict[str, dict[str, int]] = {}
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        case_id, values, row_problems = _parse_row(
            row, header=header, names=names, where=f"{path.name} line {line}"
        )
        problems += row_problems
        if not case_id:
            continue
        if case_id in labels:
            problems.append(
                f"{path.name} line {line}: duplicate row for case '{case_id}' (first row kept)"
            )
            continue
        labels[case_id] = values
    return labels, problems


def _header_problems(header: list[str], *, path: Path, names: tuple[str, ...]) -> list[str]:
    if not header or header == [""]:
        return [f"{path.name}: empty labels file (expected a header with '{CASE_COLUMN}')"]
    problems = []
    if CASE_COLUMN not in header:
        hint = (
            " (columns look separated by ';': save as comma-separated)"
            if any(";" in h for h in header)
            else ""
        )
        problems.append(f"{path.name}: no '{CASE_COLUMN}' column{hint}")
    for column in header:
        if column != CASE_COLUMN and column not in names:
            problems.append(
                f"{path.name}: unknown label column '{column}' (expected some of: "
                f"{', '.join(names)})"
            )
    seen = [c for c in header if header.count(c) > 1]
    if seen:
        problems.append(f"{path.name}: column '{seen[0]}' appears more than once")
    return problems


def _parse_row(
    row: list[str], *, header: list[str], names: tuple[str, ...], where: str
) -> tuple[str, dict[str, int], list[str]]:
    """One data row -> (case id, {label: 0|1}, problems)."""
    cells = dict(zip(header, (c.strip() for c in row), strict=False))
    case_id = cells.get(CASE_COLUMN, "")
    if not case_id:
        return "", {}, [f"{where}: empty {CASE_COLUMN}"]
    if len(row) > len(header):
        return (
            case_id,
            {},
            [
                f"{where} (case '{case_id}'): {len(row)} cells but {len(header)} "
                "columns in the header"
            ],
        )
    values: dict[str, int] = {}
    problems = []
    for column in names:
        raw = cells.get(column, "")
        if raw == "":
            continue
        value = _binary(raw)
        if value is None:
            problems.append(
                f"{where} (case '{case_id}'): column {column}: value '{raw}' is not 0 or 1"
            )
        else:
            values[column] = value
    return case_id, values, problems


def _binary(raw: str) -> int | None:
    """0 or 1 from '0', '1', '0.0', '1.0'; None for anything else."""
    try:
        number = float(raw)
    except ValueError:
        return None
    return int(number) if number in (0.0, 1.0) else None
