"""Shared fixtures: plugins, an in-memory network, and a polling helper for deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from hypothesis import settings

from pycluster import InMemoryNetwork, Plugins

# Example timing is not what the property tests check; on a loaded 2-core CI machine a
# per-example deadline only makes them flaky.
settings.register_profile("pycluster", deadline=None)
settings.load_profile("pycluster")


async def eventually(
    condition: Callable[[], bool], *, timeout: float = 5.0, interval: float = 0.005
) -> None:
    """Poll ``condition`` until it holds; fail the test if it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
def plugins() -> Plugins:
    return Plugins.load(entry_points=False)


@pytest.fixture
def network(plugins: Plugins) -> InMemoryNetwork:
    return InMemoryNetwork(plugins)
