"""The service run by the ``pycluster run`` nodes of ``bench/scale.py`` (``--app``).

Each node answers calls to its ``scale_register`` mailbox, body ``[first, count, batch]``:
it starts ``count`` actors and registers them as ``scale-<first>`` .. ``scale-<first +
count - 1>``, ``batch`` names per ``register_many``, and replies with how many names were
already taken (0 when all were registered). So the names of the benchmark's registry are
registered all over the cluster, each by the node its actor runs on, as an application
would.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from pycluster import Actor, Node

MAILBOX = "scale_register"


class Holder(Actor):
    """An actor that only holds a name."""


@contextlib.asynccontextmanager
async def serve(node: Node) -> AsyncIterator[None]:
    """The app: the ``scale_register`` mailbox."""

    async def register(sender: str, body: Any) -> int:
        first, count, batch = (int(value) for value in body)
        refs = [node.actors.spawn(Holder) for _ in range(count)]
        taken = 0
        for start in range(0, count, batch):
            names = {f"scale-{first + i}": refs[i] for i in range(start, min(count, start + batch))}
            taken += len(await node.registry.register_many(names, timeout=60.0))
        return taken

    node.register_mailbox(MAILBOX, register)
    yield
