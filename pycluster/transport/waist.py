"""The transport waist: everything the layers above may use of the cluster's connections.

The registry (and its backends), the actors, the HTTP endpoints and :mod:`pycluster.testing`
see the cluster only through :class:`Transport`. What crosses it:

- this node's name (canonical text), its incarnation, the codec its messages use and
  its metrics;
- node names put in canonical form (:meth:`Transport.canonical`), and the connected peers;
- messages to named mailboxes on a node: ``send`` (waits while the peer is congested),
  ``send_nowait`` and ``call`` (request and reply, with a timeout); a mailbox handler gets
  ``(sender, body)`` in arrival order per peer;
- one subscription to node up/down events, called synchronously before any message of a
  new connection is handled (a registry backend sends its snapshot from there);
- ``drop``: closing the connection of a peer whose message was unacceptable.

How peers are reached, authenticated and watched stays below it. Two transports implement
it: the TCP mesh (:class:`~pycluster.transport.mesh.TcpMesh`: cookie handshake, ticks,
TLS) and the in-memory one (:class:`~pycluster.transport.memory.MemoryNetwork`), for tests
that need no sockets. Both also implement
:class:`~pycluster.membership.Membership`, the side discovery connects through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pycluster.codec import Codec
from pycluster.events import NodeDown, NodeUp
from pycluster.metrics import NodeMetrics

Mailbox = Callable[[str, Any], Any]
"""A mailbox handler: called with (sender node, message body), in arrival order per peer.

It may return a value, or an awaitable (run as a task); for a ``call`` that is the reply.
It must not block: slow work belongs in a task or an actor.
"""

NodeEvent = NodeUp | NodeDown
Listener = Callable[[NodeEvent], None]


class Transport(Protocol):
    """One node's end of the cluster's connections (see the module doc)."""

    @property
    def name(self) -> str:
        """This node's name, canonical."""
        ...

    @property
    def incarnation(self) -> bytes:
        """Random bytes that differ each time a node of this name starts."""
        ...

    @property
    def codec(self) -> Codec:
        """The codec messages are packed with (register extension types here)."""
        ...

    @property
    def metrics(self) -> NodeMetrics:
        """The node's Prometheus metrics, which every layer adds to."""
        ...

    @property
    def hidden(self) -> bool:
        """Whether this node is a hidden client: connected to members, not one of them
        (it holds no registry and runs no actors of the cluster's)."""
        ...

    def canonical(self, name: str) -> str:
        """``name`` in canonical form; raises NodeNameError (a ValueError) if it is not a
        node name."""
        ...

    def nodes(self) -> list[str]:
        """Connected peers (hidden clients excluded), sorted."""
        ...

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` synchronously on each node up/down; returns the unsubscribe."""
        ...

    def register_mailbox(self, name: str, handler: Mailbox) -> None:
        """Deliver messages sent to ``name`` on this node to ``handler``."""
        ...

    def unregister_mailbox(self, name: str) -> None:
        """Stop delivering to ``name``."""
        ...

    async def send(self, node: str, mailbox: str, message: Any) -> None:
        """Send in order with other sends to ``node``; waits while it is congested."""
        ...

    def send_nowait(self, node: str, mailbox: str, message: Any) -> None:
        """Send without waiting (small control messages)."""
        ...

    async def call(self, node: str, mailbox: str, message: Any, timeout: float = 5.0) -> Any:
        """Send and wait for the handler's reply (RemoteError, TimeoutError, NotConnected)."""
        ...

    def drop(self, node: str, reason: str) -> None:
        """Close the connection to ``node`` now, for ``reason`` (its message was bad)."""
        ...
