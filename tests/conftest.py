"""Shared fixtures: plugins, an in-memory network, a polling helper for deadlines, and the
``pycluster`` command run as users run it."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from pycluster import Node

from pycluster import InMemoryNetwork, Plugins, TopologyRestartPolicy, load_config
from pycluster.supervisor import Supervisor
from pycluster.transport.memory import MemoryNetwork
from tests.lab.polling import until

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
        policy=TopologyRestartPolicy(initial_delay=0.01),
    )


eventually = until
"""Poll a condition until it holds; fail the test if it does not in time (the lab's one
polling helper, :func:`tests.lab.polling.until`, under the name the unit tests know)."""


def logged(caplog: pytest.LogCaptureFixture, **fields: Any) -> list[logging.LogRecord]:
    """The captured records that have all ``fields`` (``extra=`` event fields, or record
    attributes such as ``levelno`` and ``name``), in order."""
    missing = object()
    return [
        record
        for record in caplog.records
        if all(getattr(record, key, missing) == value for key, value in fields.items())
    ]


def crashes(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The captured records of a strategy that crashed (restarted, or its topology failed)."""
    return [
        record
        for record in caplog.records
        if getattr(record, "event", None) in ("strategy_crashed", "strategy_failed")
    ]


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


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    without: tuple[str, ...] = (),
    timeout: float = 60.0,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pycluster ARGS`` as a real process and return what it did.

    ``env`` is added to this process's environment, from which ``without`` is removed.
    """
    environment = {k: v for k, v in os.environ.items() if k not in without}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pycluster", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=environment,
        preexec_fn=preexec_fn,
    )


class Memory:
    """The in-memory network of the running test, for tests that need no sockets: a test
    module sets ``pytestmark = pytest.mark.usefixtures("memory_network")`` and its nodes
    join ``Memory.network``."""

    network = MemoryNetwork()


@pytest.fixture
def memory_network() -> MemoryNetwork:
    """A fresh in-memory network for this test (also as ``Memory.network``)."""
    Memory.network = MemoryNetwork()
    return Memory.network


async def mesh(nodes: Sequence[Node]) -> None:
    """Connect every pair of ``nodes``; return once each sees all others and is ready."""
    await asyncio.gather(*(a.connect(b.name) for a in nodes for b in nodes if a is not b))
    await eventually(lambda: all(len(n.nodes()) == len(nodes) - 1 and n.ready() for n in nodes))


@asynccontextmanager
async def meshed(nodes: list[Node]) -> AsyncIterator[list[Node]]:
    """Start ``nodes``, mesh them, and stop them all at the end."""
    try:
        for node in nodes:
            await node.start()
        await mesh(nodes)
        yield nodes
    finally:
        for node in nodes:
            await node.stop()
