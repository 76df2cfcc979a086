"""Update validation: every rejection reason, and partial acceptance of a site's groups."""

from __future__ import annotations

import numpy as np
import pytest

from core.federation.updates import GroupUpdate, SiteUpdate
from core.federation.validate import validate_updates

GROUP = "backbone.coronal"
OTHER = "head.ankle.cls"
W, B = f"{GROUP}.conv.weight", f"{GROUP}.a_norm.bias"


def _corrupt(kind: str, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Arrays (and num_examples) of one bad group update of `kind`."""
    arrays = dict(arrays)
    count = 5
    if kind in ("nan", "inf"):
        arrays[W] = arrays[W].copy()
        arrays[W][0, 1] = np.nan if kind == "nan" else -np.inf
    elif kind == "shape":
        arrays[W] = np.zeros((3, 2), arrays[W].dtype)
    elif kind == "dtype":
        arrays[W] = arrays[W].astype(np.float64)
    elif kind == "unknown_key":
        arrays[f"{GROUP}.extra"] = np.zeros(1, np.float32)
    elif kind == "missing_key":
        del arrays[B]
    elif kind == "not_array":
        arrays[W] = arrays[W].tolist()
    else:
        count = {"zero_examples": 0, "negative_examples": -3, "float_examples": 2.5}[kind]
    return arrays, count


REASONS = {
    "nan": "non-finite",
    "inf": "non-finite",
    "shape": "wrong shape",
    "dtype": "wrong dtype",
    "unknown_key": "unknown keys",
    "missing_key": "missing keys",
    "not_array": "not a numpy array",
    "zero_examples": "num_examples=0",
    "negative_examples": "num_examples=-3",
    "float_examples": "not a whole number",
}


@pytest.mark.parametrize("kind", list(REASONS))
def test_each_rejection_reason_and_other_groups_still_count(kind, make_state, make_update):
    global_state = make_state([GROUP, OTHER])
    good = make_update("good", make_state([GROUP, OTHER], seed=1))
    bad = make_update("bad", make_state([GROUP, OTHER], seed=2))
    arrays, count = _corrupt(kind, bad.groups[GROUP].arrays)
    bad.groups[GROUP] = GroupUpdate(arrays=arrays, num_examples=count)
    result = validate_updates(global_state=global_state, updates=[good, bad])
    assert len(result.rejected) == 1
    rejected = result.rejected[0]
    assert set(rejected) == {"site", "group", "reason"}
    assert (rejected["site"], rejected["group"]) == ("bad", GROUP)
    assert REASONS[kind] in rejected["reason"]
    accepted = {u.site_id: set(u.groups) for u in result.accepted}
    assert accepted == {"bad": {OTHER}, "good": {GROUP, OTHER}}


@pytest.mark.parametrize(
    ("group", "reason"),
    [("head.knee.seg", "not part of the global model"), ("head.hip.cls", "invalid weight group")],
)
def test_groups_the_model_lacks_are_rejected(group, reason, make_state):
    global_state = make_state([GROUP])
    update = SiteUpdate("s", {group: GroupUpdate({f"{group}.w": np.zeros(1)}, 3)})
    result = validate_updates(global_state=global_state, updates=[update])
    assert result.accepted == []
    assert result.rejected == [
        {"site": "s", "group": group, "reason": result.rejected[0]["reason"]}
    ]
    assert reason in result.rejected[0]["reason"]


def _scaled_sites(global_state, n_sites: int, scale: float, make_update):
    """n_sites honest updates of similar norm; the last one's delta is multiplied by `scale`."""
    rng = np.random.default_rng(0)
    updates = []
    for i in range(n_sites):
        factor = scale if i == n_sites - 1 else 1.0 + 0.1 * i
        state = {
            k: (v + factor * rng.normal(size=v.shape)).astype(v.dtype)
            for k, v in global_state.items()
        }
        updates.append(make_update(f"site{i}", state))
    return updates


@pytest.mark.parametrize("group", ["backbone.sagittal", "head.shoulder.seg"])
def test_update_norm_outlier_rejected_from_three_sites(group, make_state, make_update):
    global_state = make_state([group])
    updates = _scaled_sites(global_state, 3, 50.0, make_update)
    result = validate_updates(global_state=global_state, updates=updates, norm_factor=10.0)
    assert [(r["site"], r["group"]) for r in result.rejected] == [("site2", group)]
    assert "update norm" in result.rejected[0]["reason"]
    assert [u.site_id for u in result.accepted] == ["site0", "site1"]


def test_update_norm_not_checked_below_min_sites(make_state, make_update):
    global_state = make_state([GROUP])
    updates = _scaled_sites(global_state, 2, 50.0, make_update)
    result = validate_updates(global_state=global_state, updates=updates)
    assert result.rejected == [] and len(result.accepted) == 2


def test_moderate_spread_is_not_an_outlier(make_state, make_update):
    global_state = make_state([GROUP])
    updates = _scaled_sites(global_state, 4, 3.0, make_update)
    result = validate_updates(global_state=global_state, updates=updates, norm_factor=10.0)
    assert result.rejected == []


def test_duplicate_site_ids_are_an_error(make_state, make_update):
    global_state = make_state([GROUP])
    updates = [make_update("same", global_state), make_update("same", global_state)]
    with pytest.raises(ValueError, match="'same'"):
        validate_updates(global_state=global_state, updates=updates)


def test_empty_site_id_is_an_error():
    with pytest.raises(ValueError, match="site id"):
        SiteUpdate(" ", {})
