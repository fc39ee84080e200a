"""Actor references: where an actor lives, and their one wire form."""

from __future__ import annotations

import attrs

from pycluster.codec import Codec
from pycluster.transport.frames import PLAIN

ACTOR_REF_CODE = 1
"""msgpack extension code of ActorRef (codes below 16 belong to pycluster)."""


@attrs.frozen(order=True, init=False)
class ActorRef:
    """Where an actor lives: its node and an id unique to that node's incarnation.

    A ref works from any node; a ref of a previous life of a node (before a restart)
    names no actor any more.
    """

    node: str
    id: str

    def __init__(self, node: str, id: str) -> None:
        # attrs' own __init__ for a frozen class makes a bound object.__setattr__ per
        # instance and sets each field through it: 4,500 instructions for a ref, where
        # the slots' own setters (below the class) take 3,400 and a mutable class 2,200.
        # Refs, registry entries and their events are built for every registration on
        # every node, and attrs' way cost 8 % of a registration (bench/instructions.py).
        _set_node(self, node)
        _set_id(self, id)

    def __str__(self) -> str:
        return f"<{self.node}/{self.id}>"

    def to_wire(self) -> list[str]:
        """The ref as plain msgpack values: ``[node, id]``."""
        return [self.node, self.id]

    @classmethod
    def from_wire(cls, data: object) -> ActorRef:
        """A ref from its wire form; ValueError when ``data`` is not one."""
        # A tuple of types, not ``list | tuple``: that union is built anew on each call,
        # and this runs for every ref a peer sends.
        if not (
            isinstance(data, (list, tuple))
            and len(data) == 2
            and isinstance(data[0], str)
            and isinstance(data[1], str)
        ):
            raise ValueError("an actor ref is [node, id]")
        return cls(data[0], data[1])


_set_node, _set_id = (ActorRef.__dict__[field.name].__set__ for field in attrs.fields(ActorRef))


def register_ref(codec: Codec) -> None:
    """Teach ``codec`` ActorRef, as msgpack extension :data:`ACTOR_REF_CODE`."""
    codec.register(ActorRef, ACTOR_REF_CODE, _pack, _unpack, builtin=True)


def _pack(ref: ActorRef) -> bytes:
    return PLAIN.pack(ref.to_wire())


def _unpack(data: bytes) -> ActorRef:
    return ActorRef.from_wire(PLAIN.unpack(data))
