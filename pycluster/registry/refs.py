"""Registry entries: plain, comparable data."""

from __future__ import annotations

from typing import Any

import attrs

from pycluster.actors.ref import ActorRef
from pycluster.transport.frames import PLAIN

MAX_META = 4096
"""Bytes a registration's or membership's metadata may take, as msgpack."""
MAX_SUPERSEDES = 8
"""How many earlier holders an entry remembers having taken over from (the most recent
first): a holder frozen across more takeovers than this, then thawed, is resolved by the
conflict rule instead."""


def checked_meta(meta: Any) -> Any:
    """``meta`` if it may be attached to a registration: a plain msgpack value (no
    registered types) of at most :data:`MAX_META` bytes; ValueError otherwise."""
    if meta is None:
        return None
    try:
        packed = PLAIN.pack(meta)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"metadata must be a plain msgpack value ({exc})") from None
    if len(packed) > MAX_META:
        raise ValueError(f"metadata takes {len(packed)} bytes as msgpack, over {MAX_META}")
    return meta


def meta_from_wire(meta: object) -> Any:
    """Metadata from a peer, held to the sender's limits; ValueError when it breaks them."""
    if meta is None or type(meta) in (int, float, bool) or (type(meta) is str and len(meta) < 64):
        return meta
    return checked_meta(meta)


@attrs.frozen(init=False)
class Entry:
    """A registered name: the actor it names, the Lamport time of the claim, its metadata,
    and the holders it took over from (``supersedes``, most recent first).

    An entry is identified by everything but its metadata (which its holder may update).
    """

    name: str
    ref: ActorRef
    lamport: int
    meta: Any = attrs.field(default=None, eq=False)
    supersedes: tuple[ActorRef, ...] = ()

    def __init__(
        self,
        name: str,
        ref: ActorRef,
        lamport: int,
        meta: Any = None,
        supersedes: tuple[ActorRef, ...] = (),
    ) -> None:
        # The slots' own setters, not attrs' frozen __init__: see ActorRef's.
        _set_name(self, name)
        _set_ref(self, ref)
        _set_lamport(self, lamport)
        _set_meta(self, meta)
        _set_supersedes(self, supersedes)

    def to_wire(self) -> list[object]:
        """The entry as plain msgpack values: ``[name, node, id, lamport]``, then
        ``meta`` and ``supersedes`` (refs' ``[node, id]``) if either is set."""
        wire: list[object] = [self.name, self.ref.node, self.ref.id, self.lamport]
        if self.meta is not None or self.supersedes:
            wire += [self.meta, [ref.to_wire() for ref in self.supersedes]]
        return wire

    @classmethod
    def from_wire(cls, data: object) -> Entry:
        """An entry from a peer; ValueError when ``data`` is not one."""
        if type(data) is list and len(data) == 4:
            # Most entries (no meta, no supersedes), checked by exact types: a decoded
            # message holds no subclasses, and a bool is not an int here.
            name, node, actor, lamport = data
            if (
                type(name) is str
                and type(node) is str
                and type(actor) is str
                and type(lamport) is int
                and lamport >= 0
            ):
                return cls(name, ActorRef(node, actor), lamport)
        if not isinstance(data, list) or len(data) not in (4, 6):
            raise ValueError("an entry is [name, node, id, lamport(, meta, supersedes)]")
        name, node, actor, lamport = data[:4]
        if not isinstance(name, str):
            raise ValueError("entry name must be a string")
        # ActorRef.from_wire's check, inline: wrapping the two in a list for it costs 2 %
        # of a registration's instructions (bench/instructions.py), once per peer.
        if not (isinstance(node, str) and isinstance(actor, str)):
            raise ValueError("an actor ref is [node, id]")
        ref = ActorRef(node, actor)
        if not isinstance(lamport, int) or isinstance(lamport, bool) or lamport < 0:
            raise ValueError("entry lamport time must be a non-negative integer")
        if len(data) == 4:
            return cls(name, ref, lamport)
        meta, supersedes = data[4:]
        if not isinstance(supersedes, list) or len(supersedes) > MAX_SUPERSEDES:
            raise ValueError(f"an entry supersedes a list of at most {MAX_SUPERSEDES} refs")
        return cls(
            name,
            ref,
            lamport,
            meta_from_wire(meta),
            tuple(ActorRef.from_wire(item) for item in supersedes),
        )

    def overrides(self, other: Entry) -> bool:
        """Whether this entry took the name over from ``other``'s actor (directly, or
        through holders in between), while ``other``'s node was seen down."""
        return other.ref in self.supersedes


_set_name, _set_ref, _set_lamport, _set_meta, _set_supersedes = (
    Entry.__dict__[field.name].__set__ for field in attrs.fields(Entry)
)


def first_claim_wins(a: Entry, b: Entry) -> Entry:
    """The default conflict resolution: the earlier claim (Lamport time) wins, then the
    smaller node name and id; a pure function of the two entries, so every node agrees."""
    return a if (a.lamport, a.ref) <= (b.lamport, b.ref) else b
