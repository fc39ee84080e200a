"""The node's HTTP port under abuse: caps on connections, header and idle timeouts, and a
failing accept logged once, not once per attempt. Real sockets on 127.0.11.x."""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest

from pycluster import http, load_config
from pycluster.http import HttpEndpoints
from pycluster.node import Node
from tests.conftest import eventually

COOKIE = "http-test-cookie-0123"
HOST = "127.0.11.2"
PORT = 9211
SOURCES = [f"127.0.11.{i}" for i in range(10, 20)]
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    config = load_config({"node": {"name": f"h@{HOST}"}}, env={})
    async with Node(config, cookie=COOKIE) as started:
        yield started


@asynccontextmanager
async def serving(node: Node, **limits: Any) -> AsyncIterator[HttpEndpoints]:
    endpoints = HttpEndpoints(node, HOST, PORT, **limits)
    await endpoints.start()
    try:
        yield endpoints
    finally:
        await endpoints.stop()


@asynccontextmanager
async def connections(source: str, count: int) -> AsyncIterator[list[Stream]]:
    """``count`` connections to the node's HTTP port from ``source``, opened in order."""
    opened: list[Stream] = []
    try:
        for _ in range(count):
            opened.append(await asyncio.open_connection(HOST, PORT, local_addr=(source, 0)))
        yield opened
    finally:
        for _, writer in opened:
            writer.close()


def sample(node: Node, name: str, reason: str) -> float:
    value = node.metrics.registry.get_sample_value(name, {"reason": reason})
    return 0.0 if value is None else value


def refused(node: Node, reason: str) -> float:
    return sample(node, "pycluster_http_connections_refused_total", reason)


def timed_out(node: Node, reason: str) -> float:
    return sample(node, "pycluster_http_connections_timed_out_total", reason)


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (with a Content-Length); return its status."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    length = next(
        int(line.split(":", 1)[1])
        for line in head.split("\r\n")
        if line.lower().startswith("content-length:")
    )
    await reader.readexactly(length)
    return int(head.split(" ", 2)[1])


async def request(stream: Stream, path: str) -> int:
    """Send one keep-alive GET over ``stream``; return the response's status."""
    reader, writer = stream
    writer.write(f"GET {path} HTTP/1.1\r\nHost: node\r\n\r\n".encode())
    return await asyncio.wait_for(read_response(reader), 5)


async def healthz(source: str) -> int:
    """GET /healthz over a new connection from ``source``."""
    async with connections(source, 1) as (stream,):
        return await request(stream, "/healthz")


async def seconds_until_closed(reader: asyncio.StreamReader, *, timeout: float = 10.0) -> float:
    """Wait until the node closes the connection (end of file or reset); return how long."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), timeout) == b""
    return loop.time() - started


def test_the_defaults() -> None:
    parameters = inspect.signature(HttpEndpoints).parameters
    defaults = {name: parameters[name].default for name in list(parameters)[3:]}
    assert defaults == {
        "view": None,
        "token": None,
        "header_timeout": 10.0,
        "idle_timeout": 60.0,
        "max_connections": 1024,
        "max_connections_per_source": 64,
    }


async def test_over_64_from_one_address_are_closed_at_once_and_counted(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(node) as endpoints, connections(SOURCES[0], 70) as streams:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for reader, _ in streams[64:]:
            await seconds_until_closed(reader, timeout=5)
        # Closed by the cap, not by the 10 s header timeout.
        assert loop.time() - started < 5
        await eventually(lambda: refused(node, "per_source") == 6)
        assert endpoints.caps.open == 64
        assert not any(reader.at_eof() for reader, _ in streams[:64])
        assert await healthz(SOURCES[1]) == 200
        assert refused(node, "total") == 0
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert lines == [
        f"node h@{HOST}: HTTP connection from {SOURCES[0]} refused: "
        "64 connections open from that address"
    ]


async def test_over_the_total_cap_a_new_connection_is_closed_at_once(node: Node) -> None:
    async with (
        serving(node, max_connections=6) as endpoints,
        connections(SOURCES[0], 3),
        connections(SOURCES[1], 3) as second,
    ):
        await eventually(lambda: endpoints.caps.open == 6)
        async with connections(SOURCES[2], 1) as [(reader, _)]:
            assert await seconds_until_closed(reader, timeout=5) < 5
        assert refused(node, "total") == 1
        assert refused(node, "per_source") == 0
        # A connection that closes frees its place.
        second[0][1].close()
        await eventually(lambda: endpoints.caps.open == 5)
        assert await healthz(SOURCES[2]) == 200


async def test_half_a_request_line_is_closed_after_the_header_timeout(node: Node) -> None:
    async with serving(node, header_timeout=0.3) as endpoints, connections(SOURCES[0], 2) as s:
        (half, half_writer), (silent, _) = s
        half_writer.write(b"GET /hea")
        assert 0.25 < await seconds_until_closed(half) < 5
        await seconds_until_closed(silent)
        assert timed_out(node, "header") == 2
        assert timed_out(node, "idle") == 0
        await eventually(lambda: endpoints.caps.open == 0)


async def test_the_next_request_has_the_header_timeout_from_its_first_byte(node: Node) -> None:
    async with (
        serving(node, header_timeout=0.3, idle_timeout=30) as endpoints,
        connections(SOURCES[0], 1) as [stream],
    ):
        assert await request(stream, "/healthz") == 200
        reader, writer = stream
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: no")
        assert 0.25 < await seconds_until_closed(reader) < 5
        assert timed_out(node, "header") == 1
        assert timed_out(node, "idle") == 0
        await eventually(lambda: endpoints.caps.open == 0)


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    node: Node,
) -> None:
    async with (
        serving(node, header_timeout=30, idle_timeout=0.3) as endpoints,
        connections(SOURCES[0], 1) as [stream],
    ):
        # Requests within the timeout keep the connection; pipelined ones too.
        for _ in range(3):
            assert await request(stream, "/healthz") == 200
        reader, writer = stream
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: node\r\n\r\n" * 2)
        assert [await read_response(reader) for _ in range(2)] == [200, 200]
        assert timed_out(node, "idle") == 0
        assert 0.25 < await seconds_until_closed(reader) < 5
        assert timed_out(node, "idle") == 1
        assert timed_out(node, "header") == 0
        await eventually(lambda: endpoints.caps.open == 0)


async def test_a_failing_accept_is_logged_once_without_a_traceback(
    node: Node, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of file descriptors, every accept fails: one warning, then quiet retries."""
    loop = asyncio.get_running_loop()
    accept = loop.sock_accept
    failures = 50

    async def out_of_descriptors(listener: socket.socket) -> tuple[socket.socket, Any]:
        nonlocal failures
        if failures:
            failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return await accept(listener)

    monkeypatch.setattr(http, "ACCEPT_RETRY_DELAY", 0.001)
    monkeypatch.setattr(loop, "sock_accept", out_of_descriptors)
    async with serving(node):
        assert await healthz(SOURCES[0]) == 200
    assert failures == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"node h@{HOST}: the HTTP port cannot accept connections ([Errno 24] Too many open "
        "files); retrying every 0.001s"
    ]
    assert warnings[0].exc_info is None


async def test_a_node_with_an_http_port_serves_it_with_the_limits() -> None:
    config = load_config({"node": {"name": f"g@{HOST}:9111", "http": {"port": 9212}}}, env={})
    async with Node(config, cookie=COOKIE):
        opened = [
            await asyncio.open_connection(HOST, 9212, local_addr=(SOURCES[0], 0)) for _ in range(65)
        ]
        try:
            assert await seconds_until_closed(opened[-1][0], timeout=5) < 5
        finally:
            for _, writer in opened:
                writer.close()


async def test_malformed_requests_are_logged_once_without_a_traceback(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(node):
        for _ in range(30):
            reader, writer = await asyncio.open_connection(HOST, PORT)
            writer.write(b"GET /healthz HTTP/1.1\r\nno colon in this header\r\n\r\n")
            assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.")
            writer.close()
    bad = [r for r in caplog.records if "bad HTTP request" in r.getMessage()]
    assert len(bad) == 1
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.INFO)
