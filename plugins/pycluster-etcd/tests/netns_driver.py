"""The partition test's hands inside the namespaced network: a hidden pycluster client.

Run inside the driver's namespace, it reads JSON requests on stdin, one a line, and
answers each on stdout: ``{"id": N, "ok": ...}`` or ``{"id": N, "error": "..."}``.

- ``{"op": "status", "on": NODE}``: that node's /status view.
- ``{"op": "spawn", "name": NAME, "on": NODE}``: start a Sentinel named NAME on NODE.
- ``{"op": "pressure", "names": [...], "on": [NODE, ...]}``: from now on, keep trying to
  start every name on those nodes in turn, as fast as answers come (an adversary taking
  names over the moment the registry lets it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from typing import Any

from netns_actors import Sentinel

from pycluster import load_config
from pycluster.node import STATUS_MAILBOX, Node
from pycluster.registry import AlreadyStarted

ADDRESS, RECORDS = sys.argv[1], sys.argv[2]


async def spawn(client: Node, name: str, node: str, timeout: float = 2.0) -> str:
    await client.connect(node)
    ref = await client.registry.spawn(name, Sentinel, RECORDS, name, node, on=node, timeout=timeout)
    return str(ref)


async def pressure(client: Node, names: list[str], nodes: list[str]) -> None:
    for node in itertools.cycle(nodes):
        for name in names:
            try:
                await spawn(client, name, node, timeout=1.0)
            except AlreadyStarted:
                pass
            except Exception as exc:  # any failure: try again
                print(f"pressure {name} on {node}: {type(exc).__name__}: {exc}", file=sys.stderr)
        await asyncio.sleep(0.02)


async def answer(client: Node, request: dict[str, Any], tasks: set[asyncio.Task[None]]) -> Any:
    op = request["op"]
    if op == "status":
        await client.connect(request["on"])
        return await client.call(request["on"], STATUS_MAILBOX, None, timeout=2)
    if op == "spawn":
        return await spawn(client, request["name"], request["on"])
    if op == "pressure":
        task = asyncio.ensure_future(pressure(client, request["names"], request["on"]))
        tasks.add(task)
        return "started"
    raise ValueError(f"unknown op {op!r}")


async def main() -> None:
    config = load_config(
        {"node": {"name": f"driver@{ADDRESS}"}, "registry": {"backend": "local"}}, env={}
    )
    client = Node(config, cookie=os.environ["PYCLUSTER_COOKIE"], hidden=True)
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with client:
        while line := await reader.readline():
            request = json.loads(line)
            try:
                reply = {"id": request["id"], "ok": await answer(client, request, tasks)}
            except Exception as exc:  # every failure is an answer
                reply = {"id": request["id"], "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)
        for task in tasks:
            task.cancel()


if __name__ == "__main__":
    asyncio.run(main())
