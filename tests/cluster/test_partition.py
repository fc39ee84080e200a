"""A partition between two nodes' addresses, cut with iptables (issue 3).

a and b stop hearing each other: each declares the other down after the tick timeout,
while c and d, which still reach both, keep both all along. Once the cut is restored, a
and b reconnect on their own (their ``epmd`` topologies keep retrying).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.lab import Lab

TICK_TIMEOUT = 1.0
CUT_FOR = 3 * TICK_TIMEOUT
"""How long the partition lasts: past the tick timeout, with time to watch c and d."""

pytestmark = pytest.mark.usefixtures("require_firewall")


async def test_a_partition_between_two_nodes_then_healing(lab: Lab) -> None:
    nodes = lab.declare(4, net_tick_timeout=TICK_TIMEOUT, retry_interval=0.5)
    a, b, c, d = nodes
    await lab.start(nodes)
    await lab.wait_mesh(nodes, timeout=10)

    cut = time.monotonic()
    lab.partition(a, b)

    async def apart() -> bool:
        views = await lab.views([a, b])
        return views == [[c.name, d.name], [c.name, d.name]]

    seen = await lab.until(apart, timeout=TICK_TIMEOUT + 5, what="a and b see each other down")
    assert seen - cut <= TICK_TIMEOUT + 1.0
    for node, peer in ((a, b), (b, a)):
        (down,) = [e for e in node.events() if e.kind == "down"]
        assert down.peer == peer.name
        assert down.reason is not None
        assert down.reason.startswith("net tick timeout"), down

    # c and d keep both a and b for the whole partition; a and b stay apart.
    while time.monotonic() < cut + CUT_FOR:
        views = await lab.views(nodes)
        assert views[2:] == [[a.name, b.name, d.name], [a.name, b.name, c.name]]
        assert views[:2] == [[c.name, d.name], [c.name, d.name]]
        await asyncio.sleep(0.05)

    healed = time.monotonic()
    lab.heal(a, b)
    back = await lab.wait_mesh(nodes, timeout=15)
    for node in (c, d):
        assert [e for e in node.events() if e.kind == "down"] == [], node.name
    for node, peer in ((a, b), (b, a)):
        events = [(e.kind, e.peer) for e in node.events() if e.peer == peer.name]
        assert events == [("up", peer.name), ("down", peer.name), ("up", peer.name)], node.name
    print(f"partition seen in {seen - cut:.3f}s; reconnected {back - healed:.3f}s after healing")
