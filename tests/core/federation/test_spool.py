"""UpdateSpool: replies on disk give bit-identical rounds, whatever order they arrive in."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.federation.accounting import GroupPrivacyAccountant
from core.federation.config import AggregationConfig, ServerDPConfig
from core.federation.server_round import aggregate_round
from core.federation.spool import SPOOL_PREFIX, SpooledArrays, UpdateSpool
from core.federation.updates import GroupUpdate, SiteUpdate

GROUPS = ("backbone.sagittal", "backbone.coronal", "head.knee.cls", "head.ankle.cls")


def _updates(make_state, make_update) -> tuple[dict, list[SiteUpdate]]:
    global_state = make_state(GROUPS)
    updates = [
        make_update("site-a", make_state(GROUPS, seed=1), groups=GROUPS[:3], num_examples=7),
        make_update("site-b", make_state(GROUPS, seed=2), groups=GROUPS[1:3], num_examples=3),
        make_update("site-c", make_state(GROUPS, seed=3), groups=GROUPS[1:], num_examples=11),
    ]
    return global_state, updates


def _round(global_state, updates, *, rule: str, dp: bool):
    server_dp = ServerDPConfig(enabled=dp, noise_multiplier=0.7, clip_norm=0.5)
    return aggregate_round(
        global_state=global_state,
        updates=updates,
        config=AggregationConfig(rule=rule),
        dp=server_dp,
        rng=np.random.default_rng(5),
        accountant=GroupPrivacyAccountant() if dp else None,
        sample_rate=1.0,
    )


def _assert_same(left, right) -> None:
    assert list(left.state) == list(right.state)
    for key in left.state:
        assert left.state[key].dtype == right.state[key].dtype
        assert left.state[key].tobytes() == right.state[key].tobytes(), key
    assert left.groups == right.groups and left.rejected == right.rejected


@pytest.mark.parametrize(
    ("rule", "dp"),
    [("weighted_mean", False), ("median", False), ("trimmed_mean", False), ("weighted_mean", True)],
)
def test_spooled_round_is_bit_identical_in_any_arrival_order(
    rule, dp, tmp_path, make_state, make_update
):
    global_state, updates = _updates(make_state, make_update)
    in_memory = _round(global_state, updates, rule=rule, dp=dp)
    for order in itertools.permutations(updates):
        with UpdateSpool(parent=tmp_path, global_state=global_state) as spool:
            spooled = [spool.add(update) for update in order]
            assert all(
                isinstance(g.arrays, SpooledArrays) for u in spooled for g in u.groups.values()
            )
            _assert_same(_round(global_state, spooled, rule=rule, dp=dp), in_memory)


def test_bad_groups_are_rejected_on_arrival_and_never_written(tmp_path, make_state, make_update):
    global_state, _ = _updates(make_state, make_update)
    hostile = make_state(GROUPS, seed=4)
    hostile["backbone.sagittal.conv.weight"][0, 0] = np.inf
    update = make_update("mallory", hostile, groups=GROUPS[:3], num_examples=2)
    update.groups["backbone.coronal"].arrays["backbone.coronal.conv.weight"] = np.zeros((9, 9))
    update.groups["head.shoulder.seg"] = GroupUpdate(arrays={}, num_examples=1)
    with UpdateSpool(parent=tmp_path, global_state=global_state) as spool:
        kept = spool.add(update)
        assert list(kept.groups) == ["head.knee.cls"]
        reasons = {r["group"]: r["reason"] for r in spool.rejected}
        assert set(reasons) == {"backbone.sagittal", "backbone.coronal", "head.shoulder.seg"}
        assert "non-finite" in reasons["backbone.sagittal"]
        assert "wrong shape" in reasons["backbone.coronal"]
        assert "not part of the global model" in reasons["head.shoulder.seg"]
        assert len(list(spool.directory.iterdir())) == 1


def test_spool_folder_is_removed_on_close_and_stale_ones_on_open(tmp_path, make_state):
    global_state = make_state(GROUPS)
    stale = tmp_path / f"{SPOOL_PREFIX}killed"
    stale.mkdir()
    (stale / "00001.safetensors").write_bytes(b"left by a killed server")
    with UpdateSpool(parent=tmp_path, global_state=global_state) as spool:
        assert not stale.exists() and spool.directory.is_dir()
    assert list(tmp_path.iterdir()) == []


def test_spooled_arrays_read_only_the_key_asked_for(tmp_path, make_state, make_update):
    global_state = make_state(GROUPS)
    with UpdateSpool(parent=tmp_path, global_state=global_state) as spool:
        update = spool.add(make_update("a", make_state(GROUPS, seed=1), groups=GROUPS[:1]))
        arrays = update.groups[GROUPS[0]].arrays
        assert "backbone.sagittal.conv.weight" in arrays and "other" not in arrays
        np.testing.assert_array_equal(
            arrays["backbone.sagittal.conv.weight"],
            make_state(GROUPS, seed=1)["backbone.sagittal.conv.weight"],
        )
        with pytest.raises(KeyError):
            arrays["other"]


@pytest.mark.parametrize(
    "dtype", ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "bool"]
)
def test_spooled_arrays_read_what_safetensors_reads(tmp_path, dtype):
    # SpooledArrays reads the file's header itself (see its docstring): every dtype and
    # shape, a 0-d array and an empty one included, must come back as safetensors loads them
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    arrays = {
        "a.matrix": (rng.standard_normal((3, 5)) * 50).astype(dtype),
        "b.scalar": np.asarray(rng.standard_normal() * 50).astype(dtype),
        "c.empty": np.zeros((0, 4), dtype=dtype),
        "d.vector": (rng.standard_normal(7) * 50).astype(dtype),
    }
    path = tmp_path / "group.safetensors"
    save_file(arrays, str(path))
    spooled = SpooledArrays(path, list(arrays))
    for key, expected in load_file(str(path)).items():
        got = spooled[key]
        assert got.dtype == expected.dtype and got.shape == expected.shape, key
        np.testing.assert_array_equal(got, expected)


# --- hostile updates, on the server's path (spool, then aggregate_round) ----------------------

HOSTILE = {  # kind -> (group, reason recorded)
    "norm_1e6": ("backbone.sagittal", "update norm"),
    "group_outside_the_model": ("head.shoulder.seg", "not part of the global model"),
}


def _hostile(kind: str, global_state: dict, make_state, make_update) -> SiteUpdate:
    """mallory sends an honest head.knee.cls and one hostile group of `kind`."""
    group, _ = HOSTILE[kind]
    update = make_update("mallory", make_state(GROUPS, seed=9), groups=["head.knee.cls"])
    if kind == "norm_1e6":  # the global weights plus a delta of L2 norm 1e6, all finite
        keys = [k for k in global_state if k.startswith(group + ".")]
        size = sum(global_state[k].size for k in keys)
        arrays = {k: global_state[k] + np.float32(1e6 / np.sqrt(size)) for k in keys}
    else:  # a group the global model does not have (a joint no site of the run trains)
        arrays = {f"{group}.conv.weight": np.full((2, 3), 1e6, np.float32)}
    update.groups[group] = GroupUpdate(arrays=arrays, num_examples=50)
    return update


@pytest.mark.parametrize("rule", ["weighted_mean", "median", "trimmed_mean"])
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_group_is_rejected_and_the_model_is_as_if_it_was_never_sent(
    kind, rule, tmp_path, make_state, make_update
):
    global_state = make_state(GROUPS)
    honest = [
        make_update(f"site-{c}", make_state(GROUPS, seed=i), groups=GROUPS[:3], num_examples=5)
        for i, c in enumerate("abc", start=1)
    ]
    mallory = _hostile(kind, global_state, make_state, make_update)
    without = make_update("mallory", make_state(GROUPS, seed=9), groups=["head.knee.cls"])
    with UpdateSpool(parent=tmp_path, global_state=global_state) as spool:
        spooled = [spool.add(u) for u in [*honest, mallory]]
        result = _round(global_state, spooled, rule=rule, dp=False)
        rejected = sorted([*spool.rejected, *result.rejected], key=lambda r: r["group"])
    group, reason = HOSTILE[kind]
    assert [(r["site"], r["group"]) for r in rejected] == [("mallory", group)]
    assert reason in rejected[0]["reason"]
    reference = _round(global_state, [*honest, without], rule=rule, dp=False)
    assert list(result.state) == list(global_state)  # no key added, none dropped
    for key, value in reference.state.items():
        assert result.state[key].tobytes() == value.tobytes(), key
    assert result.groups == reference.groups
    assert "mallory" in result.groups["head.knee.cls"]["sites"]  # its honest group counted
    for key in (k for k in global_state if k.startswith("head.ankle.cls.")):  # nobody sent it
        assert result.state[key].tobytes() == global_state[key].tobytes()


def test_a_1e6_norm_update_from_one_of_two_sites_is_rejected(tmp_path, make_state, make_update):
    global_state = make_state(GROUPS)
    honest = make_update("site-a", make_state(GROUPS, seed=1), groups=GROUPS[:1])
    mallory = _hostile("norm_1e6", global_state, make_state, make_update)
    result = _round(global_state, [honest, mallory], rule="weighted_mean", dp=False)
    assert [(r["site"], r["group"]) for r in result.rejected] == [("mallory", GROUPS[0])]


@pytest.mark.parametrize(
    ("joint", "foreign"), [("knee", "head.ankle.cls"), ("ankle", "head.knee.cls")]
)
def test_a_head_of_another_joint_is_rejected_when_the_sites_joint_is_known(
    joint, foreign, tmp_path, make_state, make_update
):
    global_state = make_state(GROUPS)
    update = make_update("site-x", make_state(GROUPS, seed=1), groups=GROUPS, num_examples=3)
    with UpdateSpool(parent=tmp_path, global_state=global_state) as spool:
        kept = spool.add(update, joint=joint)
        assert foreign not in kept.groups and len(kept.groups) == len(GROUPS) - 1
        assert [(r["group"], r["site"]) for r in spool.rejected] == [(foreign, "site-x")]
        assert f"a {joint} site cannot have trained" in spool.rejected[0]["reason"]
        assert spool.add(update).groups.keys() == set(GROUPS)  # joint unknown: not judged
