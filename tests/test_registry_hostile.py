"""Registry messages no honest node sends, from a peer that knows the cookie: refused,
counted, the connection closed, and the node goes on working (real nodes over loopback,
in one process; the forger is a real node sending what its registry never would)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from pycluster import load_config
from pycluster.actors import ActorRestartPolicy
from pycluster.errors import NotConnected, RemoteError
from pycluster.node import Node
from pycluster.registry.messages import Spec
from pycluster.registry.replica import CLOCK_JUMP
from pycluster.testing import ContractCounter as Counter
from tests.conftest import eventually, mesh, meshed

COOKIE = "hostile-registry-test-cookie"
TOP = 2**64 - 1
"""The largest integer msgpack carries: a clock there can never be sent again plus one."""


def make_node(index: int, *, hidden: bool = False) -> Node:
    config = load_config(
        {"node": {"name": f"h{index}@127.0.8.{index + 2}", "net_tick_timeout": 1.0}}, env={}
    )
    return Node(config, cookie=COOKIE, hidden=hidden)


def rejected(node: Node, reason: str) -> float:
    value = node.metrics.registry.get_sample_value(
        "pycluster_registry_rejected_total", {"reason": reason}
    )
    return value or 0.0


@pytest.fixture
async def trio() -> AsyncIterator[list[Node]]:
    """A victim, an honest peer and a forger, meshed."""
    async with meshed([make_node(i) for i in range(3)]) as nodes:
        yield nodes


FORGED_CLOCKS = {
    "snapshot at 2**64-1": ["snap", {"lamport": TOP, "entries": [], "groups": {}}],
    "snapshot at 2**63": ["snap", {"lamport": 2**63, "entries": [], "groups": {}}],
    "snapshot entry at 2**64-1": [
        "snap",
        {"lamport": 1, "entries": [["x", "h2@127.0.8.4", "1", TOP]], "groups": {}},
    ],
    "claim at 2**64-1": ["op", {"op": "reg", "e": ["x", "h2@127.0.8.4", "1", TOP]}],
    "jump past the bound": ["snap", {"lamport": CLOCK_JUMP + 100, "entries": [], "groups": {}}],
}


@pytest.mark.parametrize("body", FORGED_CLOCKS.values(), ids=FORGED_CLOCKS.keys())
async def test_a_forged_clock_is_refused_and_the_node_keeps_working(
    trio: list[Node], body: list[Any]
) -> None:
    victim, honest, forger = trio
    forger.send_nowait(victim.name, "$registry", body)
    await eventually(lambda: forger.name not in victim.nodes())
    assert rejected(victim, "clock") == 1
    assert victim.registry.backend.replica.lamport < CLOCK_JUMP
    assert victim.registry.whereis("x") is None
    # Its claims work, and reach its peers.
    ref = await victim.registry.spawn("after", Counter)
    await eventually(lambda: honest.registry.whereis("after") == ref)
    # A peer that reconnects gets a snapshot it can use: both sides become synced.
    await honest.disconnect(victim.name)
    await eventually(lambda: honest.name not in victim.nodes())
    await mesh(trio)  # the forger too, now as an honest peer
    assert all(node.registry.whereis("after") == ref for node in trio)
    assert rejected(victim, "clock") == 1


SPEC = Spec("s", "pycluster.demo:Counter", [], {}, ActorRestartPolicy(), "id1").to_wire()
MALFORMED = {
    "not a list": ("$registry", "hello"),
    "empty": ("$registry", []),
    "unknown kind": ("$registry", ["teleport", {}]),
    "snapshot without a clock": ("$registry", ["snap", {"entries": [], "groups": {}}]),
    "snapshot of junk": ("$registry", ["snap", {"lamport": 1, "entries": "x", "groups": {}}]),
    "negative clock": ("$registry", ["op", {"op": "reg", "e": ["x", "h2@127.0.8.4", "1", -1]}]),
    "unknown change": ("$registry", ["op", {"op": "teleport"}]),
    "change of junk": ("$registry", ["op", "junk"]),
    "snapshot naming a name twice": (
        "$registry",
        ["snap", {"lamport": 1, "entries": [["x", "h2@127.0.8.4", "1", 1]] * 2, "groups": {}}],
    ),
    "junk ring specs": ("$names", ["ring-specs", [["junk"]]]),
    "ring spec on a bad host": ("$names", ["ring-specs", [[SPEC, "not a node"]]]),
    "junk ring forget": ("$names", ["ring-forget", [None]]),
    "unknown names request": ("$names", ["teleport"]),
    "spawn in the past": ("$names", ["spawn", "x", "pycluster.demo:Counter", [], {}, -1.0]),
    "ring spawn of junk": ("$names", ["ring-spawn", ["junk"], 1.0]),
}


@pytest.mark.parametrize(("mailbox", "body"), MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_registry_message_is_refused_and_closes_the_connection(
    trio: list[Node], mailbox: str, body: Any
) -> None:
    victim, honest, forger = trio
    await forger.registry.spawn("forgers", Counter)
    await eventually(lambda: victim.registry.whereis("forgers") is not None)
    forger.send_nowait(victim.name, mailbox, body)
    # What it sent after that, read in the same batch, is ignored too.
    forger.send_nowait(
        victim.name, "$registry", ["snap", {"lamport": 1, "entries": [], "groups": {}}]
    )
    await eventually(lambda: forger.name not in victim.nodes())
    assert rejected(victim, "malformed") == 1
    assert "s" not in victim.registry.ring.specs
    # Its names went with it, as with any peer seen down; the rest is untouched.
    assert victim.registry.whereis("forgers") is None
    assert honest.name in victim.nodes()
    await mesh(trio)
    assert victim.registry.whereis("forgers") is not None


async def test_a_malformed_claim_is_refused_and_its_caller_told(trio: list[Node]) -> None:
    victim, _, forger = trio
    with pytest.raises((RemoteError, NotConnected)):
        await forger.call(victim.name, "$registry", ["claim", "x", "not a ref"], timeout=2)
    await eventually(lambda: forger.name not in victim.nodes())
    assert rejected(victim, "malformed") == 1
    assert victim.registry.whereis("x") is None


async def test_a_hidden_client_cannot_inject_a_slice(trio: list[Node]) -> None:
    victim = trio[0]
    async with make_node(9, hidden=True) as client:
        assert await client.connect(victim.name)
        ghost = {"lamport": 1, "entries": [["ghost", client.name, "1", 1]], "groups": {}}
        client.send_nowait(victim.name, "$registry", ["snap", ghost])
        await eventually(lambda: rejected(victim, "hidden") == 1)
        assert victim.registry.whereis("ghost") is None
        assert victim.ready()
        # Nor make the members check every ring actor, as a member leaving does.
        checks = victim.registry.ring.checks
        client.send_nowait(victim.name, "$names", ["ring-leaving"])
        await eventually(lambda: rejected(victim, "hidden") == 2)
        assert victim.registry.ring.checks == checks
