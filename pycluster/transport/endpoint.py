"""One node's end of the cluster's connections, whatever carries their messages.

:class:`Endpoint` implements the :class:`~pycluster.transport.waist.Transport` waist over a
set of authenticated :class:`Channel`\\ s, one per peer: node names in canonical form, the
connected peers, mailboxes, ``send``/``call`` with replies and deadlines, and node up/down
events. The transports only say how a channel comes to be (the TCP mesh dials and accepts;
the in-memory network links two endpoints) and hand it over with :meth:`Endpoint._establish`.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs

from pycluster.codec import Codec
from pycluster.errors import NotConnected, RemoteError
from pycluster.events import NodeDown, NodeUp
from pycluster.metrics import NodeMetrics
from pycluster.nodename import parse_node_name
from pycluster.throttle import Throttle
from pycluster.transport.deadlines import Deadlines
from pycluster.transport.link import ConnectionClosed
from pycluster.transport.waist import Listener, Mailbox, NodeEvent
from pycluster.transport.wire import Call, Message, Msg, Received, Reply, Undecodable

log = logging.getLogger("pycluster.node")

LEFT_QUIET = 10.0
"""Seconds during which a peer that left gracefully is not redialled (it dials us back)."""
CANONICAL_CACHE = 4096
"""Node names whose canonical form is remembered (cleared when full: names are few)."""
REPEAT_QUIET = 60.0
"""Seconds during which a repeated warning (same peer, same problem) drops to debug."""
_PLAIN = frozenset({bool, int, float, str, bytes, list, dict, tuple})
"""Types of handler results that are never awaitable (checked before isawaitable)."""


class Channel(Protocol):
    """An authenticated connection to one peer, as an :class:`Endpoint` uses it.

    It hands every message but its own control messages to the endpoint's ``_on_message``
    (one it could not decode too, as an :class:`~pycluster.transport.wire.Undecodable`), in
    arrival order, and calls ``_on_closed`` once when it closes.
    """

    peer: str
    incarnation: bytes
    hidden: bool
    closed: bool

    @property
    def congested(self) -> bool: ...

    @property
    def last_heard(self) -> float:
        """When something last arrived from the peer (``time.monotonic()``)."""
        ...

    def start(self) -> None: ...

    def send_nowait(self, message: Message) -> None: ...

    async def drain(self) -> None: ...

    async def close(self, reason: str, *, leave: bool = False) -> None: ...


@attrs.define
class _Call:
    peer: str
    future: asyncio.Future[Any]
    timeout: float
    channel: Channel | None = None
    """The channel the request went out on (None: not sent yet, or to this node)."""


class Endpoint:
    """The :class:`~pycluster.transport.waist.Transport` waist over channels (module doc).

    ``name`` is this node's name as configured, ``port`` the cluster's ``node.port`` (the
    default port of names written without one).
    """

    def __init__(
        self,
        name: str,
        *,
        port: int,
        incarnation: bytes,
        codec: Codec,
        metrics: NodeMetrics,
        hidden: bool = False,
    ) -> None:
        self._port = port
        self._canonical: dict[str, str] = {}
        self.name = self.canonical(name)
        self.full_name = str(parse_node_name(name).full(port))
        """This node's name with its port written out: what its strategies advertise."""
        self.incarnation = incarnation
        self.codec = codec
        self.metrics = metrics
        self.hidden = hidden
        self.started = False
        self._connections: dict[str, Channel] = {}
        self._sorted: tuple[str, ...] = ()
        """The keys of ``_connections``, sorted: asked on every registry change."""
        self._hidden_connections: set[Channel] = set()
        self._left: dict[str, float] = {}
        self._mailboxes: dict[str, Mailbox] = {}
        self._calls: dict[int, _Call] = {}
        self._call_ids = itertools.count(1)
        self._deadlines: Deadlines[int] | None = None
        self._listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._repeats = Throttle(REPEAT_QUIET)

    # -- names ------------------------------------------------------------------------------

    def canonical(self, name: str) -> str:
        """``name`` as this node compares it: its canonical form with ``node.port`` as the
        default port (``NodeName.canonical``).

        Raises NodeNameError (a ValueError) for a string that is not a node name.
        """
        # On every send and call: parsing (ipaddress included) costs more than the rest.
        known = self._canonical.get(name)
        if known is not None:
            return known
        canonical = str(parse_node_name(name).canonical(self._port))
        if len(self._canonical) >= CANONICAL_CACHE:
            self._canonical.clear()
        self._canonical[name] = canonical
        return canonical

    @property
    def self_name(self) -> str:
        """This node's name (Membership protocol)."""
        return self.name

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Accept connections from now on."""
        self._call_deadlines()
        self.started = True

    async def stop(self) -> None:
        """Tell every peer this node leaves, close every connection, end its tasks."""
        self.started = False
        channels = [*self._connections.values(), *self._hidden_connections]
        await asyncio.gather(
            *(c.close("this node left", leave=True) for c in channels),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- peers ------------------------------------------------------------------------------

    def nodes(self) -> list[str]:
        """Connected peers (hidden clients excluded), sorted."""
        return list(self._sorted)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` synchronously on each node up/down, before any message of the
        new connection is handled; returns the function that unsubscribes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def silence(self, peer: str) -> float | None:
        """Seconds since anything (a tick included) arrived from connected ``peer``; None
        when it is not connected."""
        channel = self._connections.get(peer)
        return None if channel is None else time.monotonic() - channel.last_heard

    def left(self, name: str) -> bool:
        """Whether ``name`` left gracefully within the last ``LEFT_QUIET`` seconds (it is
        not redialled meanwhile: it dials back itself if it returns)."""
        try:
            since = self._left.get(self.canonical(name))
        except ValueError:
            return False
        return since is not None and time.monotonic() - since < LEFT_QUIET

    async def disconnect(self, name: str) -> bool:
        """Close the connection to ``name``; True if there was one."""
        try:
            channel = self._connections.get(self.canonical(name))
        except ValueError:
            return False
        if channel is None:
            return False
        await channel.close("disconnected by this node")
        return True

    def drop(self, node: str, reason: str) -> None:
        """Close the connection to ``node`` (if any) with ``reason``, without waiting: for a
        layer that found a peer's message unacceptable while handling it."""
        channel = self._connections.get(node)
        if channel is not None:
            log.error("%s: closing the connection to %s: %s", self.name, node, reason)
            self._spawn(channel.close(reason))

    # -- messages ---------------------------------------------------------------------------

    def register_mailbox(self, name: str, handler: Mailbox) -> None:
        """Deliver messages sent to ``name`` on this node to ``handler``."""
        if name in self._mailboxes:
            raise ValueError(f"mailbox {name!r} is already registered")
        self._mailboxes[name] = handler

    def unregister_mailbox(self, name: str) -> None:
        """Stop delivering to ``name``; later messages to it are dropped (calls fail)."""
        self._mailboxes.pop(name, None)

    async def send(self, node: str, mailbox: str, message: Any) -> None:
        """Send ``message`` to ``mailbox`` on ``node``, in order with other sends to it.

        Waits only while the peer has a full send buffer (backpressure). Raises
        NotConnected when there is no connection to ``node``.
        """
        peer = self.canonical(node)
        if peer == self.name:
            self._deliver(self.name, mailbox, message, None, None)
            return
        try:
            channel = self._channel(peer)
            channel.send_nowait(Msg(mailbox, message))
            if channel.congested:
                await channel.drain()
        except ConnectionClosed as exc:
            raise NotConnected(str(exc)) from None

    def send_nowait(self, node: str, mailbox: str, message: Any) -> None:
        """Like :meth:`send`, without waiting for a slow peer (for small control messages)."""
        peer = self.canonical(node)
        if peer == self.name:
            self._deliver(self.name, mailbox, message, None, None)
            return
        try:
            self._channel(peer).send_nowait(Msg(mailbox, message))
        except ConnectionClosed as exc:
            raise NotConnected(str(exc)) from None

    async def call(self, node: str, mailbox: str, message: Any, timeout: float = 5.0) -> Any:
        """Send ``message`` and wait for the handler's reply.

        Raises RemoteError if the handler raised, TimeoutError after ``timeout`` seconds
        (waiting on a peer that does not read included), NotConnected if the connection is
        missing or lost. Nothing is left behind.
        """
        peer = self.canonical(node)
        call_id = next(self._call_ids)
        deadlines = self._deadlines or self._call_deadlines()
        future: asyncio.Future[Any] = deadlines.loop.create_future()
        call = self._calls[call_id] = _Call(peer, future, timeout)
        deadlines.add(call_id, timeout)
        try:
            if peer == self.name:
                self._deliver(self.name, mailbox, message, call_id, None)
            else:
                # Not send(): waiting for room in a full send buffer would bound nothing
                # (the request is queued either way) and the reply cannot come before it.
                channel = call.channel = self._channel(peer)
                channel.send_nowait(Call(call_id, mailbox, message))
            return await future
        except ConnectionClosed as exc:
            raise NotConnected(str(exc)) from None
        finally:
            self._calls.pop(call_id, None)

    def _call_deadlines(self) -> Deadlines[int]:
        # One timer for every call's timeout, on the loop the node runs in: cheaper than
        # asyncio.timeout() per call, which costs more than the rest of a round trip here.
        self._deadlines = Deadlines(
            asyncio.get_running_loop(), self._expire, self._calls.__contains__
        )
        return self._deadlines

    def _expire(self, call_id: int) -> None:
        call = self._calls[call_id]
        if not call.future.done():
            call.future.set_exception(
                TimeoutError(f"no reply from {call.peer} within {call.timeout}s")
            )

    def _channel(self, peer: str) -> Channel:
        channel = self._connections.get(peer)
        if channel is None:
            for hidden in self._hidden_connections:
                if hidden.peer == peer:
                    return hidden
            raise NotConnected(f"not connected to {peer}")
        return channel

    def _deliver(
        self, sender: str, mailbox: str, body: Any, call_id: int | None, via: Channel | None
    ) -> None:
        handler = self._mailboxes.get(mailbox)
        if handler is None:
            if call_id is not None:
                self._reply(via, call_id, error=("NoSuchMailbox", f"no mailbox {mailbox!r}"))
            else:
                self._warn_once(
                    ("mailbox", mailbox), "dropped a message to unknown mailbox %r", mailbox
                )
            return
        try:
            result = handler(sender, body)
        except Exception as exc:
            self._raised(exc, mailbox, sender, call_id, via)
            return
        # Most handlers return None or a plain value: test for those before the slower
        # Awaitable check.
        if result is not None and type(result) not in _PLAIN and inspect.isawaitable(result):
            self._spawn(self._finish_delivery(result, mailbox, sender, call_id, via))
        elif call_id is not None:
            self._reply(via, call_id, value=result)

    async def _finish_delivery(
        self,
        pending: Awaitable[Any],
        mailbox: str,
        sender: str,
        call_id: int | None,
        via: Channel | None,
    ) -> None:
        try:
            value = await pending
        except Exception as exc:
            self._raised(exc, mailbox, sender, call_id, via)
            return
        if call_id is not None:
            self._reply(via, call_id, value=value)

    def _raised(
        self,
        exc: Exception,
        mailbox: str,
        sender: str,
        call_id: int | None,
        via: Channel | None,
    ) -> None:
        """A handler raised: a caller gets the error as its reply, a message is logged."""
        if call_id is not None:
            self._reply(via, call_id, error=(type(exc).__name__, str(exc)))
        else:
            log.exception("mailbox %r raised on a message from %s", mailbox, sender, exc_info=exc)

    def _reply(
        self,
        via: Channel | None,
        call_id: int,
        *,
        value: Any = None,
        error: tuple[str, str] | None = None,
    ) -> None:
        reply = Reply(call_id, value, error)
        if via is None:
            self._on_reply(self.name, reply)
            return
        try:
            via.send_nowait(reply)
        except ConnectionClosed:
            pass
        except Exception as exc:
            # The handler returned something the codec cannot carry (a type nobody
            # registered, an int over 64 bits, an encoder that raised): tell the caller,
            # rather than let it break the connection.
            if error is not None:
                raise
            self._reply(via, call_id, error=(type(exc).__name__, f"reply cannot be encoded: {exc}"))

    def _on_reply(self, sender: str, reply: Reply) -> None:
        call = self._calls.get(reply.id)
        if call is None or call.peer != sender or call.future.done():
            return  # a late reply to a call that timed out: nothing waits for it
        if reply.error is None:
            call.future.set_result(reply.body)
        else:
            call.future.set_exception(RemoteError(sender, *reply.error))

    def _on_message(self, channel: Channel, message: Received) -> None:
        if type(message) is Msg:
            self._deliver(channel.peer, message.to, message.body, None, channel)
        elif type(message) is Call:
            self._deliver(channel.peer, message.to, message.body, message.id, channel)
        elif type(message) is Reply:
            self._on_reply(channel.peer, message)
        elif isinstance(message, Undecodable):
            self._undecodable(channel, message)

    def _undecodable(self, channel: Channel, message: Undecodable) -> None:
        """A message from ``channel``'s peer held a value this node cannot decode: that
        message fails (a call is answered with an error, a reply fails its call, a msg
        is dropped), counted; the connection stays up."""
        problem = message.problem
        self.metrics.messages_undecodable.labels(message.kind, problem.code).inc()
        self._warn_once(
            ("undecodable", channel.peer, message.kind, problem.code),
            "%s: cannot decode a %s from %s (to %s): %s",
            self.name,
            message.kind,
            channel.peer,
            message.to or f"call {message.id}",
            problem.text,
        )
        if message.kind == "call" and message.id is not None:
            error = ("CodecError", f"cannot decode the message: {problem.text}")
            self._reply(channel, message.id, error=error)
        elif message.kind == "reply" and message.id is not None:
            error = ("CodecError", f"cannot decode the reply: {problem.text}")
            self._on_reply(channel.peer, Reply(message.id, error=error))

    # -- channels ---------------------------------------------------------------------------

    def _establish(self, channel: Channel) -> None:
        """Take ``channel`` (authenticated, admitted) into service: node up, then start it."""
        peer = channel.peer
        if channel.hidden:
            self._hidden_connections.add(channel)
        else:
            self._connections[peer] = channel
            self._sorted = tuple(sorted(self._connections))
            self._left.pop(peer, None)
            self._arrived(peer)
            self.metrics.nodes.set(len(self._connections))
            log.info("%s: node up %s", self.name, peer, extra={"event": "node_up", "peer": peer})
            self._emit(NodeUp(self.name, peer))
        channel.start()

    def _arrived(self, peer: str) -> None:
        """A connection to ``peer`` is now in service (for transports that wait for one)."""

    def _on_closed(self, channel: Channel, reason: str) -> None:
        self._hidden_connections.discard(channel)
        for call in list(self._calls.values()):
            if call.channel is channel and not call.future.done():
                call.future.set_exception(NotConnected(f"{channel.peer}: {reason}"))
        if self._connections.get(channel.peer) is not channel:
            return
        del self._connections[channel.peer]
        self._sorted = tuple(sorted(self._connections))
        if reason == "left":
            self._left[channel.peer] = time.monotonic()
        self.metrics.nodes.set(len(self._connections))
        self.metrics.nodedowns.labels(reason.split(" (")[0]).inc()
        log.info(
            "%s: node down %s (%s)",
            self.name,
            channel.peer,
            reason,
            extra={"event": "node_down", "peer": channel.peer, "reason": reason},
        )
        self._emit(NodeDown(self.name, channel.peer, reason))

    def _emit(self, event: NodeEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("%s: a node event listener raised", self.name)

    # -- helpers ----------------------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _warn_once(self, key: tuple[str, ...], message: str, *args: object) -> None:
        """Log a warning, then the same one at debug level for a minute (no spam)."""
        self._repeats.warn(log, key, message, *args, quiet=logging.DEBUG)
