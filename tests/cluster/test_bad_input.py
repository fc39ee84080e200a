"""Bad input against a running node that has a good peer (issue 3).

Each case throws one kind of garbage at node ``a`` while ``a`` is connected to ``b``: a
wrong cookie (from the status command, a hand-made impostor and a whole node process),
random bytes, a 1 GiB length prefix, a truncated frame, an unknown message from an
authenticated client, and a frame above ``max_frame_size``. Each must be refused or dropped
and logged by ``a`` with the reason (never with the cookie), and ``a`` must go on serving
``b``: same connection, still listed, and ``pycluster status`` still answers.
"""

from __future__ import annotations

import json
import random
import re
import struct

import pytest

from pycluster.transport import HandshakeError, encode_frame
from tests.lab import Lab, LabNode, RawPeer

MAX_FRAME_SIZE = 64 * 1024


@pytest.fixture
async def pair(lab: Lab) -> tuple[LabNode, LabNode]:
    """Nodes a and b, connected; a accepts frames up to MAX_FRAME_SIZE."""
    a, b = lab.declare(2, net_tick_timeout=3.0, max_frame_size=MAX_FRAME_SIZE)
    await lab.start([a, b])
    await lab.wait_mesh([a, b], timeout=10)
    return a, b


async def raw_peer(lab: Lab, target: LabNode) -> RawPeer:
    return await RawPeer.connect(target.address, target.port, source=lab.address())


async def assert_still_serving(lab: Lab, a: LabNode, b: LabNode) -> None:
    """a and b still see each other over their first connection; the CLI still works."""
    assert await lab.peers(a) == [b.name]
    assert await lab.peers(b) == [a.name]
    for node, peer in ((a, b), (b, a)):
        assert [e.peer for e in node.events() if e.kind == "down" and e.peer == peer.name] == []
    result = await lab.cli("status", "--node", a.name, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["nodes"] == [b.name]
    for node in (a, b):
        log = node.log_text()
        assert lab.cookie not in log, f"{node.name} logged the cookie"
        assert "Traceback" not in log, f"{node.name} logged a traceback"


async def test_status_with_a_wrong_cookie_exits_1(lab: Lab, pair: tuple[LabNode, LabNode]) -> None:
    a, b = pair
    since = a.log_size()
    wrong = "not-" + lab.cookie
    result = await lab.cli("status", "--node", a.name, "--cookie", wrong)
    assert result.returncode == 1
    assert "cookie mismatch" in result.stderr
    assert wrong not in result.stderr
    line = await lab.wait_for_log(
        a,
        r"WARNING .*handshake from 127\.\S+ \(claiming to be 'pycluster-status-\d+@localhost'\) "
        r"failed: cookie mismatch",
        since=since,
    )
    assert wrong not in line
    await assert_still_serving(lab, a, b)


async def test_an_impostor_proof_is_refused(lab: Lab, pair: tuple[LabNode, LabNode]) -> None:
    """A client that does not know the cookie sends a proof made with a wrong one."""
    a, b = pair
    since = a.log_size()
    impostor = await raw_peer(lab, a)
    try:
        with pytest.raises(HandshakeError, match="rejected by the peer: cookie mismatch"):
            await impostor.handshake(me="mallory@127.0.0.9", peer=a.name, cookie="x")
        assert await impostor.closed_by_peer()
    finally:
        await impostor.close()
    await lab.wait_for_log(
        a,
        r"WARNING .*handshake from 127\.\S+ \(claiming to be 'mallory@127\.0\.0\.9'\) "
        r"failed: cookie mismatch",
        since=since,
    )
    metrics = await lab.metrics(a)
    assert metrics['pycluster_handshake_failures_total{kind="cookie"}'] == 1
    await assert_still_serving(lab, a, b)


async def test_a_node_with_another_cookie_never_joins(
    lab: Lab, pair: tuple[LabNode, LabNode]
) -> None:
    a, b = pair
    since = a.log_size()
    (stranger,) = lab.declare(1, hosts=[a.name, b.name], cookie="another-cluster-cookie")
    await lab.start([stranger])
    await lab.wait_for_log(
        a,
        rf"WARNING .*handshake from {re.escape(stranger.address)} \(claiming to be "
        rf"'{re.escape(stranger.name)}'\) failed: cookie mismatch",
        since=since,
    )
    await lab.wait_for_log(
        stranger, rf"WARNING .*handshake with {re.escape(a.name)} failed: .*cookie mismatch"
    )
    assert await lab.peers(stranger) == []
    assert "another-cluster-cookie" not in a.log_text() + stranger.log_text()
    await assert_still_serving(lab, a, b)


async def test_random_bytes_are_dropped(lab: Lab, pair: tuple[LabNode, LabNode]) -> None:
    a, b = pair
    since = a.log_size()
    # A complete frame of random bytes (seeded: the same garbage every run).
    garbage = random.Random(3).randbytes(200)
    client = await raw_peer(lab, a)
    try:
        await client.send_bytes(struct.pack(">I", len(garbage)) + garbage)
        assert await client.closed_by_peer()
    finally:
        await client.close()
    await lab.wait_for_log(
        a, r"WARNING .*handshake from 127\.0\.\S+ failed: bad frame", since=since
    )
    await assert_still_serving(lab, a, b)


async def test_a_1_gib_length_prefix_costs_nothing(lab: Lab, pair: tuple[LabNode, LabNode]) -> None:
    a, b = pair
    since = a.log_size()
    memory = a.rss_bytes()
    client = await raw_peer(lab, a)
    try:
        await client.send_bytes(struct.pack(">I", 2**30) + b"\x81\xa1t\xa5hello" * 1000)
        assert await client.closed_by_peer()
    finally:
        await client.close()
    await lab.wait_for_log(
        a,
        rf"WARNING .*handshake from 127\.0\.\S+ failed: bad frame: frame of {2**30} bytes "
        rf"exceeds the 4096 cap",
        since=since,
    )
    assert a.rss_bytes() - memory < 16 * 1024 * 1024
    await assert_still_serving(lab, a, b)


async def test_a_truncated_frame_then_close(lab: Lab, pair: tuple[LabNode, LabNode]) -> None:
    a, b = pair
    since = a.log_size()
    hello = encode_frame({"t": "hello", "v": 1, "name": "x@127.0.0.9", "to": a.name})
    client = await raw_peer(lab, a)
    await client.send_bytes(hello[: len(hello) // 2])
    await client.close()
    await lab.wait_for_log(
        a,
        r"WARNING .*handshake from 127\.0\.\S+ failed: connection closed during the handshake",
        since=since,
    )
    await assert_still_serving(lab, a, b)


@pytest.mark.parametrize("hidden", [False, True], ids=["member", "hidden"])
async def test_an_unknown_message_from_an_authenticated_peer_is_ignored(
    lab: Lab, pair: tuple[LabNode, LabNode], hidden: bool
) -> None:
    a, b = pair
    since = a.log_size()
    me = f"raw@{lab.address()}"
    client = await RawPeer.connect(a.address, a.port, source=me.split("@")[1])
    try:
        await client.handshake(me=me, peer=a.name, cookie=lab.cookie, hidden=hidden)
        await client.send({"t": "bogus", "payload": "x" * 100})
        await lab.wait_for_log(
            a,
            rf"WARNING .*ignored a malformed or unknown 'bogus' message from {re.escape(me)}",
            since=since,
        )
        # Ignored, not fatal: the same connection still answers a call.
        await client.send({"t": "call", "id": 7, "to": "$status", "body": None})
        reply = await client.receive_until("reply")
        assert reply["id"] == 7
        assert reply["ok"] is True
        assert b.name in reply["body"]["nodes"]
        assert (me in reply["body"]["nodes"]) is not hidden
    finally:
        await client.close()
    if not hidden:
        await lab.wait_for_log(a, rf"INFO .*node down {re.escape(me)} \(", since=since)
    await assert_still_serving(lab, a, b)


async def test_a_frame_above_the_cap_from_an_authenticated_peer_closes_its_connection(
    lab: Lab, pair: tuple[LabNode, LabNode]
) -> None:
    a, b = pair
    since = a.log_size()
    me = f"raw@{lab.address()}"
    client = await RawPeer.connect(a.address, a.port, source=me.split("@")[1])
    try:
        await client.handshake(me=me, peer=a.name, cookie=lab.cookie)
        frame = encode_frame({"t": "msg", "to": "x", "body": b"\0" * MAX_FRAME_SIZE})
        client.write(frame)
        assert await client.closed_by_peer()
    finally:
        await client.close()
    size = len(frame) - 4
    await lab.wait_for_log(
        a,
        rf"WARNING .*closing the connection to {re.escape(me)}: frame of {size} bytes exceeds "
        rf"the {MAX_FRAME_SIZE} cap",
        since=since,
    )
    await lab.wait_for_log(
        a, rf"INFO .*node down {re.escape(me)} \(bad frame: frame of {size} bytes", since=since
    )
    await assert_still_serving(lab, a, b)
