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


@pytest.fixture
def require_multicast() -> None:
    """Gossip tests need a network namespace of their own (root, Linux, iproute2, which
    .ci/setup installs): without one they fail, saying why, rather than skip."""
    from tests.lab.multicast import multicast_available

    reason = multicast_available()
    if reason is not None:
        pytest.fail(f"gossip tests cannot run here: {reason}")


@pytest.fixture
def require_firewall() -> None:
    """Partition tests need iptables and root (.ci/setup installs iptables): without them
    they fail, saying why, rather than skip."""
    from tests.lab import firewall_available

    reason = firewall_available()
    if reason is not None:
        pytest.fail(f"partition tests cannot run here: {reason}")
