"""Which connection survives when two nodes dial each other at once (no I/O).

Every pair of nodes keeps exactly one connection. When an authenticated connection arrives
from a peer, the accepting node decides with :func:`admit`; both nodes apply the same rule
to the same facts, so they agree without another round trip:

- A peer that dials while we hold a connection to its *same* incarnation is a duplicate
  (our connection is live and the peer's dial raced it): refused as a duplicate.
- A peer of a *new* incarnation (it restarted before we noticed the old connection die)
  replaces the old connection at once.
- While we are dialling the peer ourselves, the connection dialled by the node with the
  smaller name wins: we refuse the peer's dial if our name is smaller (it lost the
  tie-break), else accept it (and the peer refuses ours by the same rule).
"""

from __future__ import annotations

from typing import Literal

Admission = Literal["accept", "replace", "duplicate", "tie-break"]
"""accept; replace the old connection; refuse a duplicate of a live connection; refuse a
dial that lost the tie-break (the peer's end of our own dial is about to connect us)."""

REFUSALS: dict[str, str] = {
    "duplicate": "duplicate connection",
    "tie-break": "simultaneous dial: the connection dialled by the smaller name is kept",
}
"""The reason sent in the ``reject`` message for each refusal."""


def admit(
    *,
    me: str,
    peer: str,
    dialling: bool,
    connected_incarnation: bytes | None,
    incarnation: bytes,
) -> Admission:
    """Decide about an authenticated inbound connection from ``peer`` (see module doc)."""
    if connected_incarnation is not None:
        return "duplicate" if connected_incarnation == incarnation else "replace"
    if dialling and me < peer:
        return "tie-break"
    return "accept"
