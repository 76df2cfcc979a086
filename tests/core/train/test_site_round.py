"""A site's state between federated rounds belongs to one federation run (issue 15, defect 4)."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import PretrainConfig
from core.train import round_state, site_round
from tests.core.train.test_privacy import _cases, _model_config, _trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def pretrain(monkeypatch):
    """One pretraining round of site knee-a on tiny cases, as the ClientApp runs it."""
    cases = _cases(4)
    monkeypatch.setattr(site_round, "site_cases", lambda site, config: cases)
    global_arrays = {k: v.numpy() for k, v in _trainer(cases).backbone_weights(ema=False).items()}

    def run(*, state_dir, index: int, run_key: str):
        return site_round.pretrain_round(
            site=None,
            site_id="knee-a",
            state_dir=state_dir,
            index=index,
            seed=0,
            model_config=_model_config(),
            train=PretrainConfig(steps=2, batch_size=2),
            global_arrays=global_arrays,
            run_key=run_key,
        )

    return run


def _same(a, b) -> bool:
    return list(a.arrays) == list(b.arrays) and all(
        np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays
    )


def test_a_state_dir_never_restores_another_runs_state(tmp_path, pretrain):
    shared = tmp_path / "state"
    pretrain(state_dir=shared, index=1, run_key="run-a")  # federation A leaves its state behind
    other = pretrain(state_dir=shared, index=2, run_key="run-b")  # B's round 2, same state dir
    fresh = pretrain(state_dir=tmp_path / "fresh", index=2, run_key="run-b")
    assert _same(other, fresh)  # B started from nothing, not from A's round-1 state
    # the state does matter: A's own round 2 continues from its round 1
    continued = pretrain(state_dir=shared, index=2, run_key="run-a")
    assert not _same(continued, fresh)
    runs = shared / round_state.RUNS_DIR
    assert sorted(p.name for p in runs.iterdir()) == ["run-a", "run-b"]
    assert not list(shared.glob(f"{round_state.STATE_PREFIX}*"))  # nothing keyed by round only
    assert (runs / "run-a" / f"{round_state.STATE_PREFIX}0002.safetensors").is_file()
