"""A real dnsmasq on a loopback port, serving records that tests rewrite.

dnsmasq is authoritative here for a few local domains (``lab.test`` and ``cluster.local``
by default): a name of those domains that it has no record for is NXDOMAIN, and nothing is
ever forwarded. Records come from two files in the lab's directory:

- address records (A/AAAA) from a hosts file (``--addn-hosts``), rewritten atomically and
  re-read on SIGHUP: no outage, so pods can come and go under a running strategy;
- SRV records (``--srv-host``) from the config file, which dnsmasq reads only at start:
  changing them restarts dnsmasq on the same port (lookups fail while it restarts).

Every change waits until dnsmasq serves it: each version of the records carries a serial
name (``lab-serial-N.<first domain>``) that is polled for until it resolves, so no test
sleeps to synchronise. A name mapped to no addresses exists without address records
(dnsmasq answers NOERROR with no records, as for any name that has only names below it):
the "empty answer" case.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import pwd
import signal
import subprocess
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.resolver

from tests.lab.polling import NotWithin, until
from tests.lab.ports import free_port

DNSMASQ = "/usr/sbin/dnsmasq"
ADDRESS = "127.0.0.1"
DOMAINS = ("lab.test", "cluster.local")
SRV_PORT = 9100
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class Dnsmasq:
    """One dnsmasq process on ``127.0.0.1:port`` (the port is kept across restarts).

    Use through :meth:`open`, which stops it whatever happens.
    """

    def __init__(self, directory: Path, *, domains: Sequence[str] = DOMAINS) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.domains = tuple(domains)
        self.address = ADDRESS
        self.port = free_port(ADDRESS, udp=True, lasting=True)
        self.hosts: dict[str, tuple[str, ...]] = {}
        """Address records served: name -> addresses (none: the name exists, empty)."""
        self.srv: dict[str, tuple[str, ...]] = {}
        """SRV records served: name -> target host names."""
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "dnsmasq.log"
        self._serial = 0

    @classmethod
    @asynccontextmanager
    async def open(cls, directory: Path, **options: Sequence[str]) -> AsyncIterator[Dnsmasq]:
        """A started dnsmasq, stopped (and reaped) when the block exits."""
        server = cls(directory, **options)
        try:
            await server.start()
            yield server
        finally:
            await server.stop()

    @property
    def running(self) -> bool:
        """Whether the process exists and has not exited."""
        return self.process is not None and self.process.poll() is None

    async def start(self) -> None:
        """Start dnsmasq with the current records; return once it answers.

        Fails, with dnsmasq's log, if it exits or does not answer within 10 s.
        """
        assert not self.running, "dnsmasq already runs"
        self._write_files()
        self._spawn()
        await self._wait_serving()

    async def stop(self) -> None:
        """Stop dnsmasq (SIGTERM, then SIGKILL after 5 s) and reap it; no-op if stopped."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, STOP_TIMEOUT)
        self.process = None

    async def set_hosts(self, hosts: Mapping[str, Iterable[str]]) -> None:
        """Serve exactly these address records (name -> IPv4/IPv6 addresses); wait until
        dnsmasq does. Applied with SIGHUP: lookups never fail meanwhile."""
        assert self.running, "dnsmasq is not running"
        self.hosts = {name: tuple(addresses) for name, addresses in hosts.items()}
        self._write_files()
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        await self._wait_serving()

    async def set_srv(self, srv: Mapping[str, Iterable[str]]) -> None:
        """Serve exactly these SRV records (name -> target host names, port 9100); restarts
        dnsmasq, which reads them only at start, and waits until it serves them."""
        self.srv = {name: tuple(targets) for name, targets in srv.items()}
        await self.stop()
        await self.start()

    def queries(self, name: str) -> int:
        """How many A queries for ``name`` dnsmasq has logged (all runs on this port)."""
        return self.log_text().count(f" query[A] {name} from ")

    def log_text(self) -> str:
        """What dnsmasq logged (its queries too) and wrote to stderr, for failure reports."""
        parts = []
        for path in (self.directory / "dnsmasq.err", self.log_path):
            with suppress(FileNotFoundError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    # -- internals ----------------------------------------------------------------------------

    def _serial_name(self) -> str:
        return f"lab-serial-{self._serial}.{self.domains[0]}"

    def _write_files(self) -> None:
        self._serial += 1
        lines = [f"{ADDRESS} {self._serial_name()}"]
        for name, addresses in sorted(self.hosts.items()):
            for address in addresses:
                lines.append(f"{ipaddress.ip_address(address)} {name}")
            if not addresses:
                # A name below it makes the name exist, with no records of its own.
                lines.append(f"{ADDRESS} lab-empty.{name}")
        _write_atomically(self.directory / "hosts", "\n".join(lines) + "\n")
        conf = [f"local=/{domain}/" for domain in self.domains]
        for name, targets in sorted(self.srv.items()):
            conf.extend(f"srv-host={name},{target},{SRV_PORT}" for target in targets)
        _write_atomically(self.directory / "dnsmasq.conf", "\n".join(conf) + "\n")

    def _spawn(self) -> None:
        command = [
            DNSMASQ,
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--pid-file",
            f"--port={self.port}",
            f"--listen-address={ADDRESS}",
            "--bind-interfaces",
            # dnsmasq started by root would switch to "nobody", who cannot read the
            # test's private directory; stay who we are.
            f"--user={pwd.getpwuid(os.getuid()).pw_name}",
            f"--conf-file={self.directory / 'dnsmasq.conf'}",
            f"--addn-hosts={self.directory / 'hosts'}",
            "--cache-size=0",
            "--log-queries",
            f"--log-facility={self.log_path}",
        ]
        # Startup errors (a port in use, a bad option) go to stderr, before the log opens.
        with (self.directory / "dnsmasq.err").open("ab") as errors:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                close_fds=True,
            )

    async def _wait_serving(self) -> None:
        """Wait until the current serial name resolves: dnsmasq serves this version."""
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [ADDRESS]
        resolver.port = self.port
        resolver.cache = None
        name = self._serial_name() + "."

        async def serving() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"dnsmasq exited with status {self.process.returncode}:\n{self.log_text()}"
                )
            try:
                await resolver.resolve(name, "A", lifetime=0.1)
            except (dns.exception.DNSException, OSError):
                return False
            return True

        try:
            await until(
                serving, timeout=START_TIMEOUT, interval=0.01, what=f"dnsmasq serves {name}"
            )
        except NotWithin:
            raise AssertionError(
                f"dnsmasq on port {self.port} does not serve {name} "
                f"after {START_TIMEOUT}s:\n{self.log_text()}"
            ) from None


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
