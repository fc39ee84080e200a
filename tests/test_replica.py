"""The crdt registry's core: replicas that merge snapshots and changes converge (each
message through its wire form and back, as between nodes)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycluster.registry.events import Registered, Unregistered
from pycluster.registry.messages import Change, Claim, Snapshot, decode_registry_message
from pycluster.registry.refs import ActorRef, Entry, first_claim_wins
from pycluster.registry.replica import (
    CLOCK_JUMP,
    CLOCK_LIMIT,
    DEPARTED_KEPT,
    MAX_DEPARTED,
    ClockRejected,
    Replica,
)
from tests.hyp import wire_integers

NODES = ["a@127.0.0.2", "b@127.0.0.3", "c@127.0.0.4"]
NAMES = ["counter", "leader", "cache"]

actions = st.lists(
    st.tuples(
        st.sampled_from(NODES),
        st.sampled_from(["register", "unregister", "join", "leave"]),
        st.sampled_from(NAMES),
    ),
    max_size=25,
)


def receive(replica: Replica, peer: str, body: object) -> None:
    """What a node does with a ``$registry`` body from ``peer``: through msgpack, decoded,
    then loaded or applied."""
    message = decode_registry_message(msgpack.unpackb(msgpack.packb(body)))
    if isinstance(message, Snapshot):
        replica.load(peer, message)
    else:
        assert not isinstance(message, Claim)
        replica.apply(peer, message)


class Cluster:
    """Replicas connected pairwise; messages queued per ordered pair (FIFO, like TCP)."""

    def __init__(self) -> None:
        self.replicas = {node: Replica(node) for node in NODES}
        self.queues: dict[tuple[str, str], list[Snapshot | Change]] = {}
        self.serial = 0

    def connect_all(self) -> None:
        for a in NODES:
            for b in NODES:
                if a != b:
                    self.queues[(a, b)] = [self.replicas[a].snapshot()]

    def broadcast(self, sender: str, change: Change | None) -> None:
        if change is None:
            return
        for (a, _), queue in self.queues.items():
            if a == sender:
                queue.append(change)

    def act(self, node: str, action: str, name: str) -> None:
        replica = self.replicas[node]
        self.serial += 1
        ref = ActorRef(node, f"x{self.serial}")
        if action == "register" and name not in replica.own():
            self.broadcast(node, replica.register(name, ref))
        elif action == "unregister":
            self.broadcast(node, replica.unregister(name))
        elif action == "join":
            self.broadcast(node, replica.join(name, ActorRef(node, name)))
        elif action == "leave":
            self.broadcast(node, replica.leave(name, ActorRef(node, name)))

    def deliver_one(self, pair: tuple[str, str]) -> None:
        message = self.queues[pair].pop(0)
        sender, receiver = pair
        receive(self.replicas[receiver], sender, message.to_wire())

    def drain(self) -> None:
        for pair, queue in self.queues.items():
            while queue:
                self.deliver_one(pair)


@given(actions, st.data())
def test_replicas_converge_whatever_the_interleaving(
    steps: list[tuple[str, str, str]], data: st.DataObject
) -> None:
    cluster = Cluster()
    cluster.connect_all()
    for node, action, name in steps:
        cluster.act(node, action, name)
        # Deliver some queued messages, in per-pair order, at arbitrary moments.
        pending = [pair for pair, queue in cluster.queues.items() if queue]
        if pending and data.draw(st.booleans()):
            cluster.deliver_one(data.draw(st.sampled_from(pending)))
    cluster.drain()
    views = [replica.names() for replica in cluster.replicas.values()]
    assert all(view == views[0] for view in views)
    groups = [[r.members(g) for g in NAMES] for r in cluster.replicas.values()]
    assert all(g == groups[0] for g in groups)
    # Every name has exactly one winner, and only the owners of losing claims are told.
    for name, ref in views[0].items():
        winners = [
            n for n, r in cluster.replicas.items() if name in r.own() and r.own()[name].ref == ref
        ]
        assert len(winners) == 1
    lost = {(e.name, e.ref) for r in cluster.replicas.values() for e in r.lost()}
    owned = {(e.name, e.ref) for r in cluster.replicas.values() for e in r.own().values()}
    assert lost == owned - set(views[0].items())
    # Each replica's events, replayed in order, tell where every name ended up.
    for replica in cluster.replicas.values():
        told: dict[str, ActorRef] = {}
        for event in replica.take_events():
            if isinstance(event, Registered):
                told[event.name] = event.ref
            elif isinstance(event, Unregistered):
                assert told.pop(event.name) == event.ref
        assert told == replica.names()


def test_a_node_that_goes_down_takes_its_names_with_it() -> None:
    cluster = Cluster()
    cluster.connect_all()
    cluster.act(NODES[1], "register", "counter")
    cluster.drain()
    assert cluster.replicas[NODES[0]].whereis("counter") == ActorRef(NODES[1], "x1")
    assert cluster.replicas[NODES[0]].drop(NODES[1]) == ["counter"]
    assert cluster.replicas[NODES[0]].whereis("counter") is None


def test_a_node_down_hands_a_contested_name_to_its_rival() -> None:
    observer, b, c = (Replica(node) for node in NODES)
    b.register("solo", ActorRef(NODES[1], "solo"))
    b.register("shared", ActorRef(NODES[1], "shared"))
    c.lamport = 10  # c had not heard of b (a partition): b's claim of "shared" is earlier
    c.register("shared", ActorRef(NODES[2], "shared"))
    c.register("mine", ActorRef(NODES[2], "mine"))
    observer.load(NODES[1], b.snapshot())
    observer.load(NODES[2], c.snapshot())
    observer.take_events()
    assert observer.drop(NODES[1]) == ["solo"]
    assert [(type(e).__name__, e.name, e.ref.node) for e in observer.take_events()] == [
        ("Unregistered", "solo", NODES[1]),
        ("Unregistered", "shared", NODES[1]),
        ("Registered", "shared", NODES[2]),
    ]
    assert observer.names() == {
        "shared": ActorRef(NODES[2], "shared"),
        "mine": ActorRef(NODES[2], "mine"),
    }
    assert observer.departed("solo") is not None
    assert observer.departed("shared") is None  # c still holds it
    assert observer.drop(NODES[2]) == ["shared", "mine"]
    assert observer.names() == {}
    assert observer.departed("shared") == c.own()["shared"]


def test_a_node_back_forgets_its_departed_entries_and_only_its_own() -> None:
    observer, b, c = (Replica(node) for node in NODES)
    b.register("b-name", ActorRef(NODES[1], "1"))
    c.register("c-name", ActorRef(NODES[2], "1"))
    observer.load(NODES[1], b.snapshot())
    observer.load(NODES[2], c.snapshot())
    observer.drop(NODES[1])
    observer.drop(NODES[2])
    observer.load(NODES[1], Replica(NODES[1]).snapshot())  # b is back, without its name
    assert observer.departed("b-name") is None
    assert observer.departed("c-name") == c.own()["c-name"]
    # A claim of a departed name supersedes the departed holder, and forgets it.
    entry = observer.register("c-name", ActorRef(NODES[0], "1")).entry
    assert entry.supersedes == (ActorRef(NODES[2], "1"),)
    assert observer.departed("c-name") is None
    observer.load(NODES[2], Replica(NODES[2]).snapshot())
    assert observer.whereis("c-name") == ActorRef(NODES[0], "1")


def test_departed_entries_are_bounded_and_the_oldest_forgotten_first() -> None:
    count = MAX_DEPARTED + 1000
    peer = Replica(NODES[1])
    for i in range(count):
        peer.register(f"n{i}", ActorRef(NODES[1], f"x{i}"))
    replica = Replica(NODES[0])
    replica.load(NODES[1], peer.snapshot())
    assert len(replica.drop(NODES[1])) == count
    remembered = [i for i in range(count) if replica.departed(f"n{i}") is not None]
    assert DEPARTED_KEPT <= len(remembered) <= MAX_DEPARTED
    assert remembered == list(range(count - len(remembered), count))  # the newest ones


def test_a_snapshot_replaces_the_senders_slice() -> None:
    replica = Replica(NODES[0])
    old = Replica(NODES[1])
    old.register("counter", ActorRef(NODES[1], "old"))
    replica.load(NODES[1], old.snapshot())
    restarted = Replica(NODES[1])  # the same name, a new life: nothing registered yet
    replica.load(NODES[1], restarted.snapshot())
    assert replica.names() == {}
    replica.load(NODES[1], restarted.snapshot())  # idempotent
    assert replica.names() == {}


def test_the_earlier_claim_wins_everywhere() -> None:
    a, b = Replica(NODES[0]), Replica(NODES[1])
    first = a.register("leader", ActorRef(NODES[0], "1"))
    b.lamport = 5  # b has not heard of a (a partition) and has a later clock
    b.register("leader", ActorRef(NODES[1], "2"))
    a.load(NODES[1], b.snapshot())
    b.load(NODES[0], a.snapshot())
    assert first.entry.lamport == 1
    assert a.whereis("leader") == b.whereis("leader") == ActorRef(NODES[0], "1")
    assert [e.name for e in b.lost()] == ["leader"]
    assert a.lost() == []


def test_a_custom_resolver_picks_the_winner() -> None:
    def latest_wins(x: Entry, y: Entry) -> Entry:
        return x if first_claim_wins(x, y) is y else y

    a, b = Replica(NODES[0], latest_wins), Replica(NODES[1], latest_wins)
    a.register("leader", ActorRef(NODES[0], "1"))
    b.lamport = 5
    b.register("leader", ActorRef(NODES[1], "2"))
    a.load(NODES[1], b.snapshot())
    assert a.whereis("leader") == ActorRef(NODES[1], "2")
    assert [e.name for e in a.lost()] == ["leader"]


@pytest.mark.parametrize(
    "snapshot",
    [
        {"entries": "x", "groups": {}},
        {"entries": [[1, 2, 3, 4]], "groups": {}},
        {"entries": [["n", "a", "b", -1]], "groups": {}},
        {"entries": [], "groups": []},
        {"entries": [], "groups": {"g": [["only-node"]]}},
        {"entries": [["n", "a", "b", 1], ["n", "a", "c", 2]], "groups": {}},
    ],
)
def test_malformed_snapshots_change_nothing(snapshot: dict[str, Any]) -> None:
    replica = Replica(NODES[0])
    good = Replica(NODES[1])
    good.register("counter", ActorRef(NODES[1], "1"))
    replica.load(NODES[1], good.snapshot())
    with pytest.raises(ValueError, match=r"expected|entry|ref|map|repeat"):
        receive(replica, NODES[1], ["snap", {"lamport": 1, **snapshot}])
    assert replica.whereis("counter") == ActorRef(NODES[1], "1")


# -- Lamport times from peers are bounded --------------------------------------------------


def forged(where: str, peer: str, lamport: int) -> list[Any]:
    """A snapshot or change from ``peer`` carrying ``lamport`` in the place named."""
    if where == "snapshot":
        return ["snap", {"lamport": lamport, "entries": [["forged", peer, "f1", 0]], "groups": {}}]
    entry = ["forged", peer, "f1", lamport]
    if where == "entry":
        return ["snap", {"lamport": 1, "entries": [entry], "groups": {}}]
    return ["op", {"op": "reg", "e": entry}]


def state(replica: Replica) -> tuple[object, ...]:
    return replica.lamport, replica.names(), replica.peers(), replica.own()


@given(
    st.integers(0, CLOCK_LIMIT - 1),
    st.sampled_from(["snapshot", "entry", "op"]),
    st.data(),
)
def test_a_peers_clock_is_adopted_only_within_bounds(
    local: int, where: str, data: st.DataObject
) -> None:
    # Around the jump bound as often as anywhere else on the wire.
    near_jump = st.integers(-2, 2).map(lambda d: local + CLOCK_JUMP + d)
    value = data.draw(wire_integers | near_jump.filter(lambda v: v < 2**64), label="lamport")
    replica, peer = Replica(NODES[0]), Replica(NODES[1])
    replica.lamport = local
    peer.register("counter", ActorRef(NODES[1], "1"))
    replica.load(NODES[1], peer.snapshot())
    before = state(replica)
    if 0 <= value < CLOCK_LIMIT and value <= replica.lamport + CLOCK_JUMP:
        receive(replica, NODES[1], forged(where, NODES[1], value))
        # A snapshot's own clock is adopted, not its entries' (it is at least theirs).
        adopted = before[0] if where == "entry" else max(before[0], value)
        assert replica.lamport == adopted
        assert replica.whereis("forged") == ActorRef(NODES[1], "f1")
    else:
        with pytest.raises(ValueError, match=r"(?i)lamport time") as refused:
            receive(replica, NODES[1], forged(where, NODES[1], value))
        # Out of bounds is told apart from malformed (a negative time), for the metrics.
        assert isinstance(refused.value, ClockRejected) == (value >= 0)
        assert state(replica) == before
    # Whatever a peer sent, this node can still claim, and send the claim and its slice.
    change = replica.register("next", ActorRef(NODES[0], "2"))
    msgpack.packb(change.to_wire())
    msgpack.packb(replica.snapshot().to_wire())


@pytest.mark.parametrize("lamport", [None, True, "7", 7.0, -1])
def test_a_snapshot_without_a_proper_clock_is_malformed(lamport: object) -> None:
    replica = Replica(NODES[0])
    snapshot: dict[str, Any] = {"entries": [], "groups": {}}
    if lamport is not None:
        snapshot["lamport"] = lamport
    with pytest.raises(ValueError, match="Lamport time") as refused:
        receive(replica, NODES[1], ["snap", snapshot])
    assert not isinstance(refused.value, ClockRejected)
    assert replica.peers() == []


@pytest.mark.parametrize("name", [42, ("a", "b"), None, "\ud800"])
def test_a_name_no_peer_could_receive_is_refused_before_anything_changes(name: Any) -> None:
    replica = Replica(NODES[0])
    with pytest.raises(ValueError, match=r"string|Unicode"):
        replica.register(name, ActorRef(NODES[0], "1"))
    with pytest.raises(ValueError, match=r"string|Unicode"):
        replica.join(name, ActorRef(NODES[0], "1"))
    assert (replica.lamport, replica.own(), replica.snapshot().groups) == (0, {}, {})


def test_a_node_that_has_heard_no_peer_adopts_a_clock_far_ahead_then_bounds_jumps() -> None:
    """A node started into a long-lived cluster (billions of claims so far) can join it;
    once it holds a peer's clock, a jump beyond CLOCK_JUMP is refused."""
    veteran, fresh = Replica(NODES[1]), Replica(NODES[0])
    veteran.lamport = 5 * CLOCK_JUMP
    veteran.register("counter", ActorRef(NODES[1], "1"))
    fresh.load(NODES[1], veteran.snapshot())
    assert fresh.lamport == 5 * CLOCK_JUMP + 1
    assert fresh.whereis("counter") == ActorRef(NODES[1], "1")
    with pytest.raises(ClockRejected):
        fresh.load(NODES[2], Snapshot(7 * CLOCK_JUMP, (), {}))
    with pytest.raises(ClockRejected):
        Replica(NODES[0]).load(NODES[1], Snapshot(CLOCK_LIMIT, (), {}))


@pytest.mark.parametrize(
    "wire",
    [
        ["n", "a", "b", True],
        ["n", "a", "b", -1],
        ["n", "a", "b", 1.0],
        [1, "a", "b", 1],
        ["n", ["a"], "b", 1],
        ["n", "a", None, 1],
        ("n", "a", "b", 1),
        ["n", "a", "b"],
    ],
)
def test_an_entry_that_is_not_one_is_refused(wire: object) -> None:
    with pytest.raises(ValueError, match=r"(?i)entry|ref|lamport|name"):
        Entry.from_wire(wire)


def test_an_entry_comes_back_from_its_wire_form() -> None:
    ref, was = ActorRef("a", "1"), ActorRef("b", "2")
    for entry in (Entry("n", ref, 3), Entry("n", ref, 0, {"k": 1}, (was,))):
        assert Entry.from_wire(msgpack.unpackb(msgpack.packb(entry.to_wire()))) == entry
