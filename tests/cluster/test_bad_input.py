"""Bad input against a running node that has a good peer (issue 3).

Each case throws one kind of garbage at node ``a`` while ``a`` is connected to ``b``: a
wrong cookie (from the status command, a hand-made impostor and a whole node process),
random bytes, a 1 GiB length prefix, a truncated frame, an unknown message from an
authenticated client, and a frame above ``max_frame_size``. Each must be refused or dropped
and counted by ``a`` in /metrics by kind (and the cookie never logged), and ``a`` must go on
serving ``b``: same connection, still listed, and ``pycluster status`` still answers.
"""

from __future__ import annotations

import json
import random
import struct

import pytest

from pycluster.transport import HandshakeError, encode_frame
from tests.lab import Lab, LabNode, RawPeer

MAX_FRAME_SIZE = 64 * 1024
COOKIE_FAILURES = 'pycluster_handshake_failures_total{kind="cookie"}'
IGNORED = "pycluster_messages_ignored_total"
MALFORMED = 'pycluster_handshake_failures_total{kind="malformed"}'


@pytest.fixture
async def pair(lab: Lab) -> tuple[LabNode, LabNode]:
    """Nodes a and b, connected; a accepts frames up to MAX_FRAME_SIZE."""
    a, b = lab.declare(2, net_tick_timeout=3.0, max_frame_size=MAX_FRAME_SIZE)
    await lab.start([a, b])
    await lab.wait_mesh([a, b], timeout=10)
    return a, b


async def raw_peer(lab: Lab, target: LabNode) -> RawPeer:
    return await RawPeer.connect(target.address, target.port, source=lab.address())


def went_down(node: LabNode, peer: str, since: int) -> bool:
    """Whether ``node`` logged ``peer`` down after byte offset ``since``."""
    return any(e.kind == "down" and e.peer == peer for e in node.events(since))


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
    wrong = "not-" + lab.cookie
    result = await lab.cli("status", "--node", a.name, "--cookie", wrong)
    assert result.returncode == 1
    assert "cookie mismatch" in result.stderr
    assert wrong not in result.stderr
    await lab.wait_for_metric(a, COOKIE_FAILURES)
    assert wrong not in a.log_text()
    await assert_still_serving(lab, a, b)


async def test_an_impostor_proof_is_refused(lab: Lab, pair: tuple[LabNode, LabNode]) -> None:
    """A client that does not know the cookie sends a proof made with a wrong one."""
    a, b = pair
    impostor = await raw_peer(lab, a)
    try:
        with pytest.raises(HandshakeError, match="rejected by the peer: cookie mismatch"):
            await impostor.handshake(me="mallory@127.0.0.9", peer=a.name, cookie="x")
        assert await impostor.closed_by_peer()
    finally:
        await impostor.close()
    assert await lab.wait_for_metric(a, COOKIE_FAILURES) == 1
    await assert_still_serving(lab, a, b)


async def test_a_node_with_another_cookie_never_joins(
    lab: Lab, pair: tuple[LabNode, LabNode]
) -> None:
    a, b = pair
    (stranger,) = lab.declare(1, hosts=[a.name, b.name], cookie="another-cluster-cookie")
    await lab.start([stranger])
    await lab.wait_for_metric(a, COOKIE_FAILURES)
    # The stranger's dials are refused by the peers it dials, with the reason.
    await lab.wait_for_metric(stranger, 'pycluster_handshake_failures_total{kind="rejected"}')
    assert await lab.peers(stranger) == []
    assert "another-cluster-cookie" not in a.log_text() + stranger.log_text()
    await assert_still_serving(lab, a, b)


async def test_random_bytes_are_dropped(lab: Lab, pair: tuple[LabNode, LabNode]) -> None:
    a, b = pair
    # A complete frame of random bytes (seeded: the same garbage every run).
    garbage = random.Random(3).randbytes(200)
    client = await raw_peer(lab, a)
    try:
        await client.send_bytes(struct.pack(">I", len(garbage)) + garbage)
        assert await client.closed_by_peer()
    finally:
        await client.close()
    await lab.wait_for_metric(a, MALFORMED)
    await assert_still_serving(lab, a, b)


async def test_a_1_gib_length_prefix_costs_nothing(lab: Lab, pair: tuple[LabNode, LabNode]) -> None:
    a, b = pair
    memory = a.rss_bytes()
    client = await raw_peer(lab, a)
    try:
        await client.send_bytes(struct.pack(">I", 2**30) + b"\x81\xa1t\xa5hello" * 1000)
        assert await client.closed_by_peer()
    finally:
        await client.close()
    await lab.wait_for_metric(a, MALFORMED)
    assert a.rss_bytes() - memory < 16 * 1024 * 1024
    await assert_still_serving(lab, a, b)


async def test_a_truncated_frame_then_close(lab: Lab, pair: tuple[LabNode, LabNode]) -> None:
    a, b = pair
    hello = encode_frame({"t": "hello", "v": 1, "name": "x@127.0.0.9", "to": a.name})
    client = await raw_peer(lab, a)
    await client.send_bytes(hello[: len(hello) // 2])
    await client.close()
    await lab.wait_for_metric(a, 'pycluster_handshake_failures_total{kind="closed"}')
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
        await lab.wait_for_metric(a, IGNORED)
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
        await lab.until(lambda: went_down(a, me, since), timeout=5, what=f"{a.name} sees {me} down")
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
    await lab.until(lambda: went_down(a, me, since), timeout=5, what=f"{a.name} sees {me} down")
    (down,) = [e for e in a.events(since) if e.kind == "down" and e.peer == me]
    assert down.reason is not None
    assert down.reason.startswith(f"bad frame: frame of {size} bytes"), down
    await assert_still_serving(lab, a, b)
