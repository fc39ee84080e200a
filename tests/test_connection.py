"""The link under a connection (frames over a real loopback socket), and call deadlines."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pycluster.transport import PREAUTH, FrameDecoder, FrameError, FrameLimits, encode_frame
from pycluster.transport.deadlines import SLACK, Deadlines
from pycluster.transport.link import (
    DECODE_BUDGET,
    JOIN_LIMIT,
    PREAUTH_BUFFER,
    WRITE_HIGH_WATER,
    ConnectionClosed,
    Link,
)
from tests.conftest import eventually

HOST = "127.0.1.20"
MIB = FrameLimits.authenticated(1 << 20)
Peer = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def linked() -> AsyncIterator[tuple[Link, Peer]]:
    """A Link dialled to a plain asyncio stream (the peer, driven by hand)."""
    accepted: asyncio.Queue[Peer] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_client, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    _, link = await loop.create_connection(lambda: Link(FrameDecoder(PREAUTH)), HOST, port)
    peer = await asyncio.wait_for(accepted.get(), 5)
    try:
        yield link, peer
    finally:
        link.abort()
        peer[1].close()
        server.close()
        await server.wait_closed()


async def read_frames(reader: asyncio.StreamReader, count: int) -> list[dict[str, Any]]:
    decoder = FrameDecoder(MIB)
    received: list[dict[str, Any]] = []
    while len(received) < count:
        data = await asyncio.wait_for(reader.read(65536), 5)
        assert data, "the link closed early"
        decoder.feed(data)
        received += decoder.decode(budget=1 << 30)
    return received


def frame(i: int) -> bytes:
    return encode_frame({"t": "msg", "n": i})


async def test_frames_of_one_turn_leave_together_in_order(linked: tuple[Link, Peer]) -> None:
    link, (reader, _) = linked
    link.attach(MIB, lambda messages: None, lambda failure: None)
    frames = [frame(i) for i in range(1000)]
    for f in frames:
        link.write(f)
    # The first left at once; the others wait for the end of this turn, joined.
    assert link.joining == sum(map(len, frames[1:]))
    await asyncio.sleep(0)
    assert link.joining == 0
    assert link.frames_sent == 1000
    assert await read_frames(reader, 1000) == [{"t": "msg", "n": i} for i in range(1000)]
    # A new turn: its first frame leaves at once again.
    link.write(frame(1000))
    assert link.joining == 0
    assert await read_frames(reader, 1) == [{"t": "msg", "n": 1000}]


async def test_a_sender_that_never_yields_holds_at_most_join_limit(
    linked: tuple[Link, Peer],
) -> None:
    link, (reader, _) = linked
    link.attach(MIB, lambda messages: None, lambda failure: None)
    big = encode_frame({"t": "msg", "body": b"x" * 1000})
    most = 0
    for _ in range(500):  # about 0.5 MB in one turn
        link.write(big)
        most = max(most, link.joining)
    assert most <= JOIN_LIMIT + len(big)
    received = await read_frames(reader, 500)
    assert len(received) == 500


async def test_replies_to_a_batch_leave_in_one_write_after_it(
    linked: tuple[Link, Peer],
) -> None:
    link, (reader, writer) = linked
    joining: list[int] = []

    def answer(messages: list[dict[str, Any]]) -> None:
        for message in messages:
            link.write(encode_frame({"t": "pong", "n": message["n"]}))
            joining.append(link.joining)

    link.attach(MIB, answer, lambda failure: None)
    writer.write(b"".join(frame(i) for i in range(50)))
    replies = await read_frames(reader, 50)
    assert replies == [{"t": "pong", "n": i} for i in range(50)]
    # Nothing was written while the batch was handled, not even the first reply.
    assert len(joining) == 50
    assert joining == sorted(joining)
    assert joining[0] > 0
    assert link.joining == 0
    assert link.frames_received == 50


async def test_backpressure_pauses_then_resumes_when_the_peer_reads(
    linked: tuple[Link, Peer],
) -> None:
    link, (reader, _) = linked
    link.attach(MIB, lambda messages: None, lambda failure: None)
    chunk = encode_frame({"t": "msg", "body": b"x" * 65536})
    written = 0
    while not link.paused:  # the peer reads nothing: the buffers fill up
        link.write(chunk)
        written += 1
        await asyncio.sleep(0)
    assert link.queued <= WRITE_HIGH_WATER + JOIN_LIMIT + 2 * len(chunk)
    waiting = asyncio.create_task(link.drain())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    reading = asyncio.create_task(read_frames(reader, written))
    await asyncio.wait_for(waiting, 5)
    assert len(await reading) == written


async def test_a_sender_waiting_for_room_learns_that_the_connection_is_lost(
    linked: tuple[Link, Peer],
) -> None:
    link, (_, writer) = linked
    link.attach(MIB, lambda messages: None, lambda failure: None)
    chunk = encode_frame({"t": "msg", "body": b"x" * 65536})
    while not link.paused:
        link.write(chunk)
        await asyncio.sleep(0)
    waiting = asyncio.create_task(link.drain())
    await asyncio.sleep(0)
    writer.transport.abort()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(ConnectionClosed):
        link.write(chunk)


async def test_messages_wait_in_the_inbox_until_attached(linked: tuple[Link, Peer]) -> None:
    link, (_, writer) = linked
    writer.write(b"".join(frame(i) for i in range(3)))
    assert await asyncio.wait_for(link.receive(), 5) == {"t": "msg", "n": 0}
    got: list[dict[str, Any]] = []
    link.attach(MIB, got.extend, lambda failure: None)
    assert [m["n"] for m in got] == [1, 2]  # the backlog, first and in order
    assert link.frames_received == 2  # the handshake's message is not counted
    writer.write(frame(3))
    await eventually(lambda: len(got) == 3)
    assert [m["n"] for m in got] == [1, 2, 3]


async def test_the_inbox_yields_what_came_before_the_end_of_stream(
    linked: tuple[Link, Peer],
) -> None:
    link, (_, writer) = linked
    writer.write(frame(0))
    writer.write_eof()
    assert await asyncio.wait_for(link.receive(), 5) == {"t": "msg", "n": 0}
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(link.receive(), 5)
    lost: list[Exception] = []
    link.attach(MIB, lambda messages: None, lost.append)
    assert len(lost) == 1
    assert isinstance(lost[0], ConnectionClosed)


async def test_a_bad_frame_stops_the_stream(linked: tuple[Link, Peer]) -> None:
    link, (_, writer) = linked
    got: list[dict[str, Any]] = []
    lost: list[Exception] = []
    link.attach(MIB, got.extend, lost.append)
    writer.write(frame(0))
    await eventually(lambda: bool(got))
    writer.write(struct.pack(">I", 1 << 30) + frame(1))
    await eventually(lambda: bool(lost))
    assert isinstance(lost[0], FrameError)
    assert "exceeds the 1048576 cap" in str(lost[0])
    writer.write(frame(2))  # ignored: the stream is no longer trusted
    await asyncio.sleep(0.05)
    assert got == [{"t": "msg", "n": 0}]
    assert len(lost) == 1


async def test_a_large_frame_is_decoded_over_several_turns_with_reading_paused(
    linked: tuple[Link, Peer],
) -> None:
    """A frame far above the per-turn budget: the loop gets turns while it is decoded, and
    the frames behind it come after it, in order."""
    link, (_, writer) = linked
    got: list[dict[str, Any]] = []
    link.attach(MIB, got.extend, lambda failure: None)
    # 900,000 empty arrays: tens of milliseconds to decode, in turns of about 2 ms.
    big = {"t": "msg", "n": 0, "x": [[[]] * 60_000 for _ in range(15)]}
    payload = encode_frame(big)
    assert len(payload) > 6 * DECODE_BUDGET
    turns = 0
    done = asyncio.Event()

    async def count_turns() -> None:
        nonlocal turns
        while not done.is_set():
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    writer.write(payload + frame(1))
    await eventually(lambda: len(got) == 2)
    done.set()
    await counter
    assert got[0] == big
    assert got[1] == {"t": "msg", "n": 1}
    assert turns >= 10


async def test_an_unauthenticated_peer_that_sends_ahead_is_no_longer_read(
    linked: tuple[Link, Peer],
) -> None:
    link, (_, writer) = linked
    writer.write(frame(0) + b"\x00" * (4 * PREAUTH_BUFFER))
    assert await asyncio.wait_for(link.receive(), 5) == {"t": "msg", "n": 0}
    await eventually(lambda: link.extra_info("socket") is not None)
    # Reading stopped once more than PREAUTH_BUFFER bytes waited: the rest stays in the
    # kernel, not in this process.
    await eventually(lambda: link._reading_paused)
    assert link._decoder.pending <= PREAUTH_BUFFER + 256 * 1024


async def test_a_burst_then_end_of_stream_is_all_handed_over(linked: tuple[Link, Peer]) -> None:
    link, (_, writer) = linked
    got: list[dict[str, Any]] = []
    lost: list[Exception] = []
    link.attach(MIB, got.extend, lost.append)
    burst = [encode_frame({"t": "msg", "n": i, "x": b"y" * 1000}) for i in range(500)]
    writer.write(b"".join(burst))
    writer.write_eof()
    await eventually(lambda: bool(lost))
    assert [m["n"] for m in got] == list(range(500))
    assert isinstance(lost[0], ConnectionClosed)


# -- deadlines ------------------------------------------------------------------------------


async def test_deadlines_expire_only_what_is_still_pending() -> None:
    loop = asyncio.get_running_loop()
    pending = {1, 2, 3}
    expired: list[tuple[int, float]] = []
    started = loop.time()

    def expire(key: int) -> None:
        expired.append((key, loop.time() - started))
        pending.discard(key)

    deadlines = Deadlines(loop, expire, pending.__contains__)
    deadlines.add(1, 0.2)
    deadlines.add(2, 0.1)  # earlier than the armed timer: re-armed
    deadlines.add(3, 0.15)
    pending.discard(3)  # ended before its deadline: never expired
    await eventually(lambda: len(expired) == 2)
    assert [key for key, _ in expired] == [2, 1]
    assert expired[0][1] >= 0.1 - 2e-3
    assert expired[1][1] >= 0.2 - 2e-3
    await asyncio.sleep(0.1)
    assert len(expired) == 2
    assert len(deadlines) == 0


async def test_deadlines_of_ended_calls_do_not_accumulate() -> None:
    loop = asyncio.get_running_loop()
    pending: set[int] = set()
    deadlines = Deadlines(loop, pending.discard, pending.__contains__)
    # Entries are bounded by the calls in flight: 1 (sequential calls), then 101.
    for key in range(10_000):  # sequential calls, each ended long before its deadline
        pending.add(key)
        deadlines.add(key, 60.0)
        pending.discard(key)
        assert len(deadlines) <= 2 * 1 + SLACK + 1
    pending |= set(range(100))
    for key in range(100):
        deadlines.add(key, 60.0)
    for key in range(100, 5000):
        pending.add(key)
        deadlines.add(key, 60.0)
        pending.discard(key)
        assert len(deadlines) <= 2 * 101 + SLACK + 1
