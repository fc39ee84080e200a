"""Instructions per operation, counted by valgrind: a measure that a busy machine does not move.

Timings on a shared 2-CPU guest vary by a third between identical runs, which hides a
change worth 5 %. The number of instructions a process executes does not vary that way,
so this benchmark counts them (``valgrind --tool=cachegrind --cache-sim=no``, user space
only: the kernel's part of a send or a wakeup is not in it). Each scenario runs in one
process (every node of it on loopback, on one event loop), twice, with ``count`` and with
``3 * count`` operations; the difference divided by ``2 * count`` is the cost of one
operation, without the start-up. Scenarios:

- ``register``: three nodes; the first registers ``count`` names with 100 callers in
  flight (two thirds of them arbitrated by another node) until every node holds them:
  the instructions of all three nodes per registration;
- ``claimant``: the same registrations, the instructions of the first node alone (the
  one that limits the rate): its two peers are child processes, which valgrind does not
  follow;
- ``call``: two nodes; sequential calls through a name to an actor on the other node;
- ``mailbox``: the same calls to a plain mailbox (the transport's part);
- ``echo``: their baseline: a length-prefixed asyncio echo of the same size between two
  streams of the process;
- ``local``: sequential calls through a name to an actor of the same node;
- ``queue``: its baseline: a ping-pong between two tasks over two asyncio queues.

Every node's process sets its garbage collector as ``pycluster run`` sets a node's (the
first threshold 50,000, as docs/nodes.md advises for an embedded node); ``--python-gc``
leaves Python's default (700).

Needs valgrind (``.ci/setup`` installs it). Run:

    .venv/bin/python bench/instructions.py [--count 2000] [--only register call]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import lab

from pycluster import Actor, load_config
from pycluster.node import Node

HERE = Path(__file__).resolve()
COOKIE = "bench-instructions-cookie"
IN_FLIGHT = 100
SCENARIOS = ("register", "claimant", "call", "mailbox", "echo", "local", "queue")
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


class Echo(Actor):
    async def handle_call(self, message: Any) -> Any:
        return message


def _name(index: int) -> str:
    return f"i{index}@127.0.0.{181 + index}"


def _node(index: int) -> Node:
    # Valgrind runs the process about 30 times slower: no tick may time out meanwhile.
    config = load_config({"node": {"name": _name(index), "net_tick_timeout": 600}}, env={})
    return Node(config, cookie=COOKIE)


async def _until(condition: Callable[[], bool]) -> None:
    await lab.until(condition, timeout=600, interval=0.001, what="the scenario's set-up")


async def _cluster(size: int) -> list[Node]:
    nodes = [_node(i) for i in range(size)]
    await lab.meshed(nodes, timeout=600, interval=0.001)
    return nodes


async def _register(count: int, spawned: int) -> None:
    nodes = await _cluster(3)
    first = nodes[0]
    # As many actors in every run, so that the difference holds registrations only.
    refs = [first.actors.spawn(Echo) for _ in range(spawned)]

    async def caller(start: int) -> None:
        for i in range(start, count, IN_FLIGHT):
            await first.registry.register(f"r{i}", refs[i])

    await asyncio.gather(*(caller(start) for start in range(IN_FLIGHT)))
    await _until(lambda: all(n.registry.backend.status()["names"] == count for n in nodes))


async def _claimant(count: int, spawned: int, python_gc: bool) -> None:
    peers = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(HERE), "--peer", str(i), *(["--python-gc"] if python_gc else [])
        )
        for i in (1, 2)
    ]
    try:
        first = _node(0)
        await first.start()
        for index in (1, 2):
            # The peers start at their own pace: dial until they answer.
            for _ in range(6000):
                if await first.connect(_name(index)):
                    break
                await asyncio.sleep(0.1)
        await _until(lambda: len(first.nodes()) == 2 and first.ready())
        refs = [first.actors.spawn(Echo) for _ in range(spawned)]

        async def caller(start: int) -> None:
            for i in range(start, count, IN_FLIGHT):
                await first.registry.register(f"r{i}", refs[i])

        await asyncio.gather(*(caller(start) for start in range(IN_FLIGHT)))
    finally:
        for peer in peers:
            peer.kill()
            await peer.wait()


async def _peer(index: int) -> None:
    node = _node(index)
    await node.start()
    await asyncio.Event().wait()


async def _calls(count: int, mailbox: bool) -> None:
    caller, callee = await _cluster(2)
    await callee.registry.register("echo", callee.actors.spawn(Echo))
    callee.register_mailbox("echo", lambda sender, body: body)
    await _until(lambda: caller.registry.whereis("echo") is not None)
    call: Callable[[], Awaitable[Any]]
    if mailbox:

        def call() -> Awaitable[Any]:
            return caller.call(callee.name, "echo", 1)

    else:

        def call() -> Awaitable[Any]:
            return caller.registry.call("echo", 1)

    for _ in range(count):
        await call()


async def _local(count: int) -> None:
    node = _node(0)
    await node.start()
    await node.registry.register("echo", node.actors.spawn(Echo))
    for _ in range(count):
        await node.registry.call("echo", 1)


async def _queue(count: int) -> None:
    requests: asyncio.Queue[int] = asyncio.Queue()
    replies: asyncio.Queue[int] = asyncio.Queue()

    async def serve() -> None:
        while True:
            replies.put_nowait(await requests.get())

    server = asyncio.create_task(serve())
    for _ in range(count):
        requests.put_nowait(1)
        await replies.get()
    server.cancel()


async def _echo(count: int) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readexactly(4)
            except asyncio.IncompleteReadError:
                return
            writer.write(head + await reader.readexactly(int.from_bytes(head, "big")))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frame = (9).to_bytes(4, "big") + bytes(9)
    for _ in range(count):
        writer.write(frame)
        head = await reader.readexactly(4)
        await reader.readexactly(int.from_bytes(head, "big"))


async def _scenario(name: str, count: int, spawned: int, python_gc: bool) -> None:
    if name == "register":
        await _register(count, spawned)
    elif name == "claimant":
        await _claimant(count, spawned, python_gc)
    elif name == "echo":
        await _echo(count)
    elif name == "local":
        await _local(count)
    elif name == "queue":
        await _queue(count)
    else:
        await _calls(count, mailbox=name == "mailbox")
    sys.stdout.flush()
    os._exit(0)  # the instructions of shutting nodes down are not the operation's


def instructions(scenario: str, count: int, spawned: int, python_gc: bool) -> int:
    """Instructions valgrind counts for one run of ``scenario`` with ``count`` operations."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",  # the total, on stderr, is all we read
            sys.executable,
            str(HERE),
            "--scenario",
            scenario,
            "--count",
            str(count),
            "--spawned",
            str(spawned),
            *(["--python-gc"] if python_gc else []),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{scenario} x {count} failed under valgrind:\n{done.stderr[-3000:]}")
    return int(found.group(1).replace(",", ""))


def per_operation(scenario: str, count: int, python_gc: bool) -> float:
    """Instructions of one operation: the runs of ``count`` and ``3 * count`` compared."""
    spawned = 3 * count
    small = instructions(scenario, count, spawned, python_gc)
    large = instructions(scenario, 3 * count, spawned, python_gc)
    return (large - small) / (2 * count)


def main(args: argparse.Namespace) -> None:
    measured = {name: per_operation(name, args.count, args.python_gc) for name in args.only}
    baselines = {"call": "echo", "mailbox": "echo", "local": "queue"}
    rows = []
    for name, value in measured.items():
        baseline = measured.get(baselines.get(name, ""))
        ratio = f"{value / baseline:.2f}x ({baselines[name]})" if baseline else ""
        rows.append([name, f"{value:,.0f}", ratio])
    print(f"# bench/instructions.py: {lab.machine()}")
    print(
        f"# valgrind cachegrind, user-space instructions; runs of {args.count} and "
        f"{3 * args.count} operations compared"
    )
    print(f"# every node's process: {lab.collect_as_pycluster_run(args.python_gc)}")
    print(lab.table(["operation", "instructions each", "ratio to its baseline"], rows))
    print("goal: none (a count for before/after comparisons; the timings are in paths.py)")


def _arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=2000, help="operations of the small run")
    parser.add_argument(
        "--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="scenarios to run"
    )
    parser.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--spawned", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--peer", type=int, help=argparse.SUPPRESS)
    lab.add_collector_option(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = _arguments()
    if arguments.peer is not None or arguments.scenario is not None:
        lab.collect_as_pycluster_run(arguments.python_gc)
    if arguments.peer is not None:
        asyncio.run(_peer(arguments.peer))
    elif arguments.scenario is not None:
        asyncio.run(
            _scenario(arguments.scenario, arguments.count, arguments.spawned, arguments.python_gc)
        )
    else:
        main(arguments)
