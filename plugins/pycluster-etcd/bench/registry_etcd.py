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
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pycluster_etcd

from pycluster import Plugins, load_config
from pycluster.node import Node
from pycluster.registry import ActorRef

COOKIE = "bench-registry-etcd"
BATCH = 100
ETCD_HOST = "127.0.5.250"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((ETCD_HOST, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def etcd_server() -> Iterator[tuple[str, str]]:
    """A single-member etcd in a temporary directory: its endpoint and version line."""
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    version = subprocess.run([etcd, "--version"], capture_output=True, text=True).stdout
    client, peer = free_port(), free_port()
    with (
        tempfile.TemporaryDirectory(prefix="bench-etcd-") as directory,
        Path(directory, "etcd.log").open("wb") as log,
    ):
        process = subprocess.Popen(
            [
                etcd,
                "--name=bench",
                f"--data-dir={directory}/data",
                f"--listen-client-urls=http://{ETCD_HOST}:{client}",
                f"--advertise-client-urls=http://{ETCD_HOST}:{client}",
                f"--listen-peer-urls=http://{ETCD_HOST}:{peer}",
                f"--initial-advertise-peer-urls=http://{ETCD_HOST}:{peer}",
                f"--initial-cluster=bench=http://{ETCD_HOST}:{peer}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    url = f"http://{ETCD_HOST}:{client}/health"
                    with urllib.request.urlopen(url, timeout=1) as answer:
                        if b'"true"' in answer.read():
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("etcd did not start")
                time.sleep(0.05)
            yield f"{ETCD_HOST}:{client}", version.splitlines()[0]
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(10)


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
        await until(lambda: all(len(n.nodes()) == 2 and n.ready() for n in nodes))
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    """Poll ``condition`` on every turn of the loop, for at most ``seconds``."""
    deadline = time.perf_counter() + seconds
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def rate(count: int, make: Callable[[int], Awaitable[Any]]) -> float:
    """Operations per second, ``BATCH`` in flight at a time."""
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        await asyncio.gather(*(make(i) for i in range(first, min(count, first + BATCH))))
    return count / (time.perf_counter() - started)


async def measure(nodes: list[Node], count: int) -> dict[str, Any]:
    """Every measure on one backend's cluster."""
    first = nodes[0]
    refs = [first.actors.allocate() for _ in range(count)]
    results: dict[str, Any] = {
        "rate": await rate(count, lambda i: first.registry.register(f"r{i}", refs[i]))
    }
    claims = []
    for i in range(min(count, 1000)):
        ref = first.actors.allocate()
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
        ref = first.actors.allocate()
        started = time.perf_counter()
        await first.registry.register(f"p{i}", ref)

        def seen(name: str = f"p{i}", ref: ActorRef = ref) -> bool:
            return all(n.registry.whereis(name) == ref for n in nodes[1:])

        await until(seen)
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
    with etcd_server() as (endpoint, version):
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
