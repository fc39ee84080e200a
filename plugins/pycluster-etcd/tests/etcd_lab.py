"""Real etcd servers for the tests (Debian's etcd-server, /usr/bin/etcd), on loopback only.

Each server gets a data directory under the test's tmp dir and free ports on its own
127.0.5.x address; it is started through the test lab's launcher (tests/lab), which asks the
kernel to kill it if the test process dies, so no etcd outlives a test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from tests.lab.node import launcher
from tests.lab.polling import NotWithin, until
from tests.lab.ports import free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
START_TIMEOUT = 20.0
ADDRESSES = itertools.count(200)
"""Host parts of 127.0.5.x given to etcd servers (nodes use the low ones)."""


def next_address() -> str:
    """A loopback address of its own for the next etcd server."""
    return f"127.0.5.{next(ADDRESSES) % 50 + 200}"


class EtcdServer:
    """One etcd member: started, paused, killed and restarted by the tests."""

    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        host: str | None = None,
        extra: Sequence[str] = (),
        prefix: Sequence[str] = (),
        ports: tuple[int, int] | None = None,
    ) -> None:
        self.name = name
        self.host = host or next_address()
        self.client_port, self.peer_port = ports or (free_port(self.host), free_port(self.host))
        self.data_dir = directory / f"{name}.data"
        self.log_path = directory / f"{name}.log"
        self.extra = list(extra)
        self.prefix = list(prefix)
        """Command words to run etcd under (``ip netns exec NS``)."""
        self.scheme = "http"
        self.client_tls: tuple[str, str, str] | None = None
        """(cafile, certfile, keyfile) for the health check of a member serving TLS."""
        self.cluster: list[EtcdServer] = [self]
        self.token = secrets.token_hex(4)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client URL."""
        return f"{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def command(self) -> list[str]:
        """The etcd command line of this member."""
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.cluster)
        client_url = f"{self.scheme}://{self.endpoint}"
        return [
            ETCD,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-token={self.token}",
            "--initial-cluster-state=new",
            *self.extra,
        ]

    def start(self) -> None:
        """Spawn the process (keeping the data directory of an earlier run)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, *launcher(ETCD, *self.command()[1:])],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
            )

    async def until_healthy_inside(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until healthy, checked from inside the member's namespace (``prefix``)."""
        probe = (
            "import sys, urllib.request\n"
            "try:\n"
            f"    with urllib.request.urlopen('http://{self.endpoint}/health', timeout=1) as r:\n"
            "        sys.exit(0 if b'\"true\"' in r.read() else 1)\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )

        async def healthy() -> bool:
            process = await asyncio.create_subprocess_exec(
                *self.prefix, sys.executable, "-c", probe
            )
            return await process.wait() == 0

        await self._until(healthy, timeout)

    def healthy(self) -> bool:
        """Whether the member answers its HTTP health check (and has a leader)."""
        context = None
        if self.client_tls is not None:
            cafile, certfile, keyfile = self.client_tls
            context = ssl.create_default_context(cafile=cafile)
            context.load_cert_chain(certfile, keyfile)
        url = f"{self.scheme}://{self.endpoint}/health"
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as answer:
                return b'"true"' in answer.read()
        except OSError:
            return False

    def listening(self) -> bool:
        """Whether the client port accepts connections."""
        with (
            contextlib.suppress(OSError),
            socket.create_connection((self.host, self.client_port), timeout=1),
        ):
            return True
        return False

    async def until_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until :meth:`healthy`; fail with the log's tail after ``timeout``, or as
        soon as the member exits."""

        async def healthy() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"etcd {self.name} exited: {self.tail()}")
            return await asyncio.to_thread(self.healthy)

        await self._until(healthy, timeout)

    async def _until(self, healthy: Callable[[], Awaitable[bool]], timeout: float) -> None:
        try:
            await until(healthy, timeout=timeout, interval=0.05, what=f"etcd {self.name} healthy")
        except NotWithin:
            raise AssertionError(
                f"etcd {self.name} not healthy in {timeout}s: {self.tail()}"
            ) from None

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` to the member (SIGSTOP: etcd stops answering, sockets stay up)."""
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self) -> None:
        """Stop the member (SIGCONT first in case it is paused), killing it if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def tail(self, lines: int = 30) -> str:
        """The end of the member's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


async def start_cluster(directory: Path, size: int, **options: object) -> list[EtcdServer]:
    """``size`` members forming one cluster, started and healthy."""
    members = [EtcdServer(directory, f"etcd{i}", **options) for i in range(size)]  # type: ignore[arg-type]
    for member in members:
        member.cluster = members
        member.token = members[0].token
    for member in members:
        member.start()
    try:
        for member in members:
            await member.until_healthy()
    except BaseException:
        for member in members:
            member.kill()
        raise
    return members


class Gate:
    """A TCP proxy to etcd that can be closed like a partition: while it is closed, bytes
    wait (as TCP retransmits them across a real partition) and new connections hang."""

    def __init__(self, target_host: str, target_port: int, host: str) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.open = asyncio.Event()
        self.open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def cut(self) -> None:
        """Stop passing bytes either way."""
        self.open.clear()

    def heal(self) -> None:
        """Pass bytes again, those that waited first."""
        self.open.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.open.wait()
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.ensure_future(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self.open.wait()
                data = await source.read(65536)
                if not data:
                    break
                await self.open.wait()
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sink.close()
