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
    # weight() inline, and no tuple per member: on every claim, this was a tenth of the
    # claiming node's work (bench/instructions.py).
    suffix = "\x00" + name
    best_score = b""
    best: str | None = None
    for node in members:
        score = _blake2b((node + suffix).encode(), digest_size=8).digest()
        if best is None or score > best_score or (score == best_score and node > best):
            best_score, best = score, node
    if best is None:
        raise ValueError("no members to own the name")
    return best
