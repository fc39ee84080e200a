"""The classic clustering walk-through, with pycluster: a Counter that lives exactly once.

Three nodes (in this one process, each on its own loopback address) connect with the
``epmd`` strategy. A Counter is started under the name "counter" on the first node;
starting it again on the third is refused with AlreadyStarted; every node then calls it
by name. Run it with:

    python examples/counter/walkthrough.py

(``pycluster demo`` runs the same walk-through with one process per node.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pycluster
from pycluster import Actor, AlreadyStarted, Node

NAMES = ["a@127.0.0.2", "b@127.0.0.3", "c@127.0.0.4"]


class Counter(Actor):
    """An Agent holding a number: ``increment`` adds one, ``value`` reads it."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    async def handle_call(self, message: Any) -> Any:
        if message == "increment":
            self.value += 1
        return self.value


def node(name: str) -> Node:
    config = pycluster.load_config(
        {
            "node": {"name": name, "cookie": "counter-walkthrough"},
            "topologies": {"static": {"strategy": "epmd", "config": {"hosts": NAMES}}},
        }
    )
    return Node(config)


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Poll ``condition`` (bounded): connecting and replicating take a few milliseconds."""
    for _ in range(int(seconds * 100)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("gave up waiting")


async def main() -> None:
    a, b, c = node(NAMES[0]), node(NAMES[1]), node(NAMES[2])
    # Started together, as the pods of a Deployment are (each dials the others at once).
    await asyncio.gather(a.start(), b.start(), c.start())
    try:
        await until(lambda: all(len(n.nodes()) == 2 and n.ready() for n in (a, b, c)))
        print("cluster:", a.name, "sees", a.nodes())

        ref = await a.registry.spawn("counter", Counter)
        print(f"{a.name}: spawn('counter') -> {ref}")
        try:
            await c.registry.spawn("counter", Counter)
        except AlreadyStarted as exc:
            print(f"{c.name}: spawn('counter') -> AlreadyStarted, running as {exc.ref}")

        await until(lambda: all(n.registry.whereis("counter") for n in (a, b, c)))
        for n in (a, b, c):
            value = await n.registry.call("counter", "increment")
            print(f"{n.name}: call('counter', 'increment') -> {value}")
        print(f"{b.name}: call('counter', 'value') -> {await b.registry.call('counter', 'value')}")
    finally:
        await asyncio.gather(a.stop(), b.stop(), c.stop())


if __name__ == "__main__":
    asyncio.run(main())
