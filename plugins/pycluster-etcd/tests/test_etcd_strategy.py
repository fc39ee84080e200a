"""The ``etcd`` strategy against a real etcd: discovery through registered keys."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
from conftest import LEASE_TTL, eventually, make_node
from etcd3aio.kv import prefix_range_end
from etcd_lab import EtcdServer, Gate
from pycluster_etcd.client import EtcdClient
from pycluster_etcd.options import EtcdConnection
from pycluster_etcd.strategy import listed_nodes

from pycluster.node import Node
from tests.lab.polling import until


def discovering(
    index: int, endpoint: str, prefix: str, *, port: int | None = None, **config: Any
) -> Node:
    """A node whose only topology is the etcd strategy (and whose registry is crdt)."""
    topology = {
        "strategy": "etcd",
        "config": {"endpoints": [endpoint], "prefix": prefix, "lease_ttl": LEASE_TTL, **config},
    }
    return make_node(index, [], prefix, backend="crdt", topologies={"etcd": topology}, port=port)


async def registered(etcd: EtcdServer, prefix: str) -> list[str]:
    """The node names under ``prefix``, read from etcd directly (each key is the prefix
    and the name its value holds)."""
    client = EtcdClient(EtcdConnection(endpoints=(etcd.endpoint,)))
    await client.open()
    try:
        response = await client.kv.get(prefix, prefix_range_end(prefix), timeout=5)
        names = sorted(bytes(kv.value).decode() for kv in response.kvs)
        assert sorted(bytes(kv.key).decode() for kv in response.kvs) == [
            prefix + name for name in names
        ]
        return names
    finally:
        await client.close()


def full_names(nodes: list[Node]) -> list[str]:
    """What the nodes register: their names with the port written out."""
    return sorted(n.full_name for n in nodes)


def peers(node: Node) -> list[str]:
    return node.nodes()


def test_listed_nodes_skips_values_that_are_not_node_names() -> None:
    items = {b"/p/a": b"a@10.0.0.1", b"/p/b": b"b@10.0.0.2:9101", b"/p/x": b"junk"}
    assert listed_nodes(items) == (["a@10.0.0.1", "b@10.0.0.2:9101"], ["junk"])


async def test_nodes_find_each_other_and_a_leaving_node_is_dropped_at_once(
    etcd: EtcdServer, prefix: str
) -> None:
    nodes = [discovering(i, etcd.endpoint, prefix) for i in range(3)]
    for node in nodes:
        await node.start()
    try:
        names = sorted(n.name for n in nodes)
        await eventually(lambda: all(peers(n) == sorted(set(names) - {n.name}) for n in nodes))
        assert await registered(etcd, prefix) == full_names(nodes)
        # A newcomer appears everywhere as soon as it registers.
        late = discovering(3, etcd.endpoint, prefix)
        async with late:
            await eventually(lambda: all(late.name in peers(n) for n in nodes))
        # Its graceful stop deleted its key.
        assert await registered(etcd, prefix) == full_names(nodes)
        await eventually(lambda: all(late.name not in peers(n) for n in nodes))
        statuses = [n.status()["topologies"]["etcd"] for n in nodes]
        assert all(s["strategy"] == "etcd" and s["state"] == "running" for s in statuses)
    finally:
        for node in nodes:
            await node.stop()
    assert await registered(etcd, prefix) == []


async def test_nodes_with_different_node_ports_register_names_each_other_dials(
    etcd: EtcdServer, prefix: str
) -> None:
    """A node registers its name with the port written out: ``e1@127.0.5.3`` alone would
    send e0 (node.port 9100) to port 9100 while e1 listens on 19100, and e0's bare name
    would send e1 to 19100."""
    a = discovering(0, etcd.endpoint, prefix)
    b = discovering(1, etcd.endpoint, prefix, port=19100)
    async with a, b:
        assert (a.full_name, b.full_name) == ("e0@127.0.5.2:9100", "e1@127.0.5.3:19100")
        assert b.name == "e1@127.0.5.3"  # canonical: its own node.port left out
        # Each names the other canonically with its own node.port: the port stays written.
        await eventually(
            lambda: peers(a) == ["e1@127.0.5.3:19100"] and peers(b) == ["e0@127.0.5.2:9100"]
        )
        assert await registered(etcd, prefix) == ["e0@127.0.5.2:9100", "e1@127.0.5.3:19100"]
        statuses = [n.status()["topologies"]["etcd"] for n in (a, b)]
        assert all(s["state"] == "running" and s["crashes"] == 0 for s in statuses)


async def test_a_node_cut_off_from_etcd_is_dropped_when_its_lease_expires(
    etcd: EtcdServer, prefix: str, gates: Any
) -> None:
    gate: Gate = await gates()
    cut = discovering(0, gate.endpoint, prefix)
    others = [discovering(i, etcd.endpoint, prefix) for i in (1, 2)]
    nodes = [cut, *others]
    for node in nodes:
        await node.start()
    try:
        await eventually(lambda: all(len(peers(n)) == 2 for n in nodes))
        gate.cut()
        cut_at = time.monotonic()
        # Its key expires: the others drop it, and keep it out while it is not listed.
        await eventually(
            lambda: all(peers(n) == [others[1 - i].name] for i, n in enumerate(others)),
            timeout=LEASE_TTL + 5,
        )
        assert time.monotonic() - cut_at > LEASE_TTL - 1
        await asyncio.sleep(1.0)  # it keeps dialling; they keep refusing
        assert all(cut.name not in peers(n) for n in others)
        # It cannot know (etcd is out of reach): it drops nobody itself.
        assert cut.status()["topologies"]["etcd"]["state"] == "running"
        gate.heal()
        # It registers again, and is connected again.
        await eventually(lambda: all(len(peers(n)) == 2 for n in nodes), timeout=10)
        assert await registered(etcd, prefix) == full_names(nodes)
    finally:
        for node in nodes:
            await node.stop()


async def test_while_etcd_is_down_nobody_is_disconnected(own_etcd: EtcdServer, prefix: str) -> None:
    nodes = [discovering(i, own_etcd.endpoint, prefix) for i in range(3)]
    for node in nodes:
        await node.start()
    try:
        await eventually(lambda: all(len(peers(n)) == 2 for n in nodes))
        own_etcd.signal(signal.SIGSTOP)
        deadline = time.monotonic() + LEASE_TTL + 1.5
        while time.monotonic() < deadline:
            assert all(len(peers(n)) == 2 for n in nodes)
            await asyncio.sleep(0.05)
        own_etcd.signal(signal.SIGCONT)
        # Every entry may have expired meanwhile; every node registers again, and the mesh
        # holds all along (peers get a lease_ttl to come back before they are dropped).
        names = full_names(nodes)

        async def registered_again() -> bool:
            assert all(len(peers(n)) == 2 for n in nodes)  # all along
            return await registered(own_etcd, prefix) == names

        await until(registered_again, timeout=15, interval=0.05, what="every node registered")
        for _ in range(int((LEASE_TTL + 2) / 0.05)):
            assert all(len(peers(n)) == 2 for n in nodes)
            await asyncio.sleep(0.05)
    finally:
        for node in nodes:
            await node.stop()


async def test_values_that_are_not_node_names_are_reported_and_skipped(
    etcd: EtcdServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = EtcdClient(EtcdConnection(endpoints=(etcd.endpoint,)))
    await client.open()
    try:
        await client.kv.put(prefix + "junk", "not a node name", timeout=5)
        a, b = (discovering(i, etcd.endpoint, prefix) for i in range(2))
        async with a, b:
            await eventually(lambda: peers(a) == [b.name] and peers(b) == [a.name])
            status = a.status()["topologies"]["etcd"]
            assert (status["state"], status["crashes"]) == ("running", 0)
        assert "skipped values that are not node names: ['not a node name']" in caplog.text
    finally:
        await client.close()
