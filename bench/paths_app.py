"""The service run by the ``pycluster run`` nodes of ``bench/paths.py`` (``--app``).

Each node starts an ``Echo`` actor named ``echo-<node's basename>`` on itself, and a raw
asyncio length-prefixed echo server on its own address, whose port its ``raw_port``
mailbox answers (the baseline of a call through a name), and an ``echo`` mailbox (a call
that crosses the transport but no actor).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Any

from pycluster import Actor, Node

HEADER = struct.Struct(">I")


class Echo(Actor):
    """Answers a call with its message; counts casts."""

    def __init__(self) -> None:
        self.casts = 0

    async def handle_call(self, message: Any) -> Any:
        return message

    async def handle_cast(self, message: Any) -> None:
        self.casts += 1


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            header = await reader.readexactly(HEADER.size)
            body = await reader.readexactly(HEADER.unpack(header)[0])
            writer.write(header + body)
    writer.close()


@contextlib.asynccontextmanager
async def serve(node: Node) -> AsyncIterator[None]:
    """The app: the echo actor, and the raw echo server beside it."""
    basename = node.name.split("@")[0]
    await node.registry.spawn(f"echo-{basename}", Echo, if_exists="return")
    host = node.name.split("@")[1].rsplit(":", 1)[0]
    server = await asyncio.start_server(_echo, host, 0)
    port = server.sockets[0].getsockname()[1]
    node.register_mailbox("raw_port", lambda sender, body: port)
    node.register_mailbox("echo", lambda sender, body: body)
    async with server:
        yield
