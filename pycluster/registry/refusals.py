"""Peers that send registry messages no honest node sends.

Such a peer knows the cookie: it is a member gone wrong (a bug, a version mismatch, a
tampered process). Its message changes nothing; it is counted in
``pycluster_registry_rejected`` by reason, and its connection is closed, with an error
logged. If it comes back, it starts over like any peer: its first message on the new
connection is a fresh snapshot.
"""

from __future__ import annotations

import logging

from pycluster.events import NodeDown, NodeUp
from pycluster.transport.waist import Transport

log = logging.getLogger("pycluster.registry")


class Refusals:
    """Refuses registry messages for one node: counts each, closes the connection once."""

    def __init__(self, node: Transport) -> None:
        self._node = node
        self._closing: set[str] = set()
        """Peers whose connection is being closed (until they are seen down or back)."""
        node.subscribe(self._on_event)

    def refuse(self, peer: str, reason: str, detail: str) -> None:
        """Count a message from ``peer`` as refused and close its connection.

        ``reason`` labels the metric: a short fixed word (``clock``, ``malformed``, ...);
        ``detail`` says what was wrong, for the log.
        """
        self._node.metrics.registry_rejected.labels(reason).inc()
        if peer in self._closing:
            return
        if peer not in self._node.nodes():
            # A hidden client holds no slice and gets no snapshot: registry messages are
            # not its business, and its connection is not ours to close from here.
            log.warning("%s: ignored a registry message from %s: %s", self._node.name, peer, detail)
            return
        self._closing.add(peer)
        # The fixed part, before " (", is what the nodedown metric is labelled with.
        self._node.drop(peer, f"refused a registry message ({reason}: {detail})")

    def closing(self, peer: str) -> bool:
        """Whether ``peer``'s connection is being closed for a refused message: what it
        sent behind that message (read in the same batch) is ignored."""
        return peer in self._closing

    def _on_event(self, event: NodeUp | NodeDown) -> None:
        self._closing.discard(event.peer)
