"""Per-group RDP accounting: matches Opacus, grows with rounds, survives JSON."""

from __future__ import annotations

import json

import pytest
from opacus.accountants import RDPAccountant

from core.federation.accounting import GroupPrivacyAccountant

DELTA = 1e-5


def _opacus_epsilon(steps: list[tuple[float, float]]) -> float:
    fresh = RDPAccountant()
    for sigma, rate in steps:
        fresh.step(noise_multiplier=sigma, sample_rate=rate)
    return fresh.get_epsilon(delta=DELTA)


@pytest.mark.parametrize("group", ["backbone.axial", "head.shoulder.cls"])
@pytest.mark.parametrize(("sigma", "rate"), [(1.1, 1.0), (0.8, 0.3)])
def test_epsilon_grows_and_equals_fresh_opacus(group, sigma, rate):
    accountant = GroupPrivacyAccountant()
    assert accountant.epsilon(group=group, delta=DELTA) == 0.0
    previous = 0.0
    for round_no in range(1, 4):
        predicted = accountant.epsilon_after_step(
            group=group, noise_multiplier=sigma, sample_rate=rate, delta=DELTA
        )
        accountant.step(group=group, noise_multiplier=sigma, sample_rate=rate)
        epsilon = accountant.epsilon(group=group, delta=DELTA)
        assert epsilon > previous
        assert epsilon == predicted == _opacus_epsilon([(sigma, rate)] * round_no)
        previous = epsilon
    assert accountant.inputs(group=group, delta=DELTA) == {
        "noise_multiplier": sigma,
        "sample_rate": rate,
        "steps": 3,
        "delta": DELTA,
        "accountant": "rdp",
    }


def test_groups_are_accounted_independently():
    accountant = GroupPrivacyAccountant()
    for _ in range(3):
        accountant.step(group="backbone.sagittal", noise_multiplier=1.0, sample_rate=0.5)
    accountant.step(group="head.knee.seg", noise_multiplier=1.0, sample_rate=0.5)
    report = accountant.report(delta=DELTA)
    assert list(report) == ["backbone.sagittal", "head.knee.seg"]
    assert report["backbone.sagittal"]["steps"] == 3 and report["head.knee.seg"]["steps"] == 1
    assert report["head.knee.seg"]["epsilon"] == _opacus_epsilon([(1.0, 0.5)])
    assert report["backbone.sagittal"]["epsilon"] > report["head.knee.seg"]["epsilon"]


def test_changed_noise_is_a_new_history_entry_and_epsilon_sums_both():
    accountant = GroupPrivacyAccountant()
    steps = [(1.0, 1.0)] * 2 + [(2.0, 0.5)] * 3
    for sigma, rate in steps:
        accountant.step(group="backbone.coronal", noise_multiplier=sigma, sample_rate=rate)
    assert accountant.history("backbone.coronal") == [(1.0, 1.0, 2), (2.0, 0.5, 3)]
    assert accountant.epsilon(group="backbone.coronal", delta=DELTA) == _opacus_epsilon(steps)
    assert accountant.inputs(group="backbone.coronal", delta=DELTA)["steps"] == 3


def test_json_round_trip_keeps_history_and_epsilon():
    accountant = GroupPrivacyAccountant()
    for sigma in (1.0, 1.0, 1.5):
        accountant.step(group="head.ankle.cls", noise_multiplier=sigma, sample_rate=0.25)
    accountant.step(group="backbone.axial", noise_multiplier=0.9, sample_rate=1.0)
    text = accountant.to_json()
    assert json.loads(text)["groups"]["head.ankle.cls"] == [[1.0, 0.25, 2], [1.5, 0.25, 1]]
    restored = GroupPrivacyAccountant.from_json(text)
    assert restored.groups == ("backbone.axial", "head.ankle.cls")
    assert restored.report(delta=DELTA) == accountant.report(delta=DELTA)
    restored.step(group="head.ankle.cls", noise_multiplier=1.5, sample_rate=0.25)
    assert restored.history("head.ankle.cls")[-1] == (1.5, 0.25, 2)
    assert accountant.history("head.ankle.cls")[-1] == (1.5, 0.25, 1)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "not valid JSON"),
        ('{"mechanism": "prv", "groups": {}}', "mechanism"),
        ('{"mechanism": "rdp"}', "groups"),
        ('{"mechanism": "rdp", "groups": {"head.hip.cls": []}}', "invalid weight group"),
        ('{"mechanism": "rdp", "groups": {"backbone.axial": [[1.0, 0.5]]}}', "backbone.axial"),
        ('{"mechanism": "rdp", "groups": {"backbone.axial": [[1.0, 1.5, 2]]}}', "sample rate"),
        ('{"mechanism": "rdp", "groups": {"backbone.axial": [[0.0, 0.5, 2]]}}', "noise multiplier"),
    ],
)
def test_bad_state_is_refused(text, match):
    with pytest.raises(ValueError, match=match):
        GroupPrivacyAccountant.from_json(text)


@pytest.mark.parametrize(("sigma", "rate"), [(0.0, 0.5), (1.0, 0.0), (1.0, 1.01)])
def test_step_validates_inputs(sigma, rate):
    with pytest.raises(ValueError):
        GroupPrivacyAccountant().step(
            group="backbone.axial", noise_multiplier=sigma, sample_rate=rate
        )


def test_inputs_of_unaccounted_group_is_an_error():
    with pytest.raises(ValueError, match="head.knee.cls"):
        GroupPrivacyAccountant().inputs(group="head.knee.cls", delta=DELTA)


def _line(sites: dict, groups: dict) -> dict:
    dp = {"noise_multiplier": 1.2, "sample_rate": 0.1, "steps": 8, "delta": 1e-5}
    return {
        "epsilon": {"sites": sites, "groups": groups},
        "dp": {"sites": {s: dp for s in sites}, "groups": {g: dp for g in groups}},
    }


def test_every_history_line_carries_the_cumulative_privacy_record():
    from core.federation.accounting import carry_privacy

    first = carry_privacy(previous=None, current=_line({"a": 1.0, "b": 1.5}, {"head.knee.cls": 9}))
    # a round where only site a trained, then an evaluate round where nobody spent anything
    second = carry_privacy(previous=first, current=_line({"a": 2.0}, {}))
    evaluate = carry_privacy(previous=second, current=None)
    assert evaluate == second
    assert evaluate["epsilon"] == {"sites": {"a": 2.0, "b": 1.5}, "groups": {"head.knee.cls": 9}}
    assert set(evaluate["dp"]["sites"]) == {"a", "b"}
    assert set(evaluate["dp"]["groups"]) == {"head.knee.cls"}
    assert carry_privacy(previous=None, current=None) == {}  # DP off: no privacy fields
    assert carry_privacy(previous={"phase": "pretrain"}, current=_line({}, {})) == {}
