"""Which node owns a name: rendezvous (highest random weight) hashing, no I/O.

Every node computes the owner from the same inputs (the name and the sorted members), so
all nodes of a connected cluster agree. When a node joins or leaves, only the names it
gains or loses change owner; there are no virtual nodes to tune.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

_blake2b = hashlib.blake2b


def weight(node: str, name: str) -> bytes:
    """The score of ``node`` for ``name``; the highest score owns the name."""
    return _blake2b(f"{node}\x00{name}".encode(), digest_size=8).digest()


def owner(name: str, members: Iterable[str]) -> str:
    """The member that owns ``name`` (the highest :func:`weight`, then the greatest node
    name). ValueError when there are no members."""
    return Members(members).owner(name)


class Members:
    """The members names are placed among, ready for many :meth:`owner` calls: each
    member's part of the hashed bytes is encoded once."""

    def __init__(self, members: Iterable[str]) -> None:
        self._keyed = [(node, (node + "\x00").encode()) for node in members]

    def owner(self, name: str) -> str:
        """:func:`owner` of ``name`` among these members."""
        # weight() inline, and no tuple per member: on every claim, this was a tenth of
        # the claiming node's work (bench/instructions.py).
        suffix = name.encode()
        best_score = b""  # below every digest, so the first member is taken
        best = ""
        for node, prefix in self._keyed:
            score = _blake2b(prefix + suffix, digest_size=8).digest()
            if score > best_score or (score == best_score and node > best):
                best_score, best = score, node
        if not best_score:
            raise ValueError("no members to own the name")
        return best
