"""Shared fixtures: plugins, an in-memory network, and a polling helper for deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings

from pycluster import InMemoryNetwork, Plugins, RestartPolicy, Supervisor, load_config

# Example timing is not what the property tests check; on a loaded 2-core CI machine a
# per-example deadline only makes them flaky.
settings.register_profile("pycluster", deadline=None)
settings.load_profile("pycluster")


def supervisor_for(
    name: str, topology: dict[str, Any], network: InMemoryNetwork, plugins: Plugins
) -> Supervisor:
    """A supervisor running ``topology`` (as topology ``t``) for node ``name``."""
    config = load_config(
        {"node": {"name": name}, "topologies": {"t": topology}}, env={}, plugins=plugins
    )
    return Supervisor(
        config.topologies,
        membership=network.join(name),
        plugins=plugins,
        policy=RestartPolicy(initial_delay=0.01),
    )


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
