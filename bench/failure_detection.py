"""Failure detection: how long the other nodes keep listing a node that died or left.

4 node processes (``epmd``, each on its own loopback address) form a cluster. Then, 5 times
per signal, one node (a different one each time) gets:

- ``kill -9``: the process dies; its kernel closes its sockets, so on one machine the
  peers see the connection end at once;
- ``SIGSTOP``: the process freezes with its sockets open, as a node whose host vanished or
  whose network was cut: only the net tick timeout can detect it;
- ``SIGTERM``: a graceful leave (the node tells its peers before closing).

Detection is when the last of the other three no longer lists it in ``/status`` (polled
together every 20 ms), and also as the nodes' own "node down" log lines date it. The
baseline, measured in the same trial, is when a plain TCP connection that the benchmark
holds open to the node's HTTP port sees the end of the stream: the operating system's own
detection, which a frozen process never triggers (its row compares with the timeout).
The node is then killed if needed and started again, and the cluster re-formed.

Run: ``.venv/bin/python bench/failure_detection.py [--timeouts 1 3] [--trials 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import attrs
import lab

NODES = 4
POLL_INTERVAL = 0.02
FORM_TIMEOUT = 20.0
DETECT_SLACK = 1.0
"""The goal: a dead node is detected within net_tick_timeout + this many seconds."""
LEAVE_GOAL = 1.0
SIGNALS = {"kill -9": signal.SIGKILL, "SIGSTOP": signal.SIGSTOP, "SIGTERM": signal.SIGTERM}


@attrs.frozen
class Detection:
    """One trial, in seconds from the signal."""

    polled: float
    logged: float
    eof: float | None
    reasons: tuple[str, ...]


class Cluster:
    """Four running nodes, one of which can be signalled and then started again."""

    def __init__(self, node_lab: lab.Lab, planned: list[lab.Planned]) -> None:
        self.lab = node_lab
        self.planned = {node.name: node for node in planned}
        self.nodes: list[lab.LabNode] = []
        self.configs: dict[str, dict[str, Any]] = {}

    async def start(self, net_tick_timeout: float, retry_interval_ms: float) -> None:
        """Start every node and wait for the full mesh."""
        names = list(self.planned)
        for planned in self.planned.values():
            config = lab.node_config(
                planned,
                names,
                retry_interval_ms=retry_interval_ms,
                net_tick_timeout=net_tick_timeout,
            )
            self.configs[planned.name] = config
            node = lab.add_node(self.lab, planned, config)
            node.spawn()
            self.nodes.append(node)
        await lab.wait_listening(self.nodes, 30.0)

    async def formed(self, poller: lab.StatusPoller) -> None:
        """Wait until every node lists all the others."""
        names = {node.name for node in self.nodes}
        await poller.until(
            self.nodes,
            lambda node, peers: peers == names - {node.name},
            interval=POLL_INTERVAL,
            timeout=FORM_TIMEOUT,
        )

    async def restart(self, victim: lab.LabNode) -> None:
        """Make sure ``victim`` is gone, then run a fresh process under its name."""
        victim.send_signal(signal.SIGKILL)  # also ends a SIGSTOPped process
        await self.lab.wait_exit(victim)
        # The fresh process appends to the same log: it listens after what is there now.
        mark = victim.log_size()
        fresh = lab.add_node(self.lab, self.planned[victim.name], self.configs[victim.name])
        self.nodes[self.nodes.index(victim)] = fresh
        fresh.spawn()
        await lab.wait_listening([fresh], 30.0, since={fresh.name: mark})


async def detect_once(
    cluster: Cluster, poller: lab.StatusPoller, victim: lab.LabNode, signum: int
) -> Detection:
    """Signal ``victim``; return when the others dropped it, and the baseline."""
    others = [node for node in cluster.nodes if node is not victim]
    # A frozen process never closes a socket: no baseline to wait for.
    watch = None if signum == signal.SIGSTOP else await _hold_connection(victim)
    eof_task = asyncio.create_task(_wait_eof(watch[0])) if watch else None
    signalled = time.time()
    os.kill(victim.pid, signum)
    try:
        seen = await poller.until(
            others,
            lambda node, peers: victim.name not in peers,
            interval=POLL_INTERVAL,
            timeout=30.0,
        )
        logged = await _logged_down(others, victim.name, signalled)
        eof: float | None = None
        if eof_task is not None:
            with contextlib.suppress(TimeoutError):
                eof = await asyncio.wait_for(asyncio.shield(eof_task), 2.0)
    finally:
        if eof_task is not None:
            eof_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await eof_task
        if watch:
            watch[1].close()
    return Detection(
        polled=max(seen.values()) - signalled,
        logged=max(at for at, _ in logged) - signalled,
        eof=None if eof is None else eof - signalled,
        reasons=tuple(sorted({reason for _, reason in logged})),
    )


async def _hold_connection(
    node: lab.LabNode,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A kept-alive HTTP connection to ``node`` after one answered request."""
    try:
        reader, writer = await asyncio.open_connection(node.address, node.http_port)
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {node.address}\r\n\r\n".encode())
        headers = await reader.readuntil(b"\r\n\r\n")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    length = 0
    for line in headers.decode("latin-1").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-length":
            length = int(value.strip())
    await reader.readexactly(length)
    return reader, writer


async def _wait_eof(reader: asyncio.StreamReader) -> float:
    with contextlib.suppress(OSError):
        while await reader.read(4096):
            pass
    return time.time()


async def _logged_down(
    others: Sequence[lab.LabNode], victim: str, after: float
) -> list[tuple[float, str]]:
    """Each other node's "node down victim" record: (time, reason)."""
    downs: list[tuple[float, str] | None] = []

    def logged() -> bool:
        downs[:] = [lab.down_at(node, victim, after - 0.002) for node in others]
        return all(down is not None for down in downs)

    try:
        await lab.until(logged, timeout=5.0, interval=0.02, what=f"every log has {victim} down")
    except lab.NotWithin:
        raise RuntimeError(f"/status dropped {victim} but a log has no node down record") from None
    return [down for down in downs if down is not None]


async def measure(
    timeout: float, trials: int, first_index: int, retry_ms: float
) -> dict[str, list[Detection]]:
    """All signals, ``trials`` times each, on a cluster with ``net_tick_timeout=timeout``."""
    results: dict[str, list[Detection]] = collections.defaultdict(list)
    planned = lab.plan_nodes(NODES, first_index, "fd")
    async with lab.node_lab() as node_lab, lab.StatusPoller() as poller:
        cluster = Cluster(node_lab, planned)
        await cluster.start(timeout, retry_ms)
        await cluster.formed(poller)
        for label, signum in SIGNALS.items():
            for trial in range(trials):
                victim = cluster.nodes[trial % NODES]
                result = await detect_once(cluster, poller, victim, signum)
                results[label].append(result)
                eof = "-" if result.eof is None else lab.ms(result.eof)
                print(
                    f"  net_tick_timeout {timeout:g} s, {label}, trial {trial + 1}: "
                    f"/status {lab.ms(result.polled)}, logs {lab.ms(result.logged)}, "
                    f"raw EOF {eof} ({'; '.join(result.reasons)})",
                    file=sys.stderr,
                )
                await cluster.restart(victim)
                await cluster.formed(poller)
    return results


def _goal_seconds(label: str, timeout: float) -> float:
    return LEAVE_GOAL if label == "SIGTERM" else timeout + DETECT_SLACK


async def main(timeouts: Sequence[float], trials: int, first_index: int, retry_ms: float) -> None:
    """Measure every timeout, print the table and the goals."""
    print(f"failure detection: {NODES} nodes, {trials} trials per signal")
    print(f"machine: {lab.machine()}")
    load = lab.OtherLoad()
    rows = []
    goals = []
    for timeout in timeouts:
        results = await measure(timeout, trials, first_index, retry_ms)
        for label, detections in results.items():
            polled = [d.polled for d in detections]
            logged = [d.logged for d in detections]
            eofs = [d.eof for d in detections if d.eof is not None]
            if label == "SIGSTOP" or not eofs:
                baseline, ratio = f"{timeout:g} s (timeout)", lab.median(logged) / timeout
            else:
                baseline = lab.ms(lab.median(eofs))
                ratio = lab.median(logged) / max(lab.median(eofs), 1e-3)
            reasons = collections.Counter(r.split(" (")[0] for d in detections for r in d.reasons)
            rows.append(
                [
                    f"{timeout:g} s",
                    label,
                    lab.ms(lab.median(polled)),
                    lab.ms(max(polled)),
                    lab.ms(lab.median(logged)),
                    lab.ms(max(logged)),
                    baseline,
                    f"{ratio:.2f}",
                    ", ".join(reasons),
                ]
            )
            limit = _goal_seconds(label, timeout)
            goals.append(
                lab.goal(
                    f"{label} with net_tick_timeout {timeout:g} s detected within "
                    f"{limit:g} s (worst: {lab.ms(max(polled))})",
                    max(polled) < limit,
                )
            )
    print()
    print(
        lab.table(
            [
                "net_tick_timeout",
                "signal",
                "detected median",
                "detected max",
                "by node logs median",
                "by node logs max",
                "baseline median",
                "logs / baseline",
                "peers' reason",
            ],
            rows,
        )
    )
    print()
    print("detected: signal -> no other node lists the victim in /status (20 ms polls,")
    print("          so up to ~25 ms of it is the polling); by node logs: when the peers'")
    print("          own 'node down' log lines say they dropped it")
    print("baseline: signal -> a raw TCP connection to the victim sees EOF (kill -9, SIGTERM);")
    print("          for SIGSTOP no EOF ever comes: the ratio is to net_tick_timeout")
    for line in goals:
        print(line)
    print("(the issue's kill -9 goal is about a peer that vanishes without closing its")
    print(" sockets; on one machine that is the SIGSTOP row, kill -9 is closed by the kernel)")
    print(load.note())


def _arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--timeouts", type=float, nargs="+", default=[1.0, 3.0], help="net_tick_timeout values"
    )
    parser.add_argument("--trials", type=int, default=5, help="trials per signal")
    parser.add_argument(
        "--first-address",
        type=int,
        default=131,
        metavar="X",
        help="nodes use 127.0.0.X .. 127.0.0.X+3 (default 131, away from the test lab)",
    )
    parser.add_argument(
        "--retry-interval", type=float, default=500, help="epmd retry_interval, in ms"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = _arguments()
    lab.run(main(args.timeouts, args.trials, args.first_address, args.retry_interval))
