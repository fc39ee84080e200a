"""pycluster.testing.cluster: in-memory clusters for users' tests, and their faults."""

from __future__ import annotations

import pytest

from pycluster.testing import ContractCounter, cluster, until


async def test_a_cluster_starts_meshed_and_synced_and_stops() -> None:
    async with cluster(4, config={"registry": {"backend": "crdt"}}) as c:
        names = [n.name for n in c.nodes]
        assert names == [f"node{i}@memory" for i in range(1, 5)]
        for node in c.nodes:
            assert node.nodes() == sorted(set(names) - {node.name})
            assert node.ready()
    assert not any(node.started for node in c.nodes)


async def test_kill_is_abrupt_and_its_names_go() -> None:
    async with cluster(3, config={"node": {"net_tick_timeout": 1}}) as c:
        a, b, d = c.nodes
        await b.registry.spawn("x", ContractCounter)
        await until(lambda: a.registry.whereis("x") is not None, 5, "x seen on a")
        await c.kill(b)
        assert a.nodes() == [d.name]
        assert d.nodes() == [a.name]
        assert b.actors.refs() == []  # its actors ended with it
        assert not a.left(b.name)  # not a graceful leave
        await until(lambda: a.registry.whereis("x") is None, 5, "x gone with b")
        assert c.alive() == [a, d]
        await c.heal()  # nothing was cut: the mesh of the living is whole already


async def test_pause_is_silent_until_the_tick_timeout_then_heal_reconnects() -> None:
    async with cluster(3, config={"node": {"net_tick_timeout": 0.5}}) as c:
        a, b, d = c.nodes
        await c.pause(b)
        assert b.name in a.nodes()  # silent, not gone: nobody notices at once
        await until(lambda: b.name not in a.nodes() and b.name not in d.nodes(), 5, "b down")
        await c.resume(b)
        await until(lambda: b.nodes() == [], 5, "b finds its connections closed")
        for node in (a, d):
            assert await b.connect(node.name)
        await c.wait_meshed()


async def test_partition_then_heal() -> None:
    async with cluster(4) as c:
        a, b, d, e = c.nodes
        await c.partition([a, b], [d, e])
        assert a.nodes() == [b.name]
        assert e.nodes() == [d.name]
        assert not await a.connect(d.name)
        await c.heal()
        assert all(len(n.nodes()) == 3 for n in c.nodes)


async def test_a_cluster_needs_a_node() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        async with cluster(0):
            pass
