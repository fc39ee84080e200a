"""Fixtures of the etcd plugin's tests: a real etcd, and nodes using it (127.0.5.x)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pycluster_etcd
import pytest
import pytest_asyncio
from etcd_lab import EtcdServer, Gate

from pycluster import Plugins, load_config
from pycluster.node import Node
from tests.lab.polling import until

COOKIE = "etcd-plugin-test-cookie"
LEASE_TTL = 3
"""Short enough for quick expiry tests, long enough for a loaded 2-core CI machine."""


async def eventually(condition: Callable[[], bool], *, timeout: float = 10.0) -> float:
    """The lab's :func:`~tests.lab.polling.until`, with this suite's deadline (etcd round
    trips on a loaded machine)."""
    return await until(condition, timeout=timeout, interval=0.01)


def plugins() -> Plugins:
    """pycluster's built-ins plus this plugin, registered directly (the entry point is
    tested separately, in test_install.py)."""
    return Plugins.load(entry_points=False, extra=[pycluster_etcd])


def make_node(
    index: int,
    endpoints: list[str],
    prefix: str,
    *,
    lease_ttl: int = LEASE_TTL,
    backend: str = "etcd",
    topologies: dict[str, Any] | None = None,
    port: int | None = None,
    **options: Any,
) -> Node:
    """Node ``e{index}@127.0.5.{index + 2}`` with the etcd backend under ``prefix`` (and
    ``node.port`` ``port``, when given)."""
    registry: dict[str, Any] = {"backend": backend}
    if backend == "etcd":
        registry["options"] = {
            "endpoints": endpoints,
            "prefix": prefix,
            "lease_ttl": lease_ttl,
            "timeout": 2.0,
            **options,
        }
    loaded = plugins()
    node: dict[str, Any] = {"name": f"e{index}@127.0.5.{index + 2}", "net_tick_timeout": 1.0}
    if port is not None:
        node["port"] = port
    config = load_config(
        {
            "node": node,
            "registry": registry,
            "topologies": topologies or {},
        },
        env={},
        plugins=loaded,
    )
    return Node(config, cookie=COOKIE, plugins=loaded)


async def mesh(nodes: list[Node]) -> None:
    """Connect every pair and wait until each node is ready."""
    await asyncio.gather(*(a.connect(b.name) for a in nodes for b in nodes if a is not b))
    await eventually(lambda: all(len(n.nodes()) == len(nodes) - 1 and n.ready() for n in nodes))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def etcd(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EtcdServer]:
    """One etcd for the session's tests that leave it alone (each uses its own prefix)."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd"), "shared")
    server.start()
    try:
        await server.until_healthy()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def own_etcd(tmp_path: Path) -> AsyncIterator[EtcdServer]:
    """An etcd of this test alone, which it may pause, kill or restart."""
    server = EtcdServer(tmp_path, "own")
    server.start()
    try:
        await server.until_healthy()
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"/test-{secrets.token_hex(4)}/"


@pytest.fixture
async def gates(etcd: EtcdServer) -> AsyncIterator[Callable[[], Any]]:
    """Makes proxies to the shared etcd that can be cut, one per node to cut off."""
    made: list[Gate] = []
    hosts = iter(range(150, 199))

    async def make() -> Gate:
        gate = Gate(etcd.host, etcd.client_port, f"127.0.5.{next(hosts)}")
        await gate.start()
        made.append(gate)
        return gate

    yield make
    for gate in made:
        gate.heal()
        await gate.close()
