"""A partition with etcd on one side only: no name is ever held by two live actors.

Real ``pycluster run`` processes, each in a network namespace of its own (gRPC cannot be
pinned to a source address, so loopback firewall rules cannot cut one node's etcd traffic
and not another's), with etcd in another and the test's driver (a hidden pycluster client)
in a fifth. The names all start on n3; then n3 is cut off from etcd, n1 and n2, while the
driver keeps trying to start every name on n1 and n2. n3 must stop its actors (fencing)
before etcd lets n1/n2 claim the names; the actors' own records of when they lived are
checked all along. After healing, n3 rejoins and the cluster agrees again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from etcd_lab import EtcdServer
from netns_lab import Network, netns_available

from tests.lab.node import launcher
from tests.lab.polling import until


@pytest.fixture(autouse=True)
def require_netns() -> None:
    """These tests need network namespaces (root, iproute2, iptables: .ci/setup installs
    them); without, they fail saying why, rather than skip."""
    reason = netns_available()
    if reason is not None:
        pytest.fail(f"cannot run here: {reason}")


HERE = Path(__file__).resolve().parent
LEASE_TTL = 3
NAMES = [f"singleton-{i}" for i in range(4)]
NODES = {"n1": 11, "n2": 12, "n3": 13}
FENCE_LOG = re.compile(
    r"registry: lease lost: etcd lease \w+ given up (?P<after>[\d.]+)s after its last "
    r"acknowledged keepalive was sent \(ttl (?P<ttl>\d+)s\)"
)


@attrs.define
class Life:
    """One actor's life, as it recorded it."""

    name: str
    node: str
    start: float
    stop: float | None = None
    reason: str | None = None


def lives(records: Path) -> list[Life]:
    """Every actor life recorded so far (complete lines only)."""
    found: list[Life] = []
    for path in sorted(records.glob("*.log")):
        text = path.read_text()
        open_lives: dict[tuple[str, str], Life] = {}
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # being written
            kind, name, node, moment, *reason = line.split()
            if kind == "start":
                life = Life(name, node, float(moment))
                open_lives[(name, node)] = life
                found.append(life)
            else:
                life = open_lives.pop((name, node))
                life.stop, life.reason = float(moment), " ".join(reason)
    return found


def overlaps(found: list[Life]) -> list[str]:
    """Pairs of lives of one name that overlap in time (or are both still running)."""
    problems = []
    for name in {life.name for life in found}:
        ordered = sorted((life for life in found if life.name == name), key=lambda x: x.start)
        for before, after in itertools.pairwise(ordered):
            if before.stop is None or before.stop > after.start:
                problems.append(f"{name}: {before} overlaps {after}")
    return problems


class Driver:
    """The driver process, asked through its stdin/stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._ids = itertools.count(1)
        self.seen: dict[str, Any] = {}
        """The last status (or error) each node answered, for failure reports."""

    async def ask(self, op: str, **fields: Any) -> Any:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        request = {"id": next(self._ids), "op": op, **fields}
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), 30)
        assert line, "the driver exited"
        reply = json.loads(line)
        assert reply["id"] == request["id"]
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["ok"]

    async def status(self, node: str) -> dict[str, Any] | None:
        """``node``'s /status, or None (the reason kept in :attr:`seen`)."""
        try:
            status: dict[str, Any] = await self.ask("status", on=node)
        except RuntimeError as exc:
            self.seen[node] = str(exc)
            return None
        self.seen[node] = status
        return status


@pytest.fixture
def network() -> Iterator[Network]:
    net = Network()
    try:
        net.open()
        yield net
    finally:
        net.close()
        assert net.leftovers() == [], "namespaces left behind"


@contextlib.asynccontextmanager
async def cluster(net: Network, directory: Path) -> AsyncIterator[tuple[dict[str, str], Driver]]:
    """etcd, the nodes and the driver, running; all stopped (and checked) on the way out."""
    records = directory / "records"
    records.mkdir()
    etcd_address = net.add_host("etcd", 2)
    addresses = {host: net.add_host(host, number) for host, number in NODES.items()}
    driver_address = net.add_host("drv", 20)
    cookie = secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "PYCLUSTER_COOKIE": cookie,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }
    etcd = EtcdServer(
        directory, "etcd", host=etcd_address, prefix=net.exec("etcd"), ports=(2379, 2380)
    )
    processes: list[subprocess.Popen[bytes]] = []
    driver_process: asyncio.subprocess.Process | None = None
    try:
        etcd.start()
        await etcd.until_healthy_inside()
        names = {host: f"{host}@{address}" for host, address in addresses.items()}
        for host, name in names.items():
            processes.append(start_node(net, directory, host, name, etcd.endpoint, env))
        with (directory / "driver.log").open("ab") as log:
            driver_process = await asyncio.create_subprocess_exec(
                *net.exec("drv"),
                *launcher(
                    sys.executable, str(HERE / "netns_driver.py"), driver_address, str(records)
                ),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
            )
        yield names, Driver(driver_process)
        assert driver_process.stdin is not None
        driver_process.stdin.close()
        assert await asyncio.wait_for(driver_process.wait(), 15) == 0
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert await asyncio.to_thread(process.wait, 15) == 0, "a node did not leave cleanly"
    finally:
        if driver_process is not None and driver_process.returncode is None:
            driver_process.kill()
            await driver_process.wait()
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        etcd.stop()


def start_node(
    net: Network, directory: Path, host: str, name: str, endpoint: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    connection = {"endpoints": [endpoint], "lease_ttl": LEASE_TTL, "timeout": 1.0}
    config = {
        "node": {"name": name, "net_tick_timeout": 1.0},
        "registry": {"backend": "etcd", "options": {**connection, "prefix": "/test/registry/"}},
        "topologies": {
            "etcd": {"strategy": "etcd", "config": {**connection, "prefix": "/test/nodes/"}}
        },
    }
    path = directory / f"{host}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with (directory / f"{host}.log").open("ab") as log:
        return subprocess.Popen(
            [*net.exec(host), *launcher(sys.executable, "-m", "pycluster", "run", str(path))],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            close_fds=True,
        )


def logs(directory: Path) -> str:
    """Every process's log (etcd's last lines only), for failure reports."""
    parts = []
    for path in sorted(directory.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()
        keep = 40 if path.name == "etcd.log" else 300
        parts.append(f"==== {path.name} ====\n" + "\n".join(lines[-keep:]))
    return "\n".join(parts)


async def test_a_partition_never_leaves_a_name_with_two_live_actors(
    network: Network, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    async with cluster(network, tmp_path) as (names, driver):
        n1, n2, n3 = names["n1"], names["n2"], names["n3"]

        async def meshed() -> bool:
            for name in names.values():
                status = await driver.status(name)
                if status is None or sorted(status["nodes"]) != sorted(
                    set(names.values()) - {name}
                ):
                    return False
                if status["registry"] != {
                    "backend": "etcd", "names": status["registry"]["names"], "synced": True,
                    "etcd": "ok",
                }:  # fmt: skip
                    return False
            return True

        try:
            await until(meshed, timeout=60, what="the three nodes meshed and synced", interval=0.05)
            for name in NAMES:
                await driver.ask("spawn", name=name, on=n3)

            violations: list[str] = []
            polls = 0

            async def watch() -> None:
                nonlocal polls
                while True:
                    violations.extend(overlaps(lives(records)))
                    polls += 1
                    await asyncio.sleep(0.02)

            watcher = asyncio.ensure_future(watch())
            await driver.ask("pressure", names=NAMES, on=[n1, n2])
            await asyncio.sleep(1.0)
            assert {life.node for life in lives(records)} == {n3}, "taken over too early"

            cut_at = time.monotonic()
            network.cut("n3", ["etcd", "n1", "n2"])

            async def taken_over() -> bool:
                found = lives(records)
                running = {life.name for life in found if life.stop is None and life.node != n3}
                return running == set(NAMES)

            await until(
                taken_over, timeout=30, what="every name running on n1 or n2", interval=0.05
            )
            took = time.monotonic() - cut_at
            found = lives(records)
            assert overlaps(found) == [], overlaps(found)
            fenced = [life for life in found if life.node == n3]
            assert len(fenced) == len(NAMES)
            assert all(life.reason == "lease lost" for life in fenced), fenced
            # n3 gave its lease up before lease_ttl had passed since the last keepalive
            # etcd acknowledged was sent.
            match = FENCE_LOG.search((tmp_path / "n3.log").read_text())
            assert match is not None, "n3 did not log its fencing"
            assert float(match["after"]) < LEASE_TTL == int(match["ttl"])

            network.heal("n3")
            healed_at = time.monotonic()

            async def agreed() -> bool:
                if not await meshed():
                    return False
                statuses = [await driver.status(name) for name in names.values()]
                return all(s is not None and s["registry"]["names"] == len(NAMES) for s in statuses)

            await until(
                agreed,
                timeout=60,
                what="n3 back in the mesh, every registry agreeing",
                interval=0.05,
            )
            back = time.monotonic() - healed_at
            await asyncio.sleep(1.0)  # the adversary keeps trying after the heal too
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        except AssertionError as exc:
            seen = json.dumps(driver.seen, indent=1)
            raise AssertionError(f"{exc}\nlast statuses: {seen}\n{logs(tmp_path)}") from None

    final = lives(records)
    assert violations == [], violations
    assert overlaps(final) == []
    assert polls > 100
    print(
        f"names taken over {took:.2f}s after the cut (n3 fenced {match['after']}s after its "
        f"last acknowledged keepalive); n3 back {back:.2f}s after healing; "
        f"{len(final)} actor lives, {polls} checks"
    )
