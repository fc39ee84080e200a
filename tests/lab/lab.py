"""The Lab: declares, starts, watches, disturbs and stops node processes."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.lab.firewall import Firewall
from tests.lab.node import COOKIE_ENV, LabNode, parse_records
from tests.lab.polling import NotWithin, until

NODE_PORT = 9100
HTTP_PORT = 9200
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 1.0
LOG_TAIL_LINES = 400
_METRIC = re.compile(r"^(?P<series>[a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (?P<value>\S+)$")


class Lab:
    """Node processes on loopback addresses 127.0.S.2, 127.0.S.3, ... of one test.

    Use through :meth:`open` (the ``lab`` fixture does), which stops every process and
    removes every firewall rule on the way out, whatever happened.
    """

    def __init__(
        self,
        directory: Path,
        session: aiohttp.ClientSession,
        *,
        cookie: str | None = None,
        subnet: int | None = None,
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.cookie = cookie if cookie is not None else secrets.token_urlsafe(24)
        self.subnet = subnet if subnet is not None else random.randrange(16, 250)
        self.nodes: list[LabNode] = []
        self.firewall = Firewall()
        self._session = session
        self._next_host = 2
        self._next_index = 1

    @classmethod
    @asynccontextmanager
    async def open(cls, directory: Path, **options: Any) -> AsyncIterator[Lab]:
        """A lab whose processes and firewall rules are all gone once the block exits."""
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            lab = cls(directory, session, **options)
            try:
                yield lab
            finally:
                try:
                    await lab.stop_all()
                finally:
                    lab.firewall.close()

    # -- declaring nodes --------------------------------------------------------------------

    def address(self) -> str:
        """A fresh loopback address of this lab's subnet, with the lab's ports free on it."""
        while self._next_host <= 254:
            address = f"127.0.{self.subnet}.{self._next_host}"
            self._next_host += 1
            if _ports_free(address, (NODE_PORT, HTTP_PORT)):
                return address
        raise RuntimeError(f"no free address left in 127.0.{self.subnet}.0/24")

    def declare(
        self,
        count: int = 1,
        *,
        hosts: Sequence[str] | None = None,
        net_tick_timeout: float = 1.0,
        retry_interval: float = 0.5,
        max_frame_size: int | None = None,
        cookie: str | None = None,
        verbose: bool = True,
    ) -> list[LabNode]:
        """Declare ``count`` nodes (not started) with an ``epmd`` topology.

        The topology lists ``hosts``, by default the names of the nodes declared together
        (a full mesh). ``retry_interval`` is epmd's in seconds; ``cookie`` defaults to the
        lab's.
        """
        addresses = [self.address() for _ in range(count)]
        names = []
        for address in addresses:
            names.append(f"n{self._next_index}@{address}")
            self._next_index += 1
        declared = []
        for name, address in zip(names, addresses, strict=True):
            node: dict[str, Any] = {
                "name": name,
                "net_tick_timeout": net_tick_timeout,
                "http": {"port": HTTP_PORT},
            }
            if max_frame_size is not None:
                node["max_frame_size"] = max_frame_size
            config = {
                "node": node,
                "topologies": {
                    "lab": {
                        "strategy": "epmd",
                        "config": {
                            "hosts": list(names if hosts is None else hosts),
                            "retry_interval": int(retry_interval * 1000),
                        },
                    }
                },
            }
            declared.append(self.add(name, address, config, cookie=cookie, verbose=verbose))
        return declared

    def add(
        self,
        name: str,
        address: str,
        config: dict[str, Any],
        *,
        port: int = NODE_PORT,
        http_port: int = HTTP_PORT,
        cookie: str | None = None,
        verbose: bool = True,
        stem: str | None = None,
    ) -> LabNode:
        """Declare one node (not started) that runs ``config``, written as YAML as given;
        ``port`` and ``http_port`` are where the config has it listen. Its files are
        named ``stem`` (by default what its name has before "@")."""
        stem = stem or name.split("@")[0]
        config_path = self.directory / f"{stem}.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        node = LabNode(
            name=name,
            address=address,
            port=port,
            http_port=http_port,
            config_path=config_path,
            log_path=self.directory / f"{stem}.log",
            cookie=self.cookie if cookie is None else cookie,
            verbose=verbose,
        )
        self.nodes.append(node)
        return node

    # -- starting and stopping --------------------------------------------------------------

    async def start(self, nodes: Sequence[LabNode], *, timeout: float = START_TIMEOUT) -> None:
        """Spawn ``nodes`` all at once; return when each answers ``/status``.

        Sets each node's ``listening_at``; fails (naming every laggard) after ``timeout``.
        """
        for node in nodes:
            node.spawn()
            node.spawned_at = time.monotonic()
        problems = await asyncio.gather(*(self._wait_listening(n, timeout) for n in nodes))
        failed = [problem for problem in problems if problem is not None]
        if failed:
            raise AssertionError("nodes did not start: " + "; ".join(failed))

    async def _wait_listening(self, node: LabNode, timeout: float) -> str | None:
        """None once ``node`` answers /status as itself; else what went wrong."""
        exited: list[str] = []

        async def listening() -> bool:
            status = await self.try_status(node)
            if status is not None and status.get("node") == node.name:
                return True
            if not node.running:
                exited.append(f"{node.name} exited with status {node.exit_code} before listening")
            return bool(exited)

        try:
            await until(listening, timeout=timeout, interval=0.01, what=f"{node.name} listens")
        except NotWithin:
            return f"{node.name} did not answer /status in time"
        if exited:
            return exited[0]
        node.listening_at = time.monotonic()
        return None

    def send_signal(self, node: LabNode, signum: signal.Signals) -> float:
        """Send ``signum`` to ``node``; return the time.monotonic() just before sending."""
        assert node.running, f"{node.describe()} is not running"
        sent = time.monotonic()
        node.send_signal(signum)
        return sent

    async def wait_exit(self, node: LabNode, *, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for ``node``'s process to exit; return its status (fail after ``timeout``)."""
        assert node.process is not None, f"{node.name} was never started"
        try:
            return await asyncio.to_thread(node.process.wait, timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{node.describe()} did not exit within {timeout}s") from None

    async def stop(self, nodes: Iterable[LabNode], *, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (after SIGCONT, in case one is stopped) and wait for every exit.

        A node still running ``timeout`` seconds later is killed, and the stop fails: a
        node must leave gracefully on SIGTERM.
        """
        running = [node for node in nodes if node.running]
        for node in running:
            node.send_signal(signal.SIGCONT)
            node.send_signal(signal.SIGTERM)
        killed = await asyncio.gather(*(self._reap(node, timeout) for node in running))
        hung = [node.name for node, kill in zip(running, killed, strict=True) if kill]
        if hung:
            raise AssertionError(f"{', '.join(hung)}: still running {timeout}s after SIGTERM")

    async def _reap(self, node: LabNode, timeout: float) -> bool:
        """Wait for ``node`` to exit; SIGKILL it after ``timeout``. True if it was killed."""
        assert node.process is not None
        try:
            await asyncio.to_thread(node.process.wait, timeout)
        except subprocess.TimeoutExpired:
            node.process.kill()
            await asyncio.to_thread(node.process.wait, STOP_TIMEOUT)
            return True
        return False

    async def stop_all(self) -> None:
        """Stop every node this lab started."""
        await self.stop(self.nodes)

    def retire(self, nodes: Iterable[LabNode]) -> None:
        """Leave ``nodes`` (stopped) out of the logs printed if the test fails later."""
        for node in nodes:
            assert not node.running, f"{node.describe()} still runs"
            node.retired = True

    # -- partitions -------------------------------------------------------------------------

    def partition(self, a: LabNode, b: LabNode) -> None:
        """Drop all traffic between ``a`` and ``b`` (both ways)."""
        self.firewall.cut(a.address, b.address)

    def heal(self, a: LabNode, b: LabNode) -> None:
        """Let traffic between ``a`` and ``b`` through again."""
        self.firewall.restore(a.address, b.address)

    # -- observing --------------------------------------------------------------------------

    async def try_status(self, node: LabNode) -> dict[str, Any] | None:
        """``GET /status`` of ``node``, or None if it does not answer within a second."""
        try:
            async with self._session.get(
                node.url("/status"), timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
            ) as response:
                if response.status != 200:
                    return None
                status: dict[str, Any] = await response.json()
                return status
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
            return None

    async def status(self, node: LabNode) -> dict[str, Any]:
        """``GET /status`` of ``node``; fails if it does not answer."""
        status = await self.try_status(node)
        assert status is not None, f"{node.describe()} did not answer /status"
        return status

    async def peers(self, node: LabNode) -> list[str] | None:
        """The ``nodes`` list of ``node``'s /status, or None if it does not answer."""
        status = await self.try_status(node)
        return None if status is None else list(status["nodes"])

    async def metrics(self, node: LabNode) -> dict[str, float]:
        """``GET /metrics`` of ``node``, as {series: value} (series with their labels)."""
        async with self._session.get(
            node.url("/metrics"), timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        ) as response:
            assert response.status == 200, f"{node.name}: /metrics answered {response.status}"
            text = await response.text()
        values = {}
        for line in text.splitlines():
            match = _METRIC.match(line)
            if match is not None:
                values[match["series"]] = float(match["value"])
        return values

    async def wait_for_metric(
        self, node: LabNode, series: str, *, at_least: float = 1, timeout: float = 5.0
    ) -> float:
        """Wait until ``node``'s /metrics has ``series`` (with its labels, e.g.
        ``'pycluster_handshake_failures_total{kind="cookie"}'``) at ``at_least``; return
        its value then."""
        value = 0.0

        async def reached() -> bool:
            nonlocal value
            value = (await self.metrics(node)).get(series, 0.0)
            return value >= at_least

        await self.until(reached, timeout=timeout, what=f"{node.name}: {series} >= {at_least}")
        return value

    async def until(
        self,
        condition: Callable[[], Awaitable[bool]],
        *,
        timeout: float,
        what: str,
        interval: float = 0.01,
    ) -> float:
        """Poll ``condition`` until it holds; return time.monotonic() when it first did.

        Fails, saying ``what`` was awaited, after ``timeout`` seconds.
        """
        return await until(condition, timeout=timeout, what=what, interval=interval)

    async def views(self, nodes: Sequence[LabNode]) -> list[list[str] | None]:
        """Every node's ``nodes`` list (None where one does not answer), fetched together."""
        return list(await asyncio.gather(*(self.peers(node) for node in nodes)))

    async def wait_mesh(self, nodes: Sequence[LabNode], *, timeout: float) -> float:
        """Wait until each of ``nodes`` lists exactly the others; return when it did."""
        names = {node.name for node in nodes}

        async def meshed() -> bool:
            views = await self.views(nodes)
            return all(
                view is not None and sorted(view) == sorted(names - {node.name})
                for node, view in zip(nodes, views, strict=True)
            )

        return await self.until(
            meshed, timeout=timeout, what=f"a full mesh of {', '.join(sorted(names))}"
        )

    async def wait_for_record(
        self, node: LabNode, *, since: int = 0, timeout: float = 5.0, **fields: Any
    ) -> dict[str, Any]:
        """Wait until ``node`` logs a record with all ``fields`` after byte offset
        ``since`` (e.g. ``event="connect_failed", peer=b.name``); return the first."""
        found: list[dict[str, Any]] = []

        async def logged() -> bool:
            found[:] = node.records(since, **fields)
            return bool(found)

        shown = ", ".join(f"{key}={value!r}" for key, value in fields.items())
        await self.until(logged, timeout=timeout, what=f"{node.name} logs a record {shown}")
        return found[0]

    # -- the command line -------------------------------------------------------------------

    async def cli(
        self, *args: str, cookie: str | None = None, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m pycluster ARGS`` with the cookie in the environment."""
        env = dict(os.environ)
        env[COOKIE_ENV] = self.cookie if cookie is None else cookie
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "pycluster", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )

    # -- reporting --------------------------------------------------------------------------

    def report(self, tail: int = LOG_TAIL_LINES) -> str:
        """The logs of every node not retired (their last ``tail`` lines), for failures."""
        parts = [f"lab 127.0.{self.subnet}.0/24, logs in {self.directory}"]
        retired = [node for node in self.nodes if node.retired]
        if retired:
            parts.append(f"({len(retired)} nodes of earlier, passed rounds not shown)")
        rules = self.firewall.rules()
        if rules:
            parts.append("firewall: " + " | ".join(rules))
        for node in self.nodes:
            if node.retired:
                continue
            lines = [readable(line) for line in node.log_text().splitlines()]
            cut = f" (last {tail} of {len(lines)} lines)" if len(lines) > tail else ""
            parts.append(f"==== {node.describe()} {node.log_path}{cut} ====")
            parts.extend(lines[-tail:])
        return "\n".join(parts)


def readable(line: str) -> str:
    """A JSON log line as a line of text (time, level, logger, message, other fields)."""
    records = parse_records(line)
    if not records:
        return line
    fields = dict(records[0])
    head = [str(fields.pop(key, "-")) for key in ("timestamp", "level", "logger", "message")]
    exception = fields.pop("exception", None)
    rest = " ".join(f"{key}={value!r}" for key, value in fields.items())
    text = " ".join(head) + (f"  [{rest}]" if rest else "")
    return text + (f"\n{exception}" if exception else "")


def _ports_free(address: str, ports: Iterable[int]) -> bool:
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError:
                return False
    return True
