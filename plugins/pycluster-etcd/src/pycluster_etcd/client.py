"""One gRPC channel to an etcd cluster, and etcd3aio's services on it.

etcd3aio builds its own channel only from IPv4 endpoints; this module builds the channel
itself so that IPv6 endpoints and a DNS name (a Kubernetes Service) work too, then hands it
to etcd3aio's KV, Lease and Auth services. The watch stream is opened on the raw stub, whose
resume revision :mod:`pycluster_etcd.mirror` tracks itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]
from etcd3aio._protobuf import WatchCreateRequest, WatchRequest, WatchStub
from etcd3aio.auth import AuthService
from etcd3aio.errors import (
    EtcdConnectionError,
    EtcdError,
    EtcdTransientError,
    EtcdUnauthenticatedError,
)
from etcd3aio.kv import KVService
from etcd3aio.lease import LeaseService

from pycluster_etcd.options import EtcdConnection, is_ip, parse_endpoint

log = logging.getLogger("pycluster_etcd")

T = TypeVar("T")

AUTH_REFRESH = 120.0
"""Seconds between re-authentications (etcd's simple tokens live 300 s by default)."""
KEEPALIVE_MS = 10_000
"""gRPC pings on a quiet connection; etcd refuses pings more often than every 5 s."""

FAILURES: tuple[type[BaseException], ...] = (
    EtcdError,
    grpc.aio.AioRpcError,
    TimeoutError,
    OSError,
    # gRPC raises this when a stream is written to after the call already failed.
    asyncio.InvalidStateError,
)
"""What a request to an unreachable or unhappy etcd raises."""


def describe(exc: BaseException) -> str:
    """A failed request, in one line for operators (never with secrets)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        details = exc.details() or ""
        return f"{exc.code().name}: {details}" if details else str(exc.code().name)
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def unexpected(what: str, exc: Exception, last: str | None) -> str:
    """Log an exception a background loop did not expect (with its traceback, unless it
    is the same as ``last``); its description, for the loop to carry on."""
    problem = f"{type(exc).__name__}: {exc}"
    if problem != last:
        log.error("%s: unexpected error; retrying", what, exc_info=exc)
    return problem


def transient(exc: BaseException) -> bool:
    """Whether a request failed in a way another attempt may not (no answer in time, no
    leader yet, a member gone), as opposed to a refusal (permission, bad request)."""
    if isinstance(exc, TimeoutError | EtcdConnectionError | EtcdTransientError | OSError):
        return True
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return False


def lease_not_found(exc: BaseException) -> bool:
    """Whether etcd refused a request because the lease it names has expired."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return bool(exc.code() == grpc.StatusCode.NOT_FOUND and "lease" in (exc.details() or ""))
    return False


def target(endpoints: tuple[str, ...]) -> str:
    """The gRPC target naming every endpoint: an ``ipv4:``/``ipv6:`` address list, or
    ``dns:`` for a single name (all its A/AAAA records are used, round robin)."""
    parsed = [parse_endpoint(endpoint) for endpoint in endpoints]
    hosts = [host for host, _ in parsed]
    if all(is_ip(host) and ":" not in host for host in hosts):
        return "ipv4:" + ",".join(f"{host}:{port}" for host, port in parsed)
    if all(is_ip(host) and ":" in host for host in hosts):
        return "ipv6:" + ",".join(f"[{host}]:{port}" for host, port in parsed)
    if len(parsed) == 1:
        host, port = parsed[0]
        return f"dns:///{host}:{port}"
    raise ValueError("endpoints must be IPv4 addresses, IPv6 addresses, or one DNS name")


class EtcdClient:
    """A connection to etcd: ``kv`` and ``lease`` services plus raw watch streams.

    ``open`` reads the TLS files and builds the channel (it does not wait for etcd).
    Requests go through :meth:`request`, which authenticates first when ``auth`` is set
    and once more when etcd refuses the token. They fail fast while etcd is unreachable;
    gRPC reconnects in the background.
    """

    def __init__(self, settings: EtcdConnection) -> None:
        self.settings = settings
        self.timeout = settings.timeout
        self._channel: Any = None
        self.kv: KVService
        self.lease: LeaseService
        self._auth: AuthService | None = None
        self._watch: Any = None
        self._token: str | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Build the channel and the services; authenticate when ``auth`` is set."""
        options: list[tuple[str, Any]] = [
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", 5_000),
            # Reconnect quickly once etcd is back, rather than after gRPC's long backoff.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2_000),
            ("grpc.min_reconnect_backoff_ms", 200),
        ]
        address = target(self.settings.endpoints)
        tls = self.settings.tls
        if tls is None:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        else:
            ca, cert, key = await asyncio.to_thread(
                _read_files, tls.cafile, tls.certfile, tls.keyfile
            )
            credentials = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=key, certificate_chain=cert
            )
            if tls.server_name is not None:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            self._channel = grpc.aio.secure_channel(address, credentials, options=options)
        self.kv = KVService(self._channel)
        self.lease = LeaseService(self._channel)
        self._watch = WatchStub(self._channel)
        if self.settings.auth is not None:
            self._auth = AuthService(self._channel)
            self._refresher = asyncio.create_task(self._refresh_token())

    @property
    def channel(self) -> Any:
        """The gRPC channel (``grpc.aio.Channel``), for etcd3aio's other services."""
        return self._channel

    async def close(self) -> None:
        """Close the channel (pending requests fail)."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def authenticate(self) -> None:
        """Get a fresh token for the configured user and use it from now on."""
        auth = self.settings.auth
        if auth is None or self._auth is None:
            return
        response = await self._auth.authenticate(auth.username, auth.password, timeout=self.timeout)
        self._token = str(response.token)
        for service in (self.kv, self.lease, self._auth):
            service.set_token(self._token)

    async def _refresh_token(self) -> None:
        while True:
            await asyncio.sleep(AUTH_REFRESH)
            try:
                await self.authenticate()
            except FAILURES as exc:
                log.debug("re-authenticating to etcd failed: %s", describe(exc))

    async def request(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await ``make()``, authenticated; once more with a new token if etcd refused the
        old one (it expired, or etcd restarted)."""
        if self._auth is not None and self._token is None:
            await self.authenticate()
        try:
            return await make()
        except FAILURES as exc:
            if self._auth is None or not _unauthenticated(exc):
                raise
        await self.authenticate()
        return await make()

    async def watch(
        self, prefix: bytes, range_end: bytes, start_revision: int
    ) -> AsyncIterator[Any]:
        """Watch responses for keys in ``[prefix, range_end)`` from ``start_revision``.

        Ends by raising when the stream fails; the caller resumes from its own revision.
        """
        if self._auth is not None and self._token is None:
            await self.authenticate()
        metadata = (("token", self._token),) if self._token else None
        # Written to directly (no request iterator): the stream stays open for the one
        # watch it carries, and nothing is left behind when it is cancelled.
        call = self._watch.Watch(metadata=metadata)
        try:
            create = WatchCreateRequest(
                key=prefix, range_end=range_end, start_revision=start_revision
            )
            await call.write(WatchRequest(create_request=create))
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise EtcdError("etcd closed the watch stream")
                yield response
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED and self._auth is not None:
                self._token = None  # authenticate again before the next watch
            raise
        finally:
            call.cancel()


def _unauthenticated(exc: BaseException) -> bool:
    if isinstance(exc, EtcdUnauthenticatedError):
        return True
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAUTHENTICATED


def _read_files(*paths: str | None) -> list[bytes | None]:
    return [None if path is None else Path(path).read_bytes() for path in paths]
