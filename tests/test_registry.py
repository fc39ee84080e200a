"""The registry on nodes over real loopback sockets (in one process)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest

from pycluster import Plugins, hookimpl, load_config
from pycluster.actors import Actor
from pycluster.errors import RemoteError
from pycluster.node import Node
from pycluster.registry import ActorRef, AlreadyStarted, Entry
from pycluster.registry.messages import RegOp, Snapshot
from pycluster.testing import ContractCounter
from tests.conftest import Memory, eventually, mesh, meshed

pytestmark = pytest.mark.usefixtures("memory_network")


COOKIE = "registry-test-cookie"


# The contract's counter: increments, answers its value, says where it runs.
Counter = ContractCounter


def make_node(index: int, backend: str = "crdt", plugins: Plugins | None = None) -> Node:
    config = load_config(
        {
            "node": {"name": f"n{index}@127.0.2.{index + 2}", "net_tick_timeout": 1.0},
            "registry": {"backend": backend},
        },
        env={},
    )
    return Node(config, cookie=COOKIE, plugins=plugins, network=Memory.network)


@pytest.fixture
async def cluster() -> AsyncIterator[list[Node]]:
    async with meshed([make_node(i) for i in range(3)]) as nodes:
        yield nodes


# -- crdt across nodes --------------------------------------------------------------------


async def test_a_healed_partition_keeps_one_and_stops_the_other() -> None:
    a, b = make_node(0), make_node(1)
    async with a, b:
        # Not connected: each side claims the name on its own.
        first = await a.registry.spawn("leader", Counter)
        b.registry.backend.replica.lamport = 10  # b's claim is the later one
        second = await b.registry.spawn("leader", Counter)
        ended = asyncio.ensure_future(b.actors.wait(second))
        await mesh([a, b])
        await eventually(
            lambda: a.registry.whereis("leader") == b.registry.whereis("leader") == first
        )
        assert await asyncio.wait_for(ended, 5) == "name conflict"
        assert await b.registry.call("leader", "where") == a.name


async def test_a_plugin_may_choose_the_conflict_winner() -> None:
    class LatestWins:
        @hookimpl
        def pycluster_resolve_name_conflict(self, name: str, a: Entry, b: Entry) -> Entry:
            return a if a.lamport > b.lamport else b

    plugins = Plugins.load(entry_points=False, extra=[LatestWins()])
    a, b = make_node(0, plugins=plugins), make_node(1, plugins=plugins)
    async with a, b:
        first = await a.registry.spawn("leader", Counter)
        b.registry.backend.replica.lamport = 10
        second = await b.registry.spawn("leader", Counter)
        await mesh([a, b])
        await eventually(
            lambda: a.registry.whereis("leader") == b.registry.whereis("leader") == second
        )
        assert await asyncio.wait_for(a.actors.wait(first), 5) == "name conflict"


async def test_a_restarted_node_does_not_bring_back_its_old_names(cluster: list[Node]) -> None:
    await cluster[2].registry.spawn("ephemeral", Counter)
    await eventually(lambda: cluster[0].registry.whereis("ephemeral") is not None)
    await cluster[2].stop()
    reborn = make_node(2)
    async with reborn:
        await mesh([cluster[0], cluster[1], reborn])
        assert all(
            n.registry.whereis("ephemeral") is None for n in (cluster[0], cluster[1], reborn)
        )


async def test_refs_travel_in_messages_and_remote_crashes_surface(cluster: list[Node]) -> None:
    class Holder(Actor):
        async def handle_call(self, message: Any) -> Any:
            if isinstance(message, ActorRef):
                return await self.node.actors.call(message, "increment")
            raise RuntimeError("unexpected")

    counter = await cluster[0].registry.spawn("c", Counter)
    await cluster[1].registry.spawn("holder", Holder)
    await eventually(lambda: cluster[2].registry.whereis("holder") is not None)
    assert await cluster[2].registry.call("holder", counter) == 1
    with pytest.raises(RemoteError) as info:
        await cluster[2].registry.call("holder", "junk")
    assert info.value.type == "RuntimeError"


async def test_spawn_on_another_node_and_call_through_it(cluster: list[Node]) -> None:
    from pycluster.demo import Counter as DemoCounter

    ref = await cluster[0].registry.spawn("remote", DemoCounter, 41, on=cluster[2].name)
    assert ref.node == cluster[2].name
    with pytest.raises(AlreadyStarted) as info:
        await cluster[0].registry.spawn("remote", DemoCounter, on=cluster[1].name)
    assert info.value.ref == ref
    await eventually(lambda: cluster[1].registry.whereis("remote") == ref)
    assert await cluster[0].registry.call_via(cluster[1].name, "remote", "increment") == 42
    # Only Actor classes may be started remotely.
    request = ["spawn", "x", "pycluster.node:Node", [], {}, 1.0]
    with pytest.raises(RemoteError, match="not an Actor class"):
        await cluster[0].call(cluster[1].name, "$names", request)


async def test_a_remote_request_its_receiver_would_refuse_fails_here(cluster: list[Node]) -> None:
    from pycluster.demo import Counter as DemoCounter

    with pytest.raises(ValueError, match="timeout"):
        await cluster[0].registry.spawn("late", DemoCounter, on=cluster[1].name, timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        await cluster[0].registry.call_via(cluster[1].name, "late", "value", timeout=float("nan"))
    assert cluster[1].name in cluster[0].nodes()
    assert cluster[1].metrics.registry.get_sample_value(
        "pycluster_registry_rejected_total", {"reason": "malformed"}
    ) in (None, 0.0)


# -- what this node cannot send closes the connection, loudly -------------------------------


def logged_error(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(r.levelno >= logging.ERROR and text in r.getMessage() for r in caplog.records)


async def test_a_snapshot_that_cannot_be_sent_closes_the_connection_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = make_node(0), make_node(1)
    async with a, b:
        replica = a.registry.backend.replica
        replica.snapshot = lambda: Snapshot(object(), (), {})  # a bug in what it would send
        await b.connect(a.name)
        await eventually(lambda: logged_error(caplog, "registry snapshot cannot be sent"))
        # Rather than b never synced (and never ready) while the connection lives on.
        await eventually(lambda: a.name not in b.nodes() and b.name not in a.nodes())
        del replica.snapshot
        await mesh([a, b])


async def test_a_change_that_cannot_be_sent_closes_the_connection_not_the_claim(
    cluster: list[Node], caplog: pytest.LogCaptureFixture
) -> None:
    a = cluster[0]
    replica = a.registry.backend.replica
    register = replica.register
    # A bug in what it would send: a Lamport time msgpack cannot carry.
    replica.register = lambda name, ref, meta=None: RegOp(
        attrs.evolve(register(name, ref, meta).entry, lamport=object())
    )
    ref = await a.registry.spawn("unsendable", Counter)
    assert a.registry.whereis("unsendable") == ref
    await eventually(lambda: a.nodes() == [])
    assert logged_error(caplog, "registry change cannot be sent")
    del replica.register
    # Reconnected, the peers get the claim with the rest of a's slice.
    await mesh(cluster)
    assert all(node.registry.whereis("unsendable") == ref for node in cluster)


async def test_listeners_hear_a_turns_changes_at_once_and_streams_each_as_it_comes() -> None:
    node = make_node(0)
    async with node:
        heard: list[list[str]] = []
        node.registry.listeners.append(
            lambda events: heard.append([getattr(event, "name", "") for _, event in events])
        )
        refs = [node.actors.spawn(Counter) for _ in range(20)]
        names = [f"turn-{i}" for i in range(20)]
        async with node.registry.events() as stream:
            # gather starts the 20 registrations in one loop turn; this node arbitrates
            # them all, so each completes within it.
            await asyncio.gather(
                *(node.registry.register(name, ref) for name, ref in zip(names, refs, strict=True))
            )
            assert stream.pending() == 20
            assert heard == [names]
            await node.registry.register("alone", refs[0])
            assert stream.pending() == 21  # the stream has it at once
            assert heard == [names]  # the listeners at the end of this turn
            await eventually(lambda: heard == [names, ["alone"]], what="the next batch")
