"""Testing your cluster code: in-memory clusters, and the registry contract.

:func:`cluster` starts nodes in one process over the in-memory transport, meshed and with
their registries synced, and does to them what the lab does to real processes: partition
and heal, kill, pause and resume. The docs page "Testing your cluster code" walks through
it.

The registry contract, as checks any backend's test suite can run:

Every registry backend, built-in or from a plugin, is held to the same behaviour. A
backend's tests parametrize over :data:`CONTRACT`; for each :class:`ContractCheck` they
start ``check.nodes`` nodes using the backend, connect them into a mesh, wait until every
node is ``ready()``, and await ``check.run(nodes)``. A check may stop one of the nodes it
is given; the test's teardown must tolerate stopping a stopped node (``Node.stop`` does).

Checks poll with deadlines instead of sleeping, and hold a backend to its declared
:attr:`~pycluster.registry.RegistryBackend.forget_after` when a node goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs

from pycluster.actors import Actor
from pycluster.node import Node
from pycluster.plugins import load_config
from pycluster.registry import ActorRef, AlreadyRegistered, AlreadyStarted, NotRegistered
from pycluster.registry.events import (
    EventsLost,
    EventStream,
    Joined,
    Left,
    Registered,
    RegistryEvent,
    Unregistered,
)
from pycluster.supervisor import Supervisor
from pycluster.transport.memory import MemoryNetwork

__all__ = [
    "CONTRACT",
    "Cluster",
    "ContractCheck",
    "ContractCounter",
    "Supervisor",
    "cluster",
    "until",
]
"""``Supervisor`` runs a config's topologies over a membership, such as an
:class:`~pycluster.InMemoryNetwork`'s: how a strategy plugin's tests run it."""

FORM_TIMEOUT = 10.0
"""Seconds a cluster has to mesh and sync (on entering, and in heal())."""


class ContractCounter(Actor):
    """The actor the checks register: counts, and says where it runs."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    async def handle_call(self, message: Any) -> Any:
        if message == "increment":
            self.value += 1
        elif message == "where":
            return self.node.name
        elif message == "fail" or message == ["fail-on", self.node.name]:
            raise ValueError("asked to fail")
        return self.value

    async def handle_cast(self, message: Any) -> None:
        if message == "increment":
            self.value += 1


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` until it holds; the seconds it took. AssertionError naming
    ``what`` after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:.1f} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def _refused(
    kind: type[AlreadyRegistered], attempt: Awaitable[object], what: str
) -> AlreadyRegistered:
    """The ``kind`` error ``attempt`` raised; AssertionError naming ``what`` if it did not."""
    try:
        await attempt
    except kind as exc:
        return exc
    raise AssertionError(what)


class Cluster:
    """Nodes in one process over an in-memory network (see :func:`cluster`)."""

    def __init__(self, nodes: list[Node], network: MemoryNetwork) -> None:
        self.nodes = nodes
        """The nodes, in the order of their names (``node1@memory``, ``node2@memory``, ...)."""
        self.network = network
        """The in-memory network between them."""
        self._down: set[str] = set()

    def alive(self) -> list[Node]:
        """The nodes neither killed nor stopped."""
        return [n for n in self.nodes if n.started and n.name not in self._down]

    async def wait_meshed(self, timeout: float = FORM_TIMEOUT) -> None:
        """Return once every node that is alive and not paused is connected to every other
        such node and its registry is synced (AssertionError after ``timeout``)."""
        live = [n for n in self.alive() if not self.network.paused(n.name)]
        names = {n.name for n in live}
        await until(
            lambda: all(set(n.nodes()) >= names - {n.name} and n.ready() for n in live),
            timeout,
            "a full, synced mesh",
        )

    async def partition(self, *sides: Iterable[Node]) -> None:
        """Cut every link between nodes of different ``sides``; returns once both ends of
        every cut link have seen the other down. Cut pairs stay apart until :meth:`heal`."""
        groups = [[n.name for n in side] for side in sides]
        self.network.partition(*groups)
        cut = [
            (a, b)
            for i, side in enumerate(groups)
            for other in groups[i + 1 :]
            for a in side
            for b in other
        ]
        by_name = {n.name: n for n in self.nodes}
        await until(
            lambda: all(
                b not in by_name[a].nodes() and a not in by_name[b].nodes() for a, b in cut
            ),
            FORM_TIMEOUT,
            "both sides of the partition see each other down",
        )

    async def heal(self) -> None:
        """Undo every partition, reconnect each pair that was cut, and return once the
        mesh of live nodes is whole and synced."""
        by_name = {n.name: n for n in self.alive()}
        for a, b in self.network.heal():
            if a in by_name and b in by_name:
                await by_name[a].connect(b)
        await self.wait_meshed()

    async def kill(self, node: Node) -> None:
        """Kill ``node`` abruptly, as ``kill -9``: its peers see it down at once and it
        says nothing to anyone; its actors end with it."""
        self._down.add(node.name)
        self.network.kill(node.name)
        await node.stop()

    async def pause(self, node: Node) -> None:
        """Freeze ``node``'s links, as ``SIGSTOP``: nothing it sends or is sent arrives,
        and each peer sees it down after its net tick timeout. (Its own code keeps
        running: it is in this process.)"""
        self.network.pause(node.name)

    async def resume(self, node: Node) -> None:
        """Thaw ``node``: links its peers have not given up on deliver what was held; on
        the others it finds the connection closed. Reconnecting is discovery's business
        (or :meth:`heal`'s, or ``node.connect``)."""
        self.network.resume(node.name)


@contextlib.asynccontextmanager
async def cluster(
    n: int = 3,
    *,
    config: Mapping[str, Any] | None = None,
    cookie: str | None = None,
    **node_options: Any,
) -> AsyncIterator[Cluster]:
    """Start ``n`` nodes over an in-memory network, connected in a full mesh with their
    registries synced; stop them on leaving::

        async with pycluster.testing.cluster(3) as c:
            a, b, c3 = c.nodes
            await a.registry.spawn("counter", Counter)
            await c.partition([a], [b, c3])

    ``config`` is a config mapping as in YAML (its ``node.name`` is set per node, e.g.
    ``{"node": {"net_tick_timeout": 1}, "registry": {"backend": "crdt"}}``); topologies are
    dropped (the cluster connects its nodes itself). ``node_options`` go to each
    :class:`~pycluster.node.Node` (``plugins``, ``policy``, ...).
    """
    if n < 1:
        raise ValueError(f"a cluster has at least one node, not {n}")
    base = copy.deepcopy(dict(config or {}))
    base.pop("topologies", None)
    node_section = dict(base.get("node") or {})
    network = MemoryNetwork(port=int(node_section.get("port", 9100)))
    secret = cookie or secrets.token_urlsafe(24)
    nodes = []
    for index in range(1, n + 1):
        mapping = {**base, "node": {**node_section, "name": f"node{index}@memory"}}
        nodes.append(
            Node(load_config(mapping, env={}), cookie=secret, network=network, **node_options)
        )
    made = Cluster(nodes, network)
    try:
        for node in nodes:
            await node.start()
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                await a.connect(b.name)
        await made.wait_meshed()
        yield made
    finally:
        for node in nodes:
            await node.stop()


def _replication_timeout(node: Node) -> float:
    # A write is visible on every node within a few round trips; 5 s is generous.
    return 5.0 + node.registry.backend.forget_after


@attrs.frozen
class ContractCheck:
    """One behaviour every backend has: ``run`` gets ``nodes`` meshed, ready nodes."""

    name: str
    nodes: int
    run: Callable[[list[Node]], Awaitable[None]]

    def __str__(self) -> str:
        return self.name


async def _names_and_groups_on_one_node(nodes: list[Node]) -> None:
    (node,) = nodes
    registry = node.registry
    ref = await registry.spawn("counter", ContractCounter, 5)
    assert registry.whereis("counter") == ref
    assert registry.registered() == {"counter": ref}
    refused = await _refused(
        AlreadyStarted, registry.spawn("counter", ContractCounter), "a second spawn succeeded"
    )
    assert refused.ref == ref
    assert await registry.call("counter", "increment") == 6
    other = node.actors.spawn(ContractCounter)
    refused = await _refused(
        AlreadyRegistered, registry.register("counter", other), "registering a taken name"
    )
    assert refused.ref == ref
    await registry.register("other", other)
    await registry.join("workers", ref)
    await registry.join("workers", other)
    await until(lambda: registry.members("workers") == sorted([ref, other]), 5, "group join")
    await registry.leave("workers", ref)
    await until(lambda: registry.members("workers") == [other], 5, "group leave")
    await node.actors.stop(ref)
    await until(lambda: registry.whereis("counter") is None, 5, "a stopped actor's name")
    try:
        await registry.call("counter", "value")
    except NotRegistered:
        pass
    else:
        raise AssertionError("a call to an unregistered name was answered")
    await registry.unregister("other")
    await until(lambda: registry.whereis("other") is None, 5, "unregister")
    assert node.status()["registry"]["backend"] == registry.backend.name


async def _a_name_is_seen_and_callable_everywhere(nodes: list[Node]) -> None:
    ref = await nodes[1].registry.spawn("counter", ContractCounter)
    await until(
        lambda: all(n.registry.whereis("counter") == ref for n in nodes),
        _replication_timeout(nodes[0]),
        "a spawned name visible on every node",
    )
    for node in nodes:
        assert await node.registry.call("counter", "where") == nodes[1].name
    for node in nodes:
        spawn = node.registry.spawn("counter", ContractCounter)
        refused = await _refused(AlreadyStarted, spawn, f"{node.name} started a second one")
        assert refused.ref == ref


async def _concurrent_spawns_have_one_winner(nodes: list[Node]) -> None:
    for round_ in range(10):
        name = f"singleton-{round_}"
        results = await asyncio.gather(
            *(n.registry.spawn(name, ContractCounter) for n in nodes), return_exceptions=True
        )
        winners = [r for r in results if isinstance(r, ActorRef)]
        losers = [r for r in results if isinstance(r, AlreadyStarted)]
        assert len(winners) == 1, results
        assert len(losers) == len(nodes) - 1, results
        assert all(loser.ref == winners[0] for loser in losers), results
        # A spawn after the winner returned sees it, on every node.
        for node in nodes:
            spawn = node.registry.spawn(name, ContractCounter)
            refused = await _refused(AlreadyStarted, spawn, f"{node.name} won {name!r} again")
            assert refused.ref == winners[0]


async def _a_stopped_node_takes_its_names_with_it(nodes: list[Node]) -> None:
    leaving = nodes[-1]
    await leaving.registry.spawn("doomed", ContractCounter)
    await leaving.registry.join("crew", leaving.actors.spawn(ContractCounter))
    await until(
        lambda: all(n.registry.whereis("doomed") and n.registry.members("crew") for n in nodes),
        _replication_timeout(nodes[0]),
        "a name and a group member visible on every node",
    )
    forget_after = leaving.registry.backend.forget_after
    await leaving.stop()
    rest = nodes[:-1]
    await until(
        lambda: all(
            n.registry.whereis("doomed") is None and not n.registry.members("crew") for n in rest
        ),
        forget_after + 1.0,
        "a stopped node's names and group members gone",
    )
    ref = await rest[0].registry.spawn("doomed", ContractCounter)
    assert ref.node == rest[0].name


async def _groups_span_the_cluster(nodes: list[Node]) -> None:
    refs = [node.actors.spawn(ContractCounter) for node in nodes]
    for node, ref in zip(nodes, refs, strict=True):
        await node.registry.join("workers", ref)
    timeout = _replication_timeout(nodes[0])
    await until(
        lambda: all(n.registry.members("workers") == sorted(refs) for n in nodes),
        timeout,
        "every member seen by every node",
    )
    await nodes[0].registry.leave("workers", refs[0])
    await until(
        lambda: all(n.registry.members("workers") == sorted(refs[1:]) for n in nodes),
        timeout,
        "a member that left gone everywhere",
    )


async def _an_ended_actor_is_unregistered_everywhere(nodes: list[Node]) -> None:
    ref = await nodes[0].registry.spawn("short-lived", ContractCounter)
    timeout = _replication_timeout(nodes[0])
    await until(
        lambda: all(n.registry.whereis("short-lived") == ref for n in nodes), timeout, "visible"
    )
    await nodes[0].actors.stop(ref)
    await until(
        lambda: all(n.registry.whereis("short-lived") is None for n in nodes),
        timeout,
        "an ended actor's name gone everywhere",
    )
    again = await nodes[1].registry.spawn("short-lived", ContractCounter)
    assert again.node == nodes[1].name


async def _next_events(stream: EventStream, count: int, timeout: float) -> list[Any]:
    """The next ``count`` events of ``stream`` (AssertionError after ``timeout``)."""
    found: list[Any] = []

    async def take() -> None:
        async for event in stream:
            found.append(event)
            if len(found) == count:
                return

    try:
        await asyncio.wait_for(take(), timeout)
    except TimeoutError:
        raise AssertionError(f"{count} events expected within {timeout} s, got {found}") from None
    return found


def _shape(event: RegistryEvent | EventsLost) -> tuple[Any, ...]:
    """An event without its reason or metadata: what every backend reports alike."""
    match event:
        case Registered(name, ref) | Unregistered(name, ref):
            return (type(event).__name__, name, ref)
        case Joined(group, ref) | Left(group, ref):
            return (type(event).__name__, group, ref)
    return (type(event).__name__,)


async def _metadata_groups_events_and_scopes_on_one_node(nodes: list[Node]) -> None:
    node = nodes[0]
    registry = node.registry
    async with registry.events() as stream:
        ref = await registry.spawn("meta", ContractCounter, meta={"zone": "a", "n": [1, 2]})
        found = registry.lookup("meta")
        assert found is not None
        assert found.ref == ref
        assert found.meta == {"zone": "a", "n": [1, 2]}
        assert registry.lookup("nobody") is None
        again = await registry.spawn("meta", ContractCounter, if_exists="return")
        assert again == ref
        await registry.update_meta("meta", {"zone": "b"})
        await until(
            lambda: (found := registry.lookup("meta")) is not None and found.meta == {"zone": "b"},
            5,
            "updated metadata",
        )
        other = node.actors.spawn(ContractCounter)
        await registry.register("other", other, meta=7)
        await registry.join("workers", ref, meta={"weight": 2})
        await registry.join("workers", other)
        await until(lambda: registry.count("workers") == 2, 5, "two members")
        assert registry.memberships("workers") == {ref: {"weight": 2}, other: None}
        assert registry.local_members("workers") == sorted([ref, other])
        assert registry.which_groups(ref) == ["workers"]
        assert await registry.publish("workers", "increment") == 2
        await until(
            lambda: all(node.actors.local(r).value == 1 for r in (ref, other)),  # type: ignore[union-attr]
            5,
            "a published message at every member",
        )
        replies, failures = await registry.multi_call("workers", "value")
        assert replies == {ref: 1, other: 1}
        assert failures == {}
        await registry.leave("workers", other)
        await node.actors.stop(ref)
        await until(
            lambda: registry.count("workers") == 0 and registry.whereis("meta") is None,
            5,
            "an ended actor's name and membership gone",
        )
        await registry.unregister("other")
        events = await _next_events(stream, 9, 5)
    assert [_shape(e) for e in events] == [
        ("Registered", "meta", ref),
        ("Registered", "meta", ref),
        ("Registered", "other", other),
        ("Joined", "workers", ref),
        ("Joined", "workers", other),
        ("Left", "workers", other),
        ("Unregistered", "meta", ref),
        ("Left", "workers", ref),
        ("Unregistered", "other", other),
    ], events
    by_kind = {_shape(e): e for e in events}
    assert by_kind[("Registered", "meta", ref)].meta == {"zone": "b"}
    assert by_kind[("Left", "workers", other)].reason == "left"
    assert by_kind[("Unregistered", "meta", ref)].reason == "normal"
    assert by_kind[("Left", "workers", ref)].reason == "normal"
    assert by_kind[("Unregistered", "other", other)].reason == "unregistered"
    # A member that fails is a failure of its own; the others reply.
    crasher = node.actors.spawn(ContractCounter)
    await registry.join("fragile", crasher)
    await registry.join("fragile", other)
    await until(lambda: registry.count("fragile") == 2, 5, "two fragile members")
    with_failure = registry.multi_call("fragile", ["fail-on", node.name], timeout=5)
    replies, failures = await with_failure
    assert replies == {}
    assert set(failures) == {crasher, other}
    await until(lambda: registry.count("fragile") == 0, 5, "crashed members gone")
    # Scopes: the same name in two scopes names two actors; each sees only its own.
    tenant = registry.scope("tenant")
    first = await registry.spawn("same", ContractCounter)
    second = await tenant.spawn("same", ContractCounter)
    assert first != second
    assert registry.whereis("same") == first
    assert tenant.whereis("same") == second
    assert "same" in registry.registered()
    assert tenant.registered() == {"same": second}
    await tenant.join("crew", second)
    await until(lambda: tenant.members("crew") == [second], 5, "a scoped member")
    assert registry.members("crew") == []
    assert tenant.groups() == ["crew"]
    assert "crew" not in registry.groups()
    await tenant.unregister("same")
    await until(lambda: tenant.whereis("same") is None, 5, "a scoped unregister")
    assert registry.whereis("same") == first
    # A consumer that falls behind loses the oldest events, and is told how many.
    async with registry.events(backlog=2) as slow:
        for i in range(5):
            await registry.register(f"burst-{i}", first)
        await until(lambda: slow.pending() == 2, 5, "a full backlog")
        lost, *rest = await _next_events(slow, 3, 5)
    assert lost == EventsLost(3)
    assert [_shape(e) for e in rest] == [("Registered", f"burst-{i}", first) for i in (3, 4)]


async def _entries_end_with_their_actor_whoever_made_them(nodes: list[Node]) -> None:
    a, b, c = nodes[:3]
    ref = b.actors.spawn(ContractCounter)
    await a.registry.register("given", ref, meta="by a")
    await c.registry.join("team", ref, meta="by c")
    timeout = _replication_timeout(a)
    await until(
        lambda: all(
            n.registry.whereis("given") == ref and n.registry.members("team") == [ref]
            for n in nodes
        ),
        timeout,
        "a name and a membership given by other nodes, seen everywhere",
    )
    found = c.registry.lookup("given")
    assert found is not None
    assert found.meta == "by a"
    assert a.registry.memberships("team") == {ref: "by c"}
    await b.actors.stop(ref, "done")
    await until(
        lambda: all(
            n.registry.whereis("given") is None and n.registry.members("team") == [] for n in nodes
        ),
        timeout,
        "the ended actor's name and membership gone everywhere",
    )
    # Refused for an actor that is not running: nothing outlives it.
    try:
        await a.registry.register("ghost", ref)
    except Exception:
        pass
    else:
        raise AssertionError("a name was given to an actor that has ended")
    assert all(n.registry.whereis("ghost") is None for n in nodes)


async def _unregister_leave_and_update_from_any_node(nodes: list[Node]) -> None:
    a, b, c = nodes[:3]
    ref = b.actors.spawn(ContractCounter)
    await a.registry.register("anywhere", ref)
    await a.registry.join("anywhere", ref)
    timeout = _replication_timeout(a)
    await until(
        lambda: (
            all(n.registry.whereis("anywhere") == ref for n in nodes)
            and all(n.registry.members("anywhere") == [ref] for n in nodes)
        ),
        timeout,
        "registered and joined everywhere",
    )
    await c.registry.update_meta("anywhere", {"set": "by c"})
    await until(
        lambda: all(
            (f := n.registry.lookup("anywhere")) is not None and f.meta == {"set": "by c"}
            for n in nodes
        ),
        timeout,
        "metadata updated from a third node, seen everywhere",
    )
    async with a.registry.events() as stream:
        await c.registry.unregister("anywhere")
        await c.registry.leave("anywhere", ref)
        seen = await _next_events(stream, 2, timeout)
    assert sorted(map(_shape, seen)) == [
        ("Left", "anywhere", ref),
        ("Unregistered", "anywhere", ref),
    ]
    await until(
        lambda: all(
            n.registry.whereis("anywhere") is None and n.registry.members("anywhere") == []
            for n in nodes
        ),
        timeout,
        "unregistered and left everywhere",
    )
    assert b.actors.local(ref) is not None  # the actor keeps running
    try:
        await a.registry.update_meta("anywhere", 1)
    except NotRegistered:
        pass
    else:
        raise AssertionError("metadata of an unregistered name was updated")


async def _group_messages_reach_members_on_every_node(nodes: list[Node]) -> None:
    refs = [node.actors.spawn(ContractCounter) for node in nodes]
    for node, ref in zip(nodes, refs, strict=True):
        await nodes[0].registry.join("all", ref, meta=node.name)
    timeout = _replication_timeout(nodes[0])
    await until(
        lambda: all(n.registry.count("all") == len(nodes) for n in nodes),
        timeout,
        "every member seen everywhere",
    )
    for node, ref in zip(nodes, refs, strict=True):
        assert node.registry.local_members("all") == [ref]
        assert node.registry.which_groups(ref) == ["all"]
        assert nodes[-1].registry.memberships("all")[ref] == node.name
    assert await nodes[-1].registry.publish("all", "increment") == len(nodes)
    actors = [node.actors.local(ref) for node, ref in zip(nodes, refs, strict=True)]
    await until(
        lambda: all(getattr(actor, "value", None) == 1 for actor in actors),
        timeout,
        "a published message at every member",
    )
    replies, failures = await nodes[0].registry.multi_call("all", "value", timeout=5)
    assert failures == {}
    assert replies == dict.fromkeys(refs, 1)
    failing = ["fail-on", nodes[1].name]
    replies, failures = await nodes[0].registry.multi_call("all", failing, timeout=5)
    assert set(failures) == {refs[1]}
    assert replies == {ref: 1 for ref in refs if ref != refs[1]}


async def _every_node_hears_every_change(nodes: list[Node]) -> None:
    listener, actor_node = nodes[0], nodes[-1]
    async with listener.registry.events() as stream:
        ref = await actor_node.registry.spawn("heard", ContractCounter, meta=1)
        await actor_node.registry.join("heard", ref)
        await actor_node.registry.update_meta("heard", 2)
        await actor_node.registry.unregister("heard")
        await actor_node.actors.stop(ref)
        seen = await _next_events(stream, 5, _replication_timeout(listener))
    assert [_shape(e) for e in seen] == [
        ("Registered", "heard", ref),
        ("Joined", "heard", ref),
        ("Registered", "heard", ref),
        ("Unregistered", "heard", ref),
        ("Left", "heard", ref),
    ]
    assert [e.meta for e in seen if isinstance(e, Registered)] == [1, 2]


CONTRACT: list[ContractCheck] = [
    ContractCheck("names and groups on one node", 1, _names_and_groups_on_one_node),
    ContractCheck(
        "a name is seen and callable everywhere", 3, _a_name_is_seen_and_callable_everywhere
    ),
    ContractCheck("concurrent spawns have one winner", 3, _concurrent_spawns_have_one_winner),
    ContractCheck(
        "a stopped node takes its names with it", 3, _a_stopped_node_takes_its_names_with_it
    ),
    ContractCheck("groups span the cluster", 3, _groups_span_the_cluster),
    ContractCheck(
        "an ended actor is unregistered everywhere", 2, _an_ended_actor_is_unregistered_everywhere
    ),
    ContractCheck(
        "metadata, groups, events and scopes on one node",
        1,
        _metadata_groups_events_and_scopes_on_one_node,
    ),
    ContractCheck(
        "entries end with their actor, whoever made them",
        3,
        _entries_end_with_their_actor_whoever_made_them,
    ),
    ContractCheck(
        "unregister, leave and update from any node",
        3,
        _unregister_leave_and_update_from_any_node,
    ),
    ContractCheck(
        "group messages reach members on every node",
        3,
        _group_messages_reach_members_on_every_node,
    ),
    ContractCheck("every node hears every change", 2, _every_node_hears_every_change),
]
"""Every check of the registry contract."""
