"""``pycluster demo``: N local node processes find each other with ``local_epmd``.

Every node is a real ``pycluster run`` process on 127.0.0.1 with a port of its own (so the
demo also runs where only 127.0.0.1 exists, e.g. macOS). The demo asks each node for its
view as a hidden client, prints it, then stops every process it started.
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

import yaml

from pycluster.cli import COOKIE_ENV, ask_status
from pycluster.errors import NotConnected

FORM_DEADLINE = 30.0
STOP_DEADLINE = 10.0


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
            print("stopping the nodes (SIGTERM: each leaves gracefully)")
        finally:
            await _stop(processes)
    print("pycluster demo: done")
    return 0


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
    env = {**os.environ, COOKIE_ENV: cookie}
    with (tmp / f"{name.split('@')[0]}.log").open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "pycluster", "run", str(path)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
        )


async def _wait_formed(
    names: list[str], cookie: str, deadline: float
) -> dict[str, list[str]] | None:
    views: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        for name in names:
            with contextlib.suppress(NotConnected, TimeoutError, OSError):
                views[name] = (await ask_status(name, cookie, timeout=1.0))["nodes"]
        if all(len(views.get(name, [])) == len(names) - 1 for name in names):
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
