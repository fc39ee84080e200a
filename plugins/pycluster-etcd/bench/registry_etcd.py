"""The ``etcd`` registry backend beside the embedded ``crdt`` one, in the same run.

Starts its own etcd (``/usr/bin/etcd``, data in a temporary directory, on 127.0.5.250),
then for each backend a 3-node cluster in this one process on 127.0.5.x, and measures:
registrations/s (``BATCH`` claims in flight), the latency of one claim at a time, of a
``whereis`` lookup, and of propagation (a claim on one node until the two others see it).
Prints a Markdown table. Run:

    .venv/bin/python plugins/pycluster-etcd/bench/registry_etcd.py [--names 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pycluster_etcd

from pycluster import Actor, Plugins, load_config
from pycluster.node import Node
from pycluster.registry import ActorRef

# Run as a script: the repository root (for the lab, tests/lab) and the plugin's tests (for
# its etcd server, etcd_lab) are made importable here.
_HERE = Path(__file__).resolve()
sys.path[:0] = [str(_HERE.parents[3]), str(_HERE.parents[1] / "tests")]

from etcd_lab import ETCD, EtcdServer  # noqa: E402

from tests.lab.polling import until  # noqa: E402
from tests.lab.stats import percentile  # noqa: E402

COOKIE = "bench-registry-etcd"
BATCH = 100


class Holder(Actor):
    """An actor that only holds a name (a registered name ends with its actor)."""


ETCD_HOST = "127.0.5.250"


@contextlib.asynccontextmanager
async def etcd_server() -> AsyncIterator[tuple[str, str]]:
    """A single-member etcd in a temporary directory: its endpoint and version line."""
    version = (
        await asyncio.to_thread(
            subprocess.run, [ETCD, "--version"], capture_output=True, text=True, check=False
        )
    ).stdout
    with tempfile.TemporaryDirectory(prefix="bench-etcd-") as directory:
        server = EtcdServer(Path(directory), "bench", host=ETCD_HOST)
        server.start()
        try:
            await server.until_healthy()
            yield server.endpoint, version.splitlines()[0]
        finally:
            server.stop()


def make_node(index: int, backend: str, endpoint: str) -> Node:
    registry: dict[str, Any] = {"backend": backend}
    if backend == "etcd":
        registry["options"] = {"endpoints": [endpoint], "prefix": "/bench/", "lease_ttl": 10}
    plugins = Plugins.load(entry_points=False, extra=[pycluster_etcd])
    config = load_config(
        {"node": {"name": f"b{index}@127.0.5.{100 + index}"}, "registry": registry},
        env={},
        plugins=plugins,
    )
    return Node(config, cookie=COOKIE, plugins=plugins)


@contextlib.asynccontextmanager
async def cluster(backend: str, endpoint: str, first: int) -> AsyncIterator[list[Node]]:
    nodes = [make_node(first + i, backend, endpoint) for i in range(3)]
    for node in nodes:
        await node.start()
    try:
        await asyncio.gather(*(a.connect(b.name) for a in nodes for b in nodes if a is not b))
        await settled(lambda: all(len(n.nodes()) == 2 and n.ready() for n in nodes))
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def settled(condition: Callable[[], bool]) -> None:
    """Wait until ``condition`` holds, checked on every turn of the loop (30 s at most)."""
    await until(condition, timeout=30.0, interval=0, what="the registry settled")


async def rate(count: int, make: Callable[[int], Awaitable[Any]]) -> float:
    """Operations per second, ``BATCH`` in flight at a time."""
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        await asyncio.gather(*(make(i) for i in range(first, min(count, first + BATCH))))
    return count / (time.perf_counter() - started)


async def measure(nodes: list[Node], count: int) -> dict[str, Any]:
    """Every measure on one backend's cluster."""
    first = nodes[0]
    refs = [first.actors.spawn(Holder) for _ in range(count)]
    results: dict[str, Any] = {
        "rate": await rate(count, lambda i: first.registry.register(f"r{i}", refs[i]))
    }
    claims = []
    for i in range(min(count, 1000)):
        ref = first.actors.spawn(Holder)
        started = time.perf_counter()
        await first.registry.register(f"c{i}", ref)
        claims.append((time.perf_counter() - started) * 1e3)
    results["claim"] = claims
    lookups = []
    registry = nodes[1].registry
    for i in range(100_000):
        started = time.perf_counter_ns()
        registry.whereis(f"r{i % count}")
        lookups.append((time.perf_counter_ns() - started) / 1e3)
    results["lookup"] = lookups
    spread = []
    for i in range(300):
        ref = first.actors.spawn(Holder)
        started = time.perf_counter()
        await first.registry.register(f"p{i}", ref)

        def seen(name: str = f"p{i}", ref: ActorRef = ref) -> bool:
            return all(n.registry.whereis(name) == ref for n in nodes[1:])

        await settled(seen)
        spread.append((time.perf_counter() - started) * 1e3)
    results["propagation"] = spread
    return results


def row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def machine() -> str:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    tmp = subprocess.run(
        ["df", "--output=fstype", tempfile.gettempdir()], capture_output=True, text=True
    ).stdout.split()[-1:]
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"etcd data on {tmp[0] if tmp else '?'}"
    )


async def main(count: int) -> None:
    async with etcd_server() as (endpoint, version):
        async with cluster("etcd", endpoint, 0) as nodes:
            etcd = await measure(nodes, count)
        async with cluster("crdt", endpoint, 10) as nodes:
            crdt = await measure(nodes, count)
    lines = [
        f"{machine()}; {version}; 3 nodes in one process per backend",
        "",
        row("measure", "etcd", "crdt", "ratio etcd/crdt"),
        row(*["---"] * 4),
        row(
            f"registrations/s ({count} names, {BATCH} in flight)",
            f"{etcd['rate']:,.0f}",
            f"{crdt['rate']:,.0f}",
            f"{etcd['rate'] / crdt['rate']:.3f}",
        ),
    ]
    for key, label, unit in (
        ("claim", "one claim at a time", "ms"),
        ("lookup", "whereis lookup", "µs"),
        ("propagation", "claim until seen by 2 other nodes", "ms"),
    ):
        for name, fraction in (("median", 0.5), ("p99", 0.99)):
            a, b = percentile(etcd[key], fraction), percentile(crdt[key], fraction)
            lines.append(row(f"{label}, {name} ({unit})", f"{a:.3f}", f"{b:.3f}", f"{a / b:.2f}"))
    print("\n".join(lines))
    assert statistics.median(etcd["lookup"]) > 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=2000)
    try:
        asyncio.run(main(parser.parse_args().names))
    except KeyboardInterrupt:
        sys.exit(130)
