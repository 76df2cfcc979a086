"""A site's state dir survives a SIGKILL in the middle of a write and a full disk (issue 15):
the privacy budget keeps every spend it recorded (never reset, never half-written), the
optimizer state of the previous round restores, and a round whose writes failed releases
nothing."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import torch

from core.config import ModelConfig, PretrainConfig, load_config
from core.data.cache import CaseTensors
from core.train import round_state, site_round
from core.train.privacy import BUDGET_FILE, ClientDPConfig, SiteBudget
from core.views import VIEWS
from tests.core.survival import disk_full_on, kill_mid_write, temp_files

pytestmark = pytest.mark.usefixtures("one_thread")

DP = ClientDPConfig(enabled=True, noise_multiplier=1.0)
SPENT = [(1.0, 0.5, 4)]  # what the site spent before the interrupted write
MORE = [(1.0, 0.25, 6)]


def _spent_budget(state_dir) -> tuple[SiteBudget, bytes]:
    budget = SiteBudget.load(state_dir, config=DP)
    budget.spend(SPENT)
    return budget, (state_dir / BUDGET_FILE).read_bytes()


CHILD_SPENDS = """
    import sys
    from pathlib import Path
    from core.train.privacy import ClientDPConfig, SiteBudget
    from tests.core.survival import pause_in_write

    config = ClientDPConfig(enabled=True, noise_multiplier=1.0)
    budget = SiteBudget.load(Path(sys.argv[1]), config=config)
    budget.epsilon()  # the accountant is imported before the write starts
    pause_in_write(nth=1, ready=sys.argv[2])
    budget.spend([(1.0, 0.25, 6)])
    raise SystemExit("the write was not interrupted")
"""


def test_sigkill_mid_budget_write_keeps_what_was_spent(tmp_path):
    state = tmp_path / "state"
    budget, on_disk = _spent_budget(state)
    written = kill_mid_write(CHILD_SPENDS, state, tmp_path / "ready", ready=tmp_path / "ready")
    (left,) = temp_files(state)  # the half-written new budget, under a temp name
    assert str(left) == written and left.name.startswith(f".{BUDGET_FILE}.")
    assert (state / BUDGET_FILE).read_bytes() == on_disk
    reloaded = SiteBudget.load(state, config=DP)
    assert reloaded.history == SPENT and reloaded.epsilon() == budget.epsilon() > 0
    reloaded.spend(MORE)  # the site goes on; the stale temp file is never read
    assert SiteBudget.load(state, config=DP).history == SPENT + MORE


def test_disk_full_mid_budget_write_keeps_the_old_budget(tmp_path, monkeypatch):
    state = tmp_path / "state"
    budget, on_disk = _spent_budget(state)
    faulty = disk_full_on(monkeypatch, nth=1)
    with pytest.raises(OSError) as caught:
        budget.spend(MORE)
    assert faulty.faulted is not None
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(state / BUDGET_FILE)
    assert temp_files(state) == []
    assert (state / BUDGET_FILE).read_bytes() == on_disk
    assert budget.history == SPENT  # the object agrees with the file
    assert SiteBudget.load(state, config=DP).history == SPENT


# --- optimizer state between pretraining rounds ----------------------------------------------


class _Trainer:
    """What `save_state`/`restore_state` use of a Pretrainer."""

    def __init__(self, value: float = 0.0) -> None:
        self.step = int(10 * value)
        self.value = value
        self.restored: dict | None = None

    def state(self):
        return {"adam.w": torch.full((512, 1024), self.value)}, {"round": self.value}

    def restore(self, *, step, tensors, meta):
        self.restored = {"step": step, "value": float(tensors["adam.w"][0, 0]), **meta}


def _restored(state_dir, *, index: int) -> dict | None:
    trainer = _Trainer()
    round_state.restore_state(trainer, state_dir=state_dir, index=index)
    return trainer.restored


CHILD_SAVES_STATE = """
    import sys
    from pathlib import Path
    import torch
    from core.train.round_state import save_state
    from tests.core.survival import pause_in_write

    class Trainer:
        step = 20
        def state(self):
            return {"adam.w": torch.full((512, 1024), 2.0)}, {"round": 2.0}

    pause_in_write(nth=int(sys.argv[2]), ready=sys.argv[3])
    save_state(Trainer(), state_dir=Path(sys.argv[1]), index=2)
    raise SystemExit("the write was not interrupted")
"""


@pytest.mark.parametrize("nth", [1, 2], ids=["weights", "json"])
def test_sigkill_mid_state_write_restores_the_previous_round(tmp_path, nth):
    state = tmp_path / "runs" / "run-a"
    state.mkdir(parents=True)
    round_state.save_state(_Trainer(1.0), state_dir=state, index=1)
    written = kill_mid_write(
        CHILD_SAVES_STATE, state, nth, tmp_path / "ready", ready=tmp_path / "ready"
    )
    assert (
        ".pretrain-state-0002.safetensors." if nth == 1 else ".pretrain-state-0002.json."
    ) in written
    # killed between the two files (json): round 2's weights exist without their .json
    assert (state / "pretrain-state-0002.safetensors").exists() == (nth == 2)
    assert _restored(state, index=3) == {"step": 10, "value": 1.0, "round": 1.0}
    # the redone round writes its state and clears what the killed write left
    round_state.save_state(_Trainer(2.0), state_dir=state, index=2)
    assert temp_files(state) == []
    assert _restored(state, index=3) == {"step": 20, "value": 2.0, "round": 2.0}


@pytest.mark.parametrize("nth", [1, 2], ids=["weights", "json"])
def test_disk_full_mid_state_write_leaves_the_previous_round(tmp_path, monkeypatch, nth):
    state = tmp_path / "state"
    state.mkdir()
    round_state.save_state(_Trainer(1.0), state_dir=state, index=1)
    disk_full_on(monkeypatch, nth=nth)
    with pytest.raises(OSError) as caught:
        round_state.save_state(_Trainer(2.0), state_dir=state, index=2)
    suffix = ".safetensors" if nth == 1 else ".json"
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(state / f"pretrain-state-0002{suffix}")
    assert sorted(p.name for p in state.iterdir()) == [
        "pretrain-state-0001.json",
        "pretrain-state-0001.safetensors",
    ]
    assert _restored(state, index=3) == {"step": 10, "value": 1.0, "round": 1.0}


# --- a whole DP round at a site whose disk fills up --------------------------------------------

MODEL = {
    "name": "survival",
    "input_slices": 8,
    "input_size": 16,
    "backbone": {
        "channels": [4, 8],
        "attention_levels": [False, True],
        "norm_num_groups": 4,
        "num_head_channels": 4,
    },
    "heads": {"view_dim": 8, "seg_proj": 4, "seg_channels": 4},
}


def _cases() -> list[CaseTensors]:
    """Four cases with one view: one backbone trains (fast)."""
    rng = np.random.default_rng(0)
    return [
        CaseTensors(
            case_id=f"c{i}",
            views={VIEWS[0]: rng.uniform(-1, 1, (1, 8, 16, 16)).astype(np.float16)},
            labels=None,
            mask=None,
            heldout=False,
        )
        for i in range(4)
    ]


# a DP pretraining round writes: the budget, then its state (weights, .json)
ROUND_WRITES = {1: BUDGET_FILE, 2: "runs/run-a/pretrain-state-0002.safetensors"}
ROUND_WRITES |= {3: "runs/run-a/pretrain-state-0002.json"}


@pytest.mark.parametrize("nth", list(ROUND_WRITES))
def test_dp_round_on_a_full_disk_releases_nothing_and_keeps_the_budget(tmp_path, monkeypatch, nth):
    cases = _cases()
    monkeypatch.setattr(site_round, "site_cases", lambda site, config: cases)
    model = load_config(ModelConfig, data=MODEL)

    def run(index: int, global_arrays=None):
        return site_round.pretrain_round(
            site=None,
            site_id="knee-a",
            state_dir=tmp_path,
            index=index,
            seed=0,
            model_config=model,
            train=PretrainConfig(steps=1, batch_size=2),
            global_arrays=global_arrays,
            client_dp=DP,
            run_key="run-a",
        )

    first = run(1, global_arrays=_global_arrays(model, cases))
    spent = SiteBudget.load(tmp_path, config=DP).history
    assert spent and first.arrays
    disk_full_on(monkeypatch, nth=nth)
    with pytest.raises(OSError) as caught:  # the round fails: its weights never leave
        run(2, global_arrays=first.arrays)
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(tmp_path / ROUND_WRITES[nth])
    assert temp_files(tmp_path) == []
    after = SiteBudget.load(tmp_path, config=DP).history
    if nth == 1:
        assert after == spent  # not recorded, and nothing released
    else:  # recorded before the state was written: counted though never released
        assert after == [(s, q, 2 * n) for s, q, n in spent]
    assert sorted(p.name for p in (tmp_path / "runs" / "run-a").iterdir()) == [
        "pretrain-state-0001.json",
        "pretrain-state-0001.safetensors",
    ]
    json.loads((tmp_path / BUDGET_FILE).read_text())  # whole, never half-written


def _global_arrays(model: ModelConfig, cases) -> dict[str, np.ndarray]:
    from core.config import PretrainRunConfig
    from core.train.pretrain import Pretrainer, training_volumes

    config = PretrainRunConfig(model=model, train=PretrainConfig(steps=1, batch_size=2))
    trainer = Pretrainer(config=config, volumes=training_volumes(cases, config=model))
    return {k: v.numpy() for k, v in trainer.backbone_weights(ema=False).items()}
