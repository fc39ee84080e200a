"""Ring placement over real loopback sockets (in one process): where ring actors run, how
they move with their state when nodes join and leave, and that a stopped one stays gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from pycluster import Plugins, hookimpl, load_config, ring
from pycluster.actors import ActorRestartPolicy
from pycluster.demo import Counter
from pycluster.node import Node
from pycluster.registry import ActorRef, AlreadyStarted, LocalRegistry, RegistryBackend
from pycluster.registry.messages import AlreadyRunning, Spec
from pycluster.registry.placement import ABSENT_GRACE
from tests.conftest import Memory, eventually, mesh, meshed

pytestmark = pytest.mark.usefixtures("memory_network")


COOKIE = "placement-test-cookie"
NAMES = [f"counter-{i}" for i in range(24)]


def make_node(index: int) -> Node:
    config = load_config(
        {"node": {"name": f"p{index}@127.0.6.{index + 2}", "net_tick_timeout": 1.0}}, env={}
    )
    return Node(config, cookie=COOKIE, network=Memory.network)


def where(nodes: list[Node], name: str) -> set[str | None]:
    """The node each of ``nodes`` sees ``name`` on."""
    return {(ref.node if (ref := n.registry.whereis(name)) else None) for n in nodes}


def settled(nodes: list[Node]) -> bool:
    """Every ring counter runs on its owner among ``nodes``, as every node sees it."""
    members = [n.name for n in nodes]
    return all(where(nodes, name) == {ring.owner(name, members)} for name in NAMES)


async def spawn_counted(nodes: list[Node]) -> None:
    """Spawn the ring counters of NAMES, each counted up to its index, once settled."""
    for name in NAMES:
        await nodes[0].registry.spawn(name, Counter, placement="ring")
    await eventually(lambda: settled(nodes))
    for count, name in enumerate(NAMES):
        for _ in range(count):
            await nodes[1].registry.call(name, "increment")


@pytest.fixture
async def three() -> AsyncIterator[list[Node]]:
    async with meshed([make_node(i) for i in range(3)]) as nodes:
        yield nodes


async def test_a_ring_actor_runs_on_its_owner_whoever_spawns_it(three: list[Node]) -> None:
    members = [n.name for n in three]
    for i, name in enumerate(NAMES):
        ref = await three[i % 3].registry.spawn(name, Counter, 10, placement="ring")
        assert ref.node == ring.owner(name, members)
    assert len({ring.owner(name, members) for name in NAMES}) == 3  # all nodes hold some
    await eventually(lambda: settled(three))
    for node in three:
        with pytest.raises(AlreadyStarted):
            await node.registry.spawn(NAMES[0], Counter, placement="ring")
        assert await node.registry.call(NAMES[0], "increment") > 10


async def test_ring_actors_move_with_their_state_when_a_node_joins_and_leaves(
    three: list[Node],
) -> None:
    await spawn_counted(three)

    async def values(via: Node) -> list[int]:
        return [await via.registry.call(name, "value") for name in NAMES]

    assert await values(three[2]) == list(range(len(NAMES)))
    newcomer = make_node(3)
    async with newcomer:
        four = [*three, newcomer]
        await mesh(four)
        await eventually(lambda: settled(four), timeout=10)
        moved = [n for n in NAMES if ring.owner(n, [x.name for x in four]) == newcomer.name]
        assert moved, "the newcomer owns some names"
        assert await values(three[0]) == list(range(len(NAMES)))
    # The newcomer left gracefully: what it held moved back, state and all.
    await eventually(lambda: settled(three), timeout=10)
    assert await values(three[1]) == list(range(len(NAMES)))


async def test_a_ring_actor_that_stops_normally_is_not_brought_back(three: list[Node]) -> None:
    ref = await three[0].registry.spawn("once", Counter, placement="ring")
    await eventually(lambda: all("once" in n.registry.ring.specs for n in three))
    owner = next(n for n in three if n.name == ref.node)
    await owner.actors.stop(ref)
    await eventually(lambda: all("once" not in n.registry.ring.specs for n in three))
    # Ring actors are restarted only from specs: with none left anywhere, it stays gone.
    await eventually(lambda: where(three, "once") == {None})


async def test_a_crashing_ring_actor_is_restarted_in_place_by_its_policy(
    three: list[Node],
) -> None:
    policy = ActorRestartPolicy(restart="permanent", max_restarts=5, window=10)
    ref = await three[1].registry.spawn("tough", Counter, placement="ring", policy=policy)
    await eventually(lambda: three[0].registry.whereis("tough") == ref)
    await three[0].registry.call("tough", "increment")
    with pytest.raises(Exception, match="understands"):
        await three[0].registry.call("tough", "junk")
    await eventually(lambda: three[2].registry.whereis("tough") == ref)
    assert await three[2].registry.call("tough", "value") == 0  # a restart starts afresh


async def test_placement_arguments_are_checked(three: list[Node]) -> None:
    with pytest.raises(ValueError, match="not both"):
        await three[0].registry.spawn("x", Counter, on=three[1].name, placement="ring")
    with pytest.raises(ValueError, match="unknown placement"):
        await three[0].registry.spawn("x", Counter, placement="moon")  # type: ignore[arg-type]


def test_a_spec_survives_the_wire_and_junk_is_refused() -> None:
    spec = Spec("c", "pycluster.demo:Counter", [1], {"value": 2}, ActorRestartPolicy(), "id1")
    assert Spec.from_wire(spec.to_wire()) == spec
    for junk in (None, [], ["c"] * 6, [*spec.to_wire()[:4], ["forever", 1, 1.0], "id1"]):
        with pytest.raises(ValueError):  # noqa: PT011 - each message names the problem
            Spec.from_wire(junk)


async def test_a_remote_spawn_may_ask_for_ring_placement(three: list[Node]) -> None:
    request = ["spawn", "remote-ring", "pycluster.demo:Counter", [5], {}, 2.0, "ring"]
    ref = await three[0].call(three[1].name, "$names", request)
    assert isinstance(ref, ActorRef)
    assert ref.node == ring.owner("remote-ring", [n.name for n in three])


# -- the sweep works only when something changed ---------------------------------------------


def quiet(nodes: list[Node]) -> bool:
    """Every ring actor on its owner, and nothing left for any node to check."""
    return settled(nodes) and all(n.registry.ring.idle for n in nodes)


def count_owner_computations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names ``ring.owner`` is asked about from now on."""
    asked: list[str] = []
    real = ring.owner

    def owner(name: str, members: Iterable[str]) -> str:
        asked.append(name)
        return real(name, members)

    monkeypatch.setattr(ring, "owner", owner)
    return asked


async def test_an_idle_node_does_no_placement_work(
    three: list[Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in NAMES:
        await three[0].registry.spawn(name, Counter, placement="ring")
    await eventually(lambda: quiet(three))
    asked = count_owner_computations(monkeypatch)
    checks = [n.registry.ring.checks for n in three]
    # Not a wait for something to happen but the test's subject, a quiet second: the
    # former loop computed every owner 10 times in it.
    await asyncio.sleep(1.0)
    assert asked == []
    assert [n.registry.ring.checks for n in three] == checks
    # A node joins: every owner may change, so every node checks every name again.
    async with make_node(3) as newcomer:
        four = [*three, newcomer]
        await mesh(four)
        await eventually(lambda: quiet(four), timeout=10)
        for node, before in zip(three, checks, strict=True):
            assert node.registry.ring.checks >= before + len(NAMES)
        again = [n.registry.ring.checks for n in three]
    # It left: that is a membership change too.
    await eventually(lambda: quiet(three), timeout=10)
    for node, before in zip(three, again, strict=True):
        assert node.registry.ring.checks >= before + len(NAMES)


async def test_a_peer_announcing_it_leaves_makes_every_name_checked(three: list[Node]) -> None:
    for name in NAMES:
        await three[0].registry.spawn(name, Counter, placement="ring")
    await eventually(lambda: quiet(three))
    before = three[0].registry.ring.checks
    three[1].send_nowait(three[0].name, "$names", ["ring-leaving"])
    await eventually(lambda: three[0].registry.ring.checks >= before + len(NAMES))
    assert three[1].name not in three[0].registry.ring.members()


async def test_a_released_ring_name_is_restarted_at_its_deadline_not_by_polling(
    three: list[Node],
) -> None:
    ref = await three[0].registry.spawn("lonely", Counter, placement="ring")
    owner = next(n for n in three if n.name == ref.node)
    await eventually(lambda: all(n.registry.whereis("lonely") == ref for n in three))
    await eventually(lambda: all(n.registry.ring.idle for n in three))
    checks = owner.registry.ring.checks
    released = time.monotonic()
    # Not a normal end: the spec stays, the name is released, and nobody saw a node die,
    # so the owner waits out the grace period before it starts the actor again.
    await owner.actors.stop(ref, "killed")
    await eventually(
        lambda: owner.registry.whereis("lonely") not in (None, ref), timeout=ABSENT_GRACE + 3
    )
    assert time.monotonic() - released >= ABSENT_GRACE - 0.05
    # Woken at the deadline: the release, the deadline and the check after the start
    # (polling every 0.1 s would have made some 20).
    assert owner.registry.ring.checks - checks <= 5


async def test_a_spec_learned_from_a_peer_is_checked_and_started_by_its_owner(
    three: list[Node],
) -> None:
    await eventually(lambda: all(n.registry.ring.idle for n in three))
    members = [n.name for n in three]
    name = next(
        f"taught-{i}" for i in range(1000) if ring.owner(f"taught-{i}", members) == three[0].name
    )
    checks = three[0].registry.ring.checks
    spec = Spec(name, "pycluster.demo:Counter", [7], {}, ActorRestartPolicy(), "taught")
    three[1].send_nowait(three[0].name, "$names", ["ring-specs", [[spec.to_wire(), None]]])
    # Nobody holds it and its host is unknown here: started once the grace period ends.
    await eventually(lambda: where(three, name) == {three[0].name}, timeout=ABSENT_GRACE + 3)
    assert await three[2].registry.call(name, "value") == 7
    assert three[0].registry.ring.checks - checks <= 5


class PolledLocal(LocalRegistry):
    """The local backend, as a backend that reports no changes would be."""

    name = "polled-local"
    reports_changes = False


class PolledBackend:
    @hookimpl
    def pycluster_register_registry_backends(self) -> Iterable[type[RegistryBackend]]:
        return [PolledLocal]


async def test_a_backend_that_reports_no_changes_is_polled() -> None:
    plugins = Plugins.load(entry_points=False, extra=[PolledBackend()])
    config = load_config(
        {"node": {"name": "p9@127.0.6.11"}, "registry": {"backend": "polled-local"}},
        env={},
        plugins=plugins,
    )
    async with Node(config, cookie=COOKIE, plugins=plugins, network=Memory.network) as node:
        await node.registry.spawn("polled", Counter, placement="ring")
        checks = node.registry.ring.checks
        await eventually(lambda: node.registry.ring.checks >= checks + 5)


async def test_a_leaving_node_hands_its_ring_actors_to_slow_owners_with_their_state(
    three: list[Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owners take longer to adopt than the leaving node's drain budget and than the
    grace after which a name with no holder is restarted afresh: every actor still
    arrives with its state, as a move in flight from a peer still connected."""
    await spawn_counted(three)
    leaver = three[2]
    held = [name for name in NAMES if where(three, name) == {leaver.name}]
    assert held, "the leaving node holds some"
    delay = ABSENT_GRACE + 0.5  # past the grace, and past the drain budget of stop(5.0)
    for owner in three[:2]:
        placement = owner.registry.ring
        adopt = placement._adopt

        async def slow_adopt(*args: Any, adopt: Any = adopt, **kwargs: Any) -> Any:
            await asyncio.sleep(delay)  # the duration under test: a loaded owner
            return await adopt(*args, **kwargs)

        monkeypatch.setattr(placement, "_adopt", slow_adopt)
    await leaver.stop(5.0)
    survivors = three[:2]
    await eventually(lambda: settled(survivors), timeout=15)
    values = [await survivors[0].registry.call(name, "value") for name in NAMES]
    assert values == list(range(len(NAMES)))


class SlowCounter(Counter):
    """A Counter with a message that takes a while ("slow")."""

    async def handle_call(self, message: Any) -> Any:
        if message == "slow":
            await asyncio.sleep(0.4)  # the duration under test: a message being handled
            return self.value
        return await super().handle_call(message)


async def test_a_move_whose_actor_stopped_late_is_not_cut_short_by_the_leave(
    three: list[Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leaving node's actor ends only as its drain time runs out (it was handling a
    message), and its owner at first answers that the name is still held: the move goes
    on past the drain time, and the actor arrives with its state."""
    leaver, survivors = three[2], three[:2]
    name = next(
        f"slow-{i}"
        for i in range(1000)
        if ring.owner(f"slow-{i}", [n.name for n in three]) == leaver.name
    )
    await three[0].registry.spawn(name, SlowCounter, placement="ring")
    await eventually(lambda: where(three, name) == {leaver.name})
    for _ in range(5):
        await three[0].registry.call(name, "increment")
    held = leaver.registry.whereis(name)
    assert held is not None
    began = time.monotonic()
    for owner in survivors:
        placement = owner.registry.ring
        adopt = placement._adopt

        async def still_held(*args: Any, adopt: Any = adopt, **kwargs: Any) -> Any:
            if time.monotonic() < began + 0.7:  # past the drain time of stop(1.0): 0.5 s
                return AlreadyRunning(held).to_wire()
            return await adopt(*args, **kwargs)

        monkeypatch.setattr(placement, "_adopt", still_held)
    slow = asyncio.ensure_future(three[0].registry.call(name, "slow"))
    await eventually(lambda: not slow.done() and leaver.actors.local(held) is not None)
    await leaver.stop(1.0)
    assert await slow == 5  # the message being handled was finished
    await eventually(lambda: None not in where(survivors, name), timeout=10)
    assert await survivors[0].registry.call(name, "value") == 5
