"""The in-memory transport: the waist's behaviour without sockets, and its faults."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pycluster import load_config
from pycluster.errors import NotConnected, RemoteError
from pycluster.events import NodeDown
from pycluster.node import Node
from pycluster.transport.memory import MemoryNetwork
from tests.conftest import eventually

COOKIE = "memory-test-cookie-0123"


def make(network: MemoryNetwork, name: str, cookie: str = COOKIE, **node: Any) -> Node:
    config = load_config({"node": {"name": name, "net_tick_timeout": 0.5, **node}}, env={})
    return Node(config, cookie=cookie, network=network)


async def started(*nodes: Node) -> None:
    for node in nodes:
        await node.start()


async def test_messages_calls_and_errors_cross_like_over_tcp() -> None:
    network = MemoryNetwork()
    a, b = make(network, "a@mem"), make(network, "b@mem")
    await started(a, b)
    try:
        received: list[tuple[str, Any]] = []
        b.register_mailbox("log", lambda sender, body: received.append((sender, body)))
        b.register_mailbox("echo", lambda sender, body: {"from": sender, "body": body})

        def boom(sender: str, body: Any) -> None:
            raise ValueError(f"bad {body}")

        b.register_mailbox("boom", boom)
        assert await a.connect("b@mem:9100")  # any written form of the name
        assert a.nodes() == ["b@mem"]
        assert b.nodes() == ["a@mem"]
        for i in range(100):
            await a.send("b@mem", "log", i)
        assert await a.call("b@mem", "echo", [1, b"x"]) == {"from": "a@mem", "body": [1, b"x"]}
        assert received == [("a@mem", i) for i in range(100)]  # in order, before the call
        with pytest.raises(RemoteError, match="ValueError"):
            await a.call("b@mem", "boom", 1)
        with pytest.raises(RemoteError, match="NoSuchMailbox"):
            await a.call("b@mem", "nobody", None)
        with pytest.raises(TypeError):
            a.send_nowait("b@mem", "log", object())  # not encodable: nothing sent
        with pytest.raises(NotConnected):
            await a.call("c@mem", "echo", None)
    finally:
        await a.stop()
        await b.stop()


async def test_what_the_peer_cannot_decode_breaks_the_link_as_over_tcp() -> None:
    network = MemoryNetwork()
    a, b = make(network, "a@mem"), make(network, "b@mem", max_frame_size=4096)
    await started(a, b)
    try:
        events = b.events()
        await a.connect("b@mem")
        b.register_mailbox("sink", lambda sender, body: None)
        a.send_nowait("b@mem", "sink", b"x" * 10_000)  # over b's frame cap
        event = await asyncio.wait_for(anext(events), 1)
        assert event.peer == "a@mem"  # up
        event = await asyncio.wait_for(anext(events), 1)
        assert isinstance(event, NodeDown)
        assert event.reason.startswith("bad frame")
        await eventually(lambda: a.nodes() == [])
    finally:
        await a.stop()
        await b.stop()


async def test_another_cookie_cannot_connect() -> None:
    network = MemoryNetwork()
    a, b = make(network, "a@mem"), make(network, "b@mem", cookie="another-cookie-0123456")
    await started(a, b)
    try:
        assert not await a.connect("b@mem")
        assert a.nodes() == []
        assert b.nodes() == []
    finally:
        await a.stop()
        await b.stop()


async def test_a_node_that_stops_is_seen_leaving() -> None:
    network = MemoryNetwork()
    a, b = make(network, "a@mem"), make(network, "b@mem")
    await started(a, b)
    events = a.events()
    await a.connect("b@mem")
    await b.stop()
    try:
        assert (await asyncio.wait_for(anext(events), 1)).peer == "b@mem"
        down = await asyncio.wait_for(anext(events), 1)
        assert isinstance(down, NodeDown)
        assert down.reason == "left"
        assert a.left("b@mem")
    finally:
        await a.stop()


async def test_partition_kill_and_pause() -> None:
    network = MemoryNetwork()
    a, b, c = (make(network, f"{x}@mem") for x in "abc")
    await started(a, b, c)
    try:
        for x, y in (("a", "b"), ("a", "c"), ("b", "c")):
            assert await {"a": a, "b": b}[x].connect(f"{y}@mem")
        network.partition(["a@mem"], ["b@mem", "c@mem"])
        assert a.nodes() == []
        assert b.nodes() == ["c@mem"]
        assert not await a.connect("b@mem")  # stays cut until healed
        assert network.heal() == [("a@mem", "b@mem"), ("a@mem", "c@mem")]
        assert await a.connect("b@mem")
        assert await a.connect("c@mem")

        got: list[Any] = []
        c.register_mailbox("inbox", lambda sender, body: got.append(body))
        network.pause("c@mem")
        a.send_nowait("c@mem", "inbox", "held")
        await asyncio.sleep(0)  # a turn of the loop: nothing is delivered while paused
        assert got == []
        network.resume("c@mem")  # before the tick timeout: what was held arrives
        await eventually(lambda: got == ["held"])
        network.pause("c@mem")
        await eventually(lambda: "c@mem" not in a.nodes() and "c@mem" not in b.nodes())
        assert c.nodes() == ["a@mem", "b@mem"]  # frozen: it has not noticed yet
        network.resume("c@mem")
        assert c.nodes() == []  # thawed, it finds its connections closed

        network.kill("b@mem")
        assert a.nodes() == []
        assert not await a.connect("b@mem")
    finally:
        for node in (a, b, c):
            await node.stop()


async def test_a_hidden_client_calls_without_becoming_a_member() -> None:
    network = MemoryNetwork()
    a = make(network, "a@mem")
    client_config = load_config({"node": {"name": "client@mem"}}, env={})
    client = Node(client_config, cookie=COOKIE, network=network, hidden=True)
    await started(a, client)
    try:
        assert await client.connect("a@mem")
        assert a.nodes() == []  # a hidden client is no member
        status = await client.call("a@mem", "$status", None)
        assert status["node"] == "a@mem"
        assert status["nodes"] == []
    finally:
        await client.stop()
        await a.stop()
