"""What the benchmarks share: node processes on loopback addresses, their logs, tables.

Each node is a real ``python -m pycluster run CONFIG`` process on its own 127.0.0.x address,
as in the test lab. The benchmark reads every node's log (stderr) as it is written, so it
knows, to the millisecond and without asking the node anything, when the node listened and
when it saw each peer come and go: the log lines carry the node's own timestamp.

Cleanup: every process a benchmark starts is killed when the benchmark ends, however it
ends. :class:`NodeProcesses` stops them on exit (SIGTERM, then SIGKILL), the benchmark's
SIGTERM and Ctrl-C become a cancellation that runs that exit, and on Linux each child also
gets ``PR_SET_PDEATHSIG`` so it dies even if the benchmark itself is killed with ``-9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime
import functools
import math
import os
import platform
import re
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

import pycluster

STOP_GRACE = 5.0
"""Seconds a node gets to leave after SIGTERM before it is killed."""

_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (\S+) (.*)$")
_LISTENING = re.compile(r"^node (\S+) listening on ")
_NODE_UP = re.compile(r"^(\S+): node up (\S+)$")
_NODE_DOWN = re.compile(r"^(\S+): node down (\S+) \((.*)\)$")


# -- addresses and ports ------------------------------------------------------------------


def loopback(index: int) -> str:
    """The loopback address ``127.0.0.<index>`` (2..254)."""
    if not 2 <= index <= 254:
        raise ValueError(f"loopback index {index} is outside 2..254")
    return f"127.0.0.{index}"


def free_port(host: str) -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


# -- node processes -----------------------------------------------------------------------


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when this process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return preexec


class NodeProcess:
    """One ``pycluster run`` process and what its log said, with the node's timestamps."""

    def __init__(self, name: str, host: str, http_port: int | None) -> None:
        self.name = name
        self.host = host
        self.http_port = http_port
        self.process: asyncio.subprocess.Process | None = None
        self.listening_at: float | None = None
        """Wall-clock time (s) of the node's "listening" log line."""
        self.peers: set[str] = set()
        """Peers the node's log says are up right now."""
        self.ups: list[tuple[float, str]] = []
        self.downs: list[tuple[float, str, str]] = []
        self.tail: list[str] = []
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        """The process id (the process must have been started)."""
        assert self.process is not None
        return self.process.pid

    @property
    def status_url(self) -> str:
        """The node's ``/status`` URL."""
        return f"http://{self.host}:{self.http_port}/status"

    def full_since(self, expected: set[str]) -> float | None:
        """When (node's clock) the log last made ``peers`` equal ``expected``, if it is now."""
        if self.peers != expected:
            return None
        return max((t for t, _ in self.ups), default=None)

    def down_at(self, peer: str, after: float) -> tuple[float, str] | None:
        """First logged ``node down peer`` at or after ``after``: (time, reason)."""
        for at, who, reason in self.downs:
            if who == peer and at >= after:
                return at, reason
        return None

    async def changed(self, timeout: float) -> None:
        """Wait until the log says something new (or ``timeout`` seconds)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()

    def _follow(self, stream: asyncio.StreamReader) -> None:
        self._reader = asyncio.create_task(self._read(stream), name=f"log {self.name}")

    async def _read(self, stream: asyncio.StreamReader) -> None:
        # Chunks, not readline(): a line longer than the stream's limit must not stop the
        # reading, or the node would block writing its log into a full pipe.
        pending = b""
        while chunk := await stream.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            pending = pending[-65536:]
            for line in lines:
                text = line.decode(errors="replace")
                self.tail = [*self.tail[-40:], text]
                self._parse(text)
            self._changed.set()

    def _parse(self, text: str) -> None:
        match = _LOG_LINE.match(text)
        if match is None:
            return
        stamp, _, _, message = match.groups()
        at = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if _LISTENING.match(message):
            self.listening_at = at
        elif up := _NODE_UP.match(message):
            self.peers.add(up.group(2))
            self.ups.append((at, up.group(2)))
        elif down := _NODE_DOWN.match(message):
            self.peers.discard(down.group(2))
            self.downs.append((at, down.group(2), down.group(3)))


class NodeProcesses:
    """Starts node processes and guarantees they are gone when the ``async with`` ends."""

    def __init__(self, cookie: str | None = None) -> None:
        self.cookie = cookie or secrets.token_urlsafe(24)
        self.nodes: list[NodeProcess] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="pycluster-bench-")
        self.dir = Path(self._tmp.name)

    async def __aenter__(self) -> NodeProcesses:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await asyncio.shield(self.stop(self.nodes))
        finally:
            self._tmp.cleanup()

    async def start(self, node: NodeProcess, config: dict[str, Any]) -> NodeProcess:
        """Write ``config`` and run ``python -m pycluster run`` on it."""
        return await self.spawn(node, self.write_config(node, config))

    def write_config(self, node: NodeProcess, config: dict[str, Any]) -> Path:
        """Validate ``config`` (errors name their key here, not in a child) and write it."""
        pycluster.load_config(config, env={}, plugins=_plugins())
        path = self.dir / f"{node.name.split('@')[0]}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    async def spawn(self, node: NodeProcess, config: Path) -> NodeProcess:
        """Run ``python -m pycluster run CONFIG`` as ``node``, following its log."""
        env = {**os.environ, "PYCLUSTER_COOKIE": self.cookie}
        self.nodes.append(node)
        node.process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "pycluster", "run", str(config)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # the terminal's Ctrl-C is ours to handle, not theirs
            preexec_fn=die_with_parent(),
        )
        assert node.process.stderr is not None
        node._follow(node.process.stderr)
        return node

    async def stop(self, nodes: Iterable[NodeProcess], grace: float = STOP_GRACE) -> None:
        """SIGTERM ``nodes`` (they leave gracefully), SIGKILL those still there after
        ``grace`` seconds, and reap them all."""
        running = [n for n in nodes if n.process is not None]
        for node in running:
            assert node.process is not None
            if node.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    node.process.send_signal(signal.SIGTERM)
                    node.process.send_signal(signal.SIGCONT)  # a SIGSTOPped node, too
        waits = [n.process.wait() for n in running if n.process is not None]
        try:
            async with asyncio.timeout(grace):
                await asyncio.gather(*waits)
        except TimeoutError:
            for node in running:
                assert node.process is not None
                if node.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        node.process.kill()
            await asyncio.gather(*(n.process.wait() for n in running if n.process is not None))
        for node in running:
            if node._reader is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(node._reader, 1.0)
        for node in running:
            if node in self.nodes:
                self.nodes.remove(node)

    async def wait_listening(self, nodes: Sequence[NodeProcess], timeout: float) -> None:
        """Wait until every node logged "listening"; raise with its log if one did not."""
        deadline = time.monotonic() + timeout
        for node in nodes:
            while node.listening_at is None:
                assert node.process is not None
                if node.process.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{node.name} did not start listening:\n" + _tail(node))
                await node.changed(0.1)


@functools.cache
def _plugins() -> pycluster.Plugins:
    return pycluster.Plugins.load()


def _tail(node: NodeProcess) -> str:
    return "\n".join("    " + line for line in node.tail[-15:]) or "    (no output)"


def node_config(
    node: NodeProcess,
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


def plan_nodes(count: int, first_index: int, prefix: str) -> list[NodeProcess]:
    """``count`` nodes, each on its own loopback address from ``127.0.0.<first_index>``."""
    nodes = []
    for i in range(count):
        host = loopback(first_index + i)
        name = f"{prefix}{i + 1}@{host}:{free_port(host)}"
        nodes.append(NodeProcess(name, host, free_port(host)))
    return nodes


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

    async def peers(self, node: NodeProcess) -> set[str] | None:
        """The peers ``node`` lists in ``/status``; None if it did not answer."""
        assert self._session is not None
        try:
            async with self._session.get(node.status_url) as response:
                status = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return set(status["nodes"])

    async def until(
        self,
        nodes: Sequence[NodeProcess],
        done: Callable[[NodeProcess, set[str]], bool],
        *,
        interval: float,
        timeout: float,
    ) -> dict[str, float]:
        """Poll the nodes not yet ``done`` together, every ``interval`` s; return when each
        first answered ``done`` (wall clock, at the answer's arrival). Raises TimeoutError."""
        seen: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while len(seen) < len(nodes):
            if time.monotonic() > deadline:
                missing = [n.name for n in nodes if n.name not in seen]
                raise TimeoutError(f"still waiting for {', '.join(missing)}")
            pending = [n for n in nodes if n.name not in seen]
            answers = await asyncio.gather(*(self.peers(n) for n in pending))
            now = time.time()
            for node, peers in zip(pending, answers, strict=True):
                if peers is not None and done(node, peers):
                    seen[node.name] = now
            if len(seen) < len(nodes):
                await asyncio.sleep(interval)
        return seen


# -- running and printing -----------------------------------------------------------------


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


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)


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
