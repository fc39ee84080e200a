"""Cluster formation: N node processes started at once, until every node sees all others.

Each node is ``python -m pycluster run`` on its own loopback address with the ``epmd``
strategy listing all N nodes (short ``retry_interval``) and ``node.http.port`` set.

Measured per run, on one wall clock (all processes share the machine's clock):

- start-up (the baseline): from spawning the first process until the last node's
  "listening" log record. The record's timestamp is written by the node itself right after
  its TCP and HTTP servers are bound, so it needs no polling and is exact to 1 ms; polling
  ``/healthz`` instead would add the poll interval and load the CPUs the nodes start on.
- formation: from that last "listening" line until every node's ``/status`` lists all the
  others. Polling starts once every node listens (no node can be complete before the last
  one is up), asks all incomplete nodes at once every 20 ms over kept-alive connections,
  and stops asking a node once it is complete (a final round checks none regressed).
  The same instant as the nodes' own logs put it (the last "node up" line that completed a
  node's view) is shown too: it excludes the polling delay.

Run: ``.venv/bin/python bench/formation.py [--sizes 3 10 25] [--runs 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

import attrs
import lab

POLL_INTERVAL = 0.02
START_TIMEOUT = 60.0
FORM_TIMEOUT = 30.0
GOAL_NODES = 10
GOAL_SECONDS = 1.0


@attrs.frozen
class Formation:
    """One run: seconds from spawning to the last "listening", then to a full mesh."""

    startup: float
    formed: float
    formed_by_logs: float


async def form_once(count: int, first_index: int, retry_interval_ms: float) -> Formation:
    """Start ``count`` nodes at once, wait for the full mesh, stop them."""
    planned = lab.plan_nodes(count, first_index, "form")
    names = [node.name for node in planned]
    expected = {name: set(names) - {name} for name in names}
    async with lab.node_lab() as node_lab, lab.StatusPoller() as poller:
        nodes = [
            lab.add_node(
                node_lab, node, lab.node_config(node, names, retry_interval_ms=retry_interval_ms)
            )
            for node in planned
        ]
        spawned = time.time()
        for node in nodes:
            node.spawn()
        last_listening = await lab.wait_listening(nodes, START_TIMEOUT)
        seen = await poller.until(
            nodes,
            lambda node, peers: peers == expected[node.name],
            interval=POLL_INTERVAL,
            timeout=FORM_TIMEOUT,
        )
        formed = max(seen.values())
        answers = await asyncio.gather(*(poller.peers(node) for node in nodes))
        if any(peers != expected[node.name] for node, peers in zip(nodes, answers, strict=True)):
            raise RuntimeError("a node lost a peer right after the cluster formed")
        by_logs = await lab.formed_by_logs(nodes, expected)
    return Formation(
        startup=last_listening - spawned,
        formed=formed - last_listening,
        formed_by_logs=by_logs - last_listening,
    )


async def main(sizes: Sequence[int], runs: int, first_index: int, retry_ms: float) -> None:
    """Measure every size, print the table and the goal."""
    print(f"cluster formation: {runs} runs per size; epmd retry_interval {retry_ms:.0f} ms")
    print(f"machine: {lab.machine()}")
    load = lab.OtherLoad()
    results: dict[int, list[Formation]] = {}
    for count in sizes:
        results[count] = []
        for run in range(runs):
            result = await form_once(count, first_index, retry_ms)
            results[count].append(result)
            print(
                f"  {count} nodes, run {run + 1}: start-up {lab.ms(result.startup)}, "
                f"formed {lab.ms(result.formed)} after the last listened "
                f"({lab.ms(result.formed_by_logs)} by the node logs)",
                file=sys.stderr,
            )
    rows = []
    for count, measured in results.items():
        startup = [r.startup for r in measured]
        formed = [r.formed for r in measured]
        by_logs = [r.formed_by_logs for r in measured]
        rows.append(
            [
                count,
                lab.ms(lab.median(startup)),
                lab.ms(max(startup)),
                lab.ms(lab.median(formed)),
                lab.ms(max(formed)),
                f"{lab.median(formed) / lab.median(startup):.2f}",
                lab.ms(lab.median(by_logs)),
                lab.ms(max(by_logs)),
            ]
        )
    print()
    print(
        lab.table(
            [
                "nodes",
                "start-up median (baseline)",
                "start-up max",
                "formation median",
                "formation max",
                "formation / start-up",
                "by node logs median",
                "by node logs max",
            ],
            rows,
        )
    )
    print()
    print("start-up: spawn of the first process -> the last node's 'listening' log line")
    print("formation: that line -> every node's /status lists all others (20 ms polls)")
    if GOAL_NODES in results:
        worst = max(r.formed for r in results[GOAL_NODES])
        print(
            lab.goal(
                f"{GOAL_NODES} nodes fully meshed within {GOAL_SECONDS:.0f} s of the last "
                f"one listening, in every run (worst: {lab.ms(worst)})",
                worst < GOAL_SECONDS,
            )
        )
    print(load.note())


def _arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 10, 25], help="node counts")
    parser.add_argument("--runs", type=int, default=5, help="runs per node count")
    parser.add_argument(
        "--first-address",
        type=int,
        default=101,
        metavar="X",
        help="nodes use 127.0.0.X, 127.0.0.X+1, ... (default 101, away from the test lab)",
    )
    parser.add_argument(
        "--retry-interval", type=float, default=500, help="epmd retry_interval, in ms"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = _arguments()
    lab.run(main(args.sizes, args.runs, args.first_address, args.retry_interval))
