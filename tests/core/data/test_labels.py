"""labels.csv parsing: values, columns, duplicates, unreadable files."""

from __future__ import annotations

import pytest

from core.data.labels import read_labels
from core.views import LABELS, Joint


def _read(tmp_path, text: str | bytes, joint: str = "knee"):
    path = tmp_path / "labels.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return read_labels(path, joint=joint)


@pytest.mark.parametrize("joint", list(Joint))
def test_all_columns_of_each_joint(tmp_path, joint):
    names = LABELS[joint]
    header = "case_id," + ",".join(names)
    row = "case-1," + ",".join("1" if i % 2 else "0" for i in range(len(names)))
    labels, problems = _read(tmp_path, f"\ufeff{header}\n{row}\n", joint=joint.value)
    assert problems == []
    assert labels == {"case-1": {n: i % 2 for i, n in enumerate(names)}}


def test_partial_labels_and_blank_cells(tmp_path):
    labels, problems = _read(tmp_path, "case_id,acl_tear,joint_effusion\na,1,\nb,0.0,1.0\n\n")
    assert problems == []
    assert labels == {"a": {"acl_tear": 1}, "b": {"acl_tear": 0, "joint_effusion": 1}}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "case_id,acl_tear\na,2\n",
            "labels.csv line 2 (case 'a'): column acl_tear: value '2' is not 0 or 1",
        ),
        (
            "case_id,acl_tear\na,yes\n",
            "labels.csv line 2 (case 'a'): column acl_tear: value 'yes' is not 0 or 1",
        ),
        ("case_id,acl_tear,tumour\na,1,0\n", "labels.csv: unknown label column 'tumour'"),
        ("id,acl_tear\na,1\n", "labels.csv: no 'case_id' column"),
        (
            "case_id;acl_tear\na;1\n",
            "labels.csv: no 'case_id' column (columns look separated "
            "by ';': save as comma-separated)",
        ),
        (
            "case_id,acl_tear\na,1\na,0\n",
            "labels.csv line 3: duplicate row for case 'a' (first row kept)",
        ),
        ("case_id,acl_tear\n,1\n", "labels.csv line 2: empty case_id"),
        ("case_id,acl_tear\na,1,0\n", "labels.csv line 2 (case 'a'): 3 cells but 2 columns"),
        (b"case_id,acl_tear\n\xff\xfe\x00a,1\n", "labels.csv: labels file unreadable"),
        ("", "labels.csv: empty labels file"),
    ],
)
def test_each_problem_has_its_message(tmp_path, text, problem):
    _, problems = _read(tmp_path, text)
    assert any(p.startswith(problem) for p in problems), problems


def test_duplicate_keeps_first_row(tmp_path):
    labels, _ = _read(tmp_path, "case_id,acl_tear\na,1\na,0\n")
    assert labels == {"a": {"acl_tear": 1}}


def test_ankle_columns_rejected_for_knee(tmp_path):
    _, problems = _read(tmp_path, "case_id,atfl_injury\na,1\n", joint="knee")
    assert problems and "unknown label column 'atfl_injury'" in problems[0]
