"""Which node owns a name: rendezvous (highest random weight) hashing, no I/O.

Every node computes the owner from the same inputs (the name and the sorted members), so
all nodes of a connected cluster agree. When a node joins or leaves, only the names it
gains or loses change owner; there are no virtual nodes to tune.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def weight(node: str, name: str) -> bytes:
    """The score of ``node`` for ``name``; the highest score owns the name."""
    return hashlib.blake2b(f"{node}\x00{name}".encode(), digest_size=8).digest()


def owner(name: str, members: Iterable[str]) -> str:
    """The member that owns ``name``. ValueError when there are no members."""
    best: tuple[bytes, str] | None = None
    for node in members:
        score = (weight(node, name), node)
        if best is None or score > best:
            best = score
    if best is None:
        raise ValueError("no members to own the name")
    return best[1]
