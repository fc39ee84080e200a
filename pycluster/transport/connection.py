"""One authenticated connection to a peer: frames in and out, ticks, backpressure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from pycluster.codec import Codec
from pycluster.metrics import NodeMetrics
from pycluster.transport.frames import FrameDecoder, FrameError, encode_frame

log = logging.getLogger("pycluster.transport")

READ_SIZE = 256 * 1024
WRITE_HIGH_WATER = 1024 * 1024
"""Bytes queued for a peer above which senders wait (a slow peer applies backpressure)."""


class ConnectionClosed(ConnectionError):
    """The connection to the peer is closed; nothing more can be sent on it."""


class Connection:
    """Frames to and from one authenticated peer.

    Idle connections send a tick every ``tick_interval``; a peer silent for
    ``tick_timeout`` is declared down. ``on_message`` gets every message but ticks and
    ``leave`` in arrival order; ``on_closed`` is called once, with the reason.
    """

    def __init__(
        self,
        *,
        peer: str,
        incarnation: bytes,
        hidden: bool,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: FrameDecoder,
        tick_interval: float,
        tick_timeout: float,
        metrics: NodeMetrics,
        codec: Codec,
        on_message: Callable[[Connection, dict[str, Any]], None],
        on_closed: Callable[[Connection, str], None],
    ) -> None:
        self.peer = peer
        self.incarnation = incarnation
        self.hidden = hidden
        self.closed = False
        self.close_reason: str | None = None
        self._reader = reader
        self._writer = writer
        self._decoder = decoder
        self._tick_interval = tick_interval
        self._tick_timeout = tick_timeout
        self._metrics = metrics
        self._codec = codec
        self._on_message = on_message
        self._on_closed = on_closed
        self._last_received = self._last_sent = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def start(self, backlog: Iterable[dict[str, Any]] = ()) -> None:
        """Handle ``backlog`` (messages read along with the handshake), then read and tick."""
        for message in backlog:
            self._dispatch(message)
        self._tasks = [
            asyncio.create_task(self._read(), name=f"pycluster read {self.peer}"),
            asyncio.create_task(self._tick(), name=f"pycluster tick {self.peer}"),
        ]

    def send_nowait(self, message: dict[str, Any]) -> None:
        """Queue one message (FIFO with every other send on this connection)."""
        if self.closed or self._writer.is_closing():
            raise ConnectionClosed(f"connection to {self.peer} is closed")
        self._writer.write(encode_frame(message, self._codec))
        self._last_sent = time.monotonic()
        self._metrics.frames_out.inc()

    async def send(self, message: dict[str, Any]) -> None:
        """Queue one message, then wait while the peer has too much unread."""
        self.send_nowait(message)
        if self._writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            try:
                await self._writer.drain()
            except (ConnectionError, OSError) as exc:
                raise ConnectionClosed(f"connection to {self.peer} lost: {exc}") from None

    async def close(self, reason: str, *, leave: bool = False) -> None:
        """Close the connection (telling the peer we leave, if ``leave``); idempotent."""
        if self.closed:
            return
        if leave:
            with contextlib.suppress(ConnectionError, OSError):
                self.send_nowait({"t": "leave"})
                await asyncio.wait_for(self._writer.drain(), timeout=1.0)
        self._finish(reason)
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), timeout=1.0)

    def _finish(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._writer.close()
        self._on_closed(self, reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["t"]
        if kind == "tick":
            # Answered, so a peer with a shorter tick timeout than ours (a hidden client
            # with the default, a node configured apart) hears from us often enough.
            with contextlib.suppress(ConnectionError):
                self.send_nowait({"t": "tock"})
            return
        if kind == "tock":
            return
        if kind == "leave":
            self._finish("left")
            return
        self._on_message(self, message)

    async def _read(self) -> None:
        reason = "connection closed by the peer"
        try:
            while not self.closed:
                data = await self._reader.read(READ_SIZE)
                if not data:
                    break
                self._last_received = time.monotonic()
                for message in self._decoder.feed(data):
                    self._metrics.frames_in.inc()
                    self._dispatch(message)
                    if self.closed:
                        return
        except FrameError as exc:
            reason = f"bad frame: {exc}"
            log.warning("closing the connection to %s: %s", self.peer, exc)
        except (ConnectionError, OSError) as exc:
            reason = f"connection lost: {exc.__class__.__name__}"
        self._finish(reason)

    async def _tick(self) -> None:
        while not self.closed:
            await asyncio.sleep(self._tick_interval / 2)
            now = time.monotonic()
            silent = now - self._last_received
            if silent > self._tick_timeout:
                self._finish(f"net tick timeout ({silent:.1f}s silent)")
                return
            if now - self._last_sent >= self._tick_interval:
                with contextlib.suppress(ConnectionError):
                    self.send_nowait({"t": "tick"})
