"""Lifecycle events, as the ``pycluster_*`` observer hooks receive them. All frozen."""

from __future__ import annotations

from typing import Protocol

import attrs


class Notifier(Protocol):
    """What tells the plugins about an event (:class:`~pycluster.Plugins` is one)."""

    def notify(self, hook_name: str, event: object) -> None: ...


@attrs.frozen
class NodeUp:
    """``node`` (this node) now has a connection to ``peer``."""

    node: str
    peer: str


@attrs.frozen
class NodeDown:
    """``node`` lost its connection to ``peer``; ``reason`` says why, for operators."""

    node: str
    peer: str
    reason: str


@attrs.frozen
class TopologyConnect:
    """Topology ``topology`` of ``node`` connected ``peer``, which its strategy discovered."""

    node: str
    topology: str
    peer: str


@attrs.frozen
class TopologyDisconnect:
    """Topology ``topology`` of ``node`` disconnected ``peer``: discovery left it out."""

    node: str
    topology: str
    peer: str


@attrs.frozen
class StrategyCrashed:
    """The strategy of ``topology`` raised ``error``.

    ``restarts`` counts crashes inside the restart window; ``delay`` is the backoff (seconds)
    before the next start, or None when the topology is now marked failed.
    """

    node: str
    topology: str
    strategy: str
    error: BaseException
    restarts: int
    delay: float | None
