"""``pycluster top``: the live page's picture in a terminal, refreshed in place.

A hidden client asks one node for its view (the ``$view`` mailbox: the snapshot the live
page draws, see :mod:`pycluster.view`) once per ``interval`` and draws it with rich: the
nodes with their state and health, a matrix of who sees whom (a missing link stands out),
the topologies, the busiest actors by mailbox depth and the registry's counts. ``q``
quits. ``--once`` draws one frame and exits; when standard output is not a terminal it
prints plain text instead, each node's full name on a line of its own, never cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pycluster.errors import NotConnected
from pycluster.nodename import DEFAULT_PORT
from pycluster.status import hidden_client
from pycluster.view import VIEW_MAILBOX

SEEN, MISSING, UNKNOWN = "●", "-", "?"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def links(snapshot: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """``(seer, seen, mark)`` for every ordered pair of the snapshot's nodes: SEEN when
    the seer's peers list the other, MISSING when it answered without it, UNKNOWN when the
    seer's facts are missing."""
    nodes = snapshot["nodes"]
    for seer in nodes:
        for seen in nodes:
            if seer["name"] == seen["name"]:
                continue
            if not seer.get("answered"):
                mark = UNKNOWN
            else:
                mark = SEEN if seen["name"] in (seer.get("peers") or []) else MISSING
            yield seer["name"], seen["name"], mark


def render(snapshot: dict[str, Any]) -> RenderableType:
    """One frame, for a terminal."""
    names = [node["name"] for node in snapshot["nodes"]]
    widest = max(map(len, names), default=4)
    nodes = Table(title=f"nodes, as {snapshot['node']} sees them", expand=True)
    nodes.add_column("node", no_wrap=True, min_width=widest)  # a name is never cut
    for column in ("state", "incarnation", "uptime", "loop lag", "peers", "actors"):
        nodes.add_column(column, overflow="fold")
    for node in snapshot["nodes"]:
        state = Text(node["state"], style="green" if node["state"] == "up" else "bold red")
        if node.get("reason"):
            state.append(f" ({node['reason']})")
        nodes.add_row(
            node["name"],
            state,
            (node.get("incarnation") or "-")[:8],
            _duration(node.get("uptime")),
            _ms(node.get("lag")),
            str(len(node.get("peers") or [])) if node.get("answered") else "-",
            str(node.get("actors", "-")),
        )
    matrix = Table(title="links (row sees column)")
    matrix.add_column("", no_wrap=True, min_width=widest + 3)
    for index, _ in enumerate(names):
        matrix.add_column(str(index + 1), justify="center")
    marks = {(a, b): m for a, b, m in links(snapshot)}
    for index, seer in enumerate(names):
        row = [Text(f"{index + 1} {seer}")]
        for seen in names:
            mark = marks.get((seer, seen), "")
            row.append(Text(mark, style="bold red" if mark == MISSING else ""))
        matrix.add_row(*row)
    topologies = Table(title="topologies", expand=True)
    for column in ("topology", "strategy", "state", "problem"):
        topologies.add_column(column, overflow="fold")
    for name, topology in snapshot["topologies"].items():
        topologies.add_row(
            name, topology["strategy"], topology["state"], topology.get("problem") or ""
        )
    busiest = Table(title="busiest actors (mailbox depth)", expand=True)
    for column in ("node", "actor", "queued"):
        busiest.add_column(column, overflow="fold")
    for node, actor, depth in _busiest(snapshot):
        busiest.add_row(node, actor, str(depth))
    registry = snapshot["registry"]
    counts = Text(
        f"registry {registry['backend']}: {registry['names']} names, {registry['groups']} "
        f"groups, {registry['members']} members, "
        + ("synced" if registry["synced"] else "still merging")
        + f"; ring: {registry['ring']['actors']} actors, {registry['ring']['misplaced']} "
        "misplaced"
    )
    return Group(nodes, matrix, topologies, busiest, counts, Text("q quits", style="dim"))


def _busiest(snapshot: dict[str, Any], count: int = 10) -> list[tuple[str, str, int]]:
    found = [
        (node["name"], str(actor), int(depth))
        for node in snapshot["nodes"]
        for actor, depth in node.get("busiest") or []
    ]
    return sorted(found, key=lambda item: -item[2])[:count]


def plain(snapshot: dict[str, Any]) -> str:
    """One frame as plain text (standard output not a terminal): nothing is cut."""
    lines = [f"nodes, as {snapshot['node']} sees them:"]
    for node in snapshot["nodes"]:
        reason = f" ({node['reason']})" if node.get("reason") else ""
        lines.append(node["name"])
        lines.append(
            f"  state {node['state']}{reason}, uptime {_duration(node.get('uptime'))}, "
            f"loop lag {_ms(node.get('lag'))}"
        )
    missing = [(a, b) for a, b, mark in links(snapshot) if mark == MISSING]
    lines.append("links: " + ("all present" if not missing else f"{len(missing)} missing"))
    lines += [f"  {a} does not see {b}" for a, b in missing]
    lines.append("topologies:")
    for name, topology in snapshot["topologies"].items():
        problem = f": {topology['problem']}" if topology.get("problem") else ""
        lines.append(f"  {name}: {topology['strategy']} {topology['state']}{problem}")
    busiest = _busiest(snapshot)
    if busiest:
        lines.append("busiest actors:")
        lines += [f"  {depth} queued: {actor} on {node}" for node, actor, depth in busiest]
    registry = snapshot["registry"]
    lines.append(
        f"registry: {registry['backend']}, {registry['names']} names, {registry['groups']} "
        f"groups, {registry['members']} members"
    )
    return "\n".join(lines)


@contextlib.contextmanager
def _keys() -> Iterator[asyncio.Queue[str]]:
    """Keys typed on the terminal, one at a time (cbreak mode while the block runs)."""
    keys: asyncio.Queue[str] = asyncio.Queue()
    if not sys.stdin.isatty():
        yield keys
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()
    tty.setcbreak(fd)
    loop.add_reader(fd, lambda: keys.put_nowait(os.read(fd, 1).decode(errors="replace")))
    try:
        yield keys
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def run_top(
    target: str,
    cookie: str | tuple[str, ...],
    *,
    port: int = DEFAULT_PORT,
    timeout: float = 5.0,
    interval: float = 1.0,
    once: bool = False,
) -> int:
    """Draw ``target``'s view until ``q`` (or once); the exit status."""
    async with hidden_client(target, cookie, port=port, timeout=timeout, role="top") as client:

        async def view() -> dict[str, Any]:
            answer: dict[str, Any] = await client.call(target, VIEW_MAILBOX, None, timeout)
            return answer

        console = Console()
        if once:
            snapshot = await view()
            if console.is_terminal:
                console.print(render(snapshot))
            else:
                print(plain(snapshot))
            return 0
        with _keys() as keys, Live(console=console, screen=True, auto_refresh=False) as live:
            while True:
                try:
                    frame = render(await view())
                except (TimeoutError, NotConnected) as exc:
                    frame = Text(f"cannot get the view of {target}: {exc}", style="bold red")
                    if not client.nodes():
                        await client.connect(target)
                live.update(frame, refresh=True)
                try:
                    key = await asyncio.wait_for(keys.get(), interval)
                except TimeoutError:
                    continue
                if key.lower() == "q":
                    return 0
