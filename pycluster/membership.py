"""Membership: the cut-off between topologies and the transport.

A topology never touches sockets: it asks a :class:`Membership` to connect or disconnect
node names and to list the connected ones. The node's transport implements it; the
:class:`InMemoryNetwork` here implements it without sockets, for tests of strategies.

Names cross this boundary in canonical form (:meth:`Membership.canonical`): a topology puts
every name discovery gives it in that form, so each written form of a node is that node.
What a node tells others its name is (:attr:`Membership.full_name`) has its port written
out, as a reader with another ``node.port`` would dial the wrong port otherwise.

Why a connection could not be made crosses it too, as a :class:`ConnectFailure`: the
transport that tried decides the reason (:meth:`Membership.dial`), the topology logs and
counts it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol, get_args

import attrs

from pycluster.events import NodeDown, NodeUp, Notifier
from pycluster.nodename import DEFAULT_PORT, parse_node_name

ConnectReason = Literal[
    "unresolved",
    "refused",
    "unreachable",
    "timeout",
    "tls",
    "cookie",
    "refused_by_peer",
    "name",
    "version",
    "http",
    "malformed",
    "closed",
    "left",
    "other",
]
"""Why a connection could not be made: a short, fixed word (a metric label)."""

CONNECT_REASONS: tuple[ConnectReason, ...] = get_args(ConnectReason)

REASON_TEXT: dict[ConnectReason, str] = {
    "unresolved": "name not resolved",
    "refused": "connection refused (nothing listens there)",
    "unreachable": "host unreachable",
    "timeout": "timed out",
    "tls": "TLS handshake failed",
    "cookie": "cookie mismatch",
    "refused_by_peer": "refused by the peer's discovery",
    "name": "the node there has another name",
    "version": "no protocol version in common",
    "http": "the peer answered HTTP",
    "malformed": "the peer does not speak the cluster protocol",
    "closed": "connection closed during the handshake",
    "left": "it left the cluster",
    "other": "failed",
}
"""What each reason means, for people (the start of the warning that reports it)."""


@attrs.frozen
class ConnectFailure:
    """Why a connection to a node could not be made."""

    reason: ConnectReason
    """The kind of failure, a fixed word (``cookie``, ``unresolved``...)."""
    detail: str = ""
    """What the transport saw, for the log (an OS error's text, the peer's reject...)."""

    def __str__(self) -> str:
        text = REASON_TEXT[self.reason]
        if self.detail.startswith(text):
            return self.detail or text
        return f"{text} ({self.detail})" if self.detail else text


class Membership(Protocol):
    """What a topology may do with the cluster's connections."""

    @property
    def self_name(self) -> str:
        """This node's name, canonical."""
        ...

    @property
    def full_name(self) -> str:
        """This node's name with its port written out (``NodeName.full`` with this node's
        ``node.port``): the name it advertises, which means this node to every reader,
        whatever the reader's ``node.port``."""
        ...

    def canonical(self, node: str) -> str:
        """``node`` in canonical form (``NodeName.canonical`` with this node's
        ``node.port``); raises NodeNameError (a ValueError) if it is not a node name."""
        ...

    def nodes(self) -> list[str]:
        """Connected peers (canonical names), sorted."""
        ...

    async def connect(self, node: str) -> bool:
        """Connect to ``node``; True once connected (or already), False if unreachable."""
        ...

    async def dial(self, node: str) -> ConnectFailure | None:
        """Connect to ``node``; None once connected (or already), else why it failed."""
        ...

    def left(self, node: str) -> bool:
        """Whether ``node`` recently left the cluster gracefully (not worth a warning)."""
        ...

    async def disconnect(self, node: str) -> bool:
        """Drop the connection to ``node``; True if there was one."""
        ...

    def subscribe(self, listener: Callable[[NodeUp | NodeDown], None]) -> Callable[[], None]:
        """Call ``listener`` on each node up and down of this node; returns the function
        that unsubscribes it."""
        ...


class InMemoryNetwork:
    """A set of in-process nodes whose connections are just bookkeeping.

    A node is reachable once :meth:`join` has been called for it and until :meth:`leave`
    or :meth:`set_reachable` (``False``) cuts it off. Connections are symmetric, like the
    real mesh. Plugins, when given, observe node up/down events. Every node of the network
    has the same ``port`` (``node.port``): nodes are known by their canonical names, and
    any written form of a name may be passed.
    """

    def __init__(self, plugins: Notifier | None = None, *, port: int = DEFAULT_PORT) -> None:
        self._links: dict[str, set[str]] = {}
        self._reachable: dict[str, bool] = {}
        self._listeners: dict[str, list[Callable[[NodeUp | NodeDown], None]]] = {}
        self._plugins = plugins
        self.port = port
        """The cluster port, ``node.port``, of every node of this network."""

    def canonical(self, name: str) -> str:
        """``name`` in canonical form; raises NodeNameError if it is not a node name."""
        return str(parse_node_name(name).canonical(self.port))

    def join(self, name: str) -> InMemoryMembership:
        """Add a node to the network and return its membership."""
        name = self.canonical(name)
        self._links.setdefault(name, set())
        self._reachable[name] = True
        return InMemoryMembership(self, name)

    def leave(self, name: str) -> None:
        """Remove a node: every peer sees it down."""
        name = self.canonical(name)
        for peer in sorted(self._links.get(name, ())):
            self._unlink(name, peer, "left")
        self._links.pop(name, None)
        self._reachable.pop(name, None)

    def set_reachable(self, name: str, reachable: bool) -> None:
        """Cut a node off (its links drop, as on a partition) or let it be reached again."""
        name = self.canonical(name)
        self._reachable[name] = reachable
        if not reachable:
            for peer in sorted(self._links.get(name, ())):
                self._unlink(name, peer, "unreachable")

    def links(self, name: str) -> list[str]:
        """Peers connected to ``name``, sorted."""
        return sorted(self._links.get(self.canonical(name), ()))

    def _link(self, a: str, b: str) -> ConnectFailure | None:
        if a not in self._links or b not in self._links:
            return ConnectFailure("refused", "not on the network")
        if not (self._reachable.get(a) and self._reachable.get(b)):
            return ConnectFailure("unreachable", "cut off")
        if b not in self._links[a]:
            self._links[a].add(b)
            self._links[b].add(a)
            self._emit("pycluster_node_up", NodeUp(a, b), NodeUp(b, a))
        return None

    def _unlink(self, a: str, b: str, reason: str) -> bool:
        if b not in self._links.get(a, ()):
            return False
        self._links[a].discard(b)
        self._links[b].discard(a)
        self._emit("pycluster_node_down", NodeDown(a, b, reason), NodeDown(b, a, reason))
        return True

    def _tell(self, *events: NodeUp | NodeDown) -> None:
        for event in events:
            for listener in list(self._listeners.get(event.node, ())):
                listener(event)

    def _emit(self, hook: str, *events: NodeUp | NodeDown) -> None:
        self._tell(*events)
        if self._plugins is not None:
            for event in events:
                self._plugins.notify(hook, event)


class InMemoryMembership:
    """One node's view of an :class:`InMemoryNetwork`."""

    def __init__(self, network: InMemoryNetwork, name: str) -> None:
        self._network = network
        self._name = name

    @property
    def self_name(self) -> str:
        """This node's name, canonical."""
        return self._name

    @property
    def full_name(self) -> str:
        """This node's name with its port written out (the network's ``port`` if it has
        none)."""
        return str(parse_node_name(self._name).full(self._network.port))

    def canonical(self, node: str) -> str:
        """``node`` in canonical form; raises NodeNameError if it is not a node name."""
        return self._network.canonical(node)

    def nodes(self) -> list[str]:
        """Connected peers, sorted."""
        return self._network.links(self._name)

    async def connect(self, node: str) -> bool:
        """Link to ``node`` if both are reachable; never to this node itself (False for
        what is not a node name)."""
        return await self.dial(node) is None

    async def dial(self, node: str) -> ConnectFailure | None:
        """Link to ``node`` if both are reachable (None), else why not."""
        try:
            peer = self.canonical(node)
        except ValueError as exc:
            return ConnectFailure("other", str(exc))
        if peer == self._name:
            return ConnectFailure("other", "this node itself")
        return self._network._link(self._name, peer)

    def subscribe(self, listener: Callable[[NodeUp | NodeDown], None]) -> Callable[[], None]:
        """Call ``listener`` on each node up and down of this node; returns the function
        that unsubscribes it."""
        listeners = self._network._listeners.setdefault(self._name, [])
        listeners.append(listener)

        def unsubscribe() -> None:
            if listener in listeners:
                listeners.remove(listener)

        return unsubscribe

    async def disconnect(self, node: str) -> bool:
        """Drop the link to ``node``; True if there was one."""
        try:
            peer = self.canonical(node)
        except ValueError:
            return False
        return self._network._unlink(self._name, peer, "disconnected")

    def left(self, node: str) -> bool:
        """In-memory nodes leave without notice."""
        return False
