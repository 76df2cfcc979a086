"""Fixtures for training tests: the shared tiny model and random cases (tiny_model.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.config import ModelConfig, load_config
from core.views import VIEWS, Joint
from tests.core.tiny_model import TINY_MODEL, random_case

__all__ = ["TINY_MODEL", "random_case"]


@pytest.fixture
def tiny_config() -> ModelConfig:
    return load_config(ModelConfig, data=TINY_MODEL)


@pytest.fixture
def make_case():
    return random_case


@pytest.fixture
def knee_cases():
    rng = np.random.default_rng(0)
    return [
        random_case(
            f"c{i:02d}",
            joint=Joint.KNEE,
            rng=rng,
            missing=(VIEWS[2],) if i % 4 == 0 else (),
            heldout=i % 3 == 0,
        )
        for i in range(9)
    ]


@pytest.fixture
def one_thread():
    """Tiny shapes: extra threads only add contention on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
