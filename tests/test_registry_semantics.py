"""The crdt registry's semantics under faults (in memory): a frozen or cut-off holder loses
the names taken over from it, independent claims resolve one way everywhere, entries end
with their actor or node and say why on every node, and what plugins are told.

The same scenarios run against real processes in tests/cluster/test_takeover.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pycluster import (
    ActorRef,
    AlreadyRegistered,
    EventStream,
    Joined,
    Left,
    NameConflict,
    Node,
    NoSuchActor,
    Plugins,
    Registered,
    RegistryEvent,
    Unregistered,
    hookimpl,
    load_config,
)
from pycluster.registry.refs import MAX_META
from pycluster.ring import owner
from pycluster.testing import Cluster, ContractCounter, cluster, until

TICK = {"node": {"net_tick_timeout": 0.5}, "registry": {"backend": "crdt"}}
COOKIE = "semantics-test-cookie"


async def thaw(c: Cluster, node: Node) -> None:
    """Resume a paused node and reconnect it (what discovery would do)."""
    await c.resume(node)
    await until(lambda: node.nodes() == [], 5, f"{node.name} finds its links closed")
    for other in c.alive():
        if other is not node and not c.network.paused(other.name):
            assert await node.connect(other.name)
    await c.wait_meshed()


async def freeze(c: Cluster, node: Node) -> None:
    """Pause a node until every other live node has seen it down."""
    await c.pause(node)
    others = [n for n in c.alive() if n is not node and not c.network.paused(n.name)]
    await until(lambda: all(node.name not in n.nodes() for n in others), 5, "seen down")


def drain(stream: EventStream) -> list[Any]:
    """What ``stream`` holds now."""
    found = []
    while stream.pending():
        found.append(stream._queue.popleft())
    return found


async def test_a_frozen_holder_loses_a_name_taken_over_while_it_was_down() -> None:
    async with cluster(3, config=TICK) as c:
        a, b, d = c.nodes
        old = await a.registry.spawn("x", ContractCounter)
        await until(lambda: all(n.registry.whereis("x") == old for n in c.nodes), 5, "x seen")
        await freeze(c, a)
        new = await b.registry.spawn("x", ContractCounter)
        for _ in range(5):
            await b.registry.call("x", "increment")
        ended = asyncio.ensure_future(a.actors.wait(old))
        async with d.registry.events() as stream:
            await thaw(c, a)
            await until(
                lambda: (
                    all(n.registry.whereis("x") == new for n in c.nodes)
                    and a.actors.local(old) is None
                ),
                5,
                "the takeover wins everywhere, and the frozen holder's actor is stopped",
            )
            conflicts = [e for e in drain(stream) if isinstance(e, NameConflict)]
        assert await a.registry.call("x", "value") == 5  # no acknowledged write lost
        assert conflicts == [NameConflict("x", new, old)]
        assert await ended == "name conflict"
        assert all(n.actors.names().count("x") <= 1 for n in c.nodes)


async def test_takeovers_chain_a_holder_frozen_twice_over_loses_to_the_last() -> None:
    async with cluster(4, config=TICK) as c:
        a, b, d, e = c.nodes
        await a.registry.spawn("x", ContractCounter)
        await until(lambda: e.registry.whereis("x") is not None, 5, "x seen")
        await freeze(c, a)
        second = await b.registry.spawn("x", ContractCounter)
        await until(lambda: e.registry.whereis("x") == second, 5, "b's x seen")
        await freeze(c, b)
        third = await d.registry.spawn("x", ContractCounter)
        await d.registry.call("x", "increment")
        await thaw(c, a)
        await thaw(c, b)
        await until(
            lambda: all(n.registry.whereis("x") == third for n in c.nodes),
            5,
            "the last takeover wins over both frozen holders",
        )
        assert await e.registry.call("x", "value") == 1
        await until(lambda: a.actors.refs() == [] and b.actors.refs() == [], 5, "losers stop")


async def test_independent_claims_on_both_sides_of_a_partition_resolve_one_way() -> None:
    async with cluster(3, config=TICK) as c:
        a, b, d = c.nodes
        kept = await a.registry.spawn("kept", ContractCounter)
        await until(lambda: d.registry.whereis("kept") == kept, 5, "kept seen")
        await c.partition([a], [b, d])
        left = await a.registry.spawn("y", ContractCounter)
        right = await b.registry.spawn("y", ContractCounter)
        await c.heal()
        await until(
            lambda: (
                len({n.registry.whereis("y") for n in c.nodes}) == 1
                and sum(n.actors.names().count("y") for n in c.nodes) == 1
            ),
            5,
            "one holder of y everywhere, one actor named y in the cluster",
        )
        winner = a.registry.whereis("y")
        assert winner in (left, right)
        # The default rule: the earlier claim (Lamport time), then the smaller ref.
        entries = {e.ref: e for n in (a, b) for e in n.registry.backend.replica.own().values()}
        assert winner in entries
        assert all(n.registry.whereis("kept") == kept for n in c.nodes)


async def test_a_ring_actor_restarted_elsewhere_wins_over_its_frozen_node() -> None:
    async with cluster(3, config=TICK) as c:
        a, b, _ = c.nodes
        names = [n.name for n in c.nodes]
        name = next(f"r{i}" for i in range(1000) if owner(f"r{i}", names) == a.name)
        old = await b.registry.spawn(name, ContractCounter, placement="ring")
        assert old.node == a.name
        await until(lambda: all(n.registry.whereis(name) == old for n in c.nodes), 5, "seen")
        await freeze(c, a)
        await until(
            lambda: (ref := b.registry.whereis(name)) is not None and ref.node != a.name,
            10,
            "the ring actor restarted on a live node",
        )
        new = b.registry.whereis(name)
        assert new is not None
        await b.registry.call(name, "increment")
        await thaw(c, a)
        await until(lambda: a.actors.local(old) is None, 5, "the frozen node's copy stopped")
        # It may move back to its ring owner (with its state); it is never lost.
        await until(
            lambda: (
                len({n.registry.whereis(name) for n in c.nodes}) == 1
                and sum(n.actors.names().count(name) for n in c.nodes) == 1
            ),
            10,
            "one copy, seen alike everywhere",
        )


async def test_every_node_hears_why_an_entry_ended() -> None:
    async with cluster(3, config=TICK) as c:
        a, b, d = c.nodes
        async with a.registry.events() as stream:
            done = await b.registry.spawn("done", ContractCounter)
            await b.registry.join("crew", done)
            doomed = await d.registry.spawn("doomed", ContractCounter)
            await until(lambda: a.registry.whereis("doomed") == doomed, 5, "doomed seen")
            await b.actors.stop(done, "finished")
            await c.kill(d)
            await until(lambda: a.registry.whereis("doomed") is None, 5, "doomed gone")
            await until(lambda: a.registry.whereis("done") is None, 5, "done gone")
            events = drain(stream)
        assert Unregistered("done", done, "finished") in events
        assert Left("crew", done, "finished") in events
        assert Unregistered("doomed", doomed, "nodedown") in events


async def test_plugins_are_told_of_every_registry_event() -> None:
    heard: list[tuple[str, RegistryEvent]] = []

    class Listener:
        @hookimpl
        def pycluster_name_registered(self, event: Registered, scope: str) -> None:
            heard.append((scope, event))

        @hookimpl
        def pycluster_name_unregistered(self, event: Unregistered) -> None:
            heard.append(("", event))

        @hookimpl
        def pycluster_group_joined(self, event: Joined, scope: str) -> None:
            heard.append((scope, event))

        @hookimpl
        def pycluster_group_left(self, event: Left, scope: str) -> None:
            heard.append((scope, event))

    plugins = Plugins.load(entry_points=False, extra=[Listener()])
    async with cluster(2, config=TICK, plugins=plugins) as c:
        _, b = c.nodes
        ref = await b.registry.scope("t").spawn("x", ContractCounter, meta=1)
        await b.registry.join("g", ref)
        await b.registry.leave("g", ref)
        await b.registry.scope("t").unregister("x")
        expected = [
            ("t", Registered("x", ref, 1)),
            ("", Joined("g", ref)),
            ("", Left("g", ref, "left")),
            ("", Unregistered("x", ref, "unregistered")),
        ]
        # Both nodes' plugins hear it: b made the changes, a learnt of them.
        await until(lambda: heard.count(expected[-1]) == 2, 5, "both nodes heard")
        assert all(heard.count(e) == 2 for e in expected)
        assert list(dict.fromkeys(heard)) == expected


async def test_metadata_is_a_small_plain_msgpack_value() -> None:
    async with cluster(1, config=TICK) as c:
        (node,) = c.nodes
        with pytest.raises(ValueError, match="over 4096"):
            await node.registry.spawn("big", ContractCounter, meta="x" * MAX_META)
        with pytest.raises(ValueError, match="plain msgpack"):
            await node.registry.spawn("odd", ContractCounter, meta=object())
        with pytest.raises(ValueError, match="plain msgpack"):
            await node.registry.spawn("ref", ContractCounter, meta=ActorRef("a@b", "1"))
        assert node.registry.registered() == {}
        ref = await node.registry.spawn("ok", ContractCounter, meta={"b": b"\x00", "n": None})
        found = node.registry.lookup("ok")
        assert found is not None
        assert (found.name, found.ref, found.meta) == ("ok", ref, {"b": b"\x00", "n": None})


async def test_names_scopes_and_groups_may_not_hold_the_scope_separator() -> None:
    async with cluster(1, config=TICK) as c:
        registry = c.nodes[0].registry
        with pytest.raises(ValueError, match="NUL"):
            await registry.spawn("a\x00b", ContractCounter)
        with pytest.raises(ValueError, match="NUL"):
            registry.scope("t\x00")
        ref = c.nodes[0].actors.spawn(ContractCounter)
        with pytest.raises(ValueError, match="NUL"):
            await registry.join("g\x00", ref)
        assert registry.scope("") is registry
        assert registry.scope("t") is registry.scope("t")


class Sleepy(ContractCounter):
    """Answers "slow" only after a while."""

    async def handle_call(self, message: Any) -> Any:
        if message == "slow":
            await asyncio.sleep(2)
            return "late"
        return await super().handle_call(message)


async def test_a_member_that_does_not_answer_in_time_is_a_failure_of_its_own() -> None:
    async with cluster(2, config=TICK) as c:
        a, b = c.nodes
        quick = a.actors.spawn(ContractCounter)
        slow = b.actors.spawn(Sleepy)
        await a.registry.join("mixed", quick)
        await a.registry.join("mixed", slow)
        await until(lambda: a.registry.count("mixed") == 2, 5, "both members seen")
        replies, failures = await a.registry.multi_call("mixed", "slow", timeout=0.3)
        assert replies == {quick: 0}
        assert list(failures) == [slow]
        assert isinstance(failures[slow], TimeoutError)


async def test_unregistering_a_name_nobody_holds_does_nothing() -> None:
    async with cluster(2, config=TICK) as c:
        a, b = c.nodes
        kept = await b.registry.spawn("kept", ContractCounter)
        await until(lambda: a.registry.whereis("kept") == kept, 5, "kept seen")
        await a.registry.unregister("nobody")
        await a.registry.scope("elsewhere").unregister("kept")  # another scope's name
        assert a.registry.whereis("kept") == b.registry.whereis("kept") == kept


async def test_a_hidden_client_spawns_on_a_member_never_on_itself() -> None:
    async with cluster(1, config=TICK, cookie=COOKIE) as c:
        (member,) = c.nodes
        config = load_config({"node": {"name": "client@memory"}}, env={})
        async with Node(config, cookie=COOKIE, network=c.network, hidden=True) as client:
            assert await client.connect(member.name)
            with pytest.raises(ValueError, match="hidden client runs no actors"):
                await client.registry.spawn("x", ContractCounter)
            assert client.actors.refs() == []
            ref = await client.registry.spawn("x", ContractCounter, on=member.name)
            assert ref.node == member.name
            await until(lambda: member.registry.whereis("x") == ref, 5, "x on the member")


async def test_claims_of_one_turn_travel_together_and_each_name_has_one_winner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with cluster(3, config=TICK) as c:
        a, b, c3 = c.nodes
        members = [n.name for n in c.nodes]
        names = [f"n{i}" for i in range(400) if owner(f"n{i}", members) == b.name][:100]
        transport = a.registry.backend.node
        sent: list[Any] = []
        call = transport.call

        async def counted(node: str, mailbox: str, message: Any, timeout: float = 5.0) -> Any:
            if mailbox == "$registry":
                sent.append(message)
            return await call(node, mailbox, message, timeout)

        monkeypatch.setattr(transport, "call", counted)
        refs_a = [a.actors.spawn(ContractCounter) for _ in names]
        refs_c = [c3.actors.spawn(ContractCounter) for _ in names]
        outcomes = await asyncio.gather(
            *(a.registry.register(n, r) for n, r in zip(names, refs_a, strict=True)),
            *(c3.registry.register(n, r) for n, r in zip(names, refs_c, strict=True)),
            return_exceptions=True,
        )
        # One message from a to the arbiter b for all 100 claims of that turn.
        assert [(m[0], len(m[1])) for m in sent] == [("claims", len(names))]
        # Each name has exactly one winner, and every node agrees on it.
        won = [o is None for o in outcomes]
        assert all(isinstance(o, AlreadyRegistered) for o in outcomes if o is not None)
        for i, name in enumerate(names):
            assert won[i] != won[len(names) + i], name
            winner = refs_a[i] if won[i] else refs_c[i]
            await until(
                lambda n=name, w=winner: all(x.registry.whereis(n) == w for x in c.nodes),
                5,
                f"every node agrees on {name}",
            )


async def test_register_many_registers_the_free_names_and_returns_the_taken_ones() -> None:
    async with cluster(3, config=TICK) as c:
        a, b, _ = c.nodes
        held = {f"held{i}": b.actors.spawn(ContractCounter) for i in range(5)}
        assert await b.registry.register_many(held) == {}
        wanted = {f"m{i}": a.actors.spawn(ContractCounter) for i in range(200)}
        mine = {name: a.actors.spawn(ContractCounter) for name in held}
        taken = await a.registry.register_many({**wanted, **mine})
        assert taken == held
        await until(
            lambda: all(n.registry.whereis(k) == r for n in c.nodes for k, r in wanted.items()),
            5,
            "every node holds the names registered together",
        )
        # An actor that is not running: the error once the others are registered.
        dead = a.actors.spawn(ContractCounter)
        await a.actors.stop(dead)
        alive = a.actors.spawn(ContractCounter)
        with pytest.raises(NoSuchActor):
            await a.registry.register_many({"dead": dead, "alive": alive})
        assert a.registry.whereis("alive") == alive
        assert a.registry.whereis("dead") is None


async def test_changes_of_one_turn_are_held_a_batch_at_most_and_not_without_peers() -> None:
    from pycluster.registry.messages import MAX_BATCH

    async with cluster(2, config=TICK) as c:
        a, b = c.nodes
        backend = a.registry.backend
        members = [n.name for n in c.nodes]
        names = [f"t{i}" for i in range(4 * MAX_BATCH) if owner(f"t{i}", members) == a.name]
        for name in names:  # claims a arbitrates itself never yield: one loop turn
            assert await backend.claim(name, a.actors.allocate(), 5.0) is None
            assert len(backend._outbox) < MAX_BATCH
        await until(lambda: len(b.registry.registered()) == len(names), 5, "b has them all")
    async with cluster(1, config=TICK) as alone:
        backend = alone.nodes[0].registry.backend
        for i in range(100):
            await backend.claim(f"u{i}", alone.nodes[0].actors.allocate(), 5.0)
        assert backend._outbox == []  # nobody to tell
