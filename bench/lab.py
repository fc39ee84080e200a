"""What the benchmarks share: the test lab's node processes, and tables.

Bench scripts run as ``python bench/NAME.py``, so their folder is on ``sys.path`` and the
repository root is not: importing this module puts the root there (the one place that
does), and the benchmarks use the one lab, ``tests/lab``, as the tests do.

Each node is a real ``python -m pycluster run CONFIG`` process on its own 127.0.0.x
address: a :class:`~tests.lab.LabNode` of a :class:`~tests.lab.Lab` in a temporary
directory (``/tmp/pycluster-bench-*``), logging JSON lines to a file. The benchmark reads
those records, so it knows, to the microsecond and without asking the node anything, when
the node listened and when it saw each peer come and go: each record carries the node's
own timestamp.

Cleanup: every process a benchmark starts is stopped when the benchmark ends, however it
ends. The lab stops its nodes on exit (SIGTERM, then SIGKILL), the benchmark's SIGTERM and
Ctrl-C become a cancellation that runs that exit, and each child is started through the
lab's launcher, so it dies even if the benchmark itself is killed with ``-9``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import gc
import os
import platform
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import attrs

import pycluster
from pycluster.cli import tune_garbage_collector

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.lab import Lab, LabNode  # noqa: E402
from tests.lab.node import NodeEvent, launcher  # noqa: E402
from tests.lab.polling import NotWithin, until  # noqa: E402
from tests.lab.ports import free_port  # noqa: E402
from tests.lab.stats import percentile  # noqa: E402

__all__ = [
    "STOP_GRACE",
    "Lab",
    "LabNode",
    "NodeEvent",
    "NotWithin",
    "OtherLoad",
    "Planned",
    "StatusPoller",
    "add_node",
    "down_at",
    "formed_by_logs",
    "free_port",
    "full_since",
    "goal",
    "launcher",
    "log_peers",
    "loopback",
    "machine",
    "median",
    "ms",
    "node_config",
    "node_lab",
    "percentile",
    "plan_nodes",
    "run",
    "spread",
    "table",
    "until",
    "wait_listening",
]

STOP_GRACE = 5.0
"""Seconds a node gets to leave after SIGTERM before it is killed."""


# -- addresses and ports ------------------------------------------------------------------


def loopback(index: int) -> str:
    """The loopback address ``127.0.0.<index>`` (2..254)."""
    if not 2 <= index <= 254:
        raise ValueError(f"loopback index {index} is outside 2..254")
    return f"127.0.0.{index}"


@attrs.frozen
class Planned:
    """A node not declared yet: its name (port written out), address and ports."""

    name: str
    host: str
    port: int
    http_port: int


def plan_nodes(count: int, first_index: int, prefix: str) -> list[Planned]:
    """``count`` nodes, each on its own loopback address from ``127.0.0.<first_index>``."""
    nodes = []
    for i in range(count):
        host = loopback(first_index + i)
        port = free_port(host)
        nodes.append(Planned(f"{prefix}{i + 1}@{host}:{port}", host, port, free_port(host)))
    return nodes


# -- node processes -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def node_lab(cookie: str | None = None) -> AsyncIterator[Lab]:
    """A lab in a temporary directory; its processes are all gone when the block ends."""
    with tempfile.TemporaryDirectory(prefix="pycluster-bench-") as directory:
        async with Lab.open(Path(directory), cookie=cookie) as opened:
            yield opened


def add_node(
    lab: Lab, planned: Planned, config: dict[str, Any], stem: str | None = None
) -> LabNode:
    """Declare ``planned`` running ``config``, validated here first (errors name their
    key here, not in a child); its files are named ``stem`` (see ``Lab.add``)."""
    pycluster.load_config(config, env={}, plugins=_plugins())
    return lab.add(
        planned.name,
        planned.host,
        config,
        port=planned.port,
        http_port=planned.http_port,
        verbose=False,
        stem=stem,
    )


def node_config(
    node: Planned,
    hosts: Sequence[str],
    *,
    retry_interval_ms: float,
    net_tick_timeout: float | None = None,
) -> dict[str, Any]:
    """A ``pycluster run`` config: the node, its HTTP port, and an ``epmd`` topology."""
    settings: dict[str, Any] = {"name": node.name, "http": {"port": node.http_port}}
    if net_tick_timeout is not None:
        settings["net_tick_timeout"] = net_tick_timeout
    return {
        "node": settings,
        "topologies": {
            "bench": {
                "strategy": "epmd",
                "config": {"hosts": list(hosts), "retry_interval": retry_interval_ms},
            }
        },
    }


async def wait_listening(
    nodes: Sequence[LabNode], timeout: float, since: dict[str, int] | None = None
) -> float:
    """Wait until every node logged that it listens (after its log offset in ``since``);
    raise with its log if one exits first. Returns when (wall clock) the last one did."""
    marks = since or {}

    def listening() -> bool:
        for node in nodes:
            if not node.running and node.listening(marks.get(node.name, 0)) is None:
                raise RuntimeError(f"{node.name} exited before listening:\n{_tail(node)}")
        return all(node.listening(marks.get(node.name, 0)) is not None for node in nodes)

    try:
        await until(listening, timeout=timeout, interval=0.02, what="every node listening")
    except NotWithin:
        late = [n for n in nodes if n.listening(marks.get(n.name, 0)) is None]
        raise RuntimeError(
            "did not start listening: " + "; ".join(f"{n.name}:\n{_tail(n)}" for n in late)
        ) from None
    return max(_listened(node, marks.get(node.name, 0)) for node in nodes)


def _listened(node: LabNode, since: int) -> float:
    listening = node.listening(since)
    assert listening is not None
    return listening.at


def log_peers(node: LabNode) -> set[str]:
    """The peers ``node``'s log says are up now."""
    peers: set[str] = set()
    for event in node.events():
        if event.kind == "up":
            peers.add(event.peer)
        else:
            peers.discard(event.peer)
    return peers


def full_since(node: LabNode, expected: set[str]) -> float | None:
    """When (node's clock) the log last made its peers equal ``expected``, if it is now."""
    if log_peers(node) != expected:
        return None
    return max((e.at for e in node.events() if e.kind == "up"), default=None)


async def formed_by_logs(
    nodes: Sequence[LabNode], expected: dict[str, set[str]], timeout: float = 5.0
) -> float:
    """When the last node's log completed its view (logs may trail ``/status`` a little):
    ``expected`` maps each node's name to the peers it must list."""
    times: list[float | None] = []

    def complete() -> bool:
        times[:] = [full_since(node, expected[node.name]) for node in nodes]
        return all(t is not None for t in times)

    try:
        await until(complete, timeout=timeout, interval=0.05, what="the logs show the mesh")
    except NotWithin:
        raise RuntimeError("/status showed a full mesh that the node logs do not") from None
    return max(t for t in times if t is not None)


def down_at(node: LabNode, peer: str, after: float) -> tuple[float, str] | None:
    """The first node down of ``peer`` ``node`` logged at or after ``after``: (time,
    reason)."""
    for event in node.events():
        if event.kind == "down" and event.peer == peer and event.at >= after:
            return event.at, event.reason or ""
    return None


@functools.cache
def _plugins() -> pycluster.Plugins:
    return pycluster.Plugins.load()


def _tail(node: LabNode) -> str:
    lines = node.log_text().splitlines()[-15:]
    return "\n".join("    " + line for line in lines) or "    (no output)"


# -- /status ------------------------------------------------------------------------------


class StatusPoller:
    """Asks nodes for ``/status`` over kept-alive HTTP connections."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> StatusPoller:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=2.0),
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def status(self, node: LabNode) -> dict[str, Any] | None:
        """``node``'s whole ``/status`` answer; None if it did not answer."""
        assert self._session is not None
        try:
            async with self._session.get(node.url("/status")) as response:
                status: dict[str, Any] = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return status

    async def peers(self, node: LabNode) -> set[str] | None:
        """The peers ``node`` lists in ``/status``; None if it did not answer."""
        assert self._session is not None
        try:
            async with self._session.get(node.url("/status")) as response:
                status = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return set(status["nodes"])

    async def until(
        self,
        nodes: Sequence[LabNode],
        done: Callable[[LabNode, set[str]], bool],
        *,
        interval: float,
        timeout: float,
    ) -> dict[str, float]:
        """Poll the nodes not yet ``done`` together, every ``interval`` s; return when each
        first answered ``done`` (wall clock, at the answer's arrival). Raises NotWithin (a
        TimeoutError)."""
        seen: dict[str, float] = {}

        async def all_done() -> bool:
            pending = [n for n in nodes if n.name not in seen]
            answers = await asyncio.gather(*(self.peers(n) for n in pending))
            now = time.time()
            for node, peers in zip(pending, answers, strict=True):
                if peers is not None and done(node, peers):
                    seen[node.name] = now
            return len(seen) == len(nodes)

        try:
            await until(all_done, timeout=timeout, interval=interval, what="every node done")
        except NotWithin:
            missing = ", ".join(n.name for n in nodes if n.name not in seen)
            raise NotWithin(f"still waiting for {missing}") from None
        return seen


# -- running and printing -----------------------------------------------------------------


async def meshed(
    nodes: Sequence[pycluster.Node], *, timeout: float = 30.0, interval: float = 0.0
) -> None:
    """Start ``nodes`` (embedded in this process), connect each to every other, and wait
    until every one lists all the others and is ready (polled every ``interval`` s)."""
    for node in nodes:
        await node.start()
    await asyncio.gather(*(a.connect(b.name) for a in nodes for b in nodes if a is not b))
    await until(
        lambda: all(len(n.nodes()) == len(nodes) - 1 and n.ready() for n in nodes),
        timeout=timeout,
        interval=interval,
        what="the embedded nodes meshed",
    )


def add_collector_option(parser: argparse.ArgumentParser) -> None:
    """``--python-gc``: for :func:`collect_as_pycluster_run`."""
    parser.add_argument(
        "--python-gc",
        action="store_true",
        help="leave the benchmark's nodes' garbage collector at Python's default (by "
        "default it is set as `pycluster run` sets a node's)",
    )


def collect_as_pycluster_run(python_default: bool = False) -> str:
    """Set this process's garbage collector as ``pycluster run`` sets a node's (unless
    ``python_default``), as docs/nodes.md advises for an embedded node; says which."""
    if python_default:
        return "garbage collector at Python's default (first threshold 700)"
    tune_garbage_collector()
    return (
        "garbage collector set as `pycluster run` sets a node's "
        f"(first threshold {gc.get_threshold()[0]:,}, docs/nodes.md)"
    )


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a benchmark's ``main``; SIGTERM and Ctrl-C cancel it (so its cleanup runs)."""

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await main

    try:
        asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process this benchmark started is stopped", file=sys.stderr)
        sys.exit(130)


def median(values: Sequence[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)


def spread(values: Sequence[float], show: Callable[[float], str]) -> str:
    """``median (min-max)`` of ``values``, each shown by ``show``; ``-`` if none."""
    if not values:
        return "-"
    return f"{show(median(values))} ({show(min(values))}-{show(max(values))})"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table (it reads well in a terminal too)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def goal(text: str, met: bool) -> str:
    """``goal: TEXT: met`` or ``... not met``."""
    return f"goal: {text}: {'met' if met else 'NOT met'}"


def machine() -> str:
    """One line naming the machine, Python and date, for the results."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    return (
        f"{os.cpu_count()} CPUs ({model}){memory}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, {datetime.date.today().isoformat()}"
    )


class OtherLoad:
    """How much CPU processes other than this benchmark (and its children) used meanwhile.

    Benchmarks on a shared machine are only as good as its quiet: this is printed with the
    results so that a noisy run shows as one. Linux only (``/proc/stat``); else None.
    """

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        ticks = [int(f) / os.sysconf("SC_CLK_TCK") for f in fields]
        idle = ticks[3] + ticks[4]
        total = sum(ticks[:8])  # guest time is already counted in user time
        ours = sum(
            getattr(resource.getrusage(who), field)
            for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            for field in ("ru_utime", "ru_stime")
        )
        return total, total - idle, ours

    def share(self) -> float | None:
        """The CPU share (0..1 of all CPUs) others used since this object was made."""
        end = self._sample()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        total, busy, ours = (b - a for a, b in zip(self._start, end, strict=True))
        return max(0.0, busy - ours) / total

    def note(self) -> str:
        """A line for the results."""
        share = self.share()
        if share is None:
            return "CPU used by other processes meanwhile: unknown"
        verdict = "quiet" if share < 0.05 else "NOT quiet: these numbers are disturbed"
        return f"CPU used by other processes meanwhile: {share:.0%} of the machine ({verdict})"


def ms(seconds: float) -> str:
    """Seconds as milliseconds, for a table."""
    return f"{seconds * 1000:.0f} ms"
