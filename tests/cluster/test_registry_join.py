"""Everyone joins at once, and the registry never wedges (issue 4's first-class test).

swarm's tracker wedges in its ``syncing`` state when several nodes join at the same
moment. Here 2, 3, 5 and 8 node processes start at the same instant, a name is claimed on
each of them while the mesh is still forming, and every trial every node must be ready
(merged with every peer) and hold the same registry within 5 s of the last node
listening. Then all of them are killed at once and restarted under the same names: the
registry of their previous lives must not come back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pycluster import load_config
from pycluster.demo import Counter
from pycluster.node import Node
from pycluster.registry import ActorRef
from tests.lab import Lab, LabNode

SIZES = [2, 3, 5, 8]
TRIALS = 5
WITHIN = 5.0


@pytest.fixture
async def client(lab: Lab) -> AsyncIterator[Node]:
    """A hidden node that asks the lab's nodes to claim names and report their registry."""
    config = load_config({"node": {"name": "tester@localhost"}}, env={})
    async with Node(config, cookie=lab.cookie, hidden=True, handshake_timeout=2.0) as node:
        yield node


async def views(client: Node, nodes: list[LabNode]) -> list[dict[str, Any] | None]:
    async def one(node: LabNode) -> dict[str, Any] | None:
        try:
            if not await client.connect(node.name):
                return None
            status = await client.call(node.name, "$status", None, timeout=2)
            names = await client.call(node.name, "$names", ["registered"], timeout=2)
        except (ConnectionError, TimeoutError):
            return None
        return {"synced": status["registry"]["synced"], "peers": status["nodes"], "names": names}

    return list(await asyncio.gather(*(one(node) for node in nodes)))


async def converge(
    lab: Lab, client: Node, nodes: list[LabNode], expected: set[str], started: float
) -> dict[str, ActorRef]:
    """Wait until every node is synced with all others and holds exactly ``expected``."""
    agreed: dict[str, ActorRef] = {}

    async def done() -> bool:
        nonlocal agreed
        seen = await views(client, nodes)
        if any(view is None for view in seen):
            return False
        ok = all(
            view is not None
            and view["synced"]
            and len(view["peers"]) == len(nodes) - 1
            and set(view["names"]) == expected
            and view["names"] == seen[0]["names"]  # type: ignore[index]
            for view in seen
        )
        if ok:
            agreed = seen[0]["names"]  # type: ignore[index]
        return ok

    remaining = max(0.0, started + WITHIN - time.monotonic())
    await lab.until(done, timeout=remaining, what=f"{len(nodes)} nodes agreeing on {expected}")
    return agreed


async def claim_one_name_each(client: Node, nodes: list[LabNode], prefix: str) -> set[str]:
    names = {f"{prefix}-{node.name}" for node in nodes}
    assert all(await asyncio.gather(*(client.connect(node.name) for node in nodes)))
    refs = await asyncio.gather(
        *(
            client.registry.spawn(f"{prefix}-{node.name}", Counter, on=node.name, timeout=5)
            for node in nodes
        )
    )
    assert [ref.node for ref in refs] == [node.name for node in nodes]
    return names


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as response:
        status: int = response.status
        return status


def restarted(node: LabNode) -> LabNode:
    """The same node (name, address, config) as a new process: a new incarnation."""
    return dataclasses.replace(node, process=None, spawned_at=None, listening_at=None)


@pytest.mark.parametrize("size", SIZES)
async def test_simultaneous_join_and_kill_all_restart_never_wedge(
    lab: Lab, client: Node, size: int
) -> None:
    for trial in range(TRIALS):
        nodes = lab.declare(size, net_tick_timeout=2.0, retry_interval=0.5)
        await lab.start(nodes)
        last_listening = max(node.listening_at or 0.0 for node in nodes)
        first_life = await claim_one_name_each(client, nodes, f"t{trial}")
        names = await converge(lab, client, nodes, first_life, last_listening)
        assert {ref.node for ref in names.values()} == {node.name for node in nodes}
        assert await asyncio.to_thread(http_status, nodes[0].url("/readyz")) == 200

        # Every pod killed and restarted at once: new incarnations, old names gone.
        for node in nodes:
            node.send_signal(signal.SIGKILL)
        await asyncio.gather(*(lab.wait_exit(node) for node in nodes))
        lab.retire(nodes)
        reborn = [restarted(node) for node in nodes]
        lab.nodes.extend(reborn)
        await lab.start(reborn)
        last_listening = max(node.listening_at or 0.0 for node in reborn)
        second_life = await claim_one_name_each(client, reborn, f"t{trial}-again")
        await converge(lab, client, reborn, second_life, last_listening)
        await lab.stop(reborn)
        lab.retire(reborn)
