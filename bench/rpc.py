"""Messages between two node processes over loopback, beside raw asyncio streams.

Two processes, each on its own loopback address: a server (this script with ``--serve``)
runs a pycluster node with an ``echo`` and a ``count`` mailbox, plus a raw asyncio echo
server and a raw asyncio sink; the benchmark process runs the client node. Measured, with
the baselines in the same run, in alternating blocks (so drift hits both alike):

- call round trip: ``await node.call(server, "echo", payload)``, sequentially, after a
  warm-up; the baseline is a length-prefixed echo of a frame of the same size over a
  plain asyncio stream (write, then ``readexactly`` the header and the body).
- cast throughput: ``await node.send(server, "count", i)`` in a tight loop, timed until
  the server has counted every message (it then sends one ``done`` back); the baselines
  write frames of the same size on a plain asyncio stream (with the same 1 MiB drain
  threshold) to a sink that counts them, once as raw bytes and once encoded and decoded
  with pycluster's own frame codec (``encode_frame`` / ``FrameDecoder``), which splits
  the cost between the codec and the node.

``--cpus 0`` pins both processes to CPU 0, so that a round trip is the sum of both sides'
CPU work, free of the cost of waking another CPU (which varies from run to run).
``--profile DIR`` runs cProfile in both processes during the pycluster phases and writes
``DIR/{client,server}-{call,cast}.pstats`` (cProfile slows everything: the timings of a
profiled run are not results).

Run: ``.venv/bin/python bench/rpc.py [--calls 5000] [--casts 200000]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import secrets
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import lab

from pycluster import load_config
from pycluster.node import Node
from pycluster.transport.frames import FrameDecoder, FrameLimits, encode_frame

HEADER = struct.Struct(">I")
ANNOUNCE = struct.Struct(">IB")
"""Sink stream preamble: how many frames follow, and whether to decode them (1) or not."""
WRITE_HIGH_WATER = 1024 * 1024
READ_SIZE = 256 * 1024
MAX_FRAME = 16 * 1024 * 1024
CALL_GOAL_RATIO = 1.5
CAST_GOAL_RATE = 50_000
CALL_BLOCK = 500
TICK_TIMEOUT = 60.0
"""Both nodes' net_tick_timeout. The baselines' send loops never give the event loop a
turn while the kernel takes their writes, so on a busy machine a round can keep the client
node from ticking for longer than the default 3 s, and the server would drop it."""


# -- the server process -------------------------------------------------------------------


async def serve(host: str, profile_dir: Path | None) -> None:
    """Run the server node, the raw echo server and the raw sink until stdin closes."""
    cookie = os.environ["PYCLUSTER_COOKIE"]
    name = f"server@{host}:{lab.free_port(host)}"
    config = load_config({"node": {"name": name, "net_tick_timeout": TICK_TIMEOUT}}, env={})
    node = Node(config, cookie=cookie)
    counted = {"count": 0, "expected": -1}
    profilers: list[cProfile.Profile] = []

    def expect(sender: str, total: Any) -> bool:
        counted.update(count=0, expected=int(total))
        return True

    def count(sender: str, body: Any) -> Awaitable[None] | None:
        counted["count"] += 1
        if counted["count"] == counted["expected"]:
            return node.send(sender, "done", counted["count"])
        return None

    def profile(sender: str, phase: Any) -> bool:
        """None: start profiling; a phase name: stop and write ``server-PHASE.pstats``."""
        if profile_dir is None:
            return False
        if phase is None:
            profilers.append(cProfile.Profile())
            profilers[-1].enable()
        elif profilers:
            profiler = profilers.pop()
            profiler.disable()
            profiler.dump_stats(profile_dir / f"server-{phase}.pstats")
        return True

    node.register_mailbox("echo", lambda sender, body: body)
    node.register_mailbox("expect", expect)
    node.register_mailbox("count", count)
    node.register_mailbox("profile", profile)
    echo = await asyncio.start_server(_echo, host, 0)
    sink = await asyncio.start_server(_sink, host, 0)
    async with node, echo, sink:
        ports = {
            "node": node.name,
            "echo": echo.sockets[0].getsockname()[1],
            "sink": sink.sockets[0].getsockname()[1],
        }
        print(json.dumps(ports), flush=True)
        await _stdin_closed()


async def _stdin_closed() -> None:
    """Return when stdin reaches EOF (the benchmark ended) or on SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    eof = asyncio.create_task(reader.read())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([eof, stopped], return_when=asyncio.FIRST_COMPLETED)
    eof.cancel()
    stopped.cancel()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            header = await reader.readexactly(HEADER.size)
            body = await reader.readexactly(HEADER.unpack(header)[0])
            writer.write(header + body)
    writer.close()


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            total, decode = ANNOUNCE.unpack(await reader.readexactly(ANNOUNCE.size))
            if decode:
                await _count_decoded(reader, total)
            else:
                await _count_raw(reader, total)
            writer.write(b"!")
    writer.close()


async def _count_raw(reader: asyncio.StreamReader, total: int) -> None:
    """Walk the length prefixes of ``total`` frames (every frame is looked at)."""
    buffer = bytearray()
    count = 0
    while count < total:
        data = await reader.read(READ_SIZE)
        if not data:
            raise ConnectionError("the client left")
        buffer += data
        offset = 0
        while len(buffer) - offset >= HEADER.size:
            end = offset + HEADER.size + HEADER.unpack_from(buffer, offset)[0]
            if end > len(buffer):
                break
            offset = end
            count += 1
        del buffer[:offset]


async def _count_decoded(reader: asyncio.StreamReader, total: int) -> None:
    """Decode ``total`` frames with pycluster's FrameDecoder."""
    decoder = FrameDecoder(FrameLimits.authenticated(MAX_FRAME))
    count = 0
    while count < total:
        data = await reader.read(READ_SIZE)
        if not data:
            raise ConnectionError("the client left")
        decoder.feed(data)
        count += len(decoder.decode(budget=len(data) + 1))


# -- the benchmark process ----------------------------------------------------------------


class Server:
    """The server process: started on enter, stopped (stdin closed, then killed) on exit."""

    def __init__(self, host: str, cookie: str, profile_dir: Path | None) -> None:
        self.host = host
        self.cookie = cookie
        self.profile_dir = profile_dir
        self.process: asyncio.subprocess.Process | None = None
        self.node = ""
        self.echo_port = self.sink_port = 0

    async def __aenter__(self) -> Server:
        profile = ["--profile", str(self.profile_dir)] if self.profile_dir else []
        self.process = await asyncio.create_subprocess_exec(
            *lab.launcher(sys.executable, __file__, "--serve", self.host, *profile),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYCLUSTER_COOKIE": self.cookie},
            start_new_session=True,  # the terminal's Ctrl-C is ours to handle, not its
        )
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), 30.0)
            ports = json.loads(line)
        except (TimeoutError, ValueError):
            await self.__aexit__()
            raise RuntimeError("the server process did not start (see its output above)") from None
        self.node, self.echo_port, self.sink_port = ports["node"], ports["echo"], ports["sink"]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), lab.STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def time_calls(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """Seconds each of ``count`` sequential calls took."""
    times = []
    clock = time.perf_counter_ns
    for _ in range(count):
        started = clock()
        await call()
        times.append((clock() - started) / 1e9)
    return times


class RawEcho:
    """A length-prefixed request/response over a plain asyncio stream."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.size = len(frame) - HEADER.size
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, host: str, port: int, local: str) -> None:
        """Connect from ``local`` (as the client node dials from its own address)."""
        self.reader, self.writer = await asyncio.open_connection(host, port, local_addr=(local, 0))

    async def call(self) -> bytes:
        """One round trip."""
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(self.frame)
        await self.reader.readexactly(HEADER.size)
        return await self.reader.readexactly(self.size)

    def close(self) -> None:
        """Close the connection."""
        if self.writer is not None:
            self.writer.close()


async def raw_stream(
    host: str, port: int, local: str, total: int, frame: bytes, decode: bool
) -> tuple[float, float]:
    """Send ``total`` frames to the sink; return (seconds until sent, until all counted).

    With ``decode``, every frame is encoded with ``encode_frame`` here and decoded there.
    """
    reader, writer = await asyncio.open_connection(host, port, local_addr=(local, 0))
    transport = writer.transport
    try:
        writer.write(ANNOUNCE.pack(total, int(decode)))
        await writer.drain()
        started = time.perf_counter()
        for i in range(total):
            writer.write(encode_frame({"t": "msg", "to": "count", "body": i}) if decode else frame)
            if transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                await writer.drain()
        sent = time.perf_counter()
        await reader.readexactly(1)
        return sent - started, time.perf_counter() - started
    finally:
        writer.close()


class Client:
    """The benchmark's own node, connected to the server node."""

    def __init__(self, node: Node, server: Server, profile_dir: Path | None) -> None:
        self.node = node
        self.server = server
        self.profile_dir = profile_dir
        self.done: asyncio.Future[int] | None = None
        node.register_mailbox("done", self._done)

    def _done(self, sender: str, body: Any) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(int(body))

    async def casts(self, total: int) -> tuple[float, float]:
        """Send ``total`` casts; return (seconds until sent, until the server counted all)."""
        await self.node.call(self.server.node, "expect", total)
        self.done = asyncio.get_running_loop().create_future()
        server, send = self.server.node, self.node.send
        started = time.perf_counter()
        for i in range(total):
            await send(server, "count", i)
        sent = time.perf_counter()
        await asyncio.wait_for(self.done, 120.0)
        return sent - started, time.perf_counter() - started

    @contextlib.asynccontextmanager
    async def profiling(self, phase: str) -> AsyncIterator[None]:
        """cProfile both processes during the block, if asked to."""
        if self.profile_dir is None:
            yield
            return
        profiler = cProfile.Profile()
        await self.node.call(self.server.node, "profile", None)
        profiler.enable()
        try:
            yield
        finally:
            profiler.disable()
            await self.node.call(self.server.node, "profile", phase)
            path = self.profile_dir / f"client-{phase}.pstats"
            profiler.dump_stats(path)
            for side in ("client", "server"):
                print(f"\n== cProfile, {side}, {phase} (top 12 by own time)", file=sys.stderr)
                stats = pstats.Stats(str(self.profile_dir / f"{side}-{phase}.pstats"))
                stats.stream = sys.stderr  # type: ignore[attr-defined]
                stats.sort_stats("tottime").print_stats(12)


async def main(args: argparse.Namespace) -> None:
    """Start the server process and the client node; measure; print tables and goals."""
    cookie = secrets.token_urlsafe(24)
    server_host = lab.loopback(args.first_address)
    client_host = lab.loopback(args.first_address + 1)
    profile_dir: Path | None = args.profile
    print(
        f"messages between two node processes ({server_host} <- {client_host}); "
        f"{args.calls} calls, {args.casts} casts x {args.rounds} rounds"
    )
    print(f"machine: {lab.machine()}")
    if args.cpus:
        print(f"both processes pinned to CPU(s) {', '.join(map(str, args.cpus))}")
    load = lab.OtherLoad()
    name = f"client@{client_host}:{lab.free_port(client_host)}"
    config = load_config({"node": {"name": name, "net_tick_timeout": TICK_TIMEOUT}}, env={})
    async with (
        Server(server_host, cookie, profile_dir) as server,
        Node(config, cookie=cookie) as node,
    ):
        if not await node.connect(server.node):
            raise RuntimeError(f"cannot connect to {server.node}")
        client = Client(node, server, profile_dir)
        await _calls(args, client, server, client_host)
        await _casts(args, client, server, client_host)
    print(load.note())


async def _calls(args: argparse.Namespace, client: Client, server: Server, local: str) -> None:
    payload = b"x" * args.payload
    request = {"t": "call", "id": 10_000, "to": "echo", "body": payload}
    frame = encode_frame(request)
    body = b"x" * (len(frame) - HEADER.size)
    raw = RawEcho(HEADER.pack(len(body)) + body)
    await raw.open(server.host, server.echo_port, local)
    node, target = client.node, server.node

    def pycluster_call() -> Awaitable[object]:
        return node.call(target, "echo", payload)

    try:
        await time_calls(pycluster_call, args.warmup)
        await time_calls(raw.call, args.warmup)
        ours: list[float] = []
        baseline: list[float] = []
        async with client.profiling("call"):
            remaining = args.calls
            while remaining > 0:
                block = min(CALL_BLOCK, remaining)
                ours += await time_calls(pycluster_call, block)
                baseline += await time_calls(raw.call, block)
                remaining -= block
    finally:
        raw.close()
    print()
    print(
        f"call round trip: {args.calls} sequential calls after {args.warmup} warm-up, "
        f"{args.payload}-byte payload ({len(frame)}-byte frames), in blocks of {CALL_BLOCK}"
    )
    rows = []
    for label, times in (("pycluster node.call", ours), ("raw asyncio echo (baseline)", baseline)):
        rows.append(
            [
                label,
                _us(lab.median(times)),
                _us(lab.percentile(times, 0.99)),
                _us(max(times)),
                f"{lab.median(times) / lab.median(baseline):.2f}",
                f"{len(times) / sum(times):,.0f}",
            ]
        )
    print(lab.table(["", "median", "p99", "max", "ratio (median)", "calls/s"], rows))
    ratio = lab.median(ours) / lab.median(baseline)
    print(
        lab.goal(
            f"call median within {CALL_GOAL_RATIO}x of the raw echo (is {ratio:.2f}x)",
            ratio <= CALL_GOAL_RATIO,
        )
    )


async def _casts(args: argparse.Namespace, client: Client, server: Server, local: str) -> None:
    frame = encode_frame({"t": "msg", "to": "count", "body": args.casts // 2})
    measured: dict[str, list[tuple[float, float]]] = {"ours": [], "raw": [], "codec": []}
    for _ in range(args.rounds):
        async with client.profiling("cast"):
            measured["ours"].append(await client.casts(args.casts))
        measured["raw"].append(
            await raw_stream(server.host, server.sink_port, local, args.casts, frame, False)
        )
        measured["codec"].append(
            await raw_stream(server.host, server.sink_port, local, args.casts, frame, True)
        )
    print()
    print(
        f"one-way cast throughput: {args.casts:,} messages per round ({len(frame)}-byte "
        f"frames), {args.rounds} rounds, timed until the receiver counted them all"
    )
    base_rate = args.casts / lab.median([total for _, total in measured["raw"]])
    rows = []
    labels = {
        "ours": "pycluster await node.send",
        "raw": "raw asyncio stream (baseline)",
        "codec": "raw stream + pycluster frame codec",
    }
    for key, label in labels.items():
        totals = [total for _, total in measured[key]]
        sends = [sent for sent, _ in measured[key]]
        rate = args.casts / lab.median(totals)
        rows.append(
            [
                label,
                f"{rate:,.0f}",
                f"{args.casts / max(totals):,.0f}",
                f"{args.casts / min(totals):,.0f}",
                f"{lab.median(totals):.2f} s",
                f"{lab.median(sends):.2f} s",
                f"{rate / base_rate:.2f}",
            ]
        )
    print(
        lab.table(
            [
                "",
                "msgs/s median",
                "msgs/s worst",
                "msgs/s best",
                "time median",
                "sender busy median",
                "ratio to baseline",
            ],
            rows,
        )
    )
    ours = args.casts / lab.median([total for _, total in measured["ours"]])
    print(
        lab.goal(
            f">= {CAST_GOAL_RATE:,} casts/s one way (median {ours:,.0f}/s)",
            ours >= CAST_GOAL_RATE,
        )
    )


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs"


def _arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="measured sequential calls")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up calls (each kind)")
    parser.add_argument("--payload", type=int, default=64, help="call payload, in bytes")
    parser.add_argument("--casts", type=int, default=200_000, help="casts per round")
    parser.add_argument("--rounds", type=int, default=3, help="cast rounds (each kind)")
    parser.add_argument(
        "--first-address",
        type=int,
        default=141,
        metavar="X",
        help="server on 127.0.0.X, client on 127.0.0.X+1 (default 141)",
    )
    parser.add_argument(
        "--cpus",
        type=int,
        nargs="+",
        metavar="CPU",
        help="pin both processes to these CPUs (--cpus 0: a round trip is then the sum of "
        "both sides' CPU work, free of cross-CPU wake-ups)",
    )
    parser.add_argument("--profile", type=Path, metavar="DIR", help="cProfile into DIR")
    parser.add_argument("--serve", metavar="HOST", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = _arguments()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.cpus:
        os.sched_setaffinity(0, args.cpus)  # the server process inherits it
    if args.serve:
        asyncio.run(serve(args.serve, args.profile))
    else:
        lab.run(main(args))
