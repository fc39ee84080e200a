"""Nodes in one process over real loopback sockets: connections, messages, faults."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pycluster import Plugins, TopologyConnect, hookimpl, load_config
from pycluster.discovery import Plan
from pycluster.errors import NotConnected, RemoteError
from pycluster.events import NodeDown, NodeUp
from pycluster.node import Node
from pycluster.transport import FrameDecoder, FrameLimits, Handshake, cookie_key, encode_frame
from pycluster.transport.endpoint import LEFT_QUIET
from pycluster.transport.link import JOIN_LIMIT, WRITE_HIGH_WATER
from tests.conftest import eventually

COOKIE = "test-cookie-not-a-secret"
A, B, C = "a@127.0.1.2", "b@127.0.1.3", "c@127.0.1.4"


def make_node(name: str, **node: Any) -> Node:
    cookie = node.pop("cookie_override", COOKIE)
    config = load_config({"node": {"name": name, "net_tick_timeout": 1.0, **node}}, env={})
    return Node(config, cookie=cookie, handshake_timeout=2.0)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    a, b = make_node(A), make_node(B)
    async with a, b:
        assert await a.connect(B)
        await eventually(lambda: b.nodes() == [A])
        yield a, b


async def raw_peer(
    target: str, host: str, *, cookie: str = COOKIE, name: str = "raw@127.0.1.9"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, FrameDecoder]:
    """An authenticated connection made by hand (to send what a real node never would)."""
    reader, writer = await asyncio.open_connection(host, 9100, local_addr=("127.0.1.9", 0))
    handshake = Handshake(
        role="dialer", me=name, peer=target, keys=[cookie_key(cookie)], incarnation=b"r" * 16
    )
    decoder = FrameDecoder(FrameLimits.authenticated(1 << 20))
    for message in handshake.start():
        writer.write(encode_frame(message))
    pending: list[dict[str, Any]] = []
    while not handshake.done:
        if not pending:
            decoder.feed(await reader.read(65536))
            pending = decoder.decode(budget=1 << 30)
            continue
        for reply in handshake.receive(pending.pop(0)):
            writer.write(encode_frame(reply))
    return reader, writer, decoder


async def test_connect_is_symmetric_and_announced() -> None:
    events: list[object] = []

    class Spy:
        @hookimpl
        def pycluster_node_up(self, event: NodeUp) -> None:
            events.append(event)

    a = make_node(A)
    a.plugins = Plugins.load(entry_points=False, extra=[Spy()])
    b = make_node(B)
    async with a, b:
        subscription = b.events()
        assert await a.connect(B)
        assert await a.connect(B)  # already connected: a no-op
        assert a.nodes() == [B]
        await eventually(lambda: b.nodes() == [A])
        assert await asyncio.wait_for(anext(subscription), 5) == NodeUp(B, A)
        assert events == [NodeUp(A, B)]
        assert not await a.connect(A)  # never to itself


async def test_simultaneous_dials_end_with_one_connection() -> None:
    for _ in range(30):
        a, b = make_node(A), make_node(B)
        async with a, b:
            ups_a, ups_b = a.events(), b.events()
            results = await asyncio.gather(a.connect(B), b.connect(A))
            assert results == [True, True]
            await eventually(lambda a=a, b=b: a.nodes() == [B] and b.nodes() == [A])
            # Both ends hold the same socket: A's local address is B's remote one.
            conn_a, conn_b = a.transport._connections[B], b.transport._connections[A]
            assert conn_a.extra_info("sockname") == conn_b.extra_info("peername")
            assert await asyncio.wait_for(anext(ups_a), 5) == NodeUp(A, B)
            assert await asyncio.wait_for(anext(ups_b), 5) == NodeUp(B, A)
            # No second connection was established and dropped behind the scenes.
            assert ups_a._queue.empty()
            assert ups_b._queue.empty()


async def test_call_send_and_remote_errors(pair: tuple[Node, Node]) -> None:
    a, b = pair
    received: list[Any] = []
    b.register_mailbox("log", lambda sender, body: received.append((sender, body)))
    b.register_mailbox("echo", lambda sender, body: {"from": sender, "body": body})

    async def slow(sender: str, body: Any) -> Any:
        await asyncio.sleep(body)
        return "late"

    def boom(sender: str, body: Any) -> None:
        raise ValueError(f"bad input {body}")

    b.register_mailbox("slow", slow)
    b.register_mailbox("boom", boom)
    for i in range(2000):
        await a.send(B, "log", i)
    assert await a.call(B, "echo", [1, "x", b"\x00"]) == {"from": A, "body": [1, "x", b"\x00"]}
    # Per-pair FIFO: the call came after the sends, so every send has been handled.
    assert received == [(A, i) for i in range(2000)]
    with pytest.raises(RemoteError) as info:
        await a.call(B, "boom", 7)
    assert (info.value.node, info.value.type, info.value.message) == (
        B,
        "ValueError",
        "bad input 7",
    )
    with pytest.raises(RemoteError, match="NoSuchMailbox"):
        await a.call(B, "nobody", None)
    with pytest.raises(TimeoutError):
        await a.call(B, "slow", 0.5, timeout=0.05)
    assert a.transport._calls == {}  # a timed-out call leaves nothing behind
    assert await a.call(B, "slow", 0.01) == "late"
    with pytest.raises(NotConnected):
        await a.call(C, "echo", None)
    with pytest.raises(TypeError):
        await a.send(B, "log", object())


async def test_a_tight_send_loop_lets_the_event_loop_run(pair: tuple[Node, Node]) -> None:
    a, b = pair
    received: list[int] = []
    b.register_mailbox("log", lambda sender, body: received.append(body))
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counting = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    before = turns
    # B reads as fast as A writes, so backpressure alone would never pause this loop.
    for i in range(50_000):
        await a.send(B, "log", i)
    assert turns - before >= 10  # about one turn per 64 KiB batch (~2,500 of these)
    counting.cancel()
    await eventually(lambda: len(received) == 50_000)
    assert received == list(range(50_000))


async def test_frames_in_and_out_are_counted(pair: tuple[Node, Node]) -> None:
    a, b = pair
    b.register_mailbox("echo", lambda sender, body: body)
    b.register_mailbox("log", lambda sender, body: None)

    def frames(node: Node, direction: str) -> float:
        value = node.metrics.registry.get_sample_value(f"pycluster_frames_{direction}_total")
        return value or 0.0

    before = {n.name: (frames(n, "in"), frames(n, "out")) for n in (a, b)}
    for i in range(100):
        a.send_nowait(B, "log", i)
    for i in range(10):
        assert await a.call(B, "echo", i) == i
    # Published on the connections' next tick round (every tick interval / 2).
    await eventually(lambda: frames(b, "in") - before[B][0] >= 110)
    await eventually(lambda: frames(a, "in") - before[A][0] >= 10)
    await eventually(lambda: frames(a, "out") - before[A][1] >= 110)
    await eventually(lambda: frames(b, "out") - before[B][1] >= 10)


async def test_wrong_cookie_is_refused_on_both_sides(caplog: pytest.LogCaptureFixture) -> None:
    a = make_node(A)
    b = make_node(B, cookie_override="another cookie entirely")
    async with a, b:
        assert not await a.connect(B)
        await eventually(lambda: any("cookie" in m and A in m for m in caplog.messages))
    assert a.nodes() == []
    assert b.nodes() == []
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # The acceptor names the source address (and only quotes the name it claimed).
    assert any(
        f"handshake from 127.0.1.2 (claiming to be '{A}') failed: cookie mismatch" in line
        for line in lines
    )
    assert any(
        f"handshake with {B} failed: rejected by the peer: cookie mismatch" in line
        for line in lines
    )
    assert b.metrics.handshake_failures.labels("cookie")._value.get() == 1
    assert a.metrics.handshake_failures.labels("rejected")._value.get() == 1
    assert not any(
        COOKIE in r.getMessage() or "another cookie" in r.getMessage() for r in caplog.records
    )


async def test_a_rotated_cookie_list_accepts_either_and_dials_with_the_first() -> None:
    old, new = "the-old-cookie-0123456789", "the-new-cookie-0123456789"
    a = make_node(A, cookie_override=[new, old])
    b = make_node(B, cookie_override=old)
    c = make_node(C, cookie_override=[new])
    async with a, b, c:
        assert await b.connect(A)  # b proves with old: a accepts it
        assert await c.connect(A)  # c proves with new
        assert not await a.connect(C) or C in a.nodes()  # already connected by c's dial
        assert sorted(a.nodes()) == [B, C]
        await b.disconnect(A)
        await eventually(lambda: B not in a.nodes())
        await asyncio.sleep(0)
        assert not await c.connect(B)  # b knows only old, c proves with new


async def test_short_cookies_are_refused_whatever_the_source() -> None:
    config = load_config({"node": {"name": A}}, env={})
    for cookie in ("a", " ", "fifteen-chars!!", ["a-long-enough-cookie", "short"]):
        with pytest.raises(ValueError, match=r"has [0-9]+ characters, fewer than 16"):
            Node(config, cookie=cookie)
    # Surrounding whitespace is not part of the cookie, from any source.
    padded = make_node(A, cookie_override=f"  {COOKIE}\n")
    plain = make_node(B)
    async with padded, plain:
        assert await padded.connect(B)


async def test_graceful_leave_is_seen_at_once_and_not_redialled(pair: tuple[Node, Node]) -> None:
    a, b = pair
    downs = a.events()
    await b.stop()
    event = await asyncio.wait_for(anext(downs), 2)
    assert event == NodeDown(A, B, "left")
    assert a.nodes() == []
    assert LEFT_QUIET > 1
    assert not await a.connect(B)  # it left: strategies do not dial it straight back


async def test_a_silent_peer_is_declared_down_after_the_tick_timeout() -> None:
    a = make_node(A)
    async with a:
        events = a.events()
        _reader, writer, _ = await raw_peer(A, "127.0.1.2")
        assert await asyncio.wait_for(anext(events), 2) == NodeUp(A, "raw@127.0.1.9")
        # The raw peer never ticks: down after net_tick_timeout (1 s), not before 0.9 s.
        loop = asyncio.get_running_loop()
        started = loop.time()
        event = await asyncio.wait_for(anext(events), 5)
        assert isinstance(event, NodeDown)
        assert event.reason.startswith("net tick timeout")
        assert 0.9 <= loop.time() - started <= 2.5
        writer.close()


async def test_a_peer_whose_bytes_wait_to_be_decoded_is_not_silent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While received bytes wait to be decoded (a backlog this node is working through),
    the peer counts as heard: the silence is this node's."""
    a = make_node(A)
    async with a:
        events = a.events()
        _reader, writer, _ = await raw_peer(A, "127.0.1.2")
        assert await asyncio.wait_for(anext(events), 2) == NodeUp(A, "raw@127.0.1.9")
        link = a.transport._connections["raw@127.0.1.9"]._link
        monkeypatch.setattr(type(link), "backlogged", property(lambda link: True))
        with pytest.raises(TimeoutError):  # the raw peer never ticks; timeout: 1 s
            await asyncio.wait_for(anext(events), 2.5)  # the duration under test
        monkeypatch.undo()
        event = await asyncio.wait_for(anext(events), 3)
        assert isinstance(event, NodeDown)
        assert event.reason.startswith("net tick timeout")
        writer.close()


async def test_bad_frames_from_an_authenticated_peer(
    pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    """Messages outside the wire vocabulary are counted and dropped; a frame over the cap
    ends the connection; the node serves its other peers all along."""
    a, b = pair
    b.register_mailbox("echo", lambda sender, body: body)
    _reader, writer, _ = await raw_peer(A, "127.0.1.2")
    await eventually(lambda: "raw@127.0.1.9" in a.nodes())
    writer.write(encode_frame({"t": "bogus"}))
    writer.write(encode_frame({"t": "call", "id": "x", "to": 5}))
    ignored = "pycluster_messages_ignored_total"
    await eventually(lambda: a.metrics.registry.get_sample_value(ignored) == 2)
    assert "raw@127.0.1.9" in a.nodes()  # unknown messages are dropped, not fatal
    writer.write(struct.pack(">I", 1 << 30))
    await eventually(lambda: "raw@127.0.1.9" not in a.nodes())
    assert any("exceeds the 16777216 cap" in m for m in caplog.messages)
    # The good peer is still served.
    assert await a.call(B, "echo", "still here") == "still here"
    writer.close()


async def test_junk_on_the_port_is_dropped(
    pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = pair
    caplog.set_level(logging.DEBUG, "pycluster.node")
    b.register_mailbox("echo", lambda sender, body: body)
    junk = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        struct.pack(">I", 1 << 30) + b"\x00" * 10,
        struct.pack(">I", 100) + b"\x81",
        b"\xff" * 64,
    ]
    for payload in junk:
        reader, writer = await asyncio.open_connection("127.0.1.3", 9100)
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) is not None
        writer.close()
    # Before authentication frames are capped at 4 KiB.
    reasons = ["exceeds the 4096 cap", "exceeds the 4096 cap", "connection closed"]
    await eventually(lambda: len(handshake_lines(caplog, logging.DEBUG)) == len(junk))
    for reason, line in zip(
        [*reasons, "exceeds"], handshake_lines(caplog, logging.DEBUG), strict=True
    ):
        assert line.startswith("handshake from 127.0.0.1 failed")
        assert reason in line
    # Repeats of one problem from one address are warned about once (then debug).
    assert len(handshake_lines(caplog, logging.WARNING)) == 2
    assert await a.call(B, "echo", 1) == 1
    assert b.nodes() == [A]


async def test_a_silent_dialer_is_dropped_at_the_handshake_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = make_node(A)  # handshake timeout: 2 s
    async with a:
        reader, writer = await asyncio.open_connection("127.0.1.2", 9100)
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the node
        assert 1.9 <= asyncio.get_running_loop().time() - started <= 5.0
        writer.close()
        await eventually(
            lambda: any(
                line.endswith("timed out") for line in handshake_lines(caplog, logging.WARNING)
            )
        )
        failures = a.metrics.registry.get_sample_value(
            "pycluster_handshake_failures_total", {"kind": "timeout"}
        )
        assert failures == 1


def handshake_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= level and r.getMessage().startswith(("handshake with", "handshake from"))
    ]


async def test_a_name_that_is_not_the_peers_own_is_refused() -> None:
    a, b = make_node(A), make_node(B)
    async with a, b:
        assert not await a.connect("impostor@127.0.1.3")
        assert a.nodes() == []
        assert await a.connect(f"{B}:9100")  # the default port is the same name
        assert a.nodes() == [B]


def test_a_node_is_named_canonically_and_advertises_its_full_name() -> None:
    """``name`` drops the port equal to ``node.port``; ``full_name`` (what strategies
    advertise) always writes it out, so readers with another ``node.port`` dial it."""
    cases = [
        (A, {}, A, f"{A}:9100"),
        ("a@127.0.1.2:19100", {"port": 19100}, A, "a@127.0.1.2:19100"),
        ("a@127.0.1.2", {"port": 19100}, A, "a@127.0.1.2:19100"),
        ("a@Pod-1.Example:9100", {"port": 19100}, "a@pod-1.example:9100", "a@pod-1.example:9100"),
        ("a@[0:0::1]", {"port": 19100}, "a@[::1]", "a@[::1]:19100"),
    ]
    for written, node, name, full in cases:
        made = make_node(written, **node)
        assert (made.name, made.transport.self_name, made.full_name) == (name, name, full), written


async def test_hidden_client_is_not_a_member(pair: tuple[Node, Node]) -> None:
    a, _b = pair
    config = load_config({"node": {"name": "cli@127.0.1.10"}}, env={})
    events = a.events()
    async with Node(config, cookie=COOKIE, hidden=True) as client:
        assert await client.connect(A)
        status = await client.call(A, "$status", None)
        assert status == {
            "node": A,
            "nodes": [B],
            "topologies": {},
            "registry": {"backend": "crdt", "names": 0, "synced": True},
        }
        assert a.nodes() == [B]
        assert client.nodes() == []
    assert events._queue.empty()


async def test_a_hidden_client_does_not_say_it_listens(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config({"node": {"name": "cli@127.0.1.12"}}, env={})
    member = load_config({"node": {"name": "member@127.0.1.12"}}, env={})
    with caplog.at_level(logging.DEBUG, logger="pycluster"):
        async with Node(config, cookie=COOKIE, hidden=True) as client:
            assert client.started
        assert not [r for r in caplog.records if getattr(r, "event", None) == "listening"]
        async with Node(member, cookie=COOKIE):
            pass
    assert [r for r in caplog.records if getattr(r, "event", None) == "listening"]


async def test_idle_peers_send_about_one_tick_per_interval_and_stay_up(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    ab, ba = a.transport._connections[B], b.transport._connections[A]
    sent = (ab._link.frames_sent, ba._link.frames_sent)
    await asyncio.sleep(3.0)  # the duration under test: 9 tick intervals of 1/3 s
    # A tick each per interval; a tick is answered only by a side that sent nothing since
    # the peer's previous tick (it was not, here: each ticks on its own).
    for connection, before in zip((ab, ba), sent, strict=True):
        assert 7 <= connection._link.frames_sent - before <= 12
    assert (a.nodes(), b.nodes()) == ([B], [A])


async def test_the_ticks_of_an_idle_node_leave_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """One timer ticks all of a node's connections: once they are idle, their ticks go out
    in one wake-up per interval, not one per connection."""
    peers = [B, C, "d@127.0.1.5", "e@127.0.1.6"]
    a = make_node(A)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(a)
        for peer in peers:
            await stack.enter_async_context(make_node(peer))
            assert await a.connect(peer)
        await eventually(lambda: a.nodes() == sorted(peers))
        connections = [a.transport._connections[peer] for peer in peers]

        def last_sent() -> list[float]:
            return [connection._last_sent for connection in connections]

        ticker = a.transport._ticker
        ticked: list[int] = []  # by each wake-up of the node's ticker: connections ticked
        wake = ticker._wake

        def counted() -> None:
            before = last_sent()
            wake()
            ticked.append(sum(a != b for a, b in zip(before, last_sent(), strict=True)))

        monkeypatch.setattr(ticker, "_wake", counted)
        sent = [connection._link.frames_sent for connection in connections]
        await asyncio.sleep(3.0)  # the duration under test: 9 tick intervals of 1/3 s
        ticks = [c._link.frames_sent - s for c, s in zip(connections, sent, strict=True)]
        assert all(7 <= count <= 12 for count in ticks), ticks
        # The ticks leave from the node's one timer, all together: one wake-up per interval
        # (a timer per connection would wake 36 times, each ticking one connection).
        assert 6 <= len(ticked) <= 18, ticked
        assert sorted(ticked)[len(ticked) // 2] == len(peers), ticked
        assert a.nodes() == sorted(peers)


async def test_idle_nodes_tick_on_one_wall_clock_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every node's ticker wakes on the same grid of half a tick interval of the wall
    clock, so the ticks of idle nodes leave, and arrive, together."""
    nodes = [make_node(name) for name in (A, B, C)]
    grid = 1.0 / 6  # half a tick interval (net_tick_timeout 1 s)
    async with contextlib.AsyncExitStack() as stack:
        for node in nodes:
            await stack.enter_async_context(node)
        # Connected half-way between two grid points: a ticker that kept the phase of its
        # connections would wake there, a grid's half away from where it should.
        await asyncio.sleep((grid / 2 - time.time() % grid) % grid)
        for i, node in enumerate(nodes):
            for peer in nodes[i + 1 :]:
                assert await node.connect(peer.name)
        await eventually(lambda: all(len(node.nodes()) == 2 for node in nodes))
        wakes: list[list[float]] = []
        for node in nodes:
            ticker = node.transport._ticker
            woke: list[float] = []
            wakes.append(woke)

            def counted(wake: Any = ticker._wake, woke: list[float] = woke) -> None:
                woke.append(time.time())
                wake()

            monkeypatch.setattr(ticker, "_wake", counted)
        await asyncio.sleep(2.0)  # the duration under test: 6 tick intervals of 1/3 s
        assert all(node.transport._ticker.early == pytest.approx(grid) for node in nodes)
        for woke in wakes:
            assert len(woke) >= 4, wakes
            # How far past a grid point each wake-up came (timers run a little late); a
            # ticker on a phase of its own would sit anywhere in the 167 ms between two.
            past = sorted(moment % grid for moment in woke)
            assert past[len(past) // 2] < 0.04, past
        assert all(len(node.nodes()) == 2 for node in nodes)


async def test_a_stall_of_this_nodes_own_loop_does_not_make_its_peers_silent(
    pair: tuple[Node, Node],
) -> None:
    """The loop stalls (a long callback, a GC pause, a starved CPU) past the tick timeout
    just before the ticker is due: the ticker then runs late, before the loop has read
    what the peers sent meanwhile. Silence is judged only after that read."""
    a, b = pair
    downs = a.events()
    ticker = a.transport._ticker
    assert ticker._timer is not None
    loop = asyncio.get_running_loop()
    # Due just before the ticker: both run in one loop turn, the stall first.
    loop.call_at(ticker._timer.when() - 0.001, time.sleep, 1.5)  # net_tick_timeout: 1 s
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(downs), 3.5)  # the duration under test: stall + 2 s
    assert (a.nodes(), b.nodes()) == ([B], [A])


async def test_an_idle_hidden_client_with_a_longer_tick_timeout_stays_connected(
    pair: tuple[Node, Node],
) -> None:
    # The client ticks every 10 s; A expects traffic within 1 s.
    config = load_config({"node": {"name": "cli@127.0.1.11", "net_tick_timeout": 30}}, env={})
    async with Node(config, cookie=COOKIE, hidden=True) as client:
        assert await client.connect(A)
        (first,) = client.transport._hidden_connections
        await asyncio.sleep(2.5)  # the duration under test: well past A's tick timeout
        assert not first.closed, first.close_reason
        assert await client.connect(A)  # reused, not dialled again
        assert client.transport._hidden_connections == {first}
        assert (await client.call(A, "$status", None))["node"] == A


async def test_backpressure_bounds_what_is_queued_for_a_slow_peer() -> None:
    a = make_node(A)
    async with a:
        reader, writer, _ = await raw_peer(A, "127.0.1.2")
        await eventually(lambda: "raw@127.0.1.9" in a.nodes())
        connection = a.transport._connections["raw@127.0.1.9"]
        chunk = b"x" * 65536

        async def keep_ticking() -> None:  # alive, but reads nothing
            while True:
                writer.write(encode_frame({"t": "tick"}))
                await asyncio.sleep(0.2)

        async def flood() -> None:
            while True:  # the raw peer never reads: send must end up waiting
                await a.send("raw@127.0.1.9", "sink", chunk)

        ticking = asyncio.create_task(keep_ticking())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(flood(), 1.0)
        assert connection.queued <= WRITE_HIGH_WATER + JOIN_LIMIT + 2 * len(chunk)
        # A call to that peer still ends at its timeout, though its send cannot proceed.
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await a.call("raw@127.0.1.9", "sink", chunk, timeout=0.3)
        assert asyncio.get_running_loop().time() - started < 1.0
        assert a.transport._calls == {}
        # A waiting sender goes on once the peer reads.
        waiting = asyncio.create_task(a.send("raw@127.0.1.9", "sink", chunk))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        reading = asyncio.create_task(reader.read(-1))
        await asyncio.wait_for(waiting, 5)
        assert not connection.closed
        ticking.cancel()
        writer.close()
        await asyncio.wait_for(reading, 5)


async def test_mutual_tls(tmp_path: Path) -> None:
    from tests.certs import make_ca

    ca = make_ca(tmp_path)
    tls_a = ca.issue("a", tmp_path)
    tls_b = ca.issue("b", tmp_path)
    a = make_node(A, tls=tls_a)
    b = make_node(B, tls=tls_b)
    plain = make_node(C)
    async with a, b, plain:
        assert await a.connect(B)
        assert a.nodes() == [B]
        assert not await plain.connect(B)  # no TLS: refused
    other_ca = make_ca(tmp_path / "other")
    intruder = make_node(C, tls=other_ca.issue("c", tmp_path / "other"))
    b = make_node(B, tls=tls_b)
    async with b, intruder:
        assert not await intruder.connect(B)  # a certificate from another CA: refused
        # Both TLS rejections are counted (the plain dial above was on the earlier b).
        await eventually(lambda: sample(b, "pycluster_tls_failures_total", side="accept") == 1)
        assert sample(intruder, "pycluster_tls_failures_total", side="dial") == 1


async def test_a_silent_or_partial_tls_client_is_dropped_at_the_handshake_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.certs import make_ca

    b = make_node(B, tls=make_ca(tmp_path).issue("b", tmp_path))  # handshake timeout: 2 s
    async with b:
        loop = asyncio.get_running_loop()
        silent = await asyncio.open_connection("127.0.1.3", 9100)
        partial = await asyncio.open_connection("127.0.1.3", 9100)
        partial[1].write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
        started = loop.time()
        for reader, writer in (silent, partial):
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the node
            writer.close()
        assert 1.9 <= loop.time() - started <= 5.0
        await eventually(lambda: sample(b, "pycluster_tls_failures_total", side="accept") == 2)
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        # Logged once for the source address, then quietly.
        assert len([line for line in lines if line.startswith("TLS handshake from")]) == 1


async def test_unauthenticated_connections_are_capped_per_source_and_in_all() -> None:
    config = load_config({"node": {"name": B, "net_tick_timeout": 1.0}}, env={})
    b = Node(
        config,
        cookie=COOKIE,
        handshake_timeout=5.0,
        max_unauthenticated=6,
        max_unauthenticated_per_source=4,
    )
    a = make_node(A)
    async with a, b:
        idle = []
        for source in ("127.0.1.40", "127.0.1.40", "127.0.1.40", "127.0.1.40", "127.0.1.41"):
            idle.append(await asyncio.open_connection("127.0.1.3", 9100, local_addr=(source, 0)))
        await eventually(lambda: sum(b.transport._unauthenticated.values()) == 5)
        # A fifth from the same source is closed at once, before the handshake timeout.
        reader, writer = await asyncio.open_connection(
            "127.0.1.3", 9100, local_addr=("127.0.1.40", 0)
        )
        assert await asyncio.wait_for(reader.read(), 1.0) == b""
        writer.close()
        assert sample(b, "pycluster_connections_refused_total", reason="per_source") == 1
        # One more from elsewhere fills the total; the next, from anywhere, is refused.
        idle.append(await asyncio.open_connection("127.0.1.3", 9100, local_addr=("127.0.1.42", 0)))
        await eventually(lambda: sum(b.transport._unauthenticated.values()) == 6)
        reader, writer = await asyncio.open_connection(
            "127.0.1.3", 9100, local_addr=("127.0.1.43", 0)
        )
        assert await asyncio.wait_for(reader.read(), 1.0) == b""
        writer.close()
        assert sample(b, "pycluster_connections_refused_total", reason="total") == 1
        # Authenticated peers are not counted: once the strangers go, a node connects.
        for _, idle_writer in idle:
            idle_writer.close()
        await eventually(lambda: sum(b.transport._unauthenticated.values()) == 0)
        assert await a.connect(B)


async def test_a_timestamp_from_an_authenticated_peer_fails_that_message_only() -> None:
    """A msgpack timestamp is refused by design, but inside a sound frame from an
    authenticated peer it fails its message only (issue 13): dropped, counted, the
    connection stays up."""
    import msgpack

    a = make_node(A)
    async with a:
        seen: list[Any] = []
        a.register_mailbox("sink", lambda sender, body: seen.append(body))
        _reader, writer, _ = await raw_peer(A, "127.0.1.2")
        await eventually(lambda: "raw@127.0.1.9" in a.nodes())
        for body in (msgpack.Timestamp(1, 0), "after"):
            payload = msgpack.packb({"t": "msg", "to": "sink", "body": body})
            writer.write(struct.pack(">I", len(payload)) + payload)
        await eventually(lambda: seen == ["after"])
        assert "raw@127.0.1.9" in a.nodes()
        labels = {"kind": "msg", "reason": "timestamp"}
        assert sample(a, "pycluster_messages_undecodable_total", **labels) == 1
        writer.close()


def sample(node: Node, name: str, **labels: str) -> float | None:
    return node.metrics.registry.get_sample_value(name, labels)


async def test_ipv6_nodes() -> None:
    a, b = make_node("a@[::1]:9301"), make_node("b@[::1]:9302")
    async with a, b:
        assert await a.connect("b@[::1]:9302")
        await eventually(lambda: b.nodes() == ["a@[::1]:9301"])
        b.register_mailbox("echo", lambda sender, body: body)
        assert await a.call("b@[::1]:9302", "echo", "v6") == "v6"


# -- one node, many written names: node.port 19100, names with and without it ---------------

PORT = 19100
D, E, F = "d@127.0.9.2", "e@127.0.9.3", "f@127.0.9.4"


def topology_node(name: str, topology: dict[str, Any], *extra_plugins: object) -> Node:
    """A node on port PORT whose topology ``t`` is ``topology``."""
    config = load_config(
        {
            "node": {"name": name, "port": PORT, "net_tick_timeout": 1.0},
            "topologies": {"t": topology},
        },
        env={},
    )
    plugins = Plugins.load(entry_points=False, extra=extra_plugins)
    return Node(config, cookie=COOKIE, plugins=plugins, handshake_timeout=2.0)


def record_plans(node: Node) -> list[Plan]:
    """The plans topology ``t`` of ``node`` makes from now on (one per discovery round)."""
    topology = node.supervisor.topologies["t"]
    plans: list[Plan] = []
    apply = topology.apply

    async def recording(answer: Any) -> Plan:
        plans.append(await apply(answer))
        return plans[-1]

    topology.apply = recording  # type: ignore[method-assign]
    return plans


async def later_rounds(plans: list[Plan], seconds: float = 0.5) -> list[Plan]:
    """The plans made in the next ``seconds`` (10 retry intervals of 50 ms): with every
    listed node connected, epmd rests, so at most the one that found them all connected."""
    start = len(plans)
    await asyncio.sleep(seconds)  # the duration under test
    later = plans[start:]
    assert len(later) <= 1, later
    return later


async def test_epmd_listing_a_peer_with_the_cluster_port_connects_it_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """epmd lists e@...:19100 on a cluster whose node.port is 19100: connected once, then
    left alone (it used to be "connected" again each round, with an event each time)."""
    connects: list[TopologyConnect] = []

    class Spy:
        @hookimpl
        def pycluster_topology_connect(self, event: TopologyConnect) -> None:
            connects.append(event)

    epmd = {"strategy": "epmd", "config": {"hosts": [D, f"{E}:{PORT}"], "retry_interval": 50}}
    d, e = topology_node(D, epmd, Spy()), make_node(E, port=PORT)
    plans = record_plans(d)
    async with e, d:
        await eventually(lambda: d.nodes() == [E])
        later = await later_rounds(plans)
        assert [plan.connect for plan in later] == [frozenset()] * len(later)
        assert d.supervisor.topologies["t"].listed == {E}
        assert e.nodes() == [D]
    assert connects == [TopologyConnect(D, "t", E)]
    assert not [m for m in caplog.messages if "cannot connect" in m]


async def test_a_node_listing_itself_with_its_port_does_not_dial_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pycluster.topology")
    epmd = {"strategy": "epmd", "config": {"hosts": [f"{D}:{PORT}", E], "retry_interval": 50}}
    d, e = topology_node(D, epmd), make_node(E, port=PORT)
    plans = record_plans(d)
    async with e, d:
        await eventually(lambda: d.nodes() == [E])
        await later_rounds(plans)
        assert d.supervisor.topologies["t"].listed == {E}
    assert not [m for m in caplog.messages if "cannot connect" in m]


async def test_hosts_file_leaving_out_a_node_written_with_the_cluster_port_drops_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Listed as e@...:19100, then left out: e is disconnected and refused, as it is when
    written e@... (it used to stay connected, and be let back in)."""
    caplog.set_level(logging.DEBUG, logger="pycluster.node")
    hosts = tmp_path / "hosts"
    replace_file(hosts, f"{E}:{PORT}\n{F}\n")
    config = {"path": str(hosts), "polling_interval": 20}
    d = topology_node(D, {"strategy": "hosts_file", "config": config})
    e, f = make_node(E, port=PORT), make_node(F, port=PORT)
    async with e, f, d:
        await eventually(lambda: d.nodes() == [E, F])
        replace_file(hosts, f"{F}:{PORT}\n")
        await eventually(lambda: d.nodes() == [F] and e.nodes() == [])
        assert d.supervisor.refuses(E)
        assert d.supervisor.refuses(f"{E}:{PORT}")
        assert not await e.connect(D)
        refusal = f"refused a connection from {E}: discovery on this node no longer lists you"
        assert refusal in caplog.messages
        assert d.nodes() == [F]


def replace_file(path: Path, text: str) -> None:
    """Replace a file at once (a poll never reads it half-written)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
