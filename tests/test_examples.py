"""The runnable examples keep working."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.lab.polling import until

EXAMPLES = Path(__file__).parent.parent / "examples"


async def get_json(url: str) -> dict[str, Any] | None:
    """The JSON at ``url``, or None while the server is not answering."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(url) as response,
        ):
            data: dict[str, Any] = await response.json()
            return data
    except (aiohttp.ClientError, TimeoutError):
        return None


async def test_two_embedded_nodes_form_a_cluster_and_call_each_other() -> None:
    env = {**os.environ, "PYCLUSTER_COOKIE": "example-cookie-0123456789"}
    names = ["web1@127.0.1.30", "web2@127.0.1.31"]
    processes = [
        await asyncio.create_subprocess_exec(
            *(sys.executable, str(EXAMPLES / "embedded.py")),
            *("--name", me, "--peers", peer, "--http-port", "8181"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for me, peer in (names, names[::-1])
    ]
    view: dict[str, Any] | None = None

    async def meshed() -> bool:
        nonlocal view
        view = await get_json("http://127.0.1.30:8181/cluster")
        return view is not None and view["nodes"] == [names[1]]

    try:
        await until(meshed, timeout=30, interval=0.05, what="web1 lists web2")
        assert view == {
            "node": names[0],
            "nodes": [names[1]],
            "hello": {names[1]: f"hello {names[0]}, I am {names[1]}"},
        }
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        outputs = [(await asyncio.wait_for(process.communicate(), 20))[0] for process in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs


def test_the_counter_walkthrough() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "counter" / "walkthrough.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[2].startswith("c@127.0.0.4: spawn('counter') -> AlreadyStarted, running as <a@")
    assert lines[3:] == [
        "a@127.0.0.2: call('counter', 'increment') -> 1",
        "b@127.0.0.3: call('counter', 'increment') -> 2",
        "c@127.0.0.4: call('counter', 'increment') -> 3",
        "b@127.0.0.3: call('counter', 'value') -> 3",
    ]
