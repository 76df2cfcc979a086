"""Fixtures for model tests: the shared tiny model and random cases (tests/core/tiny_model.py)."""

from __future__ import annotations

import pytest

from core.config import ModelConfig, load_config
from tests.core.tiny_model import TINY_MODEL, random_case

__all__ = ["TINY_MODEL", "random_case"]


@pytest.fixture
def tiny_config() -> ModelConfig:
    return load_config(ModelConfig, data=TINY_MODEL)


@pytest.fixture
def make_case():
    return random_case
