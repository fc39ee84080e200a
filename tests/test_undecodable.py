"""Messages that cannot break a link: two nodes, over TCP and in memory.

What the sender's codec packs, the receiver takes (int, float, None, bytes and tuple map
keys included). What the receiver still cannot decode inside a sound frame (an extension
code it did not register, an extension decoder that raises, a msgpack timestamp) fails
that one message: a call raises RemoteError at once, a cast is dropped and counted, a
reply fails its call. The connection stays up: no node down, the same connection, and
the next call works.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import msgpack
import pytest

from pycluster import load_config
from pycluster.errors import RemoteError
from pycluster.events import NodeDown
from pycluster.node import Node
from pycluster.transport.endpoint import Channel
from pycluster.transport.memory import MemoryNetwork
from tests.conftest import eventually

COOKIE = "undecodable-test-cookie-0123"
PROMPTLY = 2.0
"""Seconds within which a failed call raises (its own timeout is far longer)."""
CALL_TIMEOUT = 30.0
LARGE = b"p" * 100_000
"""Makes a message's frame a large one (decoded in pieces as it arrives)."""


@attrs.frozen
class Point:
    x: int
    y: int


class Other:
    pass


def encode_point(point: Point) -> bytes:
    return msgpack.packb([point.x, point.y])


def decode_point(data: bytes) -> Point:
    return Point(*msgpack.unpackb(data))


def refuse_point(data: bytes) -> Point:
    raise ValueError("no points on this node")


@attrs.define
class Pair:
    """Two connected nodes, and every node down either saw."""

    a: Node
    b: Node
    downs: list[NodeDown]

    def connections(self) -> tuple[Channel, Channel]:
        """The connection each node holds to the other (the same objects while it lasts)."""
        ours = self.a.transport._connections[self.b.name]
        theirs = self.b.transport._connections[self.a.name]
        return ours, theirs

    async def assert_link_is_up(self, before: tuple[Channel, Channel]) -> None:
        """Nobody went down, the connections are the ones from ``before``, and a call
        crosses them."""
        assert self.downs == []
        assert self.a.nodes() == [self.b.name]
        assert self.b.nodes() == [self.a.name]
        assert self.connections() == before
        assert all(not channel.closed for channel in before)
        assert await self.a.call(self.b.name, "echo", "still up") == "still up"
        assert self.downs == []


def undecodable(node: Node, kind: str, reason: str) -> float:
    """pycluster_messages_undecodable_total{kind, reason} on ``node``."""
    value = node.metrics.registry.get_sample_value(
        "pycluster_messages_undecodable_total", {"kind": kind, "reason": reason}
    )
    return value or 0.0


def make(transport: str, name: str, network: MemoryNetwork, **node: Any) -> Node:
    # A generous tick timeout: a node down here must come from a message, never from a
    # loaded machine holding the event loop for a second.
    config = load_config({"node": {"name": name, "net_tick_timeout": 10.0, **node}}, env={})
    if transport == "memory":
        return Node(config, cookie=COOKIE, network=network)
    return Node(config, cookie=COOKIE, handshake_timeout=2.0)


@pytest.fixture(params=["tcp", "memory"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    network = MemoryNetwork()
    a = make(request.param, "a@127.0.13.2", network)
    b = make(request.param, "b@127.0.13.3", network)
    downs: list[NodeDown] = []

    def record(event: object) -> None:
        if isinstance(event, NodeDown):
            downs.append(event)

    for node in (a, b):
        node.add_listener(record)
    try:
        await a.start()
        await b.start()
        b.register_mailbox("echo", lambda sender, body: body)
        assert await a.connect(b.name)
        await eventually(lambda: b.nodes() == [a.name])
        yield Pair(a, b, downs)
    finally:
        await a.stop()
        await b.stop()


async def promptly(call: Callable[[], Any]) -> Any:
    """Await ``call()`` (a node call with a long timeout), failing if it takes long."""
    return await asyncio.wait_for(call(), PROMPTLY)


# -- what the sender packs, the receiver takes -------------------------------------------


@pytest.mark.parametrize("padding", [b"", LARGE], ids=["small", "large"])
async def test_maps_with_int_and_other_keys_cross_both_ways(pair: Pair, padding: bytes) -> None:
    """The example of the issue, {1: "x"}, and every other key msgpack packs: a tuple key
    comes back a tuple."""
    before = pair.connections()
    body = {1: "x", -2: {3: [4]}, 2.5: None, None: b"n", False: "no", b"k": 1, (1, ("a",)): 2}
    assert await promptly(lambda: pair.a.call(pair.b.name, "echo", {**body, "p": padding})) == {
        **body,
        "p": padding,
    }
    # A tuple value arrives a list, as always with msgpack; only a key stays a tuple.
    assert await pair.a.call(pair.b.name, "echo", {(1, 2): (3, 4)}) == {(1, 2): [3, 4]}
    await pair.assert_link_is_up(before)


async def test_a_type_registered_on_every_node_crosses(pair: Pair) -> None:
    for node in (pair.a, pair.b):
        node.codec.register(Point, 42, encode_point, decode_point)
    assert await pair.a.call(pair.b.name, "echo", {"at": Point(1, 2)}) == {"at": Point(1, 2)}


def test_applications_register_codes_16_to_126_on_the_nodes_codec(pair: Pair) -> None:
    codec = pair.a.codec
    assert codec is pair.a.transport.codec
    for code in (0, 15, 127):
        with pytest.raises(ValueError, match=r"not in 16\.\.126"):
            codec.register(Point, code, encode_point, decode_point)
    codec.register(Point, 16, encode_point, decode_point)
    codec.register(Other, 126, lambda other: b"", lambda data: Other())
    with pytest.raises(ValueError, match="already registered"):
        codec.register(Point, 17, encode_point, decode_point)
    with pytest.raises(ValueError, match="already registered"):
        codec.register(datetime.date, 16, lambda d: b"", lambda data: datetime.date.today())


async def test_a_datetime_crosses_once_registered_on_every_node(pair: Pair) -> None:
    """msgpack's own timestamps are refused; a type registered for datetimes is not."""
    for node in (pair.a, pair.b):
        node.codec.register(
            datetime.datetime,
            20,
            lambda moment: moment.isoformat().encode(),
            lambda data: datetime.datetime.fromisoformat(data.decode()),
        )
    moment = datetime.datetime(2026, 12, 7, 3, 0, tzinfo=datetime.UTC)
    assert await pair.a.call(pair.b.name, "echo", [moment]) == [moment]


# -- what the receiver cannot decode fails that message only ------------------------------


@pytest.mark.parametrize("padding", [b"", LARGE], ids=["small", "large"])
async def test_a_call_the_peer_cannot_decode_raises_remote_error_and_the_link_stays(
    pair: Pair, padding: bytes
) -> None:
    """Only the caller's node registered Point."""
    pair.a.codec.register(Point, 42, encode_point, decode_point)
    before = pair.connections()
    with pytest.raises(RemoteError) as raised:
        await promptly(
            lambda: pair.a.call(
                pair.b.name, "echo", {"p": Point(1, 2), "pad": padding}, timeout=CALL_TIMEOUT
            )
        )
    assert raised.value.node == pair.b.name
    assert raised.value.type == "CodecError"
    assert raised.value.message == "cannot decode the message: unknown extension code 42"
    assert str(raised.value) == (
        f"CodecError on {pair.b.name}: cannot decode the message: unknown extension code 42"
    )
    assert undecodable(pair.b, "call", "unknown_extension") == 1
    await pair.assert_link_is_up(before)


@pytest.mark.parametrize("padding", [b"", LARGE], ids=["small", "large"])
async def test_a_cast_the_peer_cannot_decode_is_dropped_and_counted(
    pair: Pair, padding: bytes
) -> None:
    pair.a.codec.register(Point, 42, encode_point, decode_point)
    received: list[Any] = []
    pair.b.register_mailbox("sink", lambda sender, body: received.append(body))
    before = pair.connections()
    await pair.a.send(pair.b.name, "sink", [Point(1, 2), padding])
    await pair.a.send(pair.b.name, "sink", "after")
    await eventually(lambda: received == ["after"])  # in order: the first was dropped
    assert undecodable(pair.b, "msg", "unknown_extension") == 1
    await pair.assert_link_is_up(before)


async def test_a_reply_the_caller_cannot_decode_fails_its_call(pair: Pair) -> None:
    """Only the node that answers registered Point."""
    pair.b.codec.register(Point, 42, encode_point, decode_point)
    pair.b.register_mailbox("where", lambda sender, body: Point(3, 4))
    before = pair.connections()
    with pytest.raises(RemoteError) as raised:
        await promptly(lambda: pair.a.call(pair.b.name, "where", None, timeout=CALL_TIMEOUT))
    assert raised.value.node == pair.b.name
    assert raised.value.type == "CodecError"
    assert raised.value.message == "cannot decode the reply: unknown extension code 42"
    assert undecodable(pair.a, "reply", "unknown_extension") == 1
    await pair.assert_link_is_up(before)


async def test_an_extension_decoder_that_raises_fails_that_message_only(pair: Pair) -> None:
    pair.a.codec.register(Point, 42, encode_point, decode_point)
    pair.b.codec.register(Point, 42, encode_point, refuse_point)
    received: list[Any] = []
    pair.b.register_mailbox("sink", lambda sender, body: received.append(body))
    before = pair.connections()
    with pytest.raises(RemoteError) as raised:
        await promptly(lambda: pair.a.call(pair.b.name, "echo", Point(1, 2), timeout=CALL_TIMEOUT))
    assert raised.value.message == (
        "cannot decode the message: the Point decoder (extension code 42) raised "
        "ValueError: no points on this node"
    )
    await pair.a.send(pair.b.name, "sink", Point(1, 2))
    await pair.a.send(pair.b.name, "sink", "after")
    await eventually(lambda: received == ["after"])
    assert undecodable(pair.b, "call", "extension_failed") == 1
    assert undecodable(pair.b, "msg", "extension_failed") == 1
    await pair.assert_link_is_up(before)


async def test_a_msgpack_timestamp_is_refused_for_that_message_only(pair: Pair) -> None:
    received: list[Any] = []
    pair.b.register_mailbox("sink", lambda sender, body: received.append(body))
    before = pair.connections()
    stamp = msgpack.Timestamp(1, 0)
    with pytest.raises(RemoteError, match=r"timestamp \(extension -1\) is refused"):
        await promptly(
            lambda: pair.a.call(pair.b.name, "echo", {"at": [stamp]}, timeout=CALL_TIMEOUT)
        )
    await pair.a.send(pair.b.name, "sink", {stamp: 1})  # a key, too
    await pair.a.send(pair.b.name, "sink", "after")
    await eventually(lambda: received == ["after"])
    assert undecodable(pair.b, "call", "timestamp") == 1
    assert undecodable(pair.b, "msg", "timestamp") == 1
    await pair.assert_link_is_up(before)


async def test_a_reply_the_codec_cannot_encode_fails_its_call(pair: Pair) -> None:
    """The answering side's problem this time: an int over 64 bits, a type nobody
    registered, an encoder that raises. The caller hears why; the connection stays."""

    def explode(point: Point) -> bytes:
        raise RuntimeError("cannot encode this point")

    pair.b.codec.register(Point, 42, explode, decode_point)
    answers = iter([2**70, object(), Point(1, 2)])
    pair.b.register_mailbox("odd", lambda sender, body: next(answers))
    before = pair.connections()
    for expected in (
        "TypeError on .*: reply cannot be encoded: cannot send the int 1180591620717411303424",
        "TypeError on .*: reply cannot be encoded: cannot send a object",
        "RuntimeError on .*: reply cannot be encoded: cannot encode this point",
    ):
        with pytest.raises(RemoteError, match=expected):
            await promptly(lambda: pair.a.call(pair.b.name, "odd", None, timeout=CALL_TIMEOUT))
    await pair.assert_link_is_up(before)


async def test_what_the_sender_cannot_encode_raises_there_and_nothing_is_sent(
    pair: Pair,
) -> None:
    received: list[Any] = []
    pair.b.register_mailbox("sink", lambda sender, body: received.append(body))
    before = pair.connections()
    with pytest.raises(TypeError, match="cannot send a Point: register it"):
        await pair.a.call(pair.b.name, "echo", Point(1, 2))
    with pytest.raises(TypeError, match="cannot send a Point: register it"):
        await pair.a.send(pair.b.name, "sink", Point(1, 2))
    with pytest.raises(TypeError, match="msgpack carries 64 bits at most"):
        await pair.a.send(pair.b.name, "sink", {2**70: 1})
    await pair.a.send(pair.b.name, "sink", "after")
    await eventually(lambda: received == ["after"])
    await pair.assert_link_is_up(before)


# -- what still closes the connection: a broken frame -------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "memory"])
async def test_a_frame_over_the_receivers_cap_still_closes_the_connection(
    transport: str,
) -> None:
    network = MemoryNetwork()
    a = make(transport, "a@127.0.13.2", network)
    b = make(transport, "b@127.0.13.3", network, max_frame_size=4096)
    downs: list[NodeDown] = []
    b.add_listener(lambda event: downs.append(event) if isinstance(event, NodeDown) else None)
    try:
        await a.start()
        await b.start()
        b.register_mailbox("sink", lambda sender, body: None)
        assert await a.connect(b.name)
        await eventually(lambda: b.nodes() == [a.name])
        await a.send(b.name, "sink", b"x" * 10_000)
        await eventually(lambda: len(downs) == 1)
        assert downs[0].reason.startswith("bad frame")
        assert undecodable(b, "msg", "unknown_extension") == 0
        await eventually(lambda: a.nodes() == [] and b.nodes() == [])
    finally:
        await a.stop()
        await b.stop()
