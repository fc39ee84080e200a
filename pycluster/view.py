"""The cluster as one node sees it: what the live page (``GET /``) and ``pycluster top`` draw.

A node answers two mailboxes (non-hidden nodes only):

- ``$view.self``: its own :meth:`ClusterView.facts`, which every node asks of each peer;
- ``$view``: the whole :meth:`ClusterView.snapshot`, as a plain msgpack value (a hidden
  client such as ``pycluster top`` calls it); ``GET /view`` serves the same as JSON.

The snapshot is this node's facts, the facts every connected peer gave when asked (all at
once, each within :data:`ASK_TIMEOUT`), the topologies, a registry summary and the recent
events. It is built at most once every :data:`REBUILD_INTERVAL` seconds and shared by every
viewer (concurrent requests wait for the one build); a node going up or down makes the next
request rebuild it sooner, but never within :data:`MIN_REBUILD_GAP` of the last build.

The snapshot's fields (all plain values: strings, numbers, booleans, null, lists, maps):

``node``
    This node's name (canonical).
``built_at``, ``build_seconds``
    When it was built (Unix time) and how long building it took.
``nodes``
    One map per node, sorted by name: this node, its peers, the nodes its peers see, and
    nodes seen going down in the last :data:`DOWN_MEMORY` seconds. Each has:

    - ``name``;
    - ``state``: ``"up"`` for this node and every node connected to it, else ``"down"``
      (as this node sees it: a peer it lost may still be up for others, see ``peers``);
    - ``self``: whether it is this node;
    - ``answered``: whether its facts below are known (this node, or a peer that
      answered in time); ``error``: why a connected peer's facts are missing, or null;
    - ``incarnation`` (hex), ``uptime`` (seconds since its view started), ``lag`` (its
      event loop's lag in seconds, last probe), ``tick_timeout`` (its
      ``node.net_tick_timeout``), ``peers`` (the nodes it is connected to, sorted),
      ``ticks`` (``{peer: {"silent": seconds since it last heard from that peer, or
      null when its transport does not tell}}``), ``actors`` (how many run there) and
      ``busiest`` (up to 10 ``[actor, messages waiting]``, fullest first: the name it was
      started under, else its ref): null when not ``answered``;
    - ``rtt``: seconds this node waited for that peer's facts (null for itself, and for a
      node it did not ask);
    - ``down_since`` (Unix time) and ``reason``: when and why this node lost it, for a
      ``down`` node it was connected to (null otherwise).

    Links are the ``peers`` lists: a link A→B is missing when A answered and B is not in
    its ``peers``.
``topologies``
    ``{name: {"strategy", "state", "problem", ...}}``, as ``/status`` has them.
``registry``
    ``backend``, ``synced``, ``names``, ``groups`` and ``members`` (counts),
    ``names_by_node`` (``{node: names its actors hold}``) and ``ring``: ``actors``
    (ring-placed actors known), ``by_node`` (``{node: {"owns": n, "runs": n}}``: names
    the hash ring gives it among this node's ring members, and ring actors it holds) and
    ``misplaced`` (ring actors not held by their owner, or not held at all).
``events``
    The last :data:`EVENT_CAPACITY` events this node saw, oldest first, each a map with
    ``seq`` (increasing), ``at`` (Unix time), ``kind`` and ``text`` (one line for people),
    plus the kind's fields: ``nodeup`` (``peer``), ``nodedown`` (``peer``, ``reason``),
    ``name_conflict`` (``name``, ``winner``, ``loser``: nodes), ``handoff`` (``name``,
    ``source``, ``target``: a ring actor moved between connected nodes) and
    ``ring_restart`` (``name``, ``source``, ``target``: restarted elsewhere after its node
    was lost).

Names and groups are not in the snapshot (a registry may hold many): :meth:`names_page`
and :meth:`groups_page` serve them a page at a time, filtered by the server.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from pycluster import ring
from pycluster.actors.ref import ActorRef
from pycluster.events import NodeDown, NodeUp
from pycluster.registry import Registry
from pycluster.registry.events import NameConflict, Registered, RegistryEvent, Unregistered
from pycluster.registry.registry import SEPARATOR
from pycluster.transport.waist import NodeEvent, Transport

SELF_MAILBOX = "$view.self"
"""Each node's own facts (:meth:`ClusterView.facts`)."""
VIEW_MAILBOX = "$view"
"""The whole snapshot (:meth:`ClusterView.snapshot`), for hidden clients."""
REBUILD_INTERVAL = 1.0
"""Seconds a snapshot is served before it is built again."""
MIN_REBUILD_GAP = 0.2
"""Seconds between two builds at least, even when nodes go up and down meanwhile."""
ASK_TIMEOUT = 0.5
"""Seconds each peer has to give its facts; one that does not is shown without them."""
EVENT_CAPACITY = 200
"""Events the snapshot keeps (the oldest are dropped)."""
DOWN_MEMORY = 300.0
"""Seconds a node that went down stays in the snapshot (unless it comes back)."""
MAX_DOWN_NODES = 1000
"""Down nodes remembered at most (the longest gone are forgotten first)."""
MAX_PAGE = 200
"""Names (or groups) in one page at most."""
MAX_GROUP_MEMBERS = 20
"""Members listed per group in a page (the count says how many there are)."""
MAX_TEXT = 300
"""Characters of a metadata value's text shown at most."""

LagReader = Callable[[], float | None]
Silence = Callable[[str], float | None]


def _meta_text(meta: Any) -> str | None:
    """A registration's metadata as text: a string as it is, anything else as JSON (or its
    repr); None for no metadata."""
    if meta is None:
        return None
    if isinstance(meta, str):
        text = meta
        return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
    try:
        text = json.dumps(meta, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(meta)  # a map with keys JSON cannot have (a list, say)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _split(key: str) -> tuple[str, str]:
    """A registry key as ``(scope, name)`` (scope ``""``: the default)."""
    scope, separator, name = key.partition(SEPARATOR)
    return (scope, name) if separator else ("", key)


def _page_bounds(offset: int, limit: int) -> tuple[int, int]:
    return max(0, offset), min(MAX_PAGE, max(1, limit))


class ClusterView:
    """Builds and caches the snapshot of one node (see the module doc).

    ``topologies`` returns the ``topologies`` object of ``/status``; ``lag`` this node's
    event-loop lag (seconds, None before the first probe); ``silence(peer)`` the seconds
    since the transport last heard from ``peer`` (None when it does not tell).
    """

    def __init__(
        self,
        transport: Transport,
        registry: Registry,
        *,
        topologies: Callable[[], dict[str, Any]],
        lag: LagReader,
        tick_timeout: float,
        silence: Silence | None = None,
        actors: Callable[[], tuple[int, list[tuple[str, int]]]] | None = None,
        ask_timeout: float = ASK_TIMEOUT,
        interval: float = REBUILD_INTERVAL,
    ) -> None:
        self._transport = transport
        self._registry = registry
        self._topologies = topologies
        self._lag = lag
        self._tick_timeout = tick_timeout
        self._silence = silence
        self._actors = actors
        self._ask_timeout = ask_timeout
        self._interval = interval
        self._started = time.monotonic()
        self._snapshot: dict[str, Any] | None = None
        self._built = -float("inf")
        """time.monotonic() when the cached snapshot's build started."""
        self._stale = False
        self._building: asyncio.Future[dict[str, Any]] | None = None
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENT_CAPACITY)
        self._seq = 0
        self._down: dict[str, tuple[float, str]] = {}
        """Nodes this node lost: (when, Unix time; why), oldest first."""
        self._holders: dict[str, str] = {}
        """The node last holding each ring-placed name (to tell a handoff)."""
        self._names: list[str] = []
        self._names_at = -float("inf")
        self._ring_members: tuple[str, ...] = ()
        self._ring_owner: dict[str, str] = {}
        self._unsubscribe: Callable[[], None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start recording events (node up/down, name conflicts, ring handoffs)."""
        self._started = time.monotonic()
        if self._unsubscribe is None:
            self._unsubscribe = self._transport.subscribe(self._on_node_event)
            self._registry.listeners.append(self._on_registry_events)

    def close(self) -> None:
        """Stop recording events."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
            self._registry.listeners.remove(self._on_registry_events)

    # -- events -----------------------------------------------------------------------------

    def _record(self, kind: str, text: str, **fields: Any) -> None:
        self._seq += 1
        self._events.append({"seq": self._seq, "at": time.time(), "kind": kind, "text": text})
        self._events[-1].update(fields)

    def _on_node_event(self, event: NodeEvent) -> None:
        if isinstance(event, NodeUp):
            self._down.pop(event.peer, None)
            self._record("nodeup", f"{event.peer} up", peer=event.peer)
        elif isinstance(event, NodeDown):
            self._down.pop(event.peer, None)  # re-inserted last: the newest down
            self._down[event.peer] = (time.time(), event.reason)
            while len(self._down) > MAX_DOWN_NODES:
                del self._down[next(iter(self._down))]
            self._record(
                "nodedown",
                f"{event.peer} down: {event.reason}",
                peer=event.peer,
                reason=event.reason,
            )
        self._stale = True

    def _on_registry_events(self, events: Sequence[tuple[str, RegistryEvent]]) -> None:
        if not self._registry.ring.specs and not self._holders:
            # No ring actor at all: only conflicts are recorded (a peer's batch of
            # registrations is looked at once, not per change).
            for scope, event in events:
                if type(event) is NameConflict:
                    self._on_registry_event(scope, event)
            return
        for scope, event in events:
            self._on_registry_event(scope, event)

    def _on_registry_event(self, scope: str, event: RegistryEvent) -> None:
        if isinstance(event, NameConflict):
            self._record(
                "name_conflict",
                f"name conflict on {event.name!r}: {event.winner.node} kept it, "
                f"{event.loser.node} lost it",
                name=event.name,
                winner=event.winner.node,
                loser=event.loser.node,
            )
            return
        if not isinstance(event, (Registered, Unregistered)):
            return
        key = f"{scope}{SEPARATOR}{event.name}" if scope else event.name
        if key not in self._registry.ring.specs:
            self._holders.pop(key, None)
            return
        if isinstance(event, Unregistered):
            return  # remember the holder: the next registration tells where it went
        source, target = self._holders.get(key), event.ref.node
        self._holders[key] = target
        if source is None or source == target:
            return
        if source in self._transport.nodes() or source == self._transport.name:
            self._record(
                "handoff",
                f"ring actor {event.name!r} moved from {source} to {target}",
                name=event.name,
                source=source,
                target=target,
            )
        else:
            self._record(
                "ring_restart",
                f"ring actor {event.name!r} restarted on {target} ({source} was lost)",
                name=event.name,
                source=source,
                target=target,
            )

    # -- this node's facts ------------------------------------------------------------------

    def facts(self) -> dict[str, Any]:
        """This node's own facts (the ``$view.self`` answer): ``name``, ``incarnation``,
        ``uptime``, ``lag``, ``tick_timeout``, ``peers``, ``ticks``, ``actors`` and
        ``busiest``."""
        peers = self._transport.nodes()
        silence = self._silence
        running, busiest = self._actors() if self._actors is not None else (None, [])
        return {
            "actors": running,
            "busiest": [[actor, depth] for actor, depth in busiest],
            "name": self._transport.name,
            "incarnation": self._transport.incarnation.hex(),
            "uptime": time.monotonic() - self._started,
            "lag": self._lag(),
            "tick_timeout": self._tick_timeout,
            "peers": peers,
            "ticks": {
                peer: {"silent": None if silence is None else silence(peer)} for peer in peers
            },
        }

    # -- the snapshot -----------------------------------------------------------------------

    async def snapshot(self) -> dict[str, Any]:
        """The snapshot (module doc): the cached one while fresh, else one build shared by
        every caller waiting meanwhile."""
        now = time.monotonic()
        age = now - self._built
        fresh = age < (MIN_REBUILD_GAP if self._stale else self._interval)
        if self._snapshot is not None and fresh:
            return self._snapshot
        if self._building is None:
            self._building = asyncio.ensure_future(self._build())
            self._building.add_done_callback(self._built_one)
        return await asyncio.shield(self._building)

    def _built_one(self, future: asyncio.Future[dict[str, Any]]) -> None:
        self._building = None
        if not future.cancelled() and future.exception() is None:
            self._snapshot = future.result()

    async def _build(self) -> dict[str, Any]:
        started = time.monotonic()
        self._built, self._stale = started, False
        mine = self.facts()
        peers: list[str] = mine["peers"]
        answers = await asyncio.gather(*(self._ask(peer) for peer in peers))
        nodes: dict[str, dict[str, Any]] = {mine["name"]: self._entry(mine, rtt=None)}
        for peer, (facts, rtt, error) in zip(peers, answers, strict=True):
            if facts is None:
                nodes[peer] = self._unknown(peer, "up", error=error, rtt=rtt)
            else:
                nodes[peer] = self._entry(facts, rtt=rtt, name=peer)
        cutoff = time.time() - DOWN_MEMORY
        for name, (since, reason) in list(self._down.items()):
            if since < cutoff:
                del self._down[name]
            elif name not in nodes:
                entry = self._unknown(name, "down")
                entry.update(down_since=since, reason=reason)
                nodes[name] = entry
        for entry in list(nodes.values()):
            for seen in entry["peers"] or ():
                if seen not in nodes:
                    nodes[seen] = self._unknown(seen, "down", reason="not connected to this node")
        return {
            "node": mine["name"],
            "built_at": time.time(),
            "build_seconds": time.monotonic() - started,
            "nodes": [nodes[name] for name in sorted(nodes)],
            "topologies": self._topologies(),
            "registry": self._registry_summary(),
            "events": list(self._events),
        }

    async def _ask(self, peer: str) -> tuple[dict[str, Any] | None, float | None, str | None]:
        """A peer's facts, how long they took, and why they are missing."""
        started = time.monotonic()
        try:
            answer = await self._transport.call(peer, SELF_MAILBOX, None, self._ask_timeout)
        except TimeoutError:
            return None, None, f"no answer within {self._ask_timeout} s"
        except Exception as exc:  # NotConnected, RemoteError (an older node): shown as such
            return None, None, f"{type(exc).__name__}: {exc}"[:MAX_TEXT]
        rtt = time.monotonic() - started
        if not _valid_facts(answer):
            return None, rtt, "its answer is not a node's facts"
        facts: dict[str, Any] = answer
        return facts, rtt, None

    @staticmethod
    def _entry(
        facts: dict[str, Any], *, rtt: float | None, name: str | None = None
    ) -> dict[str, Any]:
        """A node's entry from its facts; ``name`` is the one this node knows it by."""
        return {
            "name": name or facts["name"],
            "state": "up",
            "self": name is None,
            "answered": True,
            "error": None,
            "incarnation": facts["incarnation"],
            "uptime": facts["uptime"],
            "lag": facts["lag"],
            "tick_timeout": facts["tick_timeout"],
            "peers": sorted(facts["peers"]),
            "ticks": facts["ticks"],
            "actors": facts.get("actors"),
            "busiest": facts.get("busiest") or [],
            "rtt": rtt,
            "down_since": None,
            "reason": None,
        }

    @staticmethod
    def _unknown(
        name: str,
        state: str,
        *,
        error: str | None = None,
        rtt: float | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        return {
            "name": name,
            "state": state,
            "self": False,
            "answered": False,
            "error": error,
            "incarnation": None,
            "uptime": None,
            "lag": None,
            "tick_timeout": None,
            "peers": None,
            "ticks": None,
            "actors": None,
            "busiest": None,
            "rtt": rtt,
            "down_since": None,
            "reason": reason,
        }

    def _registry_summary(self) -> dict[str, Any]:
        backend = self._registry.backend
        registered = backend.registered()
        groups = backend.groups()
        by_node = collections.Counter(ref.node for ref in registered.values())
        specs = self._registry.ring.specs
        members = tuple(self._registry.ring.members())
        owner_of = self._owners(members, specs)
        owns: collections.Counter[str] = collections.Counter(owner_of[name] for name in specs)
        runs: collections.Counter[str] = collections.Counter()
        misplaced = 0
        for name in specs:
            ref = registered.get(name)
            if ref is not None:
                runs[ref.node] += 1
            if ref is None or owner_of[name] != ref.node:
                misplaced += 1
        return {
            "backend": backend.name,
            "synced": backend.synced(),
            "names": len(registered),
            "groups": len(groups),
            "members": sum(len(backend.memberships(group)) for group in groups),
            "names_by_node": dict(sorted(by_node.items())),
            "ring": {
                "actors": len(specs),
                "by_node": {
                    node: {"owns": owns[node], "runs": runs[node]}
                    for node in sorted(set(members) | set(runs))
                    if node
                },
                "misplaced": misplaced,
            },
        }

    def _owners(self, members: tuple[str, ...], specs: dict[str, Any]) -> dict[str, str]:
        """The ring owner of each ring-placed name (``""``: nobody may own it). Hashing is
        the costly part, so owners are kept while the members stay the same."""
        if self._ring_members != members:
            self._ring_members, self._ring_owner = members, {}
        known = self._ring_owner
        if len(known) > 2 * len(specs) + 100:
            known = self._ring_owner = {name: known[name] for name in specs if name in known}
        placed = ring.Members(members)
        for name in specs:
            if name not in known:
                known[name] = placed.owner(name) if members else ""
        return known

    # -- names and groups, a page at a time -------------------------------------------------

    def _sorted_names(self) -> list[str]:
        now = time.monotonic()
        if now - self._names_at >= self._interval:
            self._names = sorted(self._registry.backend.registered())
            self._names_at = now
        return self._names

    def names_page(self, query: str = "", offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """Registered names (every scope) whose scope or name contains ``query`` (case
        insensitive), sorted, ``limit`` (at most :data:`MAX_PAGE`) from ``offset``:
        ``{"total", "matched", "offset", "limit", "names": [{"scope", "name", "node",
        "actor", "meta", "placement", "owner"}]}``. ``meta`` is the metadata as text (or
        null); ``placement`` is ``"ring"`` or ``"direct"``; ``owner`` is the ring's owner
        of a ring-placed name (null otherwise). The sorted list is refreshed once every
        :data:`REBUILD_INTERVAL` seconds at most."""
        offset, limit = _page_bounds(offset, limit)
        keys = self._sorted_names()
        matched = _filtered(keys, query)
        backend = self._registry.backend
        specs = self._registry.ring.specs
        members = self._registry.ring.members()
        rows = []
        for key in matched[offset : offset + limit]:
            found = backend.lookup(key)
            if found is None:
                continue  # gone since the list was sorted
            scope, name = _split(key)
            ring_placed = key in specs
            rows.append(
                {
                    "scope": scope,
                    "name": name,
                    "node": found.ref.node,
                    "actor": found.ref.id,
                    "meta": _meta_text(found.meta),
                    "placement": "ring" if ring_placed else "direct",
                    "owner": ring.owner(key, members) if ring_placed and members else None,
                }
            )
        return {
            "total": len(keys),
            "matched": len(matched),
            "offset": offset,
            "limit": limit,
            "names": rows,
        }

    def groups_page(self, query: str = "", offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """Process groups (every scope) whose scope or name contains ``query``, sorted, a
        page as :meth:`names_page`: ``{"total", "matched", "offset", "limit", "groups":
        [{"scope", "name", "count", "members": [{"node", "actor", "meta"}]}]}``, with the
        first :data:`MAX_GROUP_MEMBERS` members of each group."""
        offset, limit = _page_bounds(offset, limit)
        backend = self._registry.backend
        keys = backend.groups()
        matched = _filtered(keys, query)
        rows = []
        for key in matched[offset : offset + limit]:
            memberships = backend.memberships(key)
            scope, name = _split(key)
            first: list[tuple[ActorRef, Any]] = sorted(memberships.items())[:MAX_GROUP_MEMBERS]
            rows.append(
                {
                    "scope": scope,
                    "name": name,
                    "count": len(memberships),
                    "members": [
                        {"node": ref.node, "actor": ref.id, "meta": _meta_text(meta)}
                        for ref, meta in first
                    ],
                }
            )
        return {
            "total": len(keys),
            "matched": len(matched),
            "offset": offset,
            "limit": limit,
            "groups": rows,
        }


def _filtered(keys: list[str], query: str) -> list[str]:
    """The keys whose scope or name contains ``query``, case insensitive."""
    if not query:
        return keys
    needle = query.casefold()
    return [key for key in keys if needle in key.casefold()]


def _valid_facts(answer: object) -> bool:
    """Whether a peer's answer has the shape of :meth:`ClusterView.facts` (a peer is
    authenticated, but may run another version)."""
    if not isinstance(answer, dict):
        return False
    return (
        isinstance(answer.get("name"), str)
        and isinstance(answer.get("incarnation"), str)
        and isinstance(answer.get("uptime"), int | float)
        and isinstance(answer.get("lag"), int | float | None)
        and isinstance(answer.get("tick_timeout"), int | float)
        and isinstance(answer.get("peers"), list)
        and all(isinstance(peer, str) for peer in answer["peers"])
        and isinstance(answer.get("ticks"), dict)
    )
