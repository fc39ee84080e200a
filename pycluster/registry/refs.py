"""Registry entries: plain, comparable data."""

from __future__ import annotations

import attrs

from pycluster.actors.ref import ActorRef


@attrs.frozen
class Entry:
    """A registered name: the actor it names and the Lamport time of the claim."""

    name: str
    ref: ActorRef
    lamport: int

    def to_wire(self) -> list[object]:
        """The entry as plain msgpack values."""
        return [self.name, self.ref.node, self.ref.id, self.lamport]

    @classmethod
    def from_wire(cls, data: object) -> Entry:
        """An entry from a peer; ValueError when ``data`` is not one."""
        if not isinstance(data, list) or len(data) != 4:
            raise ValueError("an entry is [name, node, id, lamport]")
        name, node, actor, lamport = data
        if not isinstance(name, str):
            raise ValueError("entry name must be a string")
        ref = ActorRef.from_wire([node, actor])
        if not isinstance(lamport, int) or isinstance(lamport, bool) or lamport < 0:
            raise ValueError("entry lamport time must be a non-negative integer")
        return cls(name, ref, lamport)


def first_claim_wins(a: Entry, b: Entry) -> Entry:
    """The default conflict resolution: the earlier claim (Lamport time) wins, then the
    smaller node name and id; a pure function of the two entries, so every node agrees."""
    return a if (a.lamport, a.ref) <= (b.lamport, b.ref) else b
