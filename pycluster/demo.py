"""``pycluster demo``: N local node processes find each other, then share a Counter.

Every node is a real ``pycluster run`` process on 127.0.0.1 with a port of its own (so the
demo also runs where only 127.0.0.1 exists, e.g. macOS), found by ``local_epmd``. The demo
asks each node for its view as a hidden client, then runs the classic clustering
walk-through: start a Counter under a name on one node, try again on another (refused
with AlreadyStarted), and call it by name from every node. Then it stops every process
it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from pycluster.actors import Actor
from pycluster.errors import NotConnected
from pycluster.node import Node
from pycluster.plugins import load_config
from pycluster.registry import AlreadyStarted
from pycluster.status import ask_status

FORM_DEADLINE = 30.0
STOP_DEADLINE = 10.0


class Counter(Actor):
    """The walk-through's Counter: an Agent holding a number, registered by name."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    async def handle_call(self, message: Any) -> Any:
        if message == "increment":
            self.value += 1
            return self.value
        if message == "value":
            return self.value
        raise ValueError(f"a Counter understands 'increment' and 'value', not {message!r}")

    def handoff(self) -> Any:
        # Placed on the hash ring, the count moves with the Counter.
        return self.value

    def resume(self, state: Any) -> None:
        self.value = int(state)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports free on ``host`` right now (held open together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


async def run_demo(count: int) -> int:
    """Start ``count`` nodes, show them form a cluster, stop them; return the exit status."""
    cookie = secrets.token_urlsafe(24)
    ports = free_ports(count)
    names = [f"demo{i + 1}@127.0.0.1:{port}" for i, port in enumerate(ports)]
    with tempfile.TemporaryDirectory(prefix="pycluster-demo-") as tmp:
        runtime = Path(tmp) / "epmd"
        print(f"pycluster demo: starting {count} node processes on 127.0.0.1 (local_epmd)")
        processes = []
        try:
            for name in names:
                processes.append(await _start(name, runtime, Path(tmp), cookie))
                print(f"  {name} (pid {processes[-1].pid})")
            started = time.monotonic()
            views = await _wait_formed(names, cookie, started + FORM_DEADLINE)
            if views is None:
                print(
                    f"pycluster demo: the cluster did not form within {FORM_DEADLINE:.0f} s",
                    file=sys.stderr,
                )
                return 1
            print(f"cluster formed in {time.monotonic() - started:.2f} s; each node's view:")
            for name in names:
                print(f"  {name} sees {', '.join(views[name]) or '(alone)'}")
            await walkthrough(names, cookie)
            print("stopping the nodes (SIGTERM: each leaves gracefully)")
        finally:
            await _stop(processes)
    print("pycluster demo: done")
    return 0


async def walkthrough(names: list[str], cookie: str) -> None:
    """Start a Counter as "counter" on the first node, again on the second (refused),
    then call it by name through every node; print each step."""
    print("the Counter walk-through:")
    config = load_config({"node": {"name": f"demo-client-{os.getpid()}@localhost"}}, env={})
    async with Node(config, cookie=cookie, hidden=True) as client:
        for name in names:
            await client.connect(name)
        first, second = names[0], names[-1]
        ref = await client.registry.spawn("counter", Counter, on=first)
        print(f"  on {first}: spawn('counter', Counter) -> {ref}")
        await _until_everyone_knows(client, names, "counter")
        try:
            await client.registry.spawn("counter", Counter, on=second)
        except AlreadyStarted as exc:
            print(f"  on {second}: spawn('counter', Counter) -> AlreadyStarted: {exc}")
        for name in names:
            value = await client.registry.call_via(name, "counter", "increment")
            print(f"  on {name}: call('counter', 'increment') -> {value}")
        value = await client.registry.call_via(second, "counter", "value")
        print(f"  on {second}: call('counter', 'value') -> {value}")


async def _until_everyone_knows(client: Node, names: list[str], name: str) -> None:
    """Wait (bounded) until every node's registry holds ``name``: replication is fast,
    but not instantaneous, and the walk-through calls by name right away."""
    deadline = time.monotonic() + FORM_DEADLINE
    while time.monotonic() < deadline:
        counts = [(await client.call(n, "$status", None))["registry"]["names"] for n in names]
        if all(count >= 1 for count in counts):
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{name!r} did not reach every node's registry")


async def _start(name: str, runtime: Path, tmp: Path, cookie: str) -> asyncio.subprocess.Process:
    config = {
        "node": {"name": name},
        "topologies": {
            "local": {
                "strategy": "local_epmd",
                "config": {"runtime_dir": str(runtime), "polling_interval": 200},
            }
        },
    }
    path = tmp / f"{name.split('@')[0]}.yaml"
    path.write_text(yaml.safe_dump(config))
    cookie_file = tmp / "cookie"  # readable by this user only: a flag would show in ps
    cookie_file.touch(mode=0o600)
    cookie_file.write_text(cookie)
    with (tmp / f"{name.split('@')[0]}.log").open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "pycluster", "run", str(path), "--cookie-file", str(cookie_file)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )


async def _wait_formed(
    names: list[str], cookie: str, deadline: float
) -> dict[str, list[str]] | None:
    views: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        for name in names:
            with contextlib.suppress(NotConnected, TimeoutError, OSError):
                views[name] = (await ask_status(name, cookie, timeout=1.0))["nodes"]
        # Every node must have answered: a lone node's view is empty, like a missing one's.
        if all(name in views and len(views[name]) == len(names) - 1 for name in names):
            return views
        await asyncio.sleep(0.1)
    return None


async def _stop(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_DEADLINE):
            await asyncio.gather(*(p.wait() for p in processes))
    except TimeoutError:
        for process in processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        await asyncio.gather(*(p.wait() for p in processes))
