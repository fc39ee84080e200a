"""The in-memory transport: nodes of one process connected without sockets.

A :class:`MemoryNetwork` is the wire between the nodes attached to it. Messages still go
through each node's codec and frame limits (a frame the peer refuses breaks the link, a
value inside it that the peer cannot decode fails that message only, as over TCP), are
delivered in order on a later turn of the event loop, and a
peer that stops reading never blocks the sender. The network can also do what the lab does
to real processes: :meth:`~MemoryNetwork.partition` and :meth:`~MemoryNetwork.heal`,
:meth:`~MemoryNetwork.kill` (as ``kill -9``) and :meth:`~MemoryNetwork.pause` /
:meth:`~MemoryNetwork.resume` (as ``SIGSTOP``: its messages stop flowing, its peers see it
down after their net tick timeout, but its own code keeps running in this process).

``pycluster.testing.cluster`` builds on it; tests of the registry and actors use it too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from pycluster.codec import Codec
from pycluster.config import Config
from pycluster.membership import ConnectFailure
from pycluster.metrics import NodeMetrics
from pycluster.nodename import DEFAULT_PORT, parse_node_name
from pycluster.transport.endpoint import Endpoint
from pycluster.transport.frames import (
    Frame,
    FrameDecoder,
    FrameError,
    FrameLimits,
    encode_frame,
)
from pycluster.transport.link import ConnectionClosed
from pycluster.transport.wire import Leave, Message, Tick, Tock, WireError, decode

log = logging.getLogger("pycluster.transport")

PAUSED_PEER = "net tick timeout (paused)"
PARTITIONED = "net tick timeout (partitioned)"
KILLED = "connection closed by the peer"


class MemoryNetwork:
    """The wire between in-process nodes (module doc). ``port`` is every node's
    ``node.port``; nodes attach with ``Node(config, network=...)``."""

    def __init__(self, *, port: int = DEFAULT_PORT) -> None:
        self.port = port
        self._nodes: dict[str, MemoryTransport] = {}
        self._cut: set[frozenset[str]] = set()
        self._paused: dict[str, list[asyncio.TimerHandle]] = {}

    def canonical(self, name: str) -> str:
        """``name`` in canonical form with this network's port."""
        return str(parse_node_name(name).canonical(self.port))

    # -- faults -----------------------------------------------------------------------------

    def partition(self, *sides: Iterable[str]) -> None:
        """Cut every link between nodes of different ``sides`` (lists of node names): both
        ends see each other down at once, and they cannot reconnect until :meth:`heal`."""
        groups = [{self.canonical(n) for n in side} for side in sides]
        for i, side in enumerate(groups):
            for other in groups[i + 1 :]:
                for a in side:
                    for b in other:
                        self._cut.add(frozenset((a, b)))
                        self._sever(a, b, PARTITIONED)

    def heal(self) -> list[tuple[str, str]]:
        """Let every cut pair connect again; returns the pairs that were cut (the caller
        reconnects them, as discovery would)."""
        pairs = sorted(tuple(sorted(pair)) for pair in self._cut)
        self._cut.clear()
        return [(a, b) for a, b in pairs]

    def kill(self, name: str) -> None:
        """Cut every link of ``name`` abruptly (as ``kill -9``): its peers see it down, it
        is told nothing; it cannot be reached again until it is restarted."""
        name = self.canonical(name)
        node = self._nodes.pop(name, None)
        if node is None:
            return
        node.killed = True
        for channel in list(node.channels()):
            channel.other.finish(KILLED)
            channel.finish("killed")

    def pause(self, name: str, tick_timeout: float | None = None) -> None:
        """Stop delivering ``name``'s messages and those sent to it; after each peer's net
        tick timeout (``tick_timeout`` if given) that peer sees it down."""
        name = self.canonical(name)
        node = self._nodes.get(name)
        if node is None or name in self._paused:
            return
        loop = asyncio.get_running_loop()
        timers = []
        for channel in node.channels():
            peer = channel.other
            timeout = tick_timeout if tick_timeout is not None else peer.owner.tick_timeout
            timers.append(loop.call_later(timeout, self._silent, channel))
        self._paused[name] = timers

    def resume(self, name: str) -> None:
        """Deliver ``name``'s messages again (those held while it was paused first, on the
        links that are still up)."""
        name = self.canonical(name)
        for timer in self._paused.pop(name, []):
            timer.cancel()
        node = self._nodes.get(name)
        if node is not None:
            for channel in node.channels():
                if channel.other.closed:
                    # Its peer gave up meanwhile: it finds the connection closed.
                    channel.finish(KILLED)
                else:
                    channel.release()
                    channel.other.release()

    def paused(self, name: str) -> bool:
        """Whether ``name`` is paused."""
        return self.canonical(name) in self._paused

    # -- for the transports -----------------------------------------------------------------

    def _attach(self, node: MemoryTransport) -> None:
        current = self._nodes.get(node.name)
        if current is not None and current is not node:
            raise ValueError(f"a node named {node.name} is already on this network")
        self._nodes[node.name] = node

    def _detach(self, node: MemoryTransport) -> None:
        if self._nodes.get(node.name) is node:
            del self._nodes[node.name]
        for timer in self._paused.pop(node.name, []):
            timer.cancel()

    def _link(self, dialer: MemoryTransport, peer: str) -> ConnectFailure | None:
        """Connect ``dialer`` to ``peer`` if it can be reached and admits it (None), else
        say why not, as the TCP mesh would."""
        acceptor = self._nodes.get(peer)
        if acceptor is None or not acceptor.started or not dialer.started:
            return ConnectFailure("refused", "not on the network")
        if frozenset((dialer.name, peer)) in self._cut:
            return ConnectFailure("timeout", "partitioned")
        if dialer.name in self._paused or peer in self._paused:
            return ConnectFailure("timeout", "paused")
        if not set(dialer.keys[:1]) & set(acceptor.keys):
            log.debug("%s: %s has another cookie", dialer.name, peer)
            return ConnectFailure("cookie")
        if not dialer.hidden and acceptor.refuses(dialer.name):
            return ConnectFailure("refused_by_peer")
        ours = MemoryChannel(dialer, peer, acceptor.incarnation, hidden=dialer.hidden)
        theirs = MemoryChannel(acceptor, dialer.name, dialer.incarnation, hidden=dialer.hidden)
        ours.other, theirs.other = theirs, ours
        acceptor.accept(theirs)
        dialer.accept(ours)
        return None

    def _held(self, channel: MemoryChannel) -> bool:
        """Whether messages on ``channel`` wait (either end is paused)."""
        return channel.owner.name in self._paused or channel.peer in self._paused

    def _silent(self, channel: MemoryChannel) -> None:
        """``channel``'s peer (paused) fell silent for a tick timeout: its peer gives up."""
        channel.other.finish(PAUSED_PEER)

    def _sever(self, a: str, b: str, reason: str) -> None:
        node = self._nodes.get(a)
        if node is None:
            return
        for channel in list(node.channels()):
            if channel.peer == b:
                channel.finish(reason)
                channel.other.finish(reason)


class MemoryTransport(Endpoint):
    """A node's end of a :class:`MemoryNetwork` (the waist and Membership, like TcpMesh)."""

    def __init__(
        self,
        network: MemoryNetwork,
        config: Config,
        *,
        keys: Sequence[bytes],
        incarnation: bytes,
        codec: Codec,
        metrics: NodeMetrics,
        refuses: Callable[[str], bool] = lambda peer: False,
        hidden: bool = False,
    ) -> None:
        if config.node.port != network.port:
            raise ValueError(
                f"node.port is {config.node.port}, but this network's nodes use {network.port}"
            )
        super().__init__(
            config.node.name,
            port=config.node.port,
            incarnation=incarnation,
            codec=codec,
            metrics=metrics,
            hidden=hidden,
        )
        self.network = network
        self.keys = tuple(keys)
        self.refuses = refuses
        self.tick_timeout = config.node.net_tick_timeout
        self.limits = FrameLimits.authenticated(config.node.max_frame_size)
        self.killed = False

    async def start(self) -> None:
        """Become reachable on the network."""
        self.network._attach(self)
        await super().start()

    async def stop(self) -> None:
        """Leave: tell every peer, then become unreachable."""
        await super().stop()
        self.network._detach(self)

    async def connect(self, name: str) -> bool:
        """Connect to ``name`` (a no-op when connected); False if it cannot be reached."""
        return await self.dial(name) is None

    async def dial(self, name: str) -> ConnectFailure | None:
        """Connect to ``name`` (a no-op when connected): None once connected, else why not."""
        try:
            peer = self.canonical(name)
        except ValueError as exc:
            return ConnectFailure("other", str(exc))
        if peer == self.name:
            return ConnectFailure("other", "this node itself")
        if not self.started or self.killed:
            return ConnectFailure("other", "this node is not running")
        if peer in self._connections or any(
            c.peer == peer and not c.closed for c in self._hidden_connections
        ):
            return None
        if self.left(peer):
            return ConnectFailure("left")
        return self.network._link(self, peer)

    def channels(self) -> list[MemoryChannel]:
        """Every open channel of this node."""
        channels = [*self._connections.values(), *self._hidden_connections]
        return [c for c in channels if isinstance(c, MemoryChannel) and not c.closed]

    def accept(self, channel: MemoryChannel) -> None:
        """Take a new channel into service (a peer of the same name is replaced)."""
        current = self._connections.get(channel.peer)
        if isinstance(current, MemoryChannel):
            current.finish("the peer restarted")
        self._establish(channel)


class MemoryChannel:
    """One end of an in-memory connection (a :class:`~pycluster.transport.endpoint.Channel`)."""

    other: MemoryChannel

    def __init__(
        self, owner: MemoryTransport, peer: str, incarnation: bytes, *, hidden: bool
    ) -> None:
        self.owner = owner
        self.peer = peer
        self.incarnation = incarnation
        self.hidden = hidden
        self.closed = False
        self.close_reason: str | None = None
        self._decoder = FrameDecoder(owner.limits, owner.codec)
        self._inbox: list[bytes] = []
        self._held: list[bytes] = []
        self._scheduled = False
        self._started = False
        self.last_heard = time.monotonic()
        """When a frame last arrived from the peer (``time.monotonic()``)."""

    @property
    def congested(self) -> bool:
        """Never: the receiving end buffers without bound, like a peer that reads fast."""
        return False

    def start(self) -> None:
        """Deliver what arrived before the node took the channel into service."""
        self._started = True
        if self._inbox:
            self._schedule()

    def send_nowait(self, message: Message) -> None:
        """Queue ``message`` for the peer (ConnectionClosed, TypeError as over TCP)."""
        if self.closed:
            raise ConnectionClosed(f"connection to {self.peer} is closed")
        frame = encode_frame(message.to_wire(), self.owner.codec)
        if self.owner.network._held(self):
            self._held.append(frame)
        else:
            self.other._receive(frame)

    async def drain(self) -> None:
        """Nothing to wait for (see :attr:`congested`)."""
        if self.closed:
            raise ConnectionClosed(f"connection to {self.peer} lost")

    async def close(self, reason: str, *, leave: bool = False) -> None:
        """Close both ends; the peer sees ``left`` if ``leave``, else the link closed."""
        if self.closed:
            return
        if self.owner.network._held(self):
            leave = False  # a paused end says nothing
        self.other.finish("left" if leave else "connection closed by the peer")
        self.finish(reason)

    def release(self) -> None:
        """Send what was held while an end was paused."""
        held, self._held = self._held, []
        if not self.closed:
            for frame in held:
                self.other._receive(frame)

    def finish(self, reason: str) -> None:
        """Close this end with ``reason``; the owner hears of it."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._inbox.clear()
        self._held.clear()
        self.owner._on_closed(self, reason)

    def _receive(self, frame: bytes) -> None:
        if self.closed:
            return
        self.last_heard = time.monotonic()
        self._inbox.append(frame)
        if self._started:
            self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        frames, self._inbox = self._inbox, []
        for frame in frames:
            if self.closed:
                return
            self._decoder.feed(frame)
            try:
                while self._decoder.ready:
                    for message in self._decoder.decode():
                        self._handle(message)
                        if self.closed:
                            return
            except FrameError as exc:
                log.warning("closing the connection to %s: %s", self.peer, exc)
                self.other.finish("connection closed by the peer")
                self.finish(f"bad frame: {exc}")
                return

    def _handle(self, frame: Frame) -> None:
        try:
            message = decode(frame)
        except WireError as exc:
            log.debug("ignored a message from %s: %s", self.peer, exc)
            self.owner.metrics.messages_ignored.inc()
            return
        if isinstance(message, (Tick, Tock)):
            return
        if isinstance(message, Leave):
            self.finish("left")
            return
        try:
            self.owner._on_message(self, message)
        except Exception as exc:
            log.exception("handling a message from %s failed", self.peer)
            self.other.finish("connection closed by the peer")
            self.finish(f"internal error: {exc.__class__.__name__}")
