"""The TCP mesh: one authenticated connection to every peer, dialled or accepted.

A :class:`TcpMesh` listens on, and dials from, its node's own address; it authenticates
every connection with the cookie handshake (TLS first, if configured), keeps one connection
per peer, and declares a peer down when it falls silent (ticks, in
:class:`~pycluster.transport.connection.Connection`). Messages, mailboxes and calls are the
:class:`~pycluster.transport.endpoint.Endpoint`'s. Whether a peer may connect at all is
discovery's decision, passed in as ``refuses``. A dial that fails says why, as a
:class:`~pycluster.membership.ConnectFailure` whose reason is decided here: from what
opening the connection raised (:func:`dial_failure`) or how its handshake failed
(:func:`handshake_failure`).

Which connection survives when two nodes dial each other at once (:func:`admit`, no I/O):
every pair of nodes keeps exactly one connection. When an authenticated connection arrives
from a peer, the accepting node decides; both nodes apply the same rule to the same facts,
so they agree without another round trip:

- A peer that dials while we hold a connection to its *same* incarnation is a duplicate
  (our connection is live and the peer's dial raced it): refused as a duplicate.
- A peer of a *new* incarnation (it restarted before we noticed the old connection die)
  replaces the old connection at once.
- While we are dialling the peer ourselves, the connection dialled by the node with the
  smaller name wins: we refuse the peer's dial if our name is smaller (it lost the
  tie-break), else accept it (and the peer refuses ours by the same rule).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Literal

from pycluster.codec import Codec
from pycluster.config import Config
from pycluster.membership import ConnectFailure, ConnectReason
from pycluster.metrics import NodeMetrics
from pycluster.nodename import parse_node_name
from pycluster.transport.connection import Connection, ConnectionClosed
from pycluster.transport.endpoint import Endpoint
from pycluster.transport.frames import (
    PREAUTH,
    FrameDecoder,
    FrameError,
    FrameLimits,
    HttpAnswer,
    encode_frame,
)
from pycluster.transport.handshake import Handshake, HandshakeError, reject
from pycluster.transport.link import Link
from pycluster.transport.ticker import Ticker

log = logging.getLogger("pycluster.node")

MAX_UNAUTHENTICATED = 256
"""Connections to the cluster port still in their handshake, at most, from anywhere."""
MAX_UNAUTHENTICATED_PER_SOURCE = 16
"""Connections still in their handshake, at most, from one source address."""

Admission = Literal["accept", "replace", "duplicate", "tie-break"]
"""accept; replace the old connection; refuse a duplicate of a live connection; refuse a
dial that lost the tie-break (the peer's end of our own dial is about to connect us)."""

REFUSALS: dict[str, str] = {
    "duplicate": "duplicate connection",
    "tie-break": "simultaneous dial: the connection dialled by the smaller name is kept",
}
"""The reason sent in the ``reject`` message for each refusal."""

HTTP_ANSWER = "the peer answered HTTP: that is a node's HTTP port (node.http), not its cluster port"
"""Why a dial failed whose peer answered in HTTP (handshake failure kind ``http``)."""

HANDSHAKE_REASONS: dict[str, ConnectReason] = {
    "cookie": "cookie",
    "name": "name",
    "version": "version",
    "http": "http",
    "malformed": "malformed",
    "protocol": "malformed",
    "timeout": "timeout",
    "closed": "closed",
    "excluded": "refused_by_peer",
}
"""The reason of a dial whose handshake failed, by the failure's kind or, when the peer
rejected it, by the code the peer gave (its own kind, or ``excluded``: its discovery keeps
this node out)."""


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


class TcpMesh(Endpoint):
    """The cluster's connections over TCP (module doc). ``keys`` are the cookie keys (the
    first dials, any is accepted); ``refuses(peer)`` says whether discovery keeps ``peer``
    out (its connections are then refused)."""

    def __init__(
        self,
        config: Config,
        *,
        keys: Sequence[bytes],
        incarnation: bytes,
        codec: Codec,
        metrics: NodeMetrics,
        refuses: Callable[[str], bool] = lambda peer: False,
        hidden: bool = False,
        handshake_timeout: float = 5.0,
        max_unauthenticated: int = MAX_UNAUTHENTICATED,
        max_unauthenticated_per_source: int = MAX_UNAUTHENTICATED_PER_SOURCE,
    ) -> None:
        super().__init__(
            config.node.name,
            port=config.node.port,
            incarnation=incarnation,
            codec=codec,
            metrics=metrics,
            hidden=hidden,
        )
        own = parse_node_name(config.node.name)
        self.listen_host: str | None = config.node.bind or (own.host if own.is_ip else None)
        self.listen_port = own.port or self._port
        self.refuses = refuses
        self._keys = tuple(keys)
        self._tick_timeout = config.node.net_tick_timeout
        self._ticker = Ticker(early=self._tick_timeout / 6)
        """Ticks every connection: those due within half a tick interval go together."""
        metrics.tick_patience.set_function(lambda: self._ticker.patience)  # read on scrape
        self._limits = FrameLimits.authenticated(config.node.max_frame_size)
        """What an authenticated peer's frames may hold."""
        self._handshake_timeout = handshake_timeout
        self._server_ssl, self._client_ssl = _tls_contexts(config)
        self._dialling: dict[str, asyncio.Future[ConnectFailure | None]] = {}
        self._arrivals: dict[str, asyncio.Event] = {}
        self._max_unauthenticated = max_unauthenticated
        self._max_unauthenticated_per_source = max_unauthenticated_per_source
        self._unauthenticated: collections.Counter[str] = collections.Counter()
        """Connections in their handshake, by source address."""
        self._server: asyncio.Server | None = None

    async def bind(self) -> None:
        """Bind the listening socket (a taken port fails here); it serves once started."""
        if self.hidden:
            return
        self._server = await asyncio.get_running_loop().create_server(
            self._inbound,
            host=self.listen_host,
            port=self.listen_port,
            # No ssl= here: TLS starts in _accept, after the connection caps and under
            # the handshake timeout (asyncio's own default would hold it 60 s).
            reuse_address=True,
            # Bound now, listening once started: a dial that came earlier would be cut in
            # the middle of its handshake.
            start_serving=False,
        )

    async def start(self) -> None:
        """Accept connections (bind first, if :meth:`bind` has not run)."""
        if self._server is None:
            await self.bind()
        await super().start()
        if self._server is not None:
            await self._server.start_serving()

    async def stop(self) -> None:
        """Stop listening, tell every peer this node leaves, close every connection."""
        if self._server is not None:
            self._server.close()
        await super().stop()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)

    async def connect(self, name: str) -> bool:
        """Connect to ``name`` (a no-op when connected); False if it cannot be reached."""
        return await self.dial(name) is None

    async def dial(self, name: str) -> ConnectFailure | None:
        """Connect to ``name`` (a no-op when connected): None once connected, else why
        not (:func:`dial_failure` and :func:`handshake_failure` decide the reason)."""
        try:
            peer = self.canonical(name)
        except ValueError as exc:
            log.warning("cannot connect to %r: not a node name", name)
            return ConnectFailure("other", str(exc))
        if peer == self.name:
            return ConnectFailure("other", "this node itself")
        if not self.started:
            return ConnectFailure("other", "this node is not running")
        if peer in self._connections:
            return None
        if self.hidden and any(c.peer == peer and not c.closed for c in self._hidden_connections):
            return None
        if self.left(peer):
            return ConnectFailure("left")
        pending = self._dialling.get(peer)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ConnectFailure | None] = asyncio.get_running_loop().create_future()
        self._dialling[peer] = future
        failure: ConnectFailure | None = ConnectFailure("other", "the dial was cancelled")
        try:
            failure = await self._dial(peer)
        finally:
            del self._dialling[peer]
            future.set_result(failure)
        return failure

    async def _dial(self, peer: str) -> ConnectFailure | None:
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
        except (OSError, TimeoutError) as exc:
            failure = dial_failure(exc, self._handshake_timeout)
            if failure.reason == "tls":
                self.metrics.tls_failures.labels("dial").inc()
                self._warn_once(("tls", peer), "TLS handshake with %s failed: %s", peer, exc)
            else:
                log.debug(
                    "cannot reach %s: %s",
                    peer,
                    failure,
                    extra={
                        "event": "dial_failed",
                        "peer": peer,
                        "reason": failure.detail,
                        "kind": failure.reason,
                    },
                )
            return failure
        handshake = self._handshake_state("dialer", peer)
        try:
            await self._handshake(handshake, link, peer)
        except HandshakeError as exc:
            if exc.peer_code == "tie-break":
                # Our dial lost the tie-break to the peer's own dial, which is connecting
                # us right now: connected all the same, once it lands.
                if await self._until_connected(peer):
                    return None
                return ConnectFailure(
                    "timeout",
                    f"the peer's own connection did not arrive within {self._handshake_timeout}s",
                )
            if exc.kind == "rejected" and peer in self._connections:
                return None
            return handshake_failure(exc)
        if peer in self._connections:
            link.close()  # raced with an inbound connection that won: keep that one
            return None
        self._admitted(handshake, link)
        return None

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
        elif self.refuses(peer):
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
            log.debug(
                "refused a connection from %s: %s",
                peer,
                refusal,
                extra={"event": "connection_refused", "peer": peer, "reason": verdict},
            )
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
        self._admitted(handshake, link)

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
            if isinstance(exc, HttpAnswer) and handshake.role == "dialer":
                # Where a node was dialled, an HTTP server answered: a node's HTTP port.
                failure = HandshakeError(HTTP_ANSWER, kind="http", tell_peer=False)
            else:
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

    def _admitted(self, handshake: Handshake, link: Link) -> None:
        """The handshake over ``link`` succeeded and the connection was admitted."""
        peer = handshake.peer
        assert peer is not None
        if not self.started:
            link.close()  # stopped while the handshake ran: nobody would close it later
            return
        self._establish(
            Connection(
                peer=peer,
                incarnation=handshake.peer_incarnation,
                hidden=handshake.hidden or self.hidden,
                link=link,
                version=handshake.version,
                limits=self._limits,
                tick_interval=self._tick_timeout / 3,
                tick_timeout=self._tick_timeout,
                metrics=self.metrics,
                codec=self.codec,
                on_message=self._on_message,
                on_closed=self._on_closed,
                ticker=self._ticker,
            )
        )

    def _arrived(self, peer: str) -> None:
        arrived = self._arrivals.pop(peer, None)
        if arrived is not None:
            arrived.set()


def dial_failure(exc: OSError | TimeoutError, timeout: float) -> ConnectFailure:
    """Why a TCP (or TLS) connection could not be opened, from what opening it raised."""
    if isinstance(exc, ssl.SSLError):
        return ConnectFailure("tls", str(exc))
    if isinstance(exc, socket.gaierror):
        return ConnectFailure("unresolved", str(exc))
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailure("refused", str(exc))
    if isinstance(exc, TimeoutError):
        return ConnectFailure("timeout", str(exc) or f"no answer within {timeout}s")
    return ConnectFailure("unreachable", str(exc) or type(exc).__name__)


def handshake_failure(exc: HandshakeError) -> ConnectFailure:
    """Why a dial failed in its handshake: by the failure's kind, or the peer's code."""
    code = exc.peer_code if exc.kind == "rejected" else exc.kind
    return ConnectFailure(HANDSHAKE_REASONS.get(code or "", "other"), exc.reason)


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
