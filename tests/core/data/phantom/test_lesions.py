"""Label sampling: prevalence per label and co-occurrence."""

import numpy as np
import pytest

from core.data.phantom.lesions import sample_labels
from core.data.phantom.render import case_labels
from core.views import LABELS, Joint


def _draw(joint: Joint, n: int, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = [sample_labels(rng, joint=joint, prevalence_scale=scale) for _ in range(n)]
    return np.array([[r[k] for k in LABELS[joint]] for r in rows], float)


@pytest.mark.parametrize("joint", list(Joint))
def test_prevalence_per_label_between_10_and_40_percent(joint):
    p = _draw(joint, 3000).mean(axis=0)
    assert np.all(p > 0.08) and np.all(p < 0.42), dict(zip(LABELS[joint], p.round(3), strict=True))


def test_profile_scale_raises_prevalence():
    assert _draw(Joint.KNEE, 2000, 1.5).mean() > _draw(Joint.KNEE, 2000, 1.0).mean() + 0.03


@pytest.mark.parametrize(
    ("joint", "cause", "effect"),
    [
        (Joint.KNEE, "acl_tear", "joint_effusion"),
        (Joint.KNEE, "acl_tear", "lateral_meniscus_tear"),
        (Joint.ANKLE, "atfl_injury", "cfl_injury"),
        (Joint.SHOULDER, "supraspinatus_tear", "subacromial_bursitis"),
    ],
)
def test_cause_raises_effect(joint, cause, effect):
    d = _draw(joint, 3000)
    c, e = LABELS[joint].index(cause), LABELS[joint].index(effect)
    with_cause = d[d[:, c] == 1, e].mean()
    without = d[d[:, c] == 0, e].mean()
    assert with_cause > without + 0.15


def test_force_and_unknown_label():
    rng = np.random.default_rng(1)
    forced = sample_labels(rng, joint=Joint.ANKLE, force={"cfl_injury": True})
    assert forced["cfl_injury"] is True
    with pytest.raises(ValueError, match="unknown ankle labels"):
        sample_labels(rng, joint=Joint.ANKLE, force={"acl_tear": True})


@pytest.mark.parametrize("joint", list(Joint))
def test_thirty_tiny_cases_have_plausible_prevalence(joint):
    rows = [case_labels(joint=joint, seed=11, case_index=i, profile="tiny") for i in range(30)]
    counts = {k: sum(r[k] for r in rows) for k in LABELS[joint]}
    assert all(1 <= c <= 18 for c in counts.values()), counts
