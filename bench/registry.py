"""Registry benchmarks: claims, lookups, propagation, calls by name, publish, events, memory.

All nodes run in this one process on loopback addresses 127.0.0.151 and up (so the
numbers include every node's work on one event loop: propagation is pessimistic). Run:

    .venv/bin/python bench/registry.py [--names 10000] [--memory-names 100000]

Goals (issue 4): >= 10,000 registrations/s; >= 500,000 lookups/s; propagation p99 <= 50 ms;
<= 150 MB with 100,000 names. Issue 13: an events() consumer costs registrations at most
10 %; publish to a 100-member group over 5 nodes, messages/s and time until every member
has it; memory per 100,000 names with metadata.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import lab

from pycluster import load_config
from pycluster.actors import Actor
from pycluster.node import Node

COOKIE = "bench-registry-cookie"
BATCH = 100


class Counter(Actor):
    def __init__(self) -> None:
        self.value = 0

    async def handle_call(self, message: Any) -> Any:
        self.value += 1
        return self.value

    async def handle_cast(self, message: Any) -> None:
        self.value += 1


META = {"zone": "eu-west-1", "weight": 3}
"""Metadata of the names measured with metadata."""


def node(index: int, backend: str = "crdt") -> Node:
    config = load_config(
        {"node": {"name": f"b{index}@127.0.0.{151 + index}"}, "registry": {"backend": backend}},
        env={},
    )
    return Node(config, cookie=COOKIE)


async def cluster(size: int) -> list[Node]:
    nodes = [node(i) for i in range(size)]
    await lab.meshed(nodes)
    return nodes


async def settled(condition: Callable[[], bool]) -> None:
    """Wait until ``condition`` holds, checked on every turn of the loop (30 s at most)."""
    await lab.until(condition, timeout=30.0, interval=0, what="the registry settled")


def _everywhere(nodes: list[Node], name: str, target: Any) -> bool:
    return all(n.registry.whereis(name) == target for n in nodes)


async def rate(count: int, make: Callable[[int], Awaitable[Any]]) -> float:
    """Operations per second, ``BATCH`` in flight at a time."""
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        await asyncio.gather(*(make(i) for i in range(first, min(count, first + BATCH))))
    return count / (time.perf_counter() - started)


def row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


async def main(args: argparse.Namespace) -> None:
    count = args.names
    lines = [row("measure", "pycluster", "baseline", "ratio", "goal"), row(*["---"] * 5)]

    # Claims on one node of a 3-node cluster (two thirds are arbitrated by another node).
    three = await cluster(3)
    solo = node(9, backend="local")
    await solo.start()
    try:
        first = three[0]
        refs = [first.actors.spawn(Counter) for _ in range(count)]
        registered = await rate(count, lambda i: first.registry.register(f"r{i}", refs[i]))
        solo_refs = [solo.actors.spawn(Counter) for _ in range(count)]
        baseline = await rate(count, lambda i: solo.registry.register(f"r{i}", solo_refs[i]))
        goal = "met" if registered >= 10_000 else "NOT met"
        lines.append(
            row(
                f"registrations/s ({count} names, crdt, 3 nodes)",
                f"{registered:,.0f}",
                f"{baseline:,.0f} (local backend)",
                f"{registered / baseline:.2f}",
                f">= 10,000: {goal}",
            )
        )
        spawned = await rate(count, lambda i: first.registry.spawn(f"s{i}", Counter))
        lines.append(row(f"spawns/s ({count} names, crdt, 3 nodes)", f"{spawned:,.0f}", "", "", ""))

        # Lookups: a local read, beside a plain dict lookup.
        registry, plain = first.registry, dict(first.registry.registered())
        lookups = 1_000_000
        started = time.perf_counter()
        for i in range(lookups):
            registry.whereis(f"r{i % count}")
        lookup_rate = lookups / (time.perf_counter() - started)
        started = time.perf_counter()
        for i in range(lookups):
            plain.get(f"r{i % count}")
        dict_rate = lookups / (time.perf_counter() - started)
        goal = "met" if lookup_rate >= 500_000 else "NOT met"
        lines.append(
            row(
                "whereis lookups/s",
                f"{lookup_rate:,.0f}",
                f"{dict_rate:,.0f} (dict.get)",
                f"{lookup_rate / dict_rate:.2f}",
                f">= 500,000: {goal}",
            )
        )

        # A call through a name beside a call to the ref itself (the actor on another node).
        ref = await three[1].registry.spawn("target", Counter)
        await settled(lambda: first.registry.whereis("target") == ref)
        by_name, by_ref = [], []
        for _ in range(2000):
            started = time.perf_counter()
            await first.registry.call("target", "x")
            by_name.append(time.perf_counter() - started)
            started = time.perf_counter()
            await first.actors.call(ref, "x")
            by_ref.append(time.perf_counter() - started)
        name_ms, ref_ms = statistics.median(by_name) * 1e3, statistics.median(by_ref) * 1e3
        lines.append(
            row(
                "remote call median, through the name (ms)",
                f"{name_ms:.3f}",
                f"{ref_ms:.3f} (through the ref)",
                f"{name_ms / ref_ms:.2f}",
                "",
            )
        )
        # Last (it adds 80,000 actors, and a larger heap slows what follows): the same
        # registrations with an events() consumer on the node, alternating.
        plain_rates, listened_rates = [], []

        async def registrations(prefix: str) -> float:
            batch = [first.actors.spawn(Counter) for _ in range(count)]
            # The set-up's garbage first: a full collection it made due (the heap holds
            # every actor of the earlier rounds) would land in whichever side runs next.
            gc.collect()
            return await rate(count, lambda i: first.registry.register(f"{prefix}{i}", batch[i]))

        async def with_consumer(prefix: str) -> float:
            async with first.registry.events(backlog=count * 4) as stream:
                consumed = asyncio.ensure_future(_consume(stream))
                measured = await registrations(prefix)
                consumed.cancel()
            return measured

        for round_ in range(4):  # alternating which goes first: the heap grows as they run
            if round_ % 2:
                listened_rates.append(await with_consumer(f"l{round_}-"))
                plain_rates.append(await registrations(f"e{round_}-"))
            else:
                plain_rates.append(await registrations(f"e{round_}-"))
                listened_rates.append(await with_consumer(f"l{round_}-"))
        plain_rate, listened = statistics.median(plain_rates), statistics.median(listened_rates)
        cost = 1 - listened / plain_rate
        lines.append(
            row(
                f"registrations/s with an events() consumer ({count} names, median of 4)",
                f"{listened:,.0f}",
                f"{plain_rate:,.0f} (none)",
                f"{listened / plain_rate:.2f}",
                f"cost <= 10 %: {'met' if cost <= 0.10 else 'NOT met'} ({cost:.0%})",
            )
        )
    finally:
        for n in [*three, solo]:
            await n.stop()

    # Propagation: a name registered on one of 5 nodes, until all others see it.
    five = await cluster(5)
    try:
        delays = []
        for i in range(300):
            target = five[0].actors.spawn(Counter)
            started = time.perf_counter()
            await five[0].registry.register(f"p{i}", target)
            await settled(functools.partial(_everywhere, five[1:], f"p{i}", target))
            delays.append((time.perf_counter() - started) * 1e3)
        p99 = lab.percentile(delays, 0.99)
        goal = "met" if p99 <= 50 else "NOT met"
        lines.append(
            row(
                "propagation to all 5 nodes, median / p99 (ms)",
                f"{statistics.median(delays):.2f} / {p99:.2f}",
                "",
                "",
                f"p99 <= 50 ms: {goal}",
            )
        )
    finally:
        for n in five:
            await n.stop()

    # Publish to a 100-member group spread over 5 nodes, beside casting to the same refs.
    five = await cluster(5)
    try:
        members = [n.actors.spawn(Counter) for n in five for _ in range(20)]
        for ref in members:
            await five[0].registry.join("pub", ref)
        await settled(lambda: all(n.registry.count("pub") == len(members) for n in five))
        instances = [n.actors.local(r) for n in five for r in members if r.node == n.name]

        def delivered() -> int:
            return sum(getattr(i, "value", 0) for i in instances)

        def _reached(total: int) -> bool:
            return delivered() >= total

        async def each_member_has_it(send: Callable[[], Awaitable[Any]]) -> list[float]:
            times = []
            for _ in range(200):
                reached = functools.partial(_reached, delivered() + len(members))
                started = time.perf_counter()
                await send()
                await settled(reached)
                times.append((time.perf_counter() - started) * 1e3)
            return times

        async def cast_all() -> None:
            for ref in members:
                await five[0].actors.cast(ref, "x")

        async def publish_all() -> None:
            await five[0].registry.publish("pub", "x")

        published = await each_member_has_it(publish_all)
        casted = await each_member_has_it(cast_all)
        pub_ms, cast_ms = statistics.median(published), statistics.median(casted)
        lines.append(
            row(
                "publish to 100 members on 5 nodes, until all have it, median / p99 (ms)",
                f"{pub_ms:.2f} / {lab.percentile(published, 0.99):.2f}",
                f"{cast_ms:.2f} / {lab.percentile(casted, 0.99):.2f} (a cast to each ref)",
                f"{pub_ms / cast_ms:.2f}",
                "",
            )
        )
        rounds = 200

        async def throughput(send: Callable[[], Awaitable[Any]]) -> float:
            reached = functools.partial(_reached, delivered() + rounds * len(members))
            started = time.perf_counter()
            for _ in range(rounds):
                await send()
            await settled(reached)
            return rounds * len(members) / (time.perf_counter() - started)

        pub_rates, cast_rates = [], []
        for round_ in range(6):  # alternating which goes first
            if round_ % 2:
                cast_rates.append(await throughput(cast_all))
                pub_rates.append(await throughput(publish_all))
            else:
                pub_rates.append(await throughput(publish_all))
                cast_rates.append(await throughput(cast_all))
        pub_rate, cast_rate = statistics.median(pub_rates), statistics.median(cast_rates)
        lines.append(
            row(
                f"publish: messages delivered/s ({rounds} publishes of 100, median of 6)",
                f"{pub_rate:,.0f}",
                f"{cast_rate:,.0f} (a cast to each ref)",
                f"{pub_rate / cast_rate:.2f}",
                "",
            )
        )
    finally:
        for n in five:
            await n.stop()

    # Memory: one node holding many names of its own, in a fresh process.
    measured = (
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, __file__, "--memory-only", str(args.memory_names)],
            capture_output=True,
            text=True,
            check=True,
        )
    ).stdout.split()
    before, after = float(measured[0]), float(measured[1])
    goal = "met" if after <= 150 else "NOT met"
    lines.append(
        row(
            f"RSS of a node process holding {args.memory_names:,} names (MB)",
            f"{after:.0f}",
            f"{before:.0f} (the same node, no names)",
            f"{after / before:.2f}",
            f"<= 150 MB: {goal}",
        )
    )
    measured = (
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, __file__, "--memory-only", str(args.memory_names), "--with-meta"],
            capture_output=True,
            text=True,
            check=True,
        )
    ).stdout.split()
    with_meta = float(measured[1])
    lines.append(
        row(
            f"RSS of a node process holding {args.memory_names:,} names with metadata (MB)",
            f"{with_meta:.0f}",
            f"{after:.0f} (the same names, no metadata)",
            f"{with_meta / after:.2f}",
            f"<= 150 MB: {'met' if with_meta <= 150 else 'NOT met'}",
        )
    )
    print("\n".join(lines))


def rss_mb() -> float:
    """This process's resident set size now, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _consume(stream: Any) -> None:
    async for _ in stream:
        pass


async def memory_only(names: int, with_meta: bool) -> None:
    """Print RSS before and after one node registers ``names`` names of its own (claimed
    in its backend directly: the registry's cost, without an actor per name)."""
    big = node(8)
    await big.start()
    try:
        before = rss_mb()
        backend = big.registry.backend
        for i in range(names):
            meta = {**META, "shard": i} if with_meta else None  # one object per name
            await backend.claim(f"m{i}", big.actors.allocate(), 5.0, meta)
        print(f"{before:.1f} {rss_mb():.1f}")
    finally:
        await big.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=10_000)
    parser.add_argument("--memory-names", type=int, default=100_000)
    parser.add_argument("--memory-only", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--with-meta", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    try:
        if arguments.memory_only:
            asyncio.run(memory_only(arguments.memory_only, arguments.with_meta))
        else:
            asyncio.run(main(arguments))
    except KeyboardInterrupt:
        sys.exit(130)
