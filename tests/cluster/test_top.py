"""``pycluster top`` against real node processes (issue 15): ``--once`` as plain text lists
every node by its full name and every topology; run interactively in tmux, it refreshes in
place after a node is killed, and ``q`` quits."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys

from tests.lab import Lab

WITHIN = 20.0


async def test_once_prints_every_node_and_topology_as_plain_text(lab: Lab) -> None:
    nodes = lab.declare(3)
    await lab.start(nodes)
    await lab.wait_mesh(nodes, timeout=WITHIN)
    result = await lab.cli("top", "--once", "--node", nodes[0].name)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for node in nodes:
        assert node.name in lines  # the full name, on a line of its own
    assert "links: all present" in lines
    assert "  lab: epmd running" in lines


def _tmux(socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["tmux", "-L", socket, *args], capture_output=True, text=True, check=False, timeout=10
    )


async def test_interactive_top_refreshes_after_a_node_dies_and_q_quits(lab: Lab) -> None:
    nodes = lab.declare(3, net_tick_timeout=1.0)
    await lab.start(nodes)
    await lab.wait_mesh(nodes, timeout=WITHIN)
    socket = f"pycluster-top-test-{os.getpid()}"
    command = shlex.join(
        [
            "env",
            f"PYCLUSTER_COOKIE={lab.cookie}",
            sys.executable,
            *("-m", "pycluster", "top", "--node", nodes[0].name, "--interval", "0.3"),
        ]
    )
    started = _tmux(socket, "new-session", "-d", "-s", "top", "-x", "220", "-y", "60", command)
    assert started.returncode == 0, started.stderr

    def screen() -> str:
        return _tmux(socket, "capture-pane", "-p", "-t", "top").stdout

    def state_of(text: str, name: str) -> str | None:
        """The state in ``name``'s row of the nodes table (its first two cells)."""
        found = re.search(rf"^\W*{re.escape(name)}\s*\W\s*(up|down)\b", text, re.M)
        return found.group(1) if found else None

    async def shows(expected: dict[str, str]) -> bool:
        text = await asyncio.to_thread(screen)
        return all(state_of(text, name) == state for name, state in expected.items())

    try:
        await lab.until(
            lambda: shows({n.name: "up" for n in nodes}),
            timeout=WITHIN,
            what="top shows the three nodes up",
        )
        lab.send_signal(nodes[2], signal.SIGKILL)
        try:
            await lab.until(
                lambda: shows({nodes[0].name: "up", nodes[1].name: "up", nodes[2].name: "down"}),
                timeout=WITHIN,
                what="top shows the killed node down",
            )
        except Exception:
            print(screen())
            raise
        assert _tmux(socket, "send-keys", "-t", "top", "q").returncode == 0

        async def quit() -> bool:
            return (
                await asyncio.to_thread(_tmux, socket, "has-session", "-t", "top")
            ).returncode != 0

        await lab.until(quit, timeout=WITHIN, what="q quits top")
    finally:
        _tmux(socket, "kill-server")
