"""The requests a site answers (core/train/site_task.py); the training is in test_site_round.py."""

import pytest

from core.train import site_task


@pytest.mark.parametrize("key", ["", "../elsewhere", "a/b", "x" * 65])
def test_pretraining_needs_a_plain_run_key_before_any_work(tmp_path, key):
    with pytest.raises(ValueError, match="run key"):
        site_task.train_round(
            site_dir=tmp_path / "no-site",  # never read: the key is checked first
            state_dir=tmp_path / "state",
            site_id="knee-a",
            phase="pretrain",
            index=1,
            seed=0,
            run_key=key,
            model_json={},
            train_json={},
            global_arrays={},
        )
    assert not (tmp_path / "state").exists()
