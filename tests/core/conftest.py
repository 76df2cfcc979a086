"""Fixtures shared by the core tests: the tiny model config and the random-case builder
(tests/core/tiny_model.py)."""

from __future__ import annotations

import pytest

from core.config import ModelConfig, load_config
from tests.core.tiny_model import TINY_MODEL, random_case


@pytest.fixture
def tiny_config() -> ModelConfig:
    return load_config(ModelConfig, data=TINY_MODEL)


@pytest.fixture
def make_case():
    return random_case
