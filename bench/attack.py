"""A node under attack, side by side with an idle node of the same cluster.

Two ``pycluster run`` processes, ``a`` (attacked) and ``b`` (left alone), connected, with
``net_tick_timeout`` 1 s (so a loop blocked for a second would be seen as a dead node).
For each scenario the attacker works on ``a`` for a while from many loopback addresses,
while a probe asks both nodes for ``/healthz`` every 20 ms and their memory and
``pycluster_event_loop_lag_seconds`` are sampled. Scenarios:

- idle: nothing (the baseline);
- 1,000 unauthenticated connections to the cluster port, each sending a maximal
  pre-authentication frame (4 KiB) whole, reconnecting as soon as the node closes it;
- 1,000 unauthenticated connections each sending a maximal frame but its last byte, then
  holding it (the node keeps what it read until the handshake timeout);
- 10,000 idle HTTP connections attempted on the HTTP port, held open.

Goals (from the hardening issue): RSS under 2x the idle node's, loop lag under 100 ms,
probes keep answering, no node declared down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import msgpack
from lab import (
    LabNode,
    NodeEvent,
    OtherLoad,
    add_node,
    goal,
    launcher,
    log_peers,
    machine,
    median,
    node_config,
    node_lab,
    percentile,
    plan_nodes,
    run,
    table,
    until,
    wait_listening,
)

PROBE_SOURCE = "127.0.3.1"
PREAUTH_FRAME = 4096


def sources(count: int) -> list[str]:
    """Attacker addresses 127.0.4.1 onwards (never a node's)."""
    return [f"127.0.{4 + i // 250}.{1 + i % 250}" for i in range(count)]


def maximal_hello() -> bytes:
    """A frame of exactly 4 KiB: a map within every pre-authentication limit (16 entries,
    strings of at most 1 KiB)."""
    fields = {f"k{i:02}": "x" * 250 for i in range(15)}
    payload: bytes = msgpack.packb({"t": "hello", **fields})
    while len(payload) != PREAUTH_FRAME:
        fields["k00"] = "x" * (len(fields["k00"]) + PREAUTH_FRAME - len(payload))
        payload = msgpack.packb({"t": "hello", **fields})
    return struct.pack(">I", len(payload)) + payload


def rss(node: LabNode) -> int:
    for line in Path(f"/proc/{node.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Watch:
    """Probes and samples both nodes while a scenario runs."""

    def __init__(self, nodes: list[LabNode]) -> None:
        self.nodes = nodes
        self.latency: dict[str, list[float]] = {n.name: [] for n in nodes}
        self.failures: dict[str, int] = {n.name: 0 for n in nodes}
        self.rss: dict[str, list[int]] = {n.name: [] for n in nodes}
        self.lag: dict[str, list[float]] = {n.name: [] for n in nodes}
        self._stop = asyncio.Event()

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(local_addr=(PROBE_SOURCE, 0), limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(
                *(self._probe(session, node) for node in self.nodes),
                *(self._sample(session, node) for node in self.nodes),
            )

    def stop(self) -> None:
        self._stop.set()

    async def _probe(self, session: aiohttp.ClientSession, node: LabNode) -> None:
        url = node.url("/healthz")
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(5)) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                self.latency[node.name].append(time.monotonic() - began)
            else:
                self.failures[node.name] += 1
            await asyncio.sleep(0.02)

    async def _sample(self, session: aiohttp.ClientSession, node: LabNode) -> None:
        url = node.url("/metrics")
        while not self._stop.is_set():
            self.rss[node.name].append(rss(node))
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(5)) as response:
                    for line in (await response.text()).splitlines():
                        if line.startswith("pycluster_event_loop_lag_seconds "):
                            self.lag[node.name].append(float(line.split()[1]))
            await asyncio.sleep(0.25)


async def preauth_flood(host: str, port: int, count: int, whole: bool, stop: asyncio.Event) -> int:
    """``count`` connections sending a maximal pre-authentication frame, reconnecting as
    the node closes them; returns how many connections were made."""
    frame = maximal_hello()
    data = frame if whole else frame[:-1]
    made = 0

    async def one(source: str) -> None:
        nonlocal made
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
            except OSError:
                await asyncio.sleep(0.05)
                continue
            made += 1
            try:
                writer.write(data)
                stopping = asyncio.ensure_future(stop.wait())
                closing = asyncio.ensure_future(reader.read())
                await asyncio.wait({stopping, closing}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                closing.cancel()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

    addresses = sources(count // 16 + 1)
    await asyncio.gather(*(one(addresses[i // 16]) for i in range(count)))
    return made


async def http_flood(host: str, port: int, count: int, stop: asyncio.Event) -> int:
    """``count`` idle HTTP connections attempted and held; returns how many the node kept
    open until the end."""
    held: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    addresses = sources(count // 50 + 1)
    for i in range(count):
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection(
                host, port, local_addr=(addresses[i // 50], 0)
            )
            held.append(writer)
            readers.append(reader)
    await stop.wait()
    still = sum(1 for reader in readers if not reader.at_eof())
    for writer in held:
        writer.close()
    return still


async def attacker(kind: str, host: str, port: int, count: int, seconds: float) -> int:
    """Run one attack for ``seconds`` (in the attacker process); return its count."""
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    if kind == "http":
        return await http_flood(host, port, count, stop)
    return await preauth_flood(host, port, count, kind == "whole", stop)


async def scenario(
    nodes: list[LabNode], seconds: float, attack: list[str] | None
) -> tuple[Watch, int, list[NodeEvent]]:
    """Watch ``nodes`` for ``seconds`` while a separate process runs ``attack`` (so the
    attacker's own event loop does not slow the probes down)."""
    downs_before = [len(_downs(n)) for n in nodes]
    watch = Watch(nodes)
    watching = asyncio.create_task(watch.run())
    made = 0
    if attack is None:
        await asyncio.sleep(seconds)
    else:
        process = await asyncio.create_subprocess_exec(
            *launcher(sys.executable, __file__, "--attacker", *attack, str(seconds)),
            stdout=subprocess.PIPE,
        )
        output, _ = await process.communicate()
        made = int(output.decode().strip() or 0)
    watch.stop()
    await watching
    downs = [d for n, before in zip(nodes, downs_before, strict=True) for d in _downs(n)[before:]]
    return watch, made, downs


def _downs(node: LabNode) -> list[NodeEvent]:
    return [event for event in node.events() if event.kind == "down"]


def mib(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each scenario")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--http-connections", type=int, default=10_000)
    parser.add_argument("--attacker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.attacker:
        kind, host, port, count, seconds = args.attacker
        print(await attacker(kind, host, int(port), int(count), float(seconds)))
        return
    load = OtherLoad()
    async with node_lab() as lab:
        planned = plan_nodes(2, 60, "atk")
        names = [node.name for node in planned]
        a, b = [
            add_node(
                lab, node, node_config(node, names, retry_interval_ms=200, net_tick_timeout=1.0)
            )
            for node in planned
        ]
        for node in (a, b):
            node.spawn()
        await wait_listening([a, b], timeout=20)
        await until(
            lambda: log_peers(a) == {b.name} and log_peers(b) == {a.name},
            timeout=20,
            interval=0.1,
            what="a and b connected",
        )
        await asyncio.sleep(2)  # settle
        port = a.name.rsplit(":", 1)[1]
        http = str(a.http_port)
        count, http_count = str(args.connections), str(args.http_connections)
        plans: list[tuple[str, list[str] | None]] = [
            ("idle", None),
            (
                f"{args.connections:,} unauthenticated connections, 4 KiB frame each, reconnecting",
                ["whole", a.address, port, count],
            ),
            (
                f"{args.connections:,} unauthenticated connections, 4 KiB frame held incomplete",
                ["held", a.address, port, count],
            ),
            (
                f"{args.http_connections:,} idle HTTP connections attempted",
                ["http", a.address, http, http_count],
            ),
        ]
        rows = []
        verdicts = []
        for label, attack in plans:
            print(f"scenario: {label}", file=sys.stderr)
            watch, made, downs = await scenario([a, b], args.seconds, attack)
            idle_rss = max(watch.rss[b.name])
            for node in (a, b):
                latency = watch.latency[node.name]
                peak = max(watch.rss[node.name])
                lag = max(watch.lag[node.name], default=float("nan"))
                rows.append(
                    [
                        label,
                        "a (attacked)" if node is a else "b (idle)",
                        mib(peak),
                        f"{peak / idle_rss:.2f}x",
                        f"{median(latency) * 1000:.1f} ms" if latency else "-",
                        f"{percentile(latency, 0.99) * 1000:.1f} ms" if latency else "-",
                        f"{max(latency) * 1000:.0f} ms" if latency else "-",
                        watch.failures[node.name],
                        f"{lag * 1000:.0f} ms",
                        f"{made:,}" if node is a else "",
                    ]
                )
            verdicts.append(
                (
                    label,
                    max(watch.rss[a.name]) < 2 * idle_rss,
                    max(watch.lag[a.name], default=1.0) < 0.1,
                    watch.failures[a.name] == 0 and bool(watch.latency[a.name]),
                    not downs,
                )
            )
    print(f"machine: {machine()}")
    print(load.note())
    print()
    print(
        table(
            [
                "scenario",
                "node",
                "RSS peak",
                "vs idle node",
                "/healthz median",
                "p99",
                "max",
                "failed probes",
                "loop lag max",
                "connections made / held",
            ],
            rows,
        )
    )
    print()
    for label, memory, lag, probes, up in verdicts:
        print(f"{label}:")
        print("  " + goal("RSS under 2x the idle node's", memory))
        print("  " + goal("loop lag under 100 ms", lag))
        print("  " + goal("probes keep answering", probes))
        print("  " + goal("no node declared down", up))


if __name__ == "__main__":
    run(main())
