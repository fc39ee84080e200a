"""Attacks on a `pycluster run` node before (and just after) authentication.

Node ``a`` is connected to ``b``; each test attacks ``a`` the way an outsider with network
access (or, for the decoding test, a peer holding the cookie) would, and checks that ``a``
stays responsive, small, and connected to ``b`` (no node down on either side).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time

import aiohttp
import pytest
import yaml

from pycluster.transport import HandshakeError, encode_frame
from tests.lab import Lab, LabNode, RawPeer

MIB = 1024 * 1024
MALFORMED = 'pycluster_handshake_failures_total{kind="malformed"}'


@pytest.fixture
async def pair(lab: Lab) -> tuple[LabNode, LabNode]:
    a, b = lab.declare(2, net_tick_timeout=1.0)
    await lab.start([a, b])
    await lab.wait_mesh([a, b], timeout=10)
    return a, b


def bomb(count: int) -> bytes:
    """The issue's frame: {"t": "hello", "x": [count empty arrays]}, written directly."""
    payload = b"\x82\xa1t\xa5hello\xa1x\xdd" + struct.pack(">I", count) + b"\x90" * count
    return struct.pack(">I", len(payload)) + payload


async def no_node_down(a: LabNode, b: LabNode, lab: Lab) -> None:
    for node, peer in ((a, b), (b, a)):
        assert [e for e in node.events() if e.kind == "down" and e.peer == peer.name] == []
    assert await lab.peers(a) == [b.name]
    for node in (a, b):
        assert "Traceback" not in node.log_text(), f"{node.name} logged a traceback"


async def probe_latencies(node: LabNode, stop: asyncio.Event) -> list[float]:
    """``GET /healthz`` back to back until ``stop``: each answer's latency."""
    latencies = []
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            began = time.monotonic()
            async with session.get(node.url("/healthz"), timeout=aiohttp.ClientTimeout(10)) as r:
                assert r.status == 200
            latencies.append(time.monotonic() - began)
            await asyncio.sleep(0.01)
    return latencies


async def test_the_memory_bomb_before_authentication_costs_nothing(
    lab: Lab, pair: tuple[LabNode, LabNode]
) -> None:
    """Three connections each send the issue's 16 MiB hello of empty arrays (which took
    a node to 3.66 GB and blocked it 43 s): each is cut at its 4-byte length prefix."""
    a, b = pair
    memory = a.rss_bytes()
    frame = bomb(16_777_200)
    stop = asyncio.Event()
    probing = asyncio.create_task(probe_latencies(a, stop))
    for _ in range(3):
        client = await RawPeer.connect(a.address, a.port, source=lab.address())
        with contextlib.suppress(ConnectionError, OSError):
            await client.send_bytes(frame)
        assert await client.closed_by_peer()
        await client.close()
    stop.set()
    latencies = await probing
    assert await lab.wait_for_metric(a, MALFORMED, at_least=3) == 3
    assert a.rss_bytes() - memory < 16 * MIB
    assert max(latencies) < 1.0
    await no_node_down(a, b, lab)


async def test_a_dialled_impostor_cannot_bomb_the_dialer(lab: Lab) -> None:
    """A node dials a listed name whose address an impostor holds (a recycled pod IP): the
    impostor's reply is the bomb, refused by the dialer at its length prefix."""
    impostor_address = lab.address()
    evil = f"evil@{impostor_address}"
    a, b = lab.declare(2, net_tick_timeout=1.0)
    for node in (a, b):
        config = yaml.safe_load(node.config_path.read_text())
        config["topologies"]["lab"]["config"]["hosts"].append(evil)
        node.config_path.write_text(yaml.safe_dump(config))
    frame = bomb(16_777_200)
    dialled = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dialled.set()
        with contextlib.suppress(ConnectionError, OSError):
            await reader.read(4096)  # the hello
            writer.write(frame)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, impostor_address, a.port)
    try:
        await lab.start([a, b])
        await lab.wait_mesh([a, b], timeout=10)
        memory_before = a.rss_bytes()
        await asyncio.wait_for(dialled.wait(), 10)
        await lab.wait_for_metric(a, MALFORMED)
        assert a.rss_bytes() - memory_before < 16 * MIB
        await no_node_down(a, b, lab)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_large_frame_from_an_authenticated_peer_does_not_block_the_loop(
    lab: Lab, pair: tuple[LabNode, LabNode]
) -> None:
    """4 MiB of nested empty arrays after a valid handshake (within the container limits):
    decoded a slice per event-loop turn, so probes answer and ticks flow meanwhile."""
    a, b = pair
    me = f"raw@{lab.address()}"
    client = await RawPeer.connect(a.address, a.port, source=me.split("@")[1])
    value = {"t": "bogus", "x": [[[]] * (MIB - 16) for _ in range(4)]}
    frame = encode_frame(value)
    stop = asyncio.Event()
    try:
        await client.handshake(me=me, peer=a.name, cookie=lab.cookie)
        probing = asyncio.create_task(probe_latencies(a, stop))
        await asyncio.sleep(0.1)  # probes under way before the frame lands
        await client.send_bytes(frame)
        # Ignored (once decoded, a slice per turn), and counted.
        await lab.wait_for_metric(a, "pycluster_messages_ignored_total")
        stop.set()
        latencies = await probing
    finally:
        stop.set()
        await client.close()
    assert max(latencies) < 0.5, sorted(latencies)[-5:]
    await no_node_down(a, b, lab)


async def test_a_stranger_learns_nothing_derived_from_the_cookie(
    lab: Lab, pair: tuple[LabNode, LabNode]
) -> None:
    a, _ = pair
    client = await RawPeer.connect(a.address, a.port, source=lab.address())
    try:
        await client.send(
            {
                "t": "hello",
                "v": 2,
                "name": "mallory@127.0.0.9",
                "to": a.name,
                "inc": b"i" * 16,
                "nonce": b"n" * 32,
                "hidden": True,
            }
        )
        challenge = await client.receive()
        assert challenge["t"] == "challenge"
        assert set(challenge) == {"t", "v", "name", "inc", "nonce"}
        await client.send({"t": "proof", "proof": b"\0" * 32})
        reject = await client.receive()
        assert reject == {"t": "reject", "code": "cookie", "reason": "cookie mismatch"}
        assert await client.closed_by_peer()
    finally:
        await client.close()


async def test_an_old_protocol_version_is_refused_and_counted(
    lab: Lab, pair: tuple[LabNode, LabNode]
) -> None:
    a, b = pair
    since = a.log_size()
    client = await RawPeer.connect(a.address, a.port, source=lab.address())
    try:
        hello = {"t": "hello", "v": 1, "name": "old@127.0.0.9", "to": a.name}
        await client.send({**hello, "inc": b"i" * 16, "nonce": b"n" * 32, "hidden": False})
        reject = await client.receive()
        assert reject["code"] == "version"  # the reason beside it is for people
    finally:
        await client.close()
    version = 'pycluster_handshake_failures_total{kind="version"}'
    assert await lab.wait_for_metric(a, version) == 1
    await lab.wait_for_record(a, level="WARNING", since=since)
    await no_node_down(a, b, lab)


async def test_failed_handshakes_under_made_up_names_are_warned_about_by_source(
    lab: Lab, pair: tuple[LabNode, LabNode]
) -> None:
    """300 wrong-cookie handshakes, each claiming a new name, from one address: one
    warning for that address, every failure counted."""
    a, b = pair
    since = a.log_size()
    source = lab.address()
    for i in range(300):
        client = await RawPeer.connect(a.address, a.port, source=source)
        try:
            with pytest.raises(HandshakeError, match="cookie mismatch"):
                await client.handshake(
                    me=f"m{i}@127.0.0.9", peer=a.name, cookie="not-the-cookie-at-all"
                )
        finally:
            await client.close()
    metrics = await lab.metrics(a)
    assert metrics['pycluster_handshake_failures_total{kind="cookie"}'] == 300
    warnings = a.records(since, level="WARNING")
    assert len(warnings) == 1, warnings
    assert source in warnings[0]["message"]  # the address, which the node can vouch for
    await no_node_down(a, b, lab)


async def test_unauthenticated_connections_are_capped(
    lab: Lab, pair: tuple[LabNode, LabNode]
) -> None:
    """16 per source address and 256 in all may wait in their handshake; the next one is
    closed at once and counted, and the node's peer is not disturbed."""
    a, b = pair
    held: list[RawPeer] = []
    try:
        first = lab.address()
        for _ in range(16):
            held.append(await RawPeer.connect(a.address, a.port, source=first))
        extra = await RawPeer.connect(a.address, a.port, source=first)
        assert await extra.closed_by_peer(timeout=1.0)
        await extra.close()
        sources = [lab.address() for _ in range(16)]
        for source in sources[:15]:
            for _ in range(16):
                held.append(await RawPeer.connect(a.address, a.port, source=source))
        assert len(held) == 256
        late = await RawPeer.connect(a.address, a.port, source=sources[15])
        assert await late.closed_by_peer(timeout=1.0)
        await late.close()
        metrics = await lab.metrics(a)
        assert metrics['pycluster_connections_refused_total{reason="per_source"}'] == 1
        assert metrics['pycluster_connections_refused_total{reason="total"}'] == 1
        await no_node_down(a, b, lab)
    finally:
        for client in held:
            await client.close()
    result = await lab.cli("status", "--node", a.name, "--json")
    assert result.returncode == 0, result.stderr
