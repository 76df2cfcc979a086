"""Weight group naming, splitting and merging."""

from __future__ import annotations

import numpy as np
import pytest

from core.federation.groups import (
    all_group_names,
    group_of,
    merge_groups,
    split_groups,
    validate_group_name,
)
from core.views import VIEWS, Joint


def test_all_group_names_cover_views_and_joint_heads():
    names = all_group_names()
    assert names[:3] == tuple(f"backbone.{v.value}" for v in VIEWS)
    assert len(names) == 3 + 2 * len(Joint)
    assert "head.shoulder.seg" in names and "head.ankle.cls" in names


@pytest.mark.parametrize("group", all_group_names())
@pytest.mark.parametrize("param", ["w", "down.0.conv.weight"])
def test_group_of_every_group(group, param):
    assert group_of(f"{group}.{param}") == group
    assert validate_group_name(group) == group


@pytest.mark.parametrize(
    "key",
    [
        "backbone.oblique.conv.weight",
        "head.hip.cls.w",
        "head.knee.det.w",
        "backbone.sagittal",
        "head.knee.cls",
        "encoder.conv.weight",
        "backbone..w",
        "",
    ],
)
def test_group_of_rejects_keys_outside_groups(key):
    with pytest.raises(ValueError, match="key"):
        group_of(key)


@pytest.mark.parametrize("name", ["backbone", "head.knee", "backbone.Sagittal", "head.knee.cls.x"])
def test_validate_group_name_rejects(name):
    with pytest.raises(ValueError, match="invalid weight group"):
        validate_group_name(name)


def test_split_keeps_first_appearance_order_and_merge_restores_interleaved_order():
    state = {
        "head.knee.cls.b": np.zeros(1),
        "backbone.axial.w": np.ones(2),
        "head.knee.cls.a": np.zeros(3),
        "backbone.axial.v": np.ones(1),
    }
    groups = split_groups(state)
    assert list(groups) == ["head.knee.cls", "backbone.axial"]
    assert list(groups["head.knee.cls"]) == ["head.knee.cls.b", "head.knee.cls.a"]
    merged = merge_groups(groups, key_order=list(state))
    assert list(merged) == list(state)
    assert all(merged[k] is state[k] for k in state)


def test_merge_rejects_misfiled_and_mismatched_keys():
    with pytest.raises(ValueError, match="filed under"):
        merge_groups({"backbone.axial": {"backbone.coronal.w": np.zeros(1)}})
    with pytest.raises(ValueError, match="missing"):
        merge_groups(
            {"backbone.axial": {"backbone.axial.w": np.zeros(1)}},
            key_order=["backbone.axial.w", "backbone.axial.v"],
        )
