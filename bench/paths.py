"""The paths users call, across processes: calls through a name, registrations, ring starts.

Three nodes, as in the swarm comparison of issue 16: two ``pycluster run`` processes
(each on its own loopback address, running ``bench/paths_app.py`` as their ``--app``: an
``Echo`` actor under a name, and a raw asyncio echo server) and the benchmark's own node,
embedded in this process, which makes every request. Measured, each ``--runs`` times,
with its baseline in the same run:

- remote call through a name: ``await registry.call("echo-p2", 1)`` to an actor on
  another process, sequentially, in blocks alternating with the baseline: a raw asyncio
  length-prefixed echo of the same bytes between the same two processes;
- a call to a mailbox of the same process (``node.call(node, "echo", 1)``), in the same
  alternating blocks: the part of a call through a name that is the transport's;
- local call through a name: an actor on the benchmark's node, beside an asyncio queue
  ping-pong between two tasks;
- registrations/s from one sequential caller (one ``register`` at a time, and
  ``register_many`` of 1,000 at a time), and with 100 in flight (two thirds of the names
  are arbitrated by another node: the name's owner on the hash ring), as 100 callers each
  registering one name after another, and as blocks of 100 started together (each block
  waits for its slowest); with the CPU time each of the three processes spent per
  registration of the 100 callers (this process from ``time.process_time``, the others
  from ``/proc``);
- ring-placed starts/s (``spawn(..., placement="ring")``, 100 in flight).

The benchmark's node sets its process's garbage collector as ``pycluster run`` sets the
served nodes' (first threshold 50,000), as docs/nodes.md advises for an embedded node;
``--python-gc`` leaves Python's default (700).

swarm's figures (libcluster 3.5 + swarm 3.4 on the BEAM, same machine, measured for issue
16 and quoted, not re-run) are printed beside them. Run:

    .venv/bin/python bench/paths.py [--runs 5] [--calls 2000] [--names 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import lab
from paths_app import HEADER, Echo

from pycluster import ActorRef, load_config
from pycluster.node import Node

HERE = Path(__file__).resolve().parent
IN_FLIGHT = 100
CALL_BLOCK = 200
MANY_BATCH = 1000
SLICE = 1000
"""Actors spawned or stopped per loop turn in the set-up."""
SWARM = {
    "remote call through a name": "175 µs (1.07x its raw call)",
    "local call through a name": "",
    "registrations/s, one caller": "39,473/s",
    "registrations/s, 100 in flight": "49,953/s",
    "ring-placed starts/s, 100 in flight": "2,834/s",
}


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs"


def per_second(rate: float) -> str:
    return f"{rate:,.0f}/s"


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def p99(values: Sequence[float]) -> float:
    return sorted(values)[int(len(values) * 0.99)]


async def timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """Seconds each of ``count`` sequential awaits of ``call()`` took."""
    clock = time.perf_counter
    times = []
    for _ in range(count):
        started = clock()
        await call()
        times.append(clock() - started)
    return times


async def rate(
    count: int,
    make: Callable[[int], Awaitable[Any]],
    in_flight: int,
    *,
    blocks: bool = False,
    collect: bool = True,
) -> float:
    """Operations per second of ``in_flight`` callers, each making its share of the
    ``count`` operations one after another (1: one sequential caller). With ``blocks``,
    ``in_flight`` operations are started together and the next ones once all of them
    are done (each block waits for its slowest).

    The garbage of the set-up is collected first (unless the caller did, ``collect``
    False): a full collection it makes due must not land in the measured operations."""
    if collect:
        gc.collect()
    started = time.perf_counter()
    if blocks:
        for first in range(0, count, in_flight):
            await asyncio.gather(*(make(i) for i in range(first, min(count, first + in_flight))))
    else:

        async def caller(first: int) -> None:
            for i in range(first, count, in_flight):
                await make(i)

        await asyncio.gather(*(caller(first) for first in range(min(in_flight, count))))
    return count / (time.perf_counter() - started)


class RawEcho:
    """A length-prefixed echo over a plain asyncio stream (the call baseline)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int, local: str) -> RawEcho:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(local, 0))
        return cls(reader, writer)

    async def call(self, frame: bytes) -> bytes:
        self.writer.write(frame)
        header = await self.reader.readexactly(HEADER.size)
        return await self.reader.readexactly(HEADER.unpack(header)[0])


async def queue_ping_pong(count: int) -> list[float]:
    """Round trips between two tasks through two asyncio queues (the local baseline)."""
    requests: asyncio.Queue[Any] = asyncio.Queue()
    replies: asyncio.Queue[Any] = asyncio.Queue()

    async def server() -> None:
        while True:
            replies.put_nowait(await requests.get())

    task = asyncio.create_task(server())

    async def one() -> Any:
        requests.put_nowait(1)
        return await replies.get()

    try:
        return await timed(one, count)
    finally:
        task.cancel()


async def main(args: argparse.Namespace) -> None:
    collecting = lab.collect_as_pycluster_run(args.python_gc)
    others = lab.OtherLoad()
    planned = lab.plan_nodes(3, args.first_address, "p")
    names = [p.name for p in planned]
    bench_plan, served = planned[0], planned[1:]
    async with lab.node_lab() as the_lab:
        declared = []
        for plan in served:
            served_config = lab.node_config(plan, names, retry_interval_ms=200)
            declared_node = lab.add_node(the_lab, plan, served_config)
            declared_node.extra_args = ("--app", "paths_app:serve", "--app-dir", str(HERE))
            declared.append(declared_node)
        await the_lab.start(declared)
        config = load_config(
            {
                "node": {"name": bench_plan.name},
                "topologies": {
                    "bench": {
                        "strategy": "epmd",
                        "config": {"hosts": names, "retry_interval": 200},
                    }
                },
            },
            env={},
        )
        async with Node(config, cookie=the_lab.cookie) as node:
            registry = node.registry
            await lab.until(
                lambda: all(registry.whereis(f"echo-p{i}") for i in (2, 3)) and node.ready(),
                timeout=30,
                interval=0.05,
                what="both served nodes run their echo actor",
            )
            rows = await measure(
                args, node, served[0].host, bench_plan.host, [n.pid for n in declared]
            )
    print(f"# bench/paths.py: {lab.machine()}")
    print(f"# {args.runs} runs; each cell: median (min-max) over the runs")
    print(f"# the benchmark's node: {collecting}")
    print(lab.table(["path", "pycluster", "baseline", "ratio", "swarm / BEAM", "goal"], rows))
    print(others.note())


async def measure(
    args: argparse.Namespace, node: Node, remote_host: str, local_host: str, pids: Sequence[int]
) -> list[list[str]]:
    registry = node.registry
    p2 = next(p for p in node.nodes() if p.startswith("p2@"))
    port = await node.call(p2, "raw_port", 0)
    raw = await RawEcho.open(remote_host, int(port), local_host)
    payload = 1
    frame = HEADER.pack(len(b"\x01")) + b"\x01"
    await registry.spawn("echo-local", Echo)
    remote: list[float] = []
    baseline: list[float] = []
    transport: list[float] = []
    local: list[float] = []
    queue: list[float] = []
    sequential: list[float] = []
    concurrent: list[float] = []
    blocks: list[float] = []
    costs: list[tuple[float, ...]] = []
    many: list[float] = []
    ring: list[float] = []
    for run in range(args.runs):
        # Warm up, then alternate blocks so drift hits both alike.
        await timed(lambda: registry.call("echo-p2", payload), CALL_BLOCK)
        await timed(lambda: raw.call(frame), CALL_BLOCK)
        ours: list[float] = []
        theirs: list[float] = []
        mailbox: list[float] = []
        for _ in range(max(1, args.calls // CALL_BLOCK)):
            ours += await timed(lambda: registry.call("echo-p2", payload), CALL_BLOCK)
            theirs += await timed(lambda: raw.call(frame), CALL_BLOCK)
            mailbox += await timed(lambda: node.call(p2, "echo", payload), CALL_BLOCK)
        remote.append(statistics.median(ours) / statistics.median(theirs))
        baseline.append(statistics.median(theirs))
        transport.append(statistics.median(mailbox) / statistics.median(theirs))
        remote_median = statistics.median(ours)
        ours_local = await timed(lambda: registry.call("echo-local", payload), args.calls)
        theirs_local = await queue_ping_pong(args.calls)
        local.append(statistics.median(ours_local))
        queue.append(statistics.median(theirs_local))
        rates, cost = await registrations(args, node, run, pids)
        costs.append(cost)
        sequential.append(rates[0])
        concurrent.append(rates[1])
        blocks.append(rates[2])
        many.append(rates[3])
        ring.append(rates[4])
        print(
            f"run {run + 1}: remote call {us(remote_median)} ({remote[-1]:.2f}x raw), "
            f"local call {us(local[-1])}, registrations {sequential[-1]:,.0f}/s sequential, "
            f"{concurrent[-1]:,.0f}/s {IN_FLIGHT} callers, {blocks[-1]:,.0f}/s in blocks, "
            f"{many[-1]:,.0f}/s register_many, "
            f"ring starts {ring[-1]:,.0f}/s",
            file=sys.stderr,
        )
    local_ratios = [a / b for a, b in zip(local, queue, strict=True)]
    return [
        [
            "remote call through a name",
            lab.spread([r * b for r, b in zip(remote, baseline, strict=True)], us),
            lab.spread(baseline, us) + " raw echo",
            lab.spread(remote, ratio),
            SWARM["remote call through a name"],
            "<= 1.1x raw",
        ],
        [
            "  of which the transport: a call to a mailbox (no actor)",
            lab.spread([r * b for r, b in zip(transport, baseline, strict=True)], us),
            "",
            lab.spread(transport, ratio),
            "",
            "",
        ],
        [
            "local call through a name",
            lab.spread(local, us),
            lab.spread(queue, us) + " queue ping-pong",
            lab.spread(local_ratios, ratio),
            "",
            "<= 2x queue",
        ],
        [
            "registrations/s, one caller",
            lab.spread(sequential, per_second),
            "",
            "",
            SWARM["registrations/s, one caller"],
            ">= 10,000/s",
        ],
        [
            f"registrations/s, one caller, register_many of {MANY_BATCH}",
            lab.spread(many, per_second),
            "",
            "",
            SWARM["registrations/s, one caller"],
            ">= 10,000/s",
        ],
        [
            f"registrations/s, {IN_FLIGHT} in flight ({IN_FLIGHT} callers)",
            lab.spread(concurrent, per_second),
            "",
            "",
            SWARM["registrations/s, 100 in flight"],
            ">= 50,000/s",
        ],
        [
            f"registrations/s, {IN_FLIGHT} in flight (blocks of {IN_FLIGHT})",
            lab.spread(blocks, per_second),
            "",
            "",
            SWARM["registrations/s, 100 in flight"],
            ">= 50,000/s",
        ],
        [
            f"CPU per registration, {IN_FLIGHT} callers: this node; each other node",
            lab.spread([c[0] for c in costs], us),
            lab.spread([c for cost in costs for c in cost[1:]], us),
            "",
            "",
            "",
        ],
        [
            f"ring-placed starts/s, {IN_FLIGHT} in flight",
            lab.spread(ring, per_second),
            "",
            "",
            SWARM["ring-placed starts/s, 100 in flight"],
            ">= 5,000/s",
        ],
    ]


async def registrations(
    args: argparse.Namespace, node: Node, run: int, pids: Sequence[int]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Registrations/s of one sequential caller, of ``IN_FLIGHT`` callers, of blocks of
    ``IN_FLIGHT``, and through ``register_many``; then ring-placed starts/s. Then the CPU
    seconds per registration of the ``IN_FLIGHT`` callers: this process, then ``pids``."""
    registry = node.registry
    count = min(args.names, args.sequential)
    in_blocks = args.names - count
    refs = await spawn_echoes(node, args.names + in_blocks)
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    sequential = await rate(count, lambda i: registry.register(f"s{run}-{i}", refs[i]), 1)
    gc.collect()
    cpu_before = [time.process_time(), *map(cpu_seconds, pids)]
    concurrent = await rate(
        args.names - count,
        lambda i: registry.register(f"c{run}-{i}", refs[count + i]),
        IN_FLIGHT,
        collect=False,
    )
    # Every node has applied the last change once it answers a call made after it.
    for pid_node in node.nodes():
        await node.call(pid_node, "raw_port", 0)
    cpu_after = [time.process_time(), *map(cpu_seconds, pids)]
    cost = tuple(
        (after - before) / (args.names - count)
        for before, after in zip(cpu_before, cpu_after, strict=True)
    )
    blocks = await rate(
        in_blocks,
        lambda i: registry.register(f"b{run}-{i}", refs[args.names + i]),
        IN_FLIGHT,
        blocks=True,
    )
    many = await many_rate(node, run, args.many)
    ring = await rate(
        args.ring,
        lambda i: registry.spawn(f"ring{run}-{i}", Echo, placement="ring"),
        IN_FLIGHT,
    )
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
        stats = pstats.Stats(args.profile, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(25)
    # Entries end with their actors: the next run starts from the same registry.
    await stop_all(node, refs)
    return (sequential, concurrent, blocks, many, ring), cost


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def many_rate(node: Node, run: int, count: int) -> float:
    """Registrations/s of one caller using ``register_many``, ``MANY_BATCH`` at a time."""
    refs = await spawn_echoes(node, count)
    gc.collect()
    started = time.perf_counter()
    for first in range(0, count, MANY_BATCH):
        batch = {f"m{run}-{i}": refs[i] for i in range(first, min(count, first + MANY_BATCH))}
        taken = await node.registry.register_many(batch)
        assert not taken, taken
    result = count / (time.perf_counter() - started)
    await stop_all(node, refs)
    return result


async def spawn_echoes(node: Node, count: int) -> list[ActorRef]:
    """``count`` Echo actors on ``node``, a slice per loop turn: spawning tens of
    thousands in one turn holds the loop for seconds, and the node's peers would declare
    it down (it does not tick meanwhile)."""
    refs: list[ActorRef] = []
    while len(refs) < count:
        refs += [node.actors.spawn(Echo) for _ in range(min(SLICE, count - len(refs)))]
        await asyncio.sleep(0)
    return refs


async def stop_all(node: Node, refs: Sequence[ActorRef]) -> None:
    """Stop the actors of ``refs``, a slice at a time (see :func:`spawn_echoes`)."""
    for first in range(0, len(refs), SLICE):
        await asyncio.gather(*(node.actors.stop(ref) for ref in refs[first : first + SLICE]))


def _arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of every measure")
    parser.add_argument("--calls", type=int, default=2000, help="calls per measure and run")
    parser.add_argument("--names", type=int, default=20000, help="registrations per run")
    parser.add_argument(
        "--sequential", type=int, default=3000, help="of those, made by one sequential caller"
    )
    parser.add_argument(
        "--many", type=int, default=10000, help="registrations per run through register_many"
    )
    parser.add_argument("--ring", type=int, default=3000, help="ring-placed starts per run")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="cProfile this process's registrations and ring starts into FILE (and print "
        "the top of it; a profiled run's timings are not results)",
    )
    parser.add_argument(
        "--first-address", type=int, default=191, help="first loopback address: 127.0.0.N"
    )
    lab.add_collector_option(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    lab.run(main(_arguments()))
