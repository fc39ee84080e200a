"""Who a topology connects and disconnects, decided from discovery answers (no I/O).

The rule (design.md): a failed lookup, or a successful but empty answer (or one naming only
this node), changes nothing.
Only a successful, non-empty answer that leaves out a node this topology listed before
disconnects it, and keeps it out (its reconnects are refused) until an answer lists it
again. Nodes this topology never listed are not its business; a node never connects to
itself.
"""

from __future__ import annotations

from collections.abc import Collection

import attrs


@attrs.frozen
class Plan:
    """What a topology does after one discovery answer, and what it remembers."""

    connect: frozenset[str]
    """Listed nodes not connected yet."""
    disconnect: frozenset[str]
    """Previously listed nodes the answer left out, still connected."""
    listed: frozenset[str]
    """Nodes this topology now lists (the answer, less this node)."""
    excluded: frozenset[str]
    """Nodes left out by a successful answer: refused until listed again."""
    changed: bool
    """Whether the answer was used (False for a failure or an empty answer)."""


def plan(
    answer: Collection[str] | None,
    *,
    me: str,
    listed: frozenset[str],
    excluded: frozenset[str],
    connected: Collection[str],
) -> Plan:
    """Decide from ``answer`` (None: the lookup failed) and the topology's memory."""
    connected_set = frozenset(connected)
    # An answer naming only this node says nothing about the others: treat it as empty.
    now = frozenset() if answer is None else frozenset(answer) - {me}
    if not now:
        return Plan(
            connect=listed - connected_set,
            disconnect=frozenset(),
            listed=listed,
            excluded=excluded,
            changed=False,
        )
    left_out = (listed | excluded) - now - {me}
    return Plan(
        connect=now - connected_set,
        disconnect=(listed - now) & connected_set,
        listed=now,
        excluded=left_out,
        changed=True,
    )
