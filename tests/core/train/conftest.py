"""Fixtures for training tests: knee cases of the shared random-case builder, one thread."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.views import VIEWS, Joint
from tests.core.tiny_model import random_case


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
