"""The replicated registry state of one node, with no I/O (the ``crdt`` backend's core).

Each node is the only writer of its own registrations (its *slice*). It sends its whole
slice to a peer when they connect and every later change, in order, over that peer's
connection; it keeps each peer's slice exactly as that peer sent it. So a join is a
merge that waits for nobody: a snapshot replaces the sender's slice (idempotent), and a
node that goes down takes its slice with it (a restarted node has a new incarnation and
sends a fresh, empty slice: its previous life's names never come back).

When two slices hold the same name (claimed on both sides of a partition), every node
picks the same winner with a pure resolution function of the two entries; the node
holding the loser is told (:meth:`Replica.lost`) and stops it.

It speaks the messages of :mod:`~pycluster.registry.messages`: its changes return the
:data:`~pycluster.registry.messages.Change` to send to every peer, and it takes decoded
snapshots and changes (decoding refused what is malformed). A Lamport time out of bounds
raises :class:`ClockRejected` before anything changes (the backend then refuses the
peer). The bounds keep this node's own clock sendable: msgpack carries integers below
2**64, and a clock that reached that could never claim again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from pycluster.actors.ref import ActorRef
from pycluster.registry.messages import (
    Change,
    Joined,
    Left,
    Registered,
    Snapshot,
    Unregistered,
)
from pycluster.registry.refs import Entry, first_claim_wins

Resolve = Callable[[Entry, Entry], Entry]

CLOCK_LIMIT = 2**63
"""Lamport times from peers must stay below this: this node would need 2**63 claims of its
own to run from here past what msgpack can send."""
CLOCK_JUMP = 2**32
"""How far past this node's clock a peer's Lamport time may be, once this node has adopted
one from a peer. Honest clocks are moved by claims, one at a time: no cluster makes four
billion of them between two messages. A node that has heard no peer yet (just started)
adopts any time below CLOCK_LIMIT: a long-lived cluster's clock may be far ahead of 0."""


class ClockRejected(ValueError):
    """A peer sent a Lamport time this node refuses to adopt (see CLOCK_LIMIT, CLOCK_JUMP)."""


class Replica:
    """Registrations and group memberships: this node's own, and each peer's."""

    def __init__(self, me: str, resolve: Resolve = first_claim_wins) -> None:
        self.me = me
        self.lamport = 0
        self._heard = False
        """Whether this node adopted a Lamport time from a peer yet (see CLOCK_JUMP)."""
        self._resolve = resolve
        self._own: dict[str, Entry] = {}
        self._peers: dict[str, dict[str, Entry]] = {}
        self._own_groups: dict[str, set[ActorRef]] = {}
        self._peer_groups: dict[str, dict[str, set[ActorRef]]] = {}
        self._candidates: dict[str, list[Entry]] = {}
        self._key = functools.cmp_to_key(self._compare)

    # -- reads ------------------------------------------------------------------------------

    def whereis(self, name: str) -> ActorRef | None:
        """The actor registered as ``name`` (the winner, if several claim it)."""
        candidates = self._candidates.get(name)
        return candidates[0].ref if candidates else None

    def names(self) -> dict[str, ActorRef]:
        """Every registered name and its actor."""
        return {name: entries[0].ref for name, entries in self._candidates.items()}

    def count(self) -> int:
        """How many names are registered."""
        return len(self._candidates)

    def owns(self, name: str) -> bool:
        """Whether this node registered ``name`` itself."""
        return name in self._own

    def own(self) -> dict[str, Entry]:
        """This node's own registrations."""
        return dict(self._own)

    def members(self, group: str) -> list[ActorRef]:
        """Members of ``group`` on every node, sorted."""
        found = set(self._own_groups.get(group, ()))
        for groups in self._peer_groups.values():
            found |= groups.get(group, set())
        return sorted(found)

    def lost(self, names: Iterable[str] | None = None) -> list[Entry]:
        """This node's own entries (among ``names``, if given) that lose to another node's
        claim of the same name."""
        own = self._own if names is None else {n: self._own[n] for n in names if n in self._own}
        return [entry for name, entry in own.items() if self._candidates[name][0] != entry]

    # -- this node's changes (each returns the change to send to every peer) -------------

    def register(self, name: str, ref: ActorRef) -> Registered:
        """Record this node's claim of ``name``; ValueError if it already holds it, or if
        ``name`` is not a string (every peer must be able to receive it)."""
        _sendable(name)
        if name in self._own:
            raise ValueError(f"this node already registered {name!r}")
        self.lamport += 1
        entry = Entry(name, ref, self.lamport)
        self._own[name] = entry
        self._add(entry)
        return Registered(entry)

    def unregister(self, name: str, ref: ActorRef | None = None) -> Unregistered | None:
        """Drop this node's registration of ``name`` (only if it names ``ref``, if given)."""
        entry = self._own.get(name)
        if entry is None or (ref is not None and entry.ref != ref):
            return None
        del self._own[name]
        self._remove(entry)
        return Unregistered(name)

    def join(self, group: str, ref: ActorRef) -> Joined | None:
        """Add ``ref`` to ``group``; None if it was a member already."""
        _sendable(group)
        members = self._own_groups.setdefault(group, set())
        if ref in members:
            return None
        members.add(ref)
        return Joined(group, ref)

    def leave(self, group: str, ref: ActorRef) -> Left | None:
        """Remove ``ref`` from ``group``; None if it was not a member."""
        members = self._own_groups.get(group)
        if not members or ref not in members:
            return None
        members.discard(ref)
        if not members:
            del self._own_groups[group]
        return Left(group, ref)

    def snapshot(self) -> Snapshot:
        """This node's whole slice, sent to a peer when they connect."""
        return Snapshot(
            self.lamport,
            tuple(self._own.values()),
            {group: frozenset(refs) for group, refs in self._own_groups.items()},
        )

    # -- what peers send --------------------------------------------------------------------

    def load(self, peer: str, snapshot: Snapshot) -> list[str]:
        """Replace ``peer``'s slice with its snapshot (ClockRejected if a Lamport time is
        out of bounds; nothing changes then); return the names whose registrations
        changed: those it holds now and held before."""
        self._clock(snapshot.lamport)
        for entry in snapshot.entries:
            self._clock(entry.lamport)
        self.lamport = max(self.lamport, snapshot.lamport)
        self._heard = True
        before = list(self._peers.get(peer, ()))
        self.drop(peer)
        slice_: dict[str, Entry] = {}
        self._peers[peer] = slice_
        for entry in snapshot.entries:
            old = slice_.get(entry.name)
            if old is not None:  # not from the wire (refused there), but keep one per name
                self._remove(old)
            slice_[entry.name] = entry
            self._add(entry)
        self._peer_groups[peer] = {group: set(refs) for group, refs in snapshot.groups.items()}
        return list(dict.fromkeys([*before, *slice_]))

    def apply(self, peer: str, change: Change) -> str | None:
        """Apply one change ``peer`` made to its slice (ValueError if it comes before the
        peer's snapshot, ClockRejected if its Lamport time is out of bounds; nothing
        changes then); return the name whose registration changed, if one did."""
        slice_ = self._peers.get(peer)
        if slice_ is None:
            raise ValueError(f"a change from {peer} before its snapshot")
        match change:
            case Registered(entry):
                self.lamport = max(self.lamport, self._clock(entry.lamport))
                self._heard = True
                old = slice_.get(entry.name)
                if old is not None:
                    self._remove(old)
                slice_[entry.name] = entry
                self._add(entry)
                return entry.name
            case Unregistered(name):
                old = slice_.pop(name, None)
                if old is not None:
                    self._remove(old)
                    return old.name
            case Joined(group, ref):
                self._peer_groups[peer].setdefault(group, set()).add(ref)
            case Left(group, ref):
                members = self._peer_groups[peer].get(group)
                if members is not None:
                    members.discard(ref)
                    if not members:
                        del self._peer_groups[peer][group]
        return None

    def drop(self, peer: str) -> list[str]:
        """Forget ``peer``'s slice (it went down); return the names that disappeared."""
        gone = []
        for entry in self._peers.pop(peer, {}).values():
            self._remove(entry)
            if entry.name not in self._candidates:
                gone.append(entry.name)
        self._peer_groups.pop(peer, None)
        return gone

    def peers(self) -> list[str]:
        """Peers whose slice this replica holds."""
        return sorted(self._peers)

    # -- internals --------------------------------------------------------------------------

    def _compare(self, a: Entry, b: Entry) -> int:
        if a == b:
            return 0
        return -1 if self._resolve(a, b) == a else 1

    def _add(self, entry: Entry) -> None:
        candidates = self._candidates.setdefault(entry.name, [])
        candidates.append(entry)
        if len(candidates) > 1:
            candidates.sort(key=self._key)

    def _remove(self, entry: Entry) -> None:
        candidates = self._candidates.get(entry.name)
        if candidates is None:
            return
        if entry in candidates:
            candidates.remove(entry)
        if not candidates:
            del self._candidates[entry.name]

    def _clock(self, lamport: int) -> int:
        """``lamport``, if it is a Lamport time this node may adopt from a peer (a
        decoded message's times are non-negative integers)."""
        if lamport >= CLOCK_LIMIT or (self._heard and lamport > self.lamport + CLOCK_JUMP):
            raise ClockRejected(
                f"Lamport time {lamport} is out of bounds (this node is at {self.lamport})"
            )
        return lamport


def _sendable(name: object) -> None:
    # Checked before this node's slice changes: a name no peer can receive would break
    # every later snapshot of the slice, and with it every connection.
    if not isinstance(name, str):
        raise ValueError(f"a registered name is a string, not {type(name).__name__}")
    try:
        name.encode()
    except UnicodeEncodeError:
        raise ValueError(f"name {name!r} is not valid Unicode text") from None
