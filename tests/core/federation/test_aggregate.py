"""Per-group aggregation: weighted mean, robust rules, order and dtype guarantees."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.federation.aggregate import aggregate_updates, trimmed_mean
from core.federation.config import AggregationRule
from core.federation.groups import all_group_names, split_groups
from core.federation.updates import GroupUpdate, SiteUpdate

RULES = [r.value for r in AggregationRule]
SOME_GROUPS = ("backbone.sagittal", "backbone.axial", "head.knee.cls")


@pytest.mark.parametrize("group", all_group_names())
def test_weighted_mean_by_hand(group):
    key = f"{group}.w"
    global_state = {key: np.zeros(2, dtype=np.float32)}
    updates = [
        SiteUpdate("b", {group: GroupUpdate({key: np.array([4.0, 8.0], np.float32)}, 3)}),
        SiteUpdate("a", {group: GroupUpdate({key: np.array([1.0, 2.0], np.float32)}, 1)}),
    ]
    state, summary = aggregate_updates(global_state=global_state, updates=updates)
    np.testing.assert_array_equal(state[key], np.array([3.25, 6.5], np.float32))
    assert state[key].dtype == np.float32
    assert summary == {group: {"sites": ["a", "b"], "examples": 4}}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("missing", SOME_GROUPS)
def test_group_nobody_sent_keeps_value_and_is_not_summarised(
    rule, missing, make_state, make_update
):
    global_state = make_state(SOME_GROUPS, seed=0)
    sent = [g for g in SOME_GROUPS if g != missing]
    updates = [make_update(f"s{i}", make_state(SOME_GROUPS, seed=i), groups=sent) for i in (1, 2)]
    state, summary = aggregate_updates(global_state=global_state, updates=updates, rule=rule)
    for key in split_groups(global_state)[missing]:
        np.testing.assert_array_equal(state[key], global_state[key])
    assert missing not in summary and set(summary) == set(sent)
    changed = next(iter(split_groups(global_state)[sent[0]]))
    assert not np.array_equal(state[changed], global_state[changed])


@pytest.mark.parametrize("rule", RULES)
def test_key_order_of_global_model_is_kept(rule, make_state, make_update):
    # Interleaved groups in the global model, reversed key order in the sites' arrays.
    global_state = make_state(SOME_GROUPS, seed=0)
    keys = list(global_state)
    interleaved = {k: global_state[k] for k in keys[::2] + keys[1::2]}
    reversed_state = {k: v + 1 for k, v in reversed(list(global_state.items()))}
    updates = [make_update("a", reversed_state), make_update("b", make_state(SOME_GROUPS, seed=5))]
    state, _ = aggregate_updates(global_state=interleaved, updates=updates, rule=rule)
    assert list(state) == list(interleaved)


@pytest.mark.parametrize("rule", RULES)
def test_arrival_order_does_not_change_a_single_bit(rule, make_state, make_update):
    global_state = make_state(SOME_GROUPS, seed=0)
    updates = [
        make_update(
            f"site-{i}",
            make_state(SOME_GROUPS, seed=10 + i),
            groups=SOME_GROUPS[: 1 + i % 3],
            num_examples=7 + 13 * i,
        )
        for i in range(5)
    ]
    reference, ref_summary = aggregate_updates(
        global_state=global_state, updates=updates, rule=rule, trim_fraction=0.2
    )
    for perm in itertools.islice(itertools.permutations(updates), 1, None, 7):
        state, summary = aggregate_updates(
            global_state=global_state, updates=list(perm), rule=rule, trim_fraction=0.2
        )
        assert summary == ref_summary
        assert all(state[k].tobytes() == reference[k].tobytes() for k in reference)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_result_has_global_dtype(rule, dtype, make_state, make_update):
    global_state = make_state(SOME_GROUPS, dtype=dtype)
    updates = [
        make_update(s, make_state(SOME_GROUPS, seed=i, dtype=dtype)) for i, s in enumerate("abc")
    ]
    state, _ = aggregate_updates(global_state=global_state, updates=updates, rule=rule)
    assert all(state[k].dtype == dtype for k in state)


def test_median_and_trimmed_mean_by_hand():
    key = "backbone.coronal.w"
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    updates = [
        SiteUpdate(f"s{i}", {"backbone.coronal": GroupUpdate({key: np.array([v])}, 1 + i)})
        for i, v in enumerate(values)
    ]
    global_state = {key: np.zeros(1)}
    med, _ = aggregate_updates(global_state=global_state, updates=updates, rule="median")
    trim, _ = aggregate_updates(
        global_state=global_state, updates=updates, rule="trimmed_mean", trim_fraction=0.2
    )
    assert med[key][0] == 3.0 and trim[key][0] == 3.0


def test_trimmed_mean_validates_fraction():
    with pytest.raises(ValueError, match="trim fraction"):
        trimmed_mean([np.zeros(1)] * 3, trim_fraction=0.5)


def test_groups_outside_the_global_model_are_refused(make_state, make_update):
    global_state = make_state(["backbone.axial"])
    update = make_update("a", make_state(["head.ankle.seg"]))
    with pytest.raises(ValueError, match="head.ankle.seg"):
        aggregate_updates(global_state=global_state, updates=[update])


def _attack_errors(attack: str, group: str) -> dict[str, float]:
    """Distance of each rule's result from the honest-only weighted mean, one attacker of 7."""
    rng = np.random.default_rng(3)
    key = f"{group}.w"
    global_w = rng.normal(size=500)
    true_delta = rng.normal(size=500)
    honest = [global_w + true_delta + 0.1 * rng.normal(size=500) for _ in range(6)]
    attacker_delta = honest[0] - global_w
    bad = global_w + (50.0 * attacker_delta if attack == "scaled" else -attacker_delta)

    def updates(arrays):
        return [
            SiteUpdate(f"s{i}", {group: GroupUpdate({key: a}, 10)}) for i, a in enumerate(arrays)
        ]

    target, _ = aggregate_updates(global_state={key: global_w}, updates=updates(honest))
    errors = {}
    for rule in RULES:
        state, _ = aggregate_updates(
            global_state={key: global_w},
            updates=updates(honest + [bad]),
            rule=rule,
            trim_fraction=0.2,
        )
        errors[rule] = float(np.linalg.norm(state[key] - target[key]))
    return errors


@pytest.mark.parametrize("group", ["backbone.sagittal", "head.shoulder.seg"])
@pytest.mark.parametrize("attack", ["scaled", "sign_flip"])
def test_robust_rules_resist_one_malicious_site(attack, group):
    errors = _attack_errors(attack, group)
    # Measured: scaled ~0.005x, sign flip ~0.1x the weighted mean's error.
    limit = 0.02 if attack == "scaled" else 0.25
    assert errors["median"] < limit * errors["weighted_mean"]
    assert errors["trimmed_mean"] < limit * errors["weighted_mean"]
