"""The floor under a call's ratio to the raw echo: the leanest asyncio msgpack RPC.

``bench/paths.py`` compares a remote call through a name with a raw length-prefixed
asyncio echo between two processes (issue 16's goal: at most 1.1x). This measures what
any asyncio RPC in Python pays on top of that echo, with nothing of pycluster: a server
process answers ``{"t": "call", "id": N, "to": ..., "body": ...}`` frames (4-byte length,
msgpack map, as pycluster's) from an ``asyncio.Protocol``, and the client keeps a future
per call id in a dict. No names, actors, deadlines, metrics, limits or message objects:
whatever pycluster's call costs beyond this row is what it does on top.

Per run, a fresh server process serves both; the client alternates blocks of 100
sequential calls to each (the echo is an ``asyncio.start_server`` stream, as in
paths.py) and drops the first 200 of each as warm-up. Each process sets its garbage
collector's first threshold to 50,000, as ``pycluster run`` does. Run:

    .venv/bin/python bench/floor.py [--runs 5] [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import struct
import subprocess
import sys
import time
from typing import Any

import msgpack
from lab import machine, percentile, spread, table

HEADER = struct.Struct(">I")
BLOCK = 100
WARM_UP = 200


def frames(buffer: bytes) -> tuple[list[Any], bytes]:
    """The msgpack values of the whole frames at the start of ``buffer``, and the rest."""
    values, offset = [], 0
    while len(buffer) - offset >= HEADER.size:
        (size,) = HEADER.unpack_from(buffer, offset)
        if len(buffer) - offset - HEADER.size < size:
            break
        start = offset + HEADER.size
        values.append(msgpack.unpackb(buffer[start : start + size]))
        offset = start + size
    return values, buffer[offset:]


def frame(value: Any) -> bytes:
    payload: bytes = msgpack.packb(value)
    return HEADER.pack(len(payload)) + payload


class Server(asyncio.Protocol):
    """Answers each call frame with a reply frame carrying its body."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        calls, self.buffer = frames(self.buffer + data if self.buffer else data)
        for call in calls:
            self.transport.write(
                frame({"t": "reply", "id": call["id"], "ok": True, "body": call["body"]})
            )


class Client(asyncio.Protocol):
    """Sends call frames; each reply resolves its call's future."""

    def __init__(self) -> None:
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.buffer = b""
        self.last_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        replies, self.buffer = frames(self.buffer + data if self.buffer else data)
        for reply in replies:
            future = self.pending.pop(reply["id"], None)
            if future is not None and not future.done():
                future.set_result(reply["body"])

    def call(self, to: str, body: Any) -> asyncio.Future[Any]:
        self.last_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.last_id] = future
        self.transport.write(frame({"t": "call", "id": self.last_id, "to": to, "body": body}))
        return future


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            head = await reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError:
            return
        writer.write(head + await reader.readexactly(int.from_bytes(head, "big")))


async def serve() -> None:
    loop = asyncio.get_running_loop()
    rpc = await loop.create_server(Server, "127.0.0.1", 0)
    raw = await asyncio.start_server(echo, "127.0.0.1", 0)
    print(rpc.sockets[0].getsockname()[1], raw.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


async def one_run(rpc_port: int, echo_port: int, calls: int) -> tuple[list[float], list[float]]:
    """Seconds per call of the lean RPC and of the echo, alternating blocks of BLOCK."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(Client, "127.0.0.1", rpc_port)
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
    raw = frame({"t": "call", "id": 1, "to": "echo", "body": 1})
    rpc_times: list[float] = []
    echo_times: list[float] = []
    for _ in range(0, calls + WARM_UP, BLOCK):
        for _ in range(BLOCK):
            started = time.perf_counter()
            await client.call("echo", 1)
            rpc_times.append(time.perf_counter() - started)
        for _ in range(BLOCK):
            started = time.perf_counter()
            writer.write(raw)
            head = await reader.readexactly(HEADER.size)
            await reader.readexactly(int.from_bytes(head, "big"))
            echo_times.append(time.perf_counter() - started)
    writer.close()
    client.transport.close()
    return rpc_times[WARM_UP:], echo_times[WARM_UP:]


def main(args: argparse.Namespace) -> None:
    gc.set_threshold(50_000, 10, 10)
    medians: dict[str, list[float]] = {"rpc": [], "echo": [], "ratio": []}
    p99s: dict[str, list[float]] = {"rpc": [], "echo": []}
    for run in range(args.runs):
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            rpc_port, echo_port = map(int, server.stdout.readline().split())
            rpc, raw = asyncio.run(one_run(rpc_port, echo_port, args.calls))
        finally:
            server.kill()
            server.wait()
        for name, times in (("rpc", rpc), ("echo", raw)):
            medians[name].append(statistics.median(times))
            p99s[name].append(percentile(times, 0.99))
        medians["ratio"].append(medians["rpc"][-1] / medians["echo"][-1])
        print(
            f"run {run + 1}: lean rpc {medians['rpc'][-1] * 1e6:.0f} µs, "
            f"echo {medians['echo'][-1] * 1e6:.0f} µs, {medians['ratio'][-1]:.2f}x",
            file=sys.stderr,
        )

    def micros(value: float) -> str:
        return f"{value * 1e6:.0f} µs"

    print(f"# bench/floor.py: {machine()}")
    print(
        f"# {args.runs} runs of {args.calls} calls each; each cell: median (min-max) over the runs"
    )
    rows = [
        [
            "raw echo (asyncio streams)",
            spread(medians["echo"], micros),
            spread(p99s["echo"], micros),
            "1x",
        ],
        [
            "leanest msgpack RPC (asyncio Protocol)",
            spread(medians["rpc"], micros),
            spread(p99s["rpc"], micros),
            spread(medians["ratio"], lambda r: f"{r:.2f}x"),
        ],
    ]
    print(table(["round trip", "median", "p99", "ratio to the echo"], rows))
    print("goal: none (the floor under paths.py's call ratio to its echo; issue 16: <= 1.1x)")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="runs, each with its own server")
    parser.add_argument("--calls", type=int, default=2000, help="measured calls of each kind")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = _arguments()
    if arguments.serve:
        gc.set_threshold(50_000, 10, 10)
        asyncio.run(serve())
    else:
        main(arguments)
