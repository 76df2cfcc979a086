"""Suite-wide ordering: the Flower and reproduction tests (minutes each: simulations, a
loopback deployment, `reproduce --quick`) are collected first, so that a parallel run
(`make test`: two workers, one file at a time) starts them first and fills the end with the
many short tests instead of waiting on one long file at the end."""

from __future__ import annotations

SLOW_FIRST = ("tests/fl/", "tests/reproduce/")


def pytest_collection_modifyitems(config, items) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(SLOW_FIRST))
