"""Two registry fault scenarios, one trial at a time, on three running lab nodes.

Shared by ``tests/cluster/test_takeover.py`` (a few trials per run) and
``bench/takeover.py`` (the soak), so both drive exactly the same scenario. A trial
returns what the nodes said (refs, acknowledged replies, each node's registry and running
actors once the cluster settled); the caller judges it.

- :func:`frozen_takeover`: the first node holds a name and is frozen (``SIGSTOP``) until
  the others report it down; the name is taken over on their side (spawned again, or,
  for a ring actor, restarted by its heir), incremented, each increment acknowledged;
  then the node is thawed (``SIGCONT``).
- :func:`split_claims`: ``{a} | {b, c}`` cut with iptables; each side spawns the same new
  name; the cut is healed.

*Settled* is read from the nodes, never guessed from time: every node lists the other
two in ``/status`` and says its registry is synced, every node maps each watched name to
the same actor, exactly one actor runs under each watched name cluster-wide, on the node
that holds it (for a ring actor: on its ring owner).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import attrs

from pycluster import ring
from pycluster.actors.runtime import NoSuchActor
from pycluster.errors import NotConnected, RemoteError
from pycluster.registry import ActorRef
from tests.lab.lab import Lab
from tests.lab.node import LabNode
from tests.lab.polling import NotWithin, until

Placement = Literal["here", "ring"]

WRITES = 5
"""Increments each trial has acknowledged while the fault lasts, per name written."""
DETECT_TIMEOUT = 10.0
"""Seconds the survivors get to see the fault (tick timeout 1 s, with room for load)."""
SETTLE_TIMEOUT = 20.0
"""Seconds after the thaw or heal until the cluster must have settled."""
CALL_TIMEOUT = 2.0

CONTESTED = "x"
"""Frozen scenario: the name the frozen node held and the others took over."""
KEPT = "kept"
"""Frozen scenario: a name only the frozen node held, never claimed meanwhile."""
SPLIT = "y"
"""Partition scenario: the name each side claims on its own."""
LEFT, RIGHT = "left", "right"
"""Partition scenario: names held before the split on ``{a}`` and on ``{b, c}``."""


class Precondition(AssertionError):
    """The scenario could not be set up as described (not a verdict on the outcome)."""


class Client(Protocol):
    """What a trial asks of a hidden client node (tests.cluster.registry_client)."""

    async def spawn(
        self, via: LabNode, name: str, *, placement: str = ..., timeout: float = ...
    ) -> tuple[bool, ActorRef]: ...

    async def registered(self, via: LabNode) -> dict[str, ActorRef] | None: ...

    async def running(self, via: LabNode) -> list[str]: ...

    async def call(self, via: LabNode, name: str, message: Any, timeout: float = ...) -> Any: ...

    async def wait(self, ref: ActorRef) -> str: ...


@attrs.frozen
class Fate:
    """What the nodes say of one name, each node in the order the trial was given them."""

    holders: tuple[ActorRef | None, ...]
    """The actor each node routes the name to (None: not registered there)."""
    running: tuple[str, ...]
    """The node of every actor running under the name, once per actor."""
    values: tuple[object, ...]
    """Each node's answer to calling the name with ``"value"`` (an error: its text)."""

    @property
    def holder(self) -> ActorRef | None:
        """The actor every node routes the name to, if they agree (else None)."""
        holders = set(self.holders)
        return holders.pop() if len(holders) == 1 else None

    @property
    def held_twice(self) -> bool:
        """Two actors run under the name, or two nodes route it to different actors."""
        routed = {holder for holder in self.holders if holder is not None}
        return len(self.running) > 1 or len(routed) > 1

    def lost(self, acknowledged: int) -> int:
        """How many of ``acknowledged`` increments the name's counter no longer shows
        (through the node that shows the fewest; all of them if one shows no count)."""
        counts = [v for v in self.values if isinstance(v, int) and not isinstance(v, bool)]
        if len(counts) < len(self.values):
            return acknowledged
        return max(0, acknowledged - min(counts, default=0))


@attrs.frozen
class Frozen:
    """One frozen-node trial."""

    placement: Placement
    name: str
    """The contested name: :data:`CONTESTED`, or a ring actor's name the frozen node owns."""
    original: ActorRef
    """The frozen node's actor under :attr:`name`."""
    successor: ActorRef
    """The actor that held :attr:`name` on the other side while the node was frozen."""
    acknowledged: tuple[int, ...]
    """The successor's replies to the increments made while the node was frozen."""
    kept: ActorRef
    kept_acknowledged: tuple[int, ...]
    """Replies to the increments of :data:`KEPT` before the freeze."""
    frozen_for: float
    """Seconds from SIGSTOP to SIGCONT."""
    settled_after: float | None
    """Seconds from SIGCONT until settled (None: not within :data:`SETTLE_TIMEOUT`)."""
    fates: Mapping[str, Fate]
    """By :data:`CONTESTED` (whatever the ring actor's name was) and :data:`KEPT`."""
    original_end: str | None
    """Why the original actor ended (None: it is the settled holder, or still runs)."""
    successor_end: str | None
    """Why the successor ended (None: it is the settled holder, or still runs)."""

    @property
    def lost(self) -> int:
        """Acknowledged increments lost, both names together."""
        return self.fates[CONTESTED].lost(len(self.acknowledged)) + self.fates[KEPT].lost(
            len(self.kept_acknowledged)
        )

    @property
    def held_twice(self) -> int:
        """Names held twice once settled (or when the wait gave up)."""
        return sum(fate.held_twice for fate in self.fates.values())


@attrs.frozen
class Split:
    """One partition trial."""

    claims: tuple[ActorRef, ActorRef]
    """The actors :data:`SPLIT` was spawned as on ``{a}`` and on ``{b, c}``."""
    before: Mapping[str, ActorRef]
    """:data:`LEFT` and :data:`RIGHT`, held since before the split."""
    acknowledged: Mapping[str, tuple[int, ...]]
    """Replies to the increments of :data:`LEFT` and :data:`RIGHT` during the split, each
    through its own side."""
    settled_after: float | None
    """Seconds from the heal until settled (None: not within :data:`SETTLE_TIMEOUT`)."""
    fates: Mapping[str, Fate]
    ends: tuple[str | None, str | None]
    """Why each of :attr:`claims` ended (None: it is the settled holder, or still runs)."""

    @property
    def lost(self) -> int:
        """Acknowledged increments lost."""
        return sum(self.fates[n].lost(len(acks)) for n, acks in self.acknowledged.items())

    @property
    def held_twice(self) -> int:
        """Names held twice once settled (or when the wait gave up)."""
        return sum(fate.held_twice for fate in self.fates.values())


# -- the scenarios ----------------------------------------------------------------------------


async def frozen_takeover(
    lab: Lab, client: Client, nodes: Sequence[LabNode], *, placement: Placement
) -> Frozen:
    """Freeze ``nodes[0]`` past the tick timeout while it holds :data:`CONTESTED`, take
    the name over on the others, write to it, thaw, and wait until the cluster settles.

    ``placement="here"``: the name is spawned on the frozen node, then spawned again on
    ``nodes[1]`` once the survivors have dropped it. ``"ring"``: the name is a ring actor
    the frozen node owns; its heir restarts it on its own.
    """
    frozen, survivors = nodes[0], list(nodes[1:])
    members = {node.name for node in nodes}
    if placement == "ring":
        name_ring = _owned_by(frozen.name, members)
        won, original = await client.spawn(survivors[0], name_ring, placement="ring")
        contested = name_ring
    else:
        won, original = await client.spawn(frozen, CONTESTED)
        contested = CONTESTED
    _require(won and original.node == frozen.name, f"{contested} spawned on {original}")
    won, kept = await client.spawn(frozen, KEPT)
    _require(won, f"{KEPT} already held by {kept}")
    kept_acks = tuple(
        [await client.call(nodes[i % len(nodes)], KEPT, "increment") for i in range(2)]
    )
    await _wait_views(
        client,
        nodes,
        lambda v: v.get(contested) == original and v.get(KEPT) == kept,
        f"{contested} and {KEPT} seen on every node",
    )

    stopped = lab.send_signal(frozen, signal.SIGSTOP)
    await _wait_peers(lab, survivors, lambda node, peers: frozen.name not in peers, "down")
    if placement == "ring":
        heir = ring.owner(contested, {node.name for node in survivors})
        await _wait_views(
            client,
            survivors,
            lambda v: KEPT not in v and contested in v and v[contested].node == heir,
            f"{KEPT} dropped and {contested} restarted on its heir {heir}",
        )
        successor = (await _view(client, survivors[0]))[contested]
    else:
        await _wait_views(
            client,
            survivors,
            lambda v: contested not in v and KEPT not in v,
            f"{contested} and {KEPT} dropped by the survivors",
        )
        won, successor = await client.spawn(survivors[0], contested)
        _require(won, f"taking {contested} over: already held by {successor}")
    acknowledged = tuple(
        [
            await client.call(survivors[i % len(survivors)], contested, "increment")
            for i in range(WRITES)
        ]
    )
    thawed = lab.send_signal(frozen, signal.SIGCONT)

    owners = {contested: frozen.name} if placement == "ring" else {}
    settled = await _settle(lab, client, nodes, [contested, KEPT], owners, since=thawed)
    fates = await _fates(client, nodes, [contested, KEPT])
    holder = fates[contested].holder
    return Frozen(
        placement=placement,
        name=contested,
        original=original,
        successor=successor,
        acknowledged=acknowledged,
        kept=kept,
        kept_acknowledged=kept_acks,
        frozen_for=thawed - stopped,
        settled_after=settled,
        fates={CONTESTED: fates[contested], KEPT: fates[KEPT]},
        original_end=await _end(client, original, holder),
        successor_end=await _end(client, successor, holder),
    )


async def split_claims(lab: Lab, client: Client, nodes: Sequence[LabNode]) -> Split:
    """Cut ``nodes[0]`` off from the others, have each side spawn :data:`SPLIT`, write to
    names held since before the split on each side, heal, and wait until settled."""
    a, b, c = nodes
    won_left, left = await client.spawn(a, LEFT)
    won_right, right = await client.spawn(c, RIGHT)
    _require(won_left and won_right, f"{LEFT}: {left}, {RIGHT}: {right} were already held")
    await _wait_views(
        client,
        nodes,
        lambda v: v.get(LEFT) == left and v.get(RIGHT) == right,
        f"{LEFT} and {RIGHT} seen on every node",
    )

    lab.partition(a, b)
    lab.partition(a, c)
    expected: dict[str, set[str]] = {a.name: set(), b.name: {c.name}, c.name: {b.name}}
    await _wait_peers(lab, nodes, lambda node, peers: peers == expected[node.name], "apart")
    await _wait_views(client, [a], lambda v: RIGHT not in v, f"{a.name} dropped {RIGHT}")
    await _wait_views(client, [b, c], lambda v: LEFT not in v, f"{LEFT} dropped by b and c")

    (won_a, on_a), (won_b, on_b) = await asyncio.gather(
        client.spawn(a, SPLIT), client.spawn(b, SPLIT)
    )
    _require(won_a and won_b and on_a != on_b, f"{SPLIT} spawned as {on_a} ({won_a}), {on_b}")
    acknowledged = {
        LEFT: tuple([await client.call(a, LEFT, "increment") for _ in range(WRITES)]),
        RIGHT: tuple([await client.call(b, RIGHT, "increment") for _ in range(WRITES)]),
    }

    healed = time.monotonic()
    lab.heal(a, b)
    lab.heal(a, c)
    settled = await _settle(lab, client, nodes, [SPLIT, LEFT, RIGHT], {}, since=healed)
    fates = await _fates(client, nodes, [SPLIT, LEFT, RIGHT])
    holder = fates[SPLIT].holder
    ends = await asyncio.gather(_end(client, on_a, holder), _end(client, on_b, holder))
    return Split(
        claims=(on_a, on_b),
        before={LEFT: left, RIGHT: right},
        acknowledged=acknowledged,
        settled_after=settled,
        fates=fates,
        ends=(ends[0], ends[1]),
    )


# -- reading the nodes ------------------------------------------------------------------------


def _owned_by(node: str, members: set[str]) -> str:
    """A ring actor name whose owner among ``members`` is ``node``."""
    return next(f"r{i}" for i in range(10_000) if ring.owner(f"r{i}", members) == node)


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise Precondition(what)


async def _view(client: Client, node: LabNode) -> dict[str, ActorRef]:
    view = await client.registered(node)
    if view is None:
        raise Precondition(f"{node.name} did not answer for its registry")
    return view


async def _wait_views(
    client: Client,
    nodes: Sequence[LabNode],
    holds: Callable[[dict[str, ActorRef]], bool],
    what: str,
) -> None:
    """Wait until ``holds(registry)`` is true of every node's registry."""

    async def all_hold() -> bool:
        views = await asyncio.gather(*(client.registered(node) for node in nodes))
        return all(view is not None and holds(view) for view in views)

    await _until(all_hold, DETECT_TIMEOUT, what)


async def _wait_peers(
    lab: Lab, nodes: Sequence[LabNode], holds: Callable[[LabNode, set[str]], bool], what: str
) -> None:
    """Wait until ``holds(node, peers)`` is true of every node's ``/status`` peers."""

    async def all_hold() -> bool:
        views = await lab.views(nodes)
        return all(
            view is not None and holds(node, set(view))
            for node, view in zip(nodes, views, strict=True)
        )

    await _until(all_hold, DETECT_TIMEOUT, f"{', '.join(n.name for n in nodes)}: {what}")


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    try:
        await until(condition, timeout=timeout, interval=0.01, what=what)
    except NotWithin as exc:
        raise Precondition(str(exc)) from None


async def _running(client: Client, node: LabNode) -> list[str] | None:
    try:
        return await client.running(node)
    except (NotConnected, RemoteError, TimeoutError, ConnectionError):
        return None


async def _settle(
    lab: Lab,
    client: Client,
    nodes: Sequence[LabNode],
    names: Sequence[str],
    owners: Mapping[str, str],
    *,
    since: float,
) -> float | None:
    """Seconds from ``since`` until the cluster settled on ``names`` (see the module's
    docstring; ``owners``: ring actors and the node they must end up on), or None."""
    members = {node.name for node in nodes}

    async def settled() -> bool:
        statuses, views, running = await asyncio.gather(
            asyncio.gather(*(lab.try_status(node) for node in nodes)),
            asyncio.gather(*(client.registered(node) for node in nodes)),
            asyncio.gather(*(_running(client, node) for node in nodes)),
        )
        for node, status in zip(nodes, statuses, strict=True):
            if status is None or set(status["nodes"]) != members - {node.name}:
                return False
            if not status["registry"]["synced"]:
                return False
        if any(view is None for view in views) or any(r is None for r in running):
            return False
        for name in names:
            holders = {view.get(name) for view in views if view is not None}
            if len(holders) != 1:
                return False
            (holder,) = holders
            if holder is None or holder.node != owners.get(name, holder.node):
                return False
            hosts = [
                node.name
                for node, names_here in zip(nodes, running, strict=True)
                for n in names_here or ()
                if n == name
            ]
            if hosts != [holder.node]:
                return False
        return True

    try:
        done = await lab.until(settled, timeout=SETTLE_TIMEOUT, what="settled", interval=0.01)
    except NotWithin:
        return None
    return done - since


async def _fates(client: Client, nodes: Sequence[LabNode], names: Sequence[str]) -> dict[str, Fate]:
    """Each name's fate as the nodes tell it now."""
    views = await asyncio.gather(*(client.registered(node) for node in nodes))
    running = await asyncio.gather(*(_running(client, node) for node in nodes))
    fates = {}
    for name in names:
        values = await asyncio.gather(*(_value(client, node, name) for node in nodes))
        fates[name] = Fate(
            holders=tuple(None if view is None else view.get(name) for view in views),
            running=tuple(
                node.name
                for node, here in zip(nodes, running, strict=True)
                for n in here or ()
                if n == name
            ),
            values=tuple(values),
        )
    return fates


async def _value(client: Client, node: LabNode, name: str) -> object:
    try:
        return await client.call(node, name, "value", CALL_TIMEOUT)
    except (NotConnected, RemoteError, TimeoutError, ConnectionError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def _end(client: Client, ref: ActorRef, holder: ActorRef | None) -> str | None:
    """Why ``ref`` ended; None if it is ``holder``, or still runs."""
    if ref == holder:
        return None
    try:
        return await asyncio.wait_for(client.wait(ref), CALL_TIMEOUT)
    except TimeoutError:
        return None
    except (NotConnected, RemoteError, NoSuchActor, ConnectionError) as exc:
        return f"{type(exc).__name__}: {exc}"
