"""A node's HTTP endpoints: /healthz, /readyz, /status, /metrics, and the live page: ``/``
(static files from ``pycluster/page``) with its data, ``/view``, ``/view/names`` and
``/view/groups`` (see :mod:`pycluster.view`) (aiohttp).

With ``node.http.token`` set, every endpoint but /healthz, /readyz and the page's static
files (which hold no data) answers 401 without ``Authorization: Bearer TOKEN``.

They bind the node's own address, so probes reach the pod and a partition cut between two
loopback addresses cuts HTTP too.

Whatever reaches the pod reaches this port, so no client may hold it: this module owns the
listening sockets and the accept loop (aiohttp only parses requests and answers them). A
connection beyond a cap, in all or from one source address, is closed as soon as it is
accepted, so the listen backlog never fills; a connection slow to send its request
headers, or idle too long between requests, is closed; an accept that fails for want of
resources (file descriptors, memory) is retried after a pause, and logged once a minute at
most rather than once per attempt.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import importlib.resources
import logging
import socket
from typing import Any, Literal, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

from pycluster.metrics import NodeMetrics
from pycluster.throttle import Throttle
from pycluster.view import ClusterView

log = logging.getLogger(__name__)

CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"
HEADER_TIMEOUT = 10.0
"""Seconds a client has to send a request's headers: counted from connecting for the first
request, and from the first byte of each later request on a kept-alive connection."""
IDLE_TIMEOUT = 60.0
"""Seconds a kept-alive connection may wait, after a response, for the next request."""
MAX_CONNECTIONS = 1024
"""HTTP connections open at once, in all; one more is closed as soon as it is accepted."""
MAX_CONNECTIONS_PER_SOURCE = 64
"""HTTP connections open at once from one source address; one more is closed at once."""
BACKLOG = 128
"""Connections the kernel queues before they are accepted (aiohttp's default)."""
ACCEPT_RETRY_DELAY = 1.0
"""Seconds to pause after an accept failed, out of file descriptors say (as asyncio's
servers do: the listening socket stays readable, so retrying at once would spin)."""
WARNING_INTERVAL = 60.0
"""Seconds between two log lines about the same repeated trouble (the repeats in between are
only counted: how often they happen is the attacker's choice)."""

PAGE_FILES = {
    "index.html": "text/html",
    "page.js": "text/javascript",
    "page.css": "text/css",
}
"""The live page's files (in ``pycluster/page``) and their content types."""
PAGE_HEADERS = {
    # Scripts and styles come from the node alone; nothing of the page may be framed.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", *(f"/page/{name}" for name in PAGE_FILES)})
"""What answers without the token: the probes, and the page's files (no data in them)."""
MAX_QUERY = 200
"""Characters of a name filter (``q``) looked at; the rest is ignored."""

Cap = Literal["total", "per_source"]
Clock = Literal["header", "idle"]


class ConnectionCaps:
    """Connections open, in all and per source address, and which cap a new one breaks."""

    def __init__(self, total: int, per_source: int) -> None:
        self.total = total
        self.per_source = per_source
        self.open = 0
        """Connections counted in and not yet out."""
        self._from: collections.Counter[str] = collections.Counter()

    def admit(self, source: str) -> Cap | None:
        """Count a new connection from ``source`` in, or return the cap it would break."""
        if self.open >= self.total:
            return "total"
        if self._from[source] >= self.per_source:
            return "per_source"
        self._from[source] += 1
        self.open += 1
        return None

    def release(self, source: str) -> None:
        """Count out a connection :meth:`admit` counted in."""
        self.open -= 1
        self._from[source] -= 1
        if not self._from[source]:
            del self._from[source]


class _Connection(web.RequestHandler):
    """aiohttp's protocol for one connection, plus the clock that closes it when a client
    is slow to send its headers (``header``) or waits too long between requests (``idle``).
    """

    def __init__(self, endpoints: HttpEndpoints, server: web.Server, source: str) -> None:
        # aiohttp's keepalive_timeout closes a connection waiting for a request; ours close
        # it first (and count why), so aiohttp's is only a backstop.
        super().__init__(
            server,
            loop=asyncio.get_running_loop(),
            keepalive_timeout=endpoints.header_timeout + endpoints.idle_timeout,
            access_log=None,  # type: ignore[arg-type]  # aiohttp documents None as "no access log"
        )
        self._endpoints = endpoints
        self._source: str | None = source
        self._clock: asyncio.TimerHandle | None = None
        self._clock_kind: Clock | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_clock("header")

    def data_received(self, data: bytes) -> None:
        if self._clock_kind == "idle":
            self._start_clock("header")  # the next request has begun
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_clock()
        self.release()
        super().connection_lost(exc)

    def release(self) -> None:
        """Give the connection's place under the caps back (once)."""
        if self._source is not None:
            self._endpoints.caps.release(self._source)
            self._source = None

    def request_started(self) -> None:
        """The request's headers are in: no clock runs while the node answers."""
        self._stop_clock()

    def request_finished(self) -> None:
        """The answer is made: the connection now waits for the next request."""
        self._start_clock("idle")

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp logs a traceback for each malformed request (a 400): a client would
        choose how much we log. One throttled line instead, without the traceback."""
        error = kw.get("exc_info")
        reason = f"{error.__class__.__name__}: {str(error)[:200]}" if error else str(args[:1])
        self._endpoints._warn(
            ("request",), "node %s: bad HTTP request: %s", self._endpoints.node_name, reason
        )

    def _start_clock(self, kind: Clock) -> None:
        self._stop_clock()
        timeout = (
            self._endpoints.header_timeout if kind == "header" else self._endpoints.idle_timeout
        )
        self._clock = asyncio.get_running_loop().call_later(timeout, self._expire, kind)
        self._clock_kind = kind

    def _stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
        self._clock, self._clock_kind = None, None

    def _expire(self, kind: Clock) -> None:
        self._clock, self._clock_kind = None, None
        self._endpoints.metrics.http_closed.labels(kind).inc()
        # abort, not close: a client that reads nothing would keep a closing one open.
        if self.transport is not None:
            self.transport.abort()


@web.middleware
async def _clocked(request: web.Request, handler: Handler) -> web.StreamResponse:
    connection = request.protocol
    if not isinstance(connection, _Connection):
        return await handler(request)
    connection.request_started()
    try:
        return await handler(request)
    finally:
        connection.request_finished()


_EXPECTED = web.AppKey("pycluster_expected_authorization", bytes)
"""``Bearer TOKEN`` as bytes; empty when no token is set."""


@web.middleware
async def _authorized(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Without the token (when one is set), 401 for all but :data:`OPEN_PATHS`."""
    expected = request.app[_EXPECTED]
    if not expected or request.path in OPEN_PATHS:
        return await handler(request)
    given = request.headers.get("Authorization", "").encode("utf-8", "replace")
    if hmac.compare_digest(given, expected):
        return await handler(request)
    return web.json_response(
        {"error": "this endpoint needs Authorization: Bearer <node.http.token>"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="pycluster"'},
    )


class Observed(Protocol):
    """What the endpoints show of a node (:class:`~pycluster.node.Node` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def metrics(self) -> NodeMetrics: ...

    def ready(self) -> bool: ...

    async def readiness(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...


class HttpEndpoints:
    """The HTTP server of one node."""

    def __init__(
        self,
        node: Observed,
        host: str | None,
        port: int,
        *,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_source: int = MAX_CONNECTIONS_PER_SOURCE,
        view: ClusterView | None = None,
        token: str | None = None,
    ) -> None:
        self._node = node
        self._view = view
        self._host = host
        self._port = port
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.caps = ConnectionCaps(max_connections, max_connections_per_source)
        self.metrics = node.metrics
        self.node_name = node.name
        self._repeats = Throttle(WARNING_INTERVAL)
        self._listeners: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        app = web.Application(middlewares=[_clocked, _authorized])
        app[_EXPECTED] = b"" if token is None else f"Bearer {token.strip()}".encode()
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/status", self._status),
                web.get("/metrics", self._metrics),
                web.get("/", self._page),
                web.get("/page/{file}", self._page),
                web.get("/view", self._snapshot),
                web.get("/view/names", self._names),
                web.get("/view/groups", self._groups),
            ]
        )
        self._runner = web.AppRunner(app, handle_signals=False)

    async def start(self) -> None:
        """Bind and serve."""
        await self._runner.setup()
        self._listeners = await _listen(self._host, self._port)
        self._accepting = [asyncio.create_task(self._accept(s)) for s in self._listeners]

    async def stop(self) -> None:
        """Stop serving."""
        for task in self._accepting:
            task.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)
        for listener in self._listeners:
            listener.close()
        await self._runner.cleanup()

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except ConnectionAbortedError:
                continue  # that client gave up while queued
            except OSError as error:
                self._warn(
                    ("accept",),
                    "node %s: the HTTP port cannot accept connections (%s); retrying every %ss",
                    self._node.name,
                    error,
                    ACCEPT_RETRY_DELAY,
                )
                await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            source = str(address[0])
            refused = self.caps.admit(source)
            if refused is None:
                await self._serve(sock, source)
                continue
            sock.close()
            self.metrics.http_refused.labels(refused).inc()
            self._warn(
                ("refused", refused),
                "node %s: HTTP connection from %s refused: %s",
                self._node.name,
                source,
                f"{self.caps.total} connections open in all"
                if refused == "total"
                else f"{self.caps.per_source} connections open from that address",
            )

    async def _serve(self, sock: socket.socket, source: str) -> None:
        server = self._runner.server
        assert server is not None, "start() sets the runner up first"
        connection = _Connection(self, server, source)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: connection, sock)
        except OSError as error:
            log.debug("node %s: HTTP connection from %s lost: %s", self._node.name, source, error)
            connection.release()
            sock.close()

    def _warn(self, key: tuple[str, ...], message: str, *args: object) -> None:
        """Log a warning once a minute per ``key`` at most; repeats are not even logged at
        debug level, since an attacker sets their pace."""
        self._repeats.warn(log, key, message, *args)

    async def _healthz(self, request: web.Request) -> web.Response:
        # Answering at all proves the event loop runs.
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        answer = await self._node.readiness()
        return web.json_response(answer, status=200 if answer["ready"] else 503)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self._node.status())

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._node.metrics.render(), headers={"Content-Type": CONTENT_TYPE_METRICS}
        )

    async def _page(self, request: web.Request) -> web.Response:
        name = request.match_info.get("file", "index.html")
        content_type = PAGE_FILES.get(name)
        if content_type is None:
            raise web.HTTPNotFound()
        return web.Response(
            body=_page_file(name),
            content_type=content_type,
            charset="utf-8",
            headers=PAGE_HEADERS,
        )

    def _viewed(self) -> ClusterView:
        if self._view is None:
            raise web.HTTPNotFound(text="this node serves no cluster view\n")
        return self._view

    async def _snapshot(self, request: web.Request) -> web.Response:
        return web.json_response(await self._viewed().snapshot(), headers=_NO_STORE)

    async def _names(self, request: web.Request) -> web.Response:
        query, offset, limit = _page_query(request)
        page = self._viewed().names_page(query, offset, limit)
        return web.json_response(page, headers=_NO_STORE)

    async def _groups(self, request: web.Request) -> web.Response:
        query, offset, limit = _page_query(request)
        page = self._viewed().groups_page(query, offset, limit)
        return web.json_response(page, headers=_NO_STORE)


_NO_STORE = {"Cache-Control": "no-store"}
_PAGE_CACHE: dict[str, bytes] = {}


def _page_file(name: str) -> bytes:
    """A file of the live page (package data), read once."""
    data = _PAGE_CACHE.get(name)
    if data is None:
        data = importlib.resources.files("pycluster").joinpath("page", name).read_bytes()
        _PAGE_CACHE[name] = data
    return data


def _page_query(request: web.Request) -> tuple[str, int, int]:
    """``q``, ``offset`` and ``limit`` of a ``/view/names`` or ``/view/groups`` request;
    400 when a number is not one."""
    try:
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise web.HTTPBadRequest(text="offset and limit are whole numbers\n") from None
    return request.query.get("q", "")[:MAX_QUERY], offset, limit


async def _listen(host: str | None, port: int) -> list[socket.socket]:
    """Listening sockets on each address ``host`` resolves to (every interface if None)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                listener = socket.socket(family, kind, proto)
            except OSError:
                continue  # a family this host does not have (IPv6, say), as asyncio does
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                listener.bind(address)
            except OSError as error:
                raise OSError(
                    error.errno,
                    f"error while attempting to bind on address {address!r}: {error.strerror}",
                ) from None
            listener.listen(BACKLOG)
            listener.setblocking(False)
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners
