"""The HTTP port of a real node process under a flood of idle connections.

Found by a black-box attack: idle and slow-header connections to ``node.http.port`` were
held forever; 20,000 of them used every file descriptor of the node, its probes failed, a
restarted peer could not rejoin, and asyncio logged a traceback per failed accept. Here
thousands of idle connections come from several loopback addresses: those over a cap are
closed at once and counted, the rest are closed by the header timeout, the node keeps
answering /healthz (from an address with no connection open) and lets a peer join, and
its log holds no traceback. A node run out of file descriptors logs one line, not one
per accept, and serves again once they are freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from tests.lab import Lab, LabNode

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
REFUSED = "pycluster_http_connections_refused_total"
TIMED_OUT = "pycluster_http_connections_timed_out_total"
HEADER_TIMEOUT = 10.0
PER_SOURCE = 64
TOTAL = 1024
DESCRIPTORS = 128


async def open_idle(node: LabNode, source: str, count: int, into: list[Stream]) -> None:
    """Open ``count`` connections from ``source`` to ``node``'s HTTP port, sending nothing."""
    for _ in range(count):
        into.append(
            await asyncio.wait_for(
                asyncio.open_connection(
                    node.address, node.http_port, local_addr=(source, 0), limit=1024
                ),
                5,
            )
        )


@asynccontextmanager
async def idle_connections(
    node: LabNode, sources: Sequence[str], per_source: int
) -> AsyncIterator[list[Stream]]:
    """``per_source`` idle connections from each of ``sources`` (opened together), closed
    on the way out."""
    opened: list[Stream] = []
    try:
        await asyncio.gather(*(open_idle(node, s, per_source, opened) for s in sources))
        yield opened
    finally:
        for _, writer in opened:
            writer.close()


def closed(streams: Sequence[Stream]) -> int:
    """How many of ``streams`` the node has closed (end of file seen)."""
    return sum(reader.at_eof() or reader.exception() is not None for reader, _ in streams)


async def healthz(node: LabNode, source: str) -> int | None:
    """GET /healthz over a new connection from ``source``: the status, or None if the node
    closed the connection or did not answer within a second."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(node.address, node.http_port, local_addr=(source, 0)), 1
        )
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 1)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    return int(response.split(b" ", 2)[1]) if response else None


def assert_clean_log(node: LabNode) -> None:
    assert "Traceback" not in node.log_text(), f"{node.name} logged a traceback"
    # asyncio's own handler (a traceback per failed accept) was never reached.
    assert node.records(logger="asyncio") == []


async def test_thousands_of_idle_connections_leave_the_node_serving(lab: Lab) -> None:
    a, b = lab.declare(2)
    await lab.start([a])
    sources = [lab.address() for _ in range(15)]  # 15 * 64 admitted: under the total cap
    started = time.monotonic()
    async with idle_connections(a, sources, 134) as streams:
        assert len(streams) == 2010
        refused = len(sources) * (134 - PER_SOURCE)

        async def refused_at_once() -> bool:
            return closed(streams) == refused

        await lab.until(refused_at_once, timeout=5, what=f"{refused} connections closed")
        assert time.monotonic() - started < HEADER_TIMEOUT - 1, "not at once"
        metrics = await lab.metrics(a)
        assert metrics[f'{REFUSED}{{reason="per_source"}}'] == refused
        assert f'{REFUSED}{{reason="total"}}' not in metrics
        assert await healthz(a, lab.address()) == 200
        # A peer (re)starting meanwhile joins: the node has descriptors left for it.
        await lab.start([b])
        await lab.wait_mesh([a, b], timeout=10)

        async def timing_out() -> bool:
            return closed(streams) > refused

        first = await lab.until(timing_out, timeout=HEADER_TIMEOUT + 10, what="a header timeout")
        assert first - started > HEADER_TIMEOUT - 0.5, "closed before the header timeout"

        async def all_closed() -> bool:
            return closed(streams) == len(streams)

        await lab.until(all_closed, timeout=10, what="every idle connection closed")
        metrics = await lab.metrics(a)
        assert metrics[f'{TIMED_OUT}{{reason="header"}}'] == len(streams) - refused
        assert await healthz(a, sources[0]) == 200
    assert a.running
    assert_clean_log(a)
    refusals = a.records(logger="pycluster.http", level="WARNING")
    assert len(refusals) == 1, refusals


async def test_over_the_total_cap_new_connections_are_closed_at_once(lab: Lab) -> None:
    (a,) = lab.declare(1)
    await lab.start([a])
    sources = [lab.address() for _ in range(18)]
    async with idle_connections(a, sources, 60) as streams:
        attempts = len(streams)
        assert attempts > TOTAL
        # The lab's own connection (from 127.0.0.1) holds a place too.
        over = attempts - TOTAL

        async def refused_at_once() -> bool:
            return closed(streams) >= over

        await lab.until(refused_at_once, timeout=5, what=f"{over}+ connections closed")
        assert await healthz(a, lab.address()) is None, "served over the total cap"
        for _, writer in streams[:100]:
            writer.close()

        async def serving() -> bool:
            return await healthz(a, lab.address()) == 200

        await lab.until(serving, timeout=5, what="/healthz once places are free")
        metrics = await lab.metrics(a)
        assert metrics[f'{REFUSED}{{reason="total"}}'] >= over + 1
        assert f'{REFUSED}{{reason="per_source"}}' not in metrics
    assert a.running
    assert_clean_log(a)


async def test_out_of_file_descriptors_the_node_logs_once_and_recovers(lab: Lab) -> None:
    (a,) = lab.declare(1)
    a.command_prefix = ("prlimit", f"--nofile={DESCRIPTORS}:{DESCRIPTORS}")
    await lab.start([a])
    sources = [lab.address() for _ in range(3)]
    async with idle_connections(a, sources, 50):  # 150 connections

        async def out_of_descriptors() -> bool:
            return len(os.listdir(f"/proc/{a.pid}/fd")) >= DESCRIPTORS

        await lab.until(out_of_descriptors, timeout=5, what=f"{a.name} out of descriptors")
        # The cluster port runs out too (asyncio's own accept loop, which retries every
        # second): strangers dial it meanwhile.
        dialers = []
        for _ in range(5):
            with contextlib.suppress(OSError):
                dialers.append(await asyncio.open_connection(a.address, a.port))
        # What is tested is how many lines a span of time produces: hold the node out of
        # descriptors for a few of its retries (one a second).
        await asyncio.sleep(3.5)
        for _, writer in dialers:
            writer.close()

    async def serving() -> bool:
        return await healthz(a, lab.address()) == 200

    await lab.until(serving, timeout=5, what="/healthz once descriptors are free")
    assert a.running
    assert_clean_log(a)
    failures = a.records(logger="pycluster.http", level="WARNING")
    assert len(failures) == 1, failures
    assert f"[Errno {errno.EMFILE}]" in failures[0]["message"]
    cluster = a.records(event="accept_failed", port="cluster")
    assert len(cluster) == 1, cluster
    assert cluster[0]["level"] == "WARNING"
