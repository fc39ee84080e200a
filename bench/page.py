"""The live page's cost: what its viewers do to a node's event loop with 10,000 names.

The measured node runs in this process (a real ``Node``: TCP mesh, HTTP port) on
127.0.0.<first-index>; two peers run as ``pycluster run`` processes on the next two
addresses, so each snapshot asks two peers over the network. The node holds ``--names``
registered names (default 10,000, each with metadata), held by one local actor, and
``--groups`` groups of 5 members. A probe in the node's loop measures, every 5 ms, how
late a 5 ms sleep wakes up: the loop's lag, with far finer grain than the node's own
2 s probe.

Two phases of ``--window`` seconds each, in the same run: the baseline (nobody watches)
and the load, during which ``--viewers`` viewer processes (default 5) each do what an
open page does, once every second: ``GET /view``, a page of 100 names (``/view/names``,
paging through the whole registry; every other viewer filters with a ``q`` that matches
1 in 10 names) and a page of groups. Viewers run in processes of their own, so their
client work is not counted against the node.

Goal: the node's loop lag stays under 50 ms with 10,000 names and 5 viewers: its p99, and
its max (which only means something on a quiet machine: compare the baseline's max).

Run: ``.venv/bin/python bench/page.py [--names 10000] [--viewers 5] [--window 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import lab
from lab import LabNode

from pycluster import Actor, load_config
from pycluster.node import Node

PROBE = 0.005
"""Seconds the lag probe sleeps; its lateness is the lag."""
GOAL_LAG = 0.050
START_TIMEOUT = 30.0
PAGE_SIZE = 100


def ms(seconds: float) -> str:
    """Seconds as milliseconds, to a tenth."""
    return f"{seconds * 1000:.1f} ms"


class Holder(Actor):
    """The actor every registered name points at."""


async def probe(lags: list[float], busy: list[float], stop: asyncio.Event) -> None:
    """Append the lateness of a ``PROBE`` sleep to ``lags`` until ``stop`` is set, and to
    ``busy`` the part of it this process spent computing (its CPU time meanwhile, capped
    at the lateness): the rest it waited for a CPU the other processes held."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started, cpu = loop.time(), time.process_time()
        await asyncio.sleep(PROBE)
        lag = max(0.0, loop.time() - started - PROBE)
        lags.append(lag)
        busy.append(min(lag, time.process_time() - cpu))


class Collections:
    """The garbage collector's pauses in this process, while counting (gc.callbacks)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        """(generation, seconds) of each collection."""
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def longest(self) -> str:
        if not self.pauses:
            return "none"
        generation, pause = max(self.pauses, key=lambda p: p[1])
        return f"{len(self.pauses)}, longest {ms(pause)} (generation {generation})"


async def measure_lag(seconds: float) -> tuple[list[float], list[float], Collections]:
    """The probe's lags over ``seconds``, their CPU-bound parts, and the collector's pauses
    meanwhile."""
    lags: list[float] = []
    busy: list[float] = []
    collections = Collections()
    gc.callbacks.append(collections)
    stop = asyncio.Event()
    task = asyncio.create_task(probe(lags, busy, stop))
    try:
        await asyncio.sleep(seconds)
        stop.set()
        await task
    finally:
        gc.callbacks.remove(collections)
    return lags, busy, collections


# -- the viewers (separate processes) -------------------------------------------------------


async def view(base: str, index: int, seconds: float, names: int) -> dict[str, Any]:
    """One open page, for ``seconds``: its requests' latencies and failures."""
    latencies: list[float] = []
    failures = 0
    query = "9" if index % 2 else ""  # "name-xxx9..." style filters match 1 in 10
    offset = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            tick = time.monotonic()
            paths = [
                "/view",
                f"/view/names?q={query}&offset={offset}&limit={PAGE_SIZE}",
                "/view/groups?q=&offset=0&limit=100",
            ]

            async def fetch(path: str) -> None:
                nonlocal failures
                started = time.monotonic()
                try:
                    async with session.get(base + path) as response:
                        await response.read()
                        if response.status != 200:
                            failures += 1
                            return
                except aiohttp.ClientError:
                    failures += 1
                    return
                latencies.append(time.monotonic() - started)

            await asyncio.gather(*(fetch(path) for path in paths))
            offset = (offset + PAGE_SIZE) % max(PAGE_SIZE, names // (10 if query else 1))
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    return {"latencies": latencies, "failures": failures}


def viewer_main(argv: Sequence[str]) -> None:
    base, index, seconds, names = argv[0], int(argv[1]), float(argv[2]), int(argv[3])
    print(json.dumps(asyncio.run(view(base, index, seconds, names))))


# -- the benchmark --------------------------------------------------------------------------


async def fill(node: Node, names: int, groups: int) -> None:
    holder = node.actors.spawn(Holder)
    for start in range(0, names, 500):
        await asyncio.gather(
            *(
                node.registry.register(
                    f"name-{i:05}", holder, meta={"shard": i % 16, "owner": f"team-{i % 7}"}
                )
                for i in range(start, min(names, start + 500))
            )
        )
    members = [node.actors.spawn(Holder) for _ in range(5)]
    for group in range(groups):
        for member in members:
            await node.registry.join(f"group-{group:03}", member)


async def main(args: argparse.Namespace) -> None:
    load = lab.OtherLoad()
    planned = lab.plan_nodes(3, args.first_index, "page")
    me, *others = planned
    names = [p.name for p in planned]
    async with lab.node_lab() as node_lab:
        peers: list[LabNode] = [
            lab.add_node(node_lab, p, lab.node_config(p, names, retry_interval_ms=500))
            for p in others
        ]
        for peer in peers:
            peer.spawn()
        await lab.wait_listening(peers, START_TIMEOUT)
        config = load_config(
            {
                "node": {
                    "name": me.name,
                    "port": me.port,
                    "http": {"port": me.http_port},
                },
                "topologies": {
                    "bench": {
                        "strategy": "epmd",
                        "config": {"hosts": names, "retry_interval": 500},
                    }
                },
            },
            env={},
        )
        async with Node(config, cookie=node_lab.cookie) as node:
            await lab.until(
                lambda: len(node.nodes()) == 2, timeout=START_TIMEOUT, what="peers connected"
            )
            print(f"registering {args.names} names...", file=sys.stderr)
            await fill(node, args.names, args.groups)
            base = f"http://{me.host}:{me.http_port}"
            started = time.monotonic()
            snapshot = await node.view.snapshot()
            build = snapshot["build_seconds"]
            page_started = time.monotonic()
            node.view.names_page("", 0, PAGE_SIZE)
            first_page = time.monotonic() - page_started
            page_started = time.monotonic()
            node.view.names_page("9", 0, PAGE_SIZE)
            filtered_page = time.monotonic() - page_started
            print(f"first build took {time.monotonic() - started:.3f}s", file=sys.stderr)

            print(f"baseline: {args.window:.0f}s, nobody watching...", file=sys.stderr)
            await asyncio.sleep(1.0)
            baseline, idle_busy, idle_gc = await measure_lag(args.window)

            print(f"load: {args.viewers} viewers for {args.window:.0f}s...", file=sys.stderr)
            viewers = [
                await asyncio.create_subprocess_exec(
                    *lab.launcher(
                        sys.executable,
                        __file__,
                        "--viewer",
                        base,
                        str(i),
                        str(args.window + 2),
                        str(args.names),
                    ),
                    stdout=asyncio.subprocess.PIPE,
                )
                for i in range(args.viewers)
            ]
            await asyncio.sleep(1.0)  # the viewers' interpreters start
            loaded, loaded_busy, loaded_gc = await measure_lag(args.window)
            results = [json.loads((await v.communicate())[0]) for v in viewers]

    latencies = [x for r in results for x in r["latencies"]]
    failures = sum(r["failures"] for r in results)
    p99 = lab.percentile
    rows = []
    for label, lags, busy, collected in (
        ("baseline (no viewer)", baseline, idle_busy, idle_gc),
        (f"{args.viewers} viewers", loaded, loaded_busy, loaded_gc),
    ):
        rows.append(
            [
                label,
                len(lags),
                ms(lab.median(lags)),
                ms(p99(lags, 0.99)),
                ms(max(lags)),
                f"{p99(lags, 0.99) / max(p99(baseline, 0.99), 1e-6):.1f}x",
                ms(max(busy)),
                collected.longest(),
            ]
        )
    print(f"## The live page's cost: {args.names} names, {args.groups} groups, 3 nodes\n")
    print(lab.machine())
    print(load.note())
    print()
    print(
        lab.table(
            [
                "node's event loop",
                "samples",
                "median lag",
                "p99 lag",
                "max lag",
                "p99 / baseline",
                "max lag spent computing",
                "GC runs",
            ],
            rows,
        )
    )
    print()
    print(
        lab.table(
            ["work", "time"],
            [
                ["one snapshot build (asks 2 peers)", ms(build)],
                ["first page of 100 names", ms(first_page)],
                ["a filtered page (1 in 10 match)", ms(filtered_page)],
                [
                    f"viewer requests: median / p99 ({len(latencies)}, {failures} failed)",
                    f"{ms(lab.median(latencies))} / {ms(p99(latencies, 0.99))}",
                ],
            ],
        )
    )
    print()
    print(lab.goal(f"p99 loop lag under {GOAL_LAG * 1000:.0f} ms", p99(loaded, 0.99) < GOAL_LAG))
    print(
        lab.goal(
            f"max loop lag under {GOAL_LAG * 1000:.0f} ms (only meaningful when the "
            "baseline's max is too)",
            max(loaded) < GOAL_LAG,
        )
    )
    print(
        lab.goal(
            f"max loop lag spent computing under {GOAL_LAG * 1000:.0f} ms",
            max(loaded_busy) < GOAL_LAG,
        )
    )


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=10_000, help="names (default 10000)")
    parser.add_argument("--groups", type=int, default=100, help="groups (default 100)")
    parser.add_argument("--viewers", type=int, default=5, help="open pages (default 5)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds per phase (default 20)")
    parser.add_argument(
        "--first-index",
        type=int,
        default=191,
        help="nodes use 127.0.0.<first-index> and up (default 191)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--viewer"]:
        viewer_main(sys.argv[2:])
    else:
        lab.run(main(parse(sys.argv[1:])))
