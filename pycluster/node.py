"""The Node: a named member of the cluster, connected to every other member.

A node listens on, and dials from, its own address; it authenticates every connection with
the cookie handshake, keeps one connection per peer (see :mod:`pycluster.transport.mesh`),
declares a peer down when it falls silent, and runs its topologies under a Supervisor. It
is the :class:`~pycluster.membership.Membership` its topologies connect through.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import itertools
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import attrs

from pycluster.codec import Codec
from pycluster.config import Config, checks
from pycluster.errors import NotConnected, RemoteError
from pycluster.events import NodeDown, NodeUp
from pycluster.metrics import NodeMetrics
from pycluster.nodename import parse_node_name
from pycluster.plugins import Plugins
from pycluster.registry.refs import ActorRef, Entry, first_claim_wins
from pycluster.supervisor import RestartPolicy, Supervisor
from pycluster.throttle import Throttle
from pycluster.transport.connection import Connection, ConnectionClosed
from pycluster.transport.deadlines import Deadlines
from pycluster.transport.frames import (
    PLAIN,
    PREAUTH,
    FrameDecoder,
    FrameError,
    FrameLimits,
    encode_frame,
)
from pycluster.transport.handshake import Handshake, HandshakeError, cookie_key, reject
from pycluster.transport.link import Link
from pycluster.transport.mesh import REFUSALS, admit

log = logging.getLogger("pycluster.node")

Mailbox = Callable[[str, Any], Any]
"""A mailbox handler: called with (sender node, message body), in arrival order per peer.

It may return a value, or an awaitable (run as a task); for a ``call`` that is the reply.
It must not block: slow work belongs in a task or an actor.
"""

STATUS_MAILBOX = "$status"
LEFT_QUIET = 10.0
"""Seconds during which a peer that left gracefully is not redialled (it dials us back)."""
ACTOR_REF_CODE = 1
"""msgpack extension code of ActorRef (codes below 16 belong to pycluster)."""
EVENT_QUEUE_SIZE = 1024
CANONICAL_CACHE = 4096
"""Node names whose canonical form is remembered (cleared when full: names are few)."""
REPEAT_QUIET = 60.0
"""Seconds during which a repeated warning (same peer, same problem) drops to debug."""
MAX_UNAUTHENTICATED = 256
"""Connections to the cluster port still in their handshake, at most, from anywhere."""
MAX_UNAUTHENTICATED_PER_SOURCE = 16
"""Connections still in their handshake, at most, from one source address."""
_PLAIN = frozenset({bool, int, float, str, bytes, list, dict, tuple})
"""Types of handler results that are never awaitable (checked before isawaitable)."""


@attrs.define
class _Call:
    peer: str
    future: asyncio.Future[Any]
    timeout: float
    connection: Connection | None = None
    """The connection the request went out on (None: not sent yet, or to this node)."""


class Subscription:
    """Node up/down events as an async iterator; ends when the node stops or on close()."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._queue: asyncio.Queue[NodeUp | NodeDown | None] = asyncio.Queue(EVENT_QUEUE_SIZE)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> NodeUp | NodeDown:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        """Stop receiving events."""
        self._node._subscriptions.discard(self)
        self._put(None)

    def _put(self, event: NodeUp | NodeDown | None) -> None:
        if self._queue.full():
            # A subscriber that does not keep up loses its oldest events, not our memory.
            self._queue.get_nowait()
            log.warning("a node event subscriber is not keeping up; dropped an event")
        self._queue.put_nowait(event)


class Node:
    """A pycluster node. Use as ``async with Node(config) as node: ...``.

    ``cookie`` overrides ``config.node.cookie``; one of them is required, of at least 16
    characters (a list rotates cookies: the first dials, any is accepted). ``hidden``
    makes a client node (as ``pycluster status`` uses): it listens nowhere, runs no
    topologies, and the nodes it connects to do not count it as a member. Before a
    connection is authenticated, at most ``max_unauthenticated`` of them are open (and
    ``max_unauthenticated_per_source`` from one address); more are closed at once.
    """

    def __init__(
        self,
        config: Config,
        *,
        cookie: str | Sequence[str] | None = None,
        plugins: Plugins | None = None,
        policy: RestartPolicy | None = None,
        hidden: bool = False,
        handshake_timeout: float = 5.0,
        max_unauthenticated: int = MAX_UNAUTHENTICATED,
        max_unauthenticated_per_source: int = MAX_UNAUTHENTICATED_PER_SOURCE,
    ) -> None:
        secret = cookie if cookie is not None else config.node.cookie
        if not secret:
            raise ValueError(
                "a node needs a cookie: node.cookie, --cookie-file or PYCLUSTER_COOKIE"
            )
        self._keys = tuple(cookie_key(c) for c in checks.cookies(secret))
        self.config = config
        self.hidden = hidden
        self.plugins = plugins if plugins is not None else Plugins.load()
        self.metrics = NodeMetrics()
        self.incarnation = secrets.token_bytes(16)
        self.codec = Codec()
        self.codec.register(ActorRef, ACTOR_REF_CODE, _pack_ref, _unpack_ref, builtin=True)
        self._port = config.node.port
        self._canonical: dict[str, str] = {}
        own = parse_node_name(config.node.name)
        self.name = self.canonical(config.node.name)
        self.full_name = str(own.full(self._port))
        """This node's name with its port written out: what its strategies advertise."""
        self.listen_host: str | None = config.node.bind or (own.host if own.is_ip else None)
        self.listen_port = own.port or self._port
        self._tick_timeout = config.node.net_tick_timeout
        self._limits = FrameLimits.authenticated(config.node.max_frame_size)
        """What an authenticated peer's frames may hold."""
        self._handshake_timeout = handshake_timeout
        self._server_ssl, self._client_ssl = _tls_contexts(config)
        self._connections: dict[str, Connection] = {}
        self._hidden_connections: set[Connection] = set()
        self._dialling: dict[str, asyncio.Future[bool]] = {}
        self._arrivals: dict[str, asyncio.Event] = {}
        self._left: dict[str, float] = {}
        self._mailboxes: dict[str, Mailbox] = {STATUS_MAILBOX: lambda sender, body: self.status()}
        self._calls: dict[int, _Call] = {}
        self._call_ids = itertools.count(1)
        self._deadlines: Deadlines[int] | None = None
        self._subscriptions: set[Subscription] = set()
        self._listeners: list[Callable[[NodeUp | NodeDown], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._repeats = Throttle(REPEAT_QUIET)
        self._max_unauthenticated = max_unauthenticated
        self._max_unauthenticated_per_source = max_unauthenticated_per_source
        self._unauthenticated: collections.Counter[str] = collections.Counter()
        """Connections in their handshake, by source address."""
        self._server: asyncio.Server | None = None
        self._http: Any = None
        self.supervisor = Supervisor(
            {} if hidden else config.topologies,
            membership=self,
            plugins=self.plugins,
            policy=policy,
            metrics=self.metrics,
        )
        self.started = False
        from pycluster.actors import Actors
        from pycluster.registry import Registry

        self.actors = Actors(self)
        """The actors running on this node."""
        backend_class = self.plugins.registry_backends()[config.registry.backend]
        self.registry = Registry(
            self, backend_class(self, config.registry.options, self._resolve_conflict)
        )
        """Cluster-unique names and process groups (``spawn``, ``whereis``, ...)."""

    def _resolve_conflict(self, a: Entry, b: Entry) -> Entry:
        chosen = self.plugins.manager.hook.pycluster_resolve_name_conflict(name=a.name, a=a, b=b)
        return chosen if chosen in (a, b) else first_claim_wins(a, b)

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

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen, serve HTTP if configured, and start the topologies."""
        self._call_deadlines()
        if not self.hidden:
            self._server = await asyncio.get_running_loop().create_server(
                self._inbound,
                host=self.listen_host,
                port=self.listen_port,
                # No ssl= here: TLS starts in _accept, after the connection caps and under
                # the handshake timeout (asyncio's own default would hold it 60 s).
                reuse_address=True,
                # Bound now (a taken port fails here), listening once started: a dial that
                # came earlier would be cut in the middle of its handshake.
                start_serving=False,
            )
            http = self.config.node.http
            if http is not None:
                from pycluster.http import HttpEndpoints

                self._http = HttpEndpoints(self, self.listen_host, http.port)
                await self._http.start()
            self._spawn(self.metrics.probe_loop_lag())
        self.started = True
        if self._server is not None:
            await self._server.start_serving()
        await self.registry.backend.start()
        self.registry.ring.start_sweeping()
        await self.supervisor.start()
        log.info("node %s listening on %s:%s", self.name, self.listen_host or "*", self.listen_port)

    async def stop(self, timeout: float = 5.0) -> None:
        """Leave the cluster: stop the topologies, tell every peer, close everything."""
        if not self.started:
            return
        self.started = False
        await self.supervisor.stop(timeout=timeout / 2)
        with contextlib.suppress(TimeoutError):
            await self.registry.ring.drain(timeout / 2)
        await self.actors.stop_all("normal")
        await self.registry.backend.stop()
        if self._server is not None:
            self._server.close()
        connections = [*self._connections.values(), *self._hidden_connections]
        await asyncio.gather(
            *(c.close("this node left", leave=True) for c in connections),
            return_exceptions=True,
        )
        if self._http is not None:
            await self._http.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        for subscription in list(self._subscriptions):
            subscription.close()

    # -- membership -------------------------------------------------------------------------

    def nodes(self) -> list[str]:
        """Connected peers (hidden clients excluded), sorted."""
        return sorted(self._connections)

    def add_listener(self, listener: Callable[[NodeUp | NodeDown], None]) -> None:
        """Call ``listener`` synchronously on each node up/down, before any message of the
        new connection is handled (registry backends send their snapshot from here)."""
        self._listeners.append(listener)

    def events(self) -> Subscription:
        """Subscribe to node up/down events: ``async for event in node.events(): ...``."""
        subscription = Subscription(self)
        self._subscriptions.add(subscription)
        return subscription

    async def connect(self, name: str) -> bool:
        """Connect to ``name`` (a no-op when connected); False if it cannot be reached."""
        try:
            peer = self.canonical(name)
        except ValueError:
            log.warning("cannot connect to %r: not a node name", name)
            return False
        if peer == self.name or not self.started:
            return False
        if peer in self._connections:
            return True
        if self.hidden and any(c.peer == peer and not c.closed for c in self._hidden_connections):
            return True
        if self.left(peer):
            return False
        pending = self._dialling.get(peer)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._dialling[peer] = future
        ok = False
        try:
            ok = await self._dial(peer)
        finally:
            del self._dialling[peer]
            future.set_result(ok)
        return ok

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
            connection = self._connections.get(self.canonical(name))
        except ValueError:
            return False
        if connection is None:
            return False
        await connection.close("disconnected by this node")
        return True

    def close_connection(self, name: str, reason: str) -> None:
        """Close the connection to ``name`` (if any) with ``reason``, without waiting: for a
        layer that found a peer's message unacceptable while handling it."""
        connection = self._connections.get(name)
        if connection is not None:
            log.error("%s: closing the connection to %s: %s", self.name, name, reason)
            self._spawn(connection.close(reason))

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
            # Connection.send() inlined: one coroutine less per message.
            connection = self._connection(peer)
            connection.send_nowait({"t": "msg", "to": mailbox, "body": message})
            if connection.congested:
                await connection.drain()
        except ConnectionClosed as exc:
            raise NotConnected(str(exc)) from None

    def send_nowait(self, node: str, mailbox: str, message: Any) -> None:
        """Like :meth:`send`, without waiting for a slow peer (for small control messages)."""
        peer = self.canonical(node)
        if peer == self.name:
            self._deliver(self.name, mailbox, message, None, None)
            return
        try:
            self._connection(peer).send_nowait({"t": "msg", "to": mailbox, "body": message})
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
                connection = call.connection = self._connection(peer)
                connection.send_nowait({"t": "call", "id": call_id, "to": mailbox, "body": message})
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

    def _connection(self, peer: str) -> Connection:
        connection = self._connections.get(peer)
        if connection is None:
            for hidden in self._hidden_connections:
                if hidden.peer == peer:
                    return hidden
            raise NotConnected(f"not connected to {peer}")
        return connection

    def _deliver(
        self, sender: str, mailbox: str, body: Any, call_id: int | None, via: Connection | None
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
            if call_id is not None:
                self._reply(via, call_id, error=(type(exc).__name__, str(exc)))
            else:
                log.exception("mailbox %r raised on a message from %s", mailbox, sender)
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
        via: Connection | None,
    ) -> None:
        try:
            value = await pending
        except Exception as exc:
            if call_id is not None:
                self._reply(via, call_id, error=(type(exc).__name__, str(exc)))
            else:
                log.exception("mailbox %r raised on a message from %s", mailbox, sender)
            return
        if call_id is not None:
            self._reply(via, call_id, value=value)

    def _reply(
        self,
        via: Connection | None,
        call_id: int,
        *,
        value: Any = None,
        error: tuple[str, str] | None = None,
    ) -> None:
        if error is None:
            message = {"t": "reply", "id": call_id, "ok": True, "body": value}
        else:
            message = {"t": "reply", "id": call_id, "ok": False, "error": list(error)}
        if via is None:
            self._on_reply(self.name, message)
            return
        try:
            via.send_nowait(message)
        except TypeError as exc:
            # The handler returned something msgpack cannot carry: tell the caller.
            self._reply(via, call_id, error=("TypeError", f"reply cannot be encoded: {exc}"))
        except ConnectionClosed:
            pass

    def _on_reply(self, sender: str, message: dict[str, Any]) -> None:
        call = self._calls.get(message.get("id"))  # type: ignore[arg-type]
        if call is None or call.peer != sender or call.future.done():
            return  # a late reply to a call that timed out: nothing waits for it
        if message.get("ok") is True:
            call.future.set_result(message.get("body"))
            return
        error = message.get("error")
        kind, text = ("Error", "malformed error reply")
        if isinstance(error, list) and len(error) == 2:
            kind, text = str(error[0])[:200], str(error[1])[:2000]
        call.future.set_exception(RemoteError(sender, kind, text))

    def _on_message(self, connection: Connection, message: dict[str, Any]) -> None:
        kind = message["t"]
        sender = connection.peer
        if kind == "msg" and isinstance(message.get("to"), str):
            self._deliver(sender, message["to"], message.get("body"), None, connection)
        elif kind == "call" and isinstance(message.get("to"), str) and _is_id(message.get("id")):
            self._deliver(sender, message["to"], message.get("body"), message["id"], connection)
        elif kind == "reply":
            self._on_reply(sender, message)
        else:
            self._warn_once(
                ("message", sender),
                "ignored a malformed or unknown %r message from %s",
                kind[:40],
                sender,
            )

    # -- connections ------------------------------------------------------------------------

    async def _dial(self, peer: str) -> bool:
        target = parse_node_name(peer)
        local = (self.listen_host, 0) if self.listen_host and not self.hidden else None
        try:
            _, link = await asyncio.wait_for(
                asyncio.get_running_loop().create_connection(
                    lambda: Link(self._decoder()),
                    target.host,
                    target.port or self._port,
                    ssl=self._client_ssl,
                    local_addr=local,
                    server_hostname=target.host if self._client_ssl else None,
                    ssl_handshake_timeout=self._handshake_timeout if self._client_ssl else None,
                ),
                timeout=self._handshake_timeout,
            )
        except ssl.SSLError as exc:
            self.metrics.tls_failures.labels("dial").inc()
            self._warn_once(("tls", peer), "TLS handshake with %s failed: %s", peer, exc)
            return False
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or f"no answer within {self._handshake_timeout}s"
            log.debug("cannot reach %s: %s", peer, reason)
            return False
        handshake = self._handshake_state("dialer", peer)
        try:
            await self._handshake(handshake, link, peer)
        except HandshakeError as exc:
            if exc.peer_code == "tie-break":
                # Our dial lost the tie-break to the peer's own dial, which is connecting
                # us right now: connected all the same, once it lands.
                return await self._until_connected(peer)
            return exc.kind == "rejected" and peer in self._connections
        if peer in self._connections:
            link.close()  # raced with an inbound connection that won: keep that one
            return True
        self._establish(handshake, link)
        return True

    async def _until_connected(self, peer: str) -> bool:
        """Wait (at most the handshake timeout) for a connection to ``peer`` to land."""
        if peer in self._connections:
            return True
        arrived = self._arrivals.setdefault(peer, asyncio.Event())
        try:
            await asyncio.wait_for(arrived.wait(), self._handshake_timeout)
        except TimeoutError:
            return False
        finally:
            if self._arrivals.get(peer) is arrived and not arrived.is_set():
                del self._arrivals[peer]
        return peer in self._connections

    def _inbound(self) -> Link:
        """A link for a connection to our listening socket (the server's protocol factory)."""
        return Link(self._decoder(), on_made=self._accepted)

    def _accepted(self, link: Link) -> None:
        """A TCP connection was accepted: within the caps, its handshake starts; beyond
        them it is closed before a byte is read."""
        if not self.started:
            link.abort()
            return
        source = _source(link)
        refused = None
        if sum(self._unauthenticated.values()) >= self._max_unauthenticated:
            refused = "total"
        elif self._unauthenticated[source] >= self._max_unauthenticated_per_source:
            refused = "per_source"
        if refused is not None:
            link.abort()
            self.metrics.connections_refused.labels(refused).inc()
            self._warn_once(
                ("refused", refused if refused == "total" else source),
                "refused connections from %s: too many unauthenticated connections (%s)",
                "everywhere" if refused == "total" else source,
                refused.replace("_", " "),
            )
            return
        self._unauthenticated[source] += 1
        if self._server_ssl is not None:
            link.pause_reading()  # the TLS handshake reads first
        self._spawn(self._accept(link, source))

    async def _accept(self, link: Link, source: str) -> None:
        try:
            handshake = await self._authenticate(link, source)
        finally:
            self._unauthenticated[source] -= 1
            if self._unauthenticated[source] <= 0:
                del self._unauthenticated[source]
        if handshake is None:
            return
        peer = handshake.peer
        assert peer is not None
        refusal: str | None = None
        if handshake.hidden:
            verdict = "accept"
        elif self.supervisor.refuses(peer):
            refusal = "discovery on this node no longer lists you"
            verdict = "excluded"
        else:
            current = self._connections.get(peer)
            verdict = admit(
                me=self.name,
                peer=peer,
                dialling=peer in self._dialling,
                connected_incarnation=current.incarnation if current else None,
                incarnation=handshake.peer_incarnation,
            )
            refusal = REFUSALS.get(verdict)
        if refusal is not None:
            log.debug("refused a connection from %s: %s", peer, refusal)
            with contextlib.suppress(ConnectionError):
                link.write(encode_frame(reject(verdict, refusal)))
            link.close()
            return
        if verdict == "replace":
            try:
                await self._connections[peer].close("the peer restarted")
            except asyncio.CancelledError:
                link.abort()
                raise
        try:
            link.write(encode_frame(handshake.welcome()))
        except ConnectionError:
            link.close()
            return
        self._establish(handshake, link)

    async def _authenticate(self, link: Link, source: str) -> Handshake | None:
        """TLS (if configured) and the cookie handshake of an accepted connection, within
        the handshake timeout; None if either fails (then the link is closed)."""
        if self._server_ssl is not None:
            try:
                await link.start_tls(self._server_ssl, timeout=self._handshake_timeout)
            except (OSError, TimeoutError, ConnectionError) as exc:
                link.abort()
                self.metrics.tls_failures.labels("accept").inc()
                self._warn_once(
                    ("tls", source),
                    "TLS handshake from %s failed: %s",
                    source,
                    str(exc) or exc.__class__.__name__,
                )
                return None
        handshake = self._handshake_state("acceptor")
        try:
            await self._handshake(handshake, link, source)
        except HandshakeError:
            return None
        return handshake

    def _handshake_state(
        self, role: Literal["dialer", "acceptor"], peer: str | None = None
    ) -> Handshake:
        return Handshake(
            role=role,
            me=self.name,
            peer=peer,
            keys=self._keys,
            hidden=self.hidden and role == "dialer",
            incarnation=self.incarnation,
            port=self._port,
        )

    def _decoder(self) -> FrameDecoder:
        return FrameDecoder(PREAUTH, self.codec)

    async def _handshake(self, handshake: Handshake, link: Link, who: str) -> None:
        """Run ``handshake`` over ``link``; on failure close it, log, raise HandshakeError.

        ``who`` is the name dialled, or the source address of an accepted connection:
        warnings are keyed by it, never by a name the peer claims before its proof.
        """
        try:
            async with asyncio.timeout(self._handshake_timeout):
                await _exchange(handshake, link)
            return
        except HandshakeError as exc:
            failure = exc
        except TimeoutError:
            failure = HandshakeError("timed out", kind="timeout", tell_peer=False)
        except FrameError as exc:
            failure = HandshakeError(f"bad frame: {exc}", kind="malformed", tell_peer=False)
        except (ConnectionError, OSError) as exc:
            failure = HandshakeError(f"connection lost ({exc})", kind="closed", tell_peer=False)
        except asyncio.CancelledError:
            link.abort()
            raise
        message = failure.reject()
        if message is not None:
            with contextlib.suppress(ConnectionError):
                link.write(encode_frame(message))
        link.close()
        self.metrics.handshake_failures.labels(failure.kind).inc()
        if failure.peer_code not in REFUSALS:
            if handshake.role == "acceptor":
                claimed = f" (claiming to be {handshake.peer[:80]!r})" if handshake.peer else ""
                self._warn_once(
                    ("handshake", who, failure.kind),
                    "handshake from %s%s failed: %s",
                    who,
                    claimed,
                    failure.reason,
                )
            else:
                self._warn_once(
                    ("handshake", who, failure.kind),
                    "handshake with %s failed: %s",
                    who,
                    failure.reason,
                )
        raise failure

    def _establish(self, handshake: Handshake, link: Link) -> None:
        peer = handshake.peer
        assert peer is not None
        if not self.started:
            link.close()  # stopped while the handshake ran: nobody would close it later
            return
        connection = Connection(
            peer=peer,
            incarnation=handshake.peer_incarnation,
            hidden=handshake.hidden or self.hidden,
            link=link,
            limits=self._limits,
            tick_interval=self._tick_timeout / 3,
            tick_timeout=self._tick_timeout,
            metrics=self.metrics,
            codec=self.codec,
            on_message=self._on_message,
            on_closed=self._on_closed,
        )
        if connection.hidden:
            self._hidden_connections.add(connection)
        else:
            self._connections[peer] = connection
            self._left.pop(peer, None)
            arrived = self._arrivals.pop(peer, None)
            if arrived is not None:
                arrived.set()
            self.metrics.nodes.set(len(self._connections))
            log.info("%s: node up %s", self.name, peer)
            self._emit(NodeUp(self.name, peer), "pycluster_node_up")
        connection.start()

    def _on_closed(self, connection: Connection, reason: str) -> None:
        self._hidden_connections.discard(connection)
        for call in list(self._calls.values()):
            if call.connection is connection and not call.future.done():
                call.future.set_exception(NotConnected(f"{connection.peer}: {reason}"))
        if self._connections.get(connection.peer) is not connection:
            return
        del self._connections[connection.peer]
        if reason == "left":
            self._left[connection.peer] = time.monotonic()
        self.metrics.nodes.set(len(self._connections))
        self.metrics.nodedowns.labels(reason.split(" (")[0]).inc()
        log.info("%s: node down %s (%s)", self.name, connection.peer, reason)
        self._emit(NodeDown(self.name, connection.peer, reason), "pycluster_node_down")

    def _emit(self, event: NodeUp | NodeDown, hook: str) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("%s: a node event listener raised", self.name)
        for subscription in list(self._subscriptions):
            subscription._put(event)
        self.plugins.notify(hook, event)

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """This node's view, as ``/status`` and ``pycluster status --json`` show it."""
        return {
            "node": self.name,
            "nodes": self.nodes(),
            "topologies": {
                name: status.to_json() for name, status in self.supervisor.status().items()
            },
            "registry": self.registry.backend.status(),
        }

    def ready(self) -> bool:
        """Ready once listening and the registry has merged with every connected peer."""
        return self.started and self.registry.backend.synced()

    # -- helpers ----------------------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _warn_once(self, key: tuple[str, ...], message: str, *args: object) -> None:
        """Log a warning, then the same one at debug level for a minute (no spam)."""
        self._repeats.warn(log, key, message, *args, quiet=logging.DEBUG)


async def _exchange(handshake: Handshake, link: Link) -> None:
    """Run the handshake's messages over the link; later messages stay in its inbox."""
    try:
        for message in handshake.start():
            link.write(encode_frame(message))
        while not handshake.done:
            for reply in handshake.receive(await link.receive()):
                link.write(encode_frame(reply))
    except ConnectionClosed:
        raise HandshakeError(
            "connection closed during the handshake", kind="closed", tell_peer=False
        ) from None


def _pack_ref(ref: ActorRef) -> bytes:
    return PLAIN.pack([ref.node, ref.id])


def _unpack_ref(data: bytes) -> ActorRef:
    value = PLAIN.unpack(data)
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise ValueError("an ActorRef is [node, id]")
    return ActorRef(value[0], value[1])


def _tls_contexts(config: Config) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    tls = config.node.tls
    if tls is None:
        return None, None
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.cafile)
    server.load_cert_chain(tls.certfile, tls.keyfile)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.cafile)
    client.load_cert_chain(tls.certfile, tls.keyfile)
    # Peers are named by address, which certificates rarely list: the chain to our CA is
    # checked, and the cookie handshake authenticates the node on top.
    client.check_hostname = False
    return server, client


def _source(link: Link) -> str:
    """The address a connection comes from (without its port: strangers pick ports)."""
    peername = link.extra_info("peername")
    if isinstance(peername, tuple) and len(peername) >= 2:
        return str(peername[0])
    return "an unknown address"


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
