"""Every built-in registry backend passes the registry contract (pycluster.testing), over
both transports: the TCP mesh and the in-memory network."""

from __future__ import annotations

import asyncio

import pytest

from pycluster import load_config
from pycluster.node import Node
from pycluster.testing import CONTRACT, ContractCheck, until
from pycluster.transport.memory import MemoryNetwork

COOKIE = "contract-test-cookie"
# The most nodes a backend can serve: `local` is a cluster of one.
BACKENDS = {"crdt": 3, "local": 1}
CASES = [
    pytest.param(backend, check, id=f"{backend}-{check.name.replace(' ', '-')}")
    for backend, most in BACKENDS.items()
    for check in CONTRACT
    if check.nodes <= most
]


def make_node(index: int, backend: str, network: MemoryNetwork | None) -> Node:
    config = load_config(
        {
            "node": {"name": f"c{index}@127.0.4.{index + 2}", "net_tick_timeout": 1.0},
            "registry": {"backend": backend},
        },
        env={},
    )
    return Node(config, cookie=COOKIE, network=network)


@pytest.mark.parametrize("transport", ["tcp", "memory"])
@pytest.mark.parametrize(("backend", "check"), CASES)
async def test_contract(transport: str, backend: str, check: ContractCheck) -> None:
    network = MemoryNetwork() if transport == "memory" else None
    nodes = [make_node(i, backend, network) for i in range(check.nodes)]
    try:
        for node in nodes:
            await node.start()
        await asyncio.gather(*(a.connect(b.name) for a in nodes for b in nodes if a is not b))
        await until(
            lambda: all(len(n.nodes()) == len(nodes) - 1 and n.ready() for n in nodes),
            10,
            "a ready mesh",
        )
        await check.run(nodes)
    finally:
        for node in nodes:
            await node.stop()


def test_every_check_runs_on_some_backend() -> None:
    assert {case.values[1] for case in CASES} == set(CONTRACT)
