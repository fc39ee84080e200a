"""The replicated registry state of one node, with no I/O (the ``crdt`` backend's core).

Each node is the only writer of its own registrations (its *slice*). It sends its whole
slice to a peer when they connect and every later change, in order, over that peer's
connection; it keeps each peer's slice exactly as that peer sent it. So a join is a
merge that waits for nobody: a snapshot replaces the sender's slice (idempotent), and a
node that goes down takes its slice with it (a restarted node has a new incarnation and
sends a fresh, empty slice: its previous life's names never come back).

Entries and memberships live in the slice of their actor's node, so they end with the
actor (its node removes them) or with the node (its slice goes).

A node that goes down leaves its entries behind as *departed*: a later claim of one of
those names records the departed holder (``Entry.supersedes``). If the departed node was
only frozen or cut off and comes back, its entry loses to the one that took over,
whatever the resolution rule says: what the new holder acknowledged meanwhile is kept.
When two slices hold the same name and neither took it over from the other (claimed on
both sides of a partition), every node picks the same winner with a pure resolution
function of the two entries. The node holding a loser is told (:meth:`Replica.lost`) and
stops it.

Every change to what this node sees (the winner of a name, a group's members) is also
recorded as a :mod:`~pycluster.registry.events` event, collected with
:meth:`Replica.take_events`.

It speaks the messages of :mod:`~pycluster.registry.messages`: its changes return the
:data:`~pycluster.registry.messages.Change` to send to every peer, and it takes decoded
snapshots and changes (decoding refused what is malformed). A Lamport time out of bounds
raises :class:`ClockRejected` before anything changes (the backend then refuses the
peer). The bounds keep this node's own clock sendable: msgpack carries integers below
2**64, and a clock that reached that could never claim again.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pycluster.actors.ref import ActorRef
from pycluster.registry import events
from pycluster.registry.messages import (
    Change,
    JoinOp,
    LeaveOp,
    RegOp,
    Snapshot,
    UnregOp,
)
from pycluster.registry.refs import MAX_SUPERSEDES, Entry, first_claim_wins

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


MAX_DEPARTED = 100_000
"""Departed entries remembered at most (the oldest are forgotten first)."""

DEPARTED_KEPT = MAX_DEPARTED - MAX_DEPARTED // 16
"""Departed entries kept when there are more than MAX_DEPARTED: the oldest are forgotten
a batch at a time, as forgetting them one at a time from the front of a dict scans the
holes the ones before left (about 10 µs a departure at the bound, against 1)."""


class Departed:
    """The last entry of each name whose node went down with it (see supersedes), at most
    MAX_DEPARTED of them, the oldest forgotten first; and which of them each node held,
    so that a node coming back forgets its own without a look at every other's."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._of: dict[str, set[str]] = {}

    def get(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def pop(self, name: str) -> Entry | None:
        """Forget ``name``'s departed entry, and return it."""
        entry = self._entries.pop(name, None)
        if entry is not None:
            node = entry.ref.node
            names = self._of[node]
            names.discard(name)
            if not names:
                del self._of[node]
        return entry

    def add(self, entries: Iterable[Entry]) -> None:
        """Remember ``entries`` as departed, as the newest ones (an older departed entry of
        the same name is forgotten)."""
        known = self._entries
        for entry in entries:
            name = entry.name
            if name in known:
                self.pop(name)
            known[name] = entry
            names = self._of.get(entry.ref.node)
            if names is None:
                names = self._of[entry.ref.node] = set()
            names.add(name)
        if len(known) > MAX_DEPARTED:
            kept = itertools.islice(known.items(), len(known) - DEPARTED_KEPT, None)
            self._entries = dict(kept)
            self._of = {}
            for name, entry in self._entries.items():
                self._of.setdefault(entry.ref.node, set()).add(name)

    def forget(self, node: str) -> None:
        """Forget the departed entries of ``node`` (it is back)."""
        for name in self._of.pop(node, ()):
            del self._entries[name]


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
        self._own_groups: dict[str, dict[ActorRef, Any]] = {}
        self._peer_groups: dict[str, dict[str, dict[ActorRef, Any]]] = {}
        self._winners: dict[str, Entry] = {}
        """The winning entry of each registered name."""
        self._rivals: dict[str, list[Entry]] = {}
        """Every entry of each name held by more than one slice, the winner first (most
        names have one holder: they cost the collector no list here)."""
        self._departed = Departed()
        self._events: list[events.RegistryEvent] = []
        self._key = functools.cmp_to_key(self._compare)

    # -- reads ------------------------------------------------------------------------------

    def whereis(self, name: str) -> ActorRef | None:
        """The actor registered as ``name`` (the winner, if several claim it)."""
        entry = self._winners.get(name)
        return entry.ref if entry is not None else None

    def lookup(self, name: str) -> Entry | None:
        """The winning entry of ``name``."""
        return self._winners.get(name)

    def names(self) -> dict[str, ActorRef]:
        """Every registered name and its actor."""
        return {name: entry.ref for name, entry in self._winners.items()}

    def count(self) -> int:
        """How many names are registered."""
        return len(self._winners)

    def owns(self, name: str) -> bool:
        """Whether this node registered ``name`` itself."""
        return name in self._own

    def own(self) -> dict[str, Entry]:
        """This node's own registrations."""
        return dict(self._own)

    def members(self, group: str) -> list[ActorRef]:
        """Members of ``group`` on every node, sorted."""
        return sorted(self.memberships(group))

    def memberships(self, group: str) -> dict[ActorRef, Any]:
        """Members of ``group`` on every node, with their metadata."""
        found = dict(self._own_groups.get(group, {}))
        for groups in self._peer_groups.values():
            found.update(groups.get(group, {}))
        return found

    def groups(self) -> list[str]:
        """Every group with at least one member."""
        found = set(self._own_groups)
        for groups in self._peer_groups.values():
            found.update(groups)
        return sorted(found)

    def own_groups(self, ref: ActorRef) -> list[str]:
        """The groups this node added ``ref`` to."""
        return [group for group, members in self._own_groups.items() if ref in members]

    def departed(self, name: str) -> Entry | None:
        """The entry ``name`` had when its node was last seen going down, if no one has
        claimed the name since."""
        return self._departed.get(name)

    def lost(self, names: Iterable[str] | None = None) -> list[Entry]:
        """This node's own entries (among ``names``, if given) that lose to another node's
        claim of the same name."""
        if not self._own:
            return []
        own = self._own if names is None else {n: self._own[n] for n in names if n in self._own}
        return [entry for name, entry in own.items() if self._winners[name] != entry]

    def take_events(self) -> Sequence[events.RegistryEvent]:
        """The events of the changes since the last call, in order."""
        if not self._events:
            return ()
        taken, self._events = self._events, []
        return taken

    # -- this node's changes (each returns the change to send to every peer) -------------

    def register(self, name: str, ref: ActorRef, meta: Any = None) -> RegOp:
        """Record this node's claim of ``name``; ValueError if it already holds it, or if
        ``name`` is not a string (every peer must be able to receive it). A claim of a
        name whose holder departed takes it over (see the module's doc)."""
        _sendable(name)
        if name in self._own:
            raise ValueError(f"this node already registered {name!r}")
        self.lamport += 1
        departed = self._departed.pop(name)
        supersedes: tuple[ActorRef, ...] = ()
        if departed is not None and departed.ref != ref:
            supersedes = (departed.ref, *departed.supersedes)[:MAX_SUPERSEDES]
        entry = Entry(name, ref, self.lamport, meta, supersedes)
        self._own[name] = entry
        self._add(entry)
        return RegOp(entry)

    def update_meta(self, name: str, meta: Any) -> RegOp | None:
        """Replace the metadata of this node's registration of ``name``; None if this
        node holds no such registration."""
        entry = self._own.get(name)
        if entry is None:
            return None
        updated = Entry(entry.name, entry.ref, entry.lamport, meta, entry.supersedes)
        self._own[name] = updated
        self._replace(entry, updated)
        return RegOp(updated)

    def unregister(
        self, name: str, ref: ActorRef | None = None, reason: str = "unregistered"
    ) -> UnregOp | None:
        """Drop this node's registration of ``name`` (only if it names ``ref``, if given)."""
        entry = self._own.get(name)
        if entry is None or (ref is not None and entry.ref != ref):
            return None
        del self._own[name]
        self._remove(entry, reason)
        return UnregOp(name, reason)

    def join(self, group: str, ref: ActorRef, meta: Any = None) -> JoinOp | None:
        """Add ``ref`` to ``group`` (or replace its metadata); None if it was a member
        with that metadata already."""
        _sendable(group)
        members = self._own_groups.setdefault(group, {})
        if ref in members and members[ref] == meta:
            return None
        members[ref] = meta
        self._events.append(events.Joined(group, ref, meta))
        return JoinOp(group, ref, meta)

    def leave(self, group: str, ref: ActorRef, reason: str = "left") -> LeaveOp | None:
        """Remove ``ref`` from ``group``; None if it was not a member."""
        members = self._own_groups.get(group)
        if not members or ref not in members:
            return None
        del members[ref]
        if not members:
            del self._own_groups[group]
        self._events.append(events.Left(group, ref, reason))
        return LeaveOp(group, ref, reason)

    def snapshot(self) -> Snapshot:
        """This node's whole slice, sent to a peer when they connect."""
        return Snapshot(
            self.lamport,
            tuple(self._own.values()),
            {group: dict(refs) for group, refs in self._own_groups.items()},
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
        old = self._peers.pop(peer, {})
        old_groups = self._peer_groups.pop(peer, {})
        slice_: dict[str, Entry] = {}
        self._peers[peer] = slice_
        for entry in snapshot.entries:
            slice_[entry.name] = entry
            previous = old.pop(entry.name, None)
            if previous is None:
                self._add(entry)
            elif previous != entry or previous.meta != entry.meta:
                self._replace(previous, entry)
        for entry in old.values():
            self._remove(entry, "resync")
        # The peer is back (or a new life of it): its entries are its snapshot's now.
        self._departed.forget(peer)
        groups = {group: dict(refs) for group, refs in snapshot.groups.items()}
        self._peer_groups[peer] = groups
        self._group_events(old_groups, groups, "resync")
        return list(dict.fromkeys([*old, *slice_]))

    def apply(self, peer: str, change: Change) -> str | None:
        """Apply one change ``peer`` made to its slice (ValueError if it comes before the
        peer's snapshot, ClockRejected if its Lamport time is out of bounds; nothing
        changes then); return the name whose registration changed, if one did."""
        slice_ = self._peers.get(peer)
        if slice_ is None:
            raise ValueError(f"a change from {peer} before its snapshot")
        if isinstance(change, RegOp):  # most changes: first, and without matching
            entry = change.entry
            lamport = entry.lamport
            if lamport > self.lamport:
                self.lamport = self._clock(lamport)  # _clock raises for a time out of bounds
            self._heard = True
            old = slice_.get(entry.name)
            slice_[entry.name] = entry
            if old is None:
                self._add(entry)
            else:
                self._replace(old, entry)
            return entry.name
        match change:
            case UnregOp(name, reason):
                old = slice_.pop(name, None)
                if old is not None:
                    self._remove(old, reason)
                    return old.name
            case JoinOp(group, ref, meta):
                members = self._peer_groups[peer].setdefault(group, {})
                members[ref] = meta
                self._events.append(events.Joined(group, ref, meta))
            case LeaveOp(group, ref, reason):
                had = self._peer_groups[peer].get(group)
                if had is not None and ref in had:
                    del had[ref]
                    if not had:
                        del self._peer_groups[peer][group]
                    self._events.append(events.Left(group, ref, reason))
        return None

    def drop(self, peer: str) -> list[str]:
        """Forget ``peer``'s slice (it went down); return the names that disappeared.
        Its entries are remembered as departed (see the module's doc)."""
        gone: list[str] = []
        departed: list[Entry] = []
        winners, rivals = self._winners, self._rivals
        emit = self._events.append
        for entry in self._peers.pop(peer, {}).values():
            name = entry.name
            if winners.get(name) is entry and name not in rivals:
                # The common case, inlined (a node down drops thousands of names at once):
                # what _remove does for a name only ``entry`` held.
                del winners[name]
                emit(events.Unregistered(name, entry.ref, "nodedown"))
            else:
                self._remove(entry, "nodedown")
                if name in winners:
                    continue
            gone.append(name)
            departed.append(entry)
        self._departed.add(departed)
        self._group_events(self._peer_groups.pop(peer, {}), {}, "nodedown")
        return gone

    def peers(self) -> list[str]:
        """Peers whose slice this replica holds."""
        return sorted(self._peers)

    # -- internals --------------------------------------------------------------------------

    def _compare(self, a: Entry, b: Entry) -> int:
        if a == b:
            return 0
        if a.overrides(b):
            return -1
        if b.overrides(a):
            return 1
        return -1 if self._resolve(a, b) == a else 1

    def _add(self, entry: Entry) -> None:
        name = entry.name
        before = self._winners.get(name)
        if before is None:
            self._winners[name] = entry
            self._events.append(events.Registered(name, entry.ref, entry.meta))
            return
        rivals = self._rivals.setdefault(name, [before])
        rivals.append(entry)
        rivals.sort(key=self._key)
        after = self._winners[name] = rivals[0]
        winner, loser = (after, entry) if after is before else (after, before)
        self._events.append(events.NameConflict(name, winner.ref, loser.ref))
        if after is not before:
            self._events.append(events.Registered(name, after.ref, after.meta))

    def _replace(self, old: Entry, new: Entry) -> None:
        """``new`` takes ``old``'s place (the same holder re-registered, or new meta)."""
        name = old.name
        before = self._winners.get(name)
        rivals = self._rivals.get(name)
        if rivals is None:
            if before is not old and (before is None or before != old):
                self._add(new)
                return
            after = self._winners[name] = new
        else:
            if old not in rivals:
                self._add(new)
                return
            rivals[rivals.index(old)] = new
            rivals.sort(key=self._key)
            after = self._winners[name] = rivals[0]
        if after is new or before is not after:
            self._events.append(events.Registered(name, after.ref, after.meta))

    def _remove(self, entry: Entry, reason: str) -> None:
        name = entry.name
        before = self._winners.get(name)
        rivals = self._rivals.get(name)
        if rivals is None:
            if before is not entry and (before is None or before != entry):
                return
            del self._winners[name]
            self._events.append(events.Unregistered(name, entry.ref, reason))
            return
        if entry not in rivals:
            return
        rivals.remove(entry)
        after = self._winners[name] = rivals[0]
        if len(rivals) == 1:
            del self._rivals[name]
        if before is not entry:
            return
        self._events.append(events.Unregistered(name, entry.ref, reason))
        self._events.append(events.Registered(name, after.ref, after.meta))

    def _group_events(
        self,
        old: dict[str, dict[ActorRef, Any]],
        new: dict[str, dict[ActorRef, Any]],
        reason: str,
    ) -> None:
        for group, members in old.items():
            kept = new.get(group, {})
            for ref in members:
                if ref not in kept:
                    self._events.append(events.Left(group, ref, reason))
        for group, members in new.items():
            was = old.get(group, {})
            for ref, meta in members.items():
                if ref not in was or was[ref] != meta:
                    self._events.append(events.Joined(group, ref, meta))

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
