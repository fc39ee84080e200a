"""One stream to another node (TCP or TLS), as an asyncio Protocol: frames in, frames out.

A link carries the whole life of a connection, the handshake included, so no byte ever
sits in a buffer that the next layer would have to fish out:

- Received bytes go straight from ``data_received`` to the frame decoder. Until
  :meth:`Link.attach`, the handshake pulls one message at a time with
  :meth:`Link.receive`, under the decoder's pre-authentication limits, and a peer that
  sends more than :data:`PREAUTH_BUFFER` bytes ahead is no longer read. Attaching raises
  the limits; from then on each batch goes to the connection as it is decoded, with no
  reader task to wake.
- Decoding takes about :data:`TURN_TIME` per event-loop turn at most (:func:`decode_turn`,
  in slices of :data:`DECODE_BUDGET` bytes): when more is waiting (a large frame, a costly
  burst), reading pauses and decoding goes on in the next turn, so no frame blocks the
  loop, and memory stays bounded by what one read brings.
- Frames written in one event-loop turn leave in one ``write()``: the first at once (a
  lone request or reply is not delayed), the others joined at the end of the turn, or at
  the end of the ``data_received`` call that produced them (replies to a burst of
  requests), or as soon as :data:`JOIN_LIMIT` bytes wait. Order is kept.
- Backpressure: above :data:`WRITE_HIGH_WATER` bytes queued in the transport,
  :attr:`Link.paused` is set until the transport drains; :meth:`Link.drain` waits for it.
  A sender that filled a whole :data:`JOIN_LIMIT` batch within one turn is
  :attr:`Link.congested` too, so that ``await send()`` in a loop gives the event loop a
  turn now and then even when the peer keeps up (its ticks, other connections, timers).
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

from pycluster.transport.frames import (
    SLICE,
    Frame,
    FrameDecoder,
    FrameError,
    FrameLimits,
    UndecodableFrame,
)

WRITE_HIGH_WATER = 1024 * 1024
"""Bytes queued for a peer above which senders wait (a slow peer applies backpressure)."""
JOIN_LIMIT = 64 * 1024
"""Bytes of joined frames written at once even before the turn ends (bounds the memory a
sender that never yields can queue outside the transport)."""
DECODE_BUDGET = SLICE
"""Bytes decoded in one go (plus the rest of one small frame): about 2 ms of the costliest
msgpack, a fraction of that for usual messages."""
TURN_TIME = 0.002
"""Seconds of decoding after which a turn hands what it decoded over and the rest waits
for the next turn (another slice is only started below this)."""
GC_PAUSE_FROM = 4096
"""Bytes waiting to be decoded above which the garbage collector is held off meanwhile."""
PREAUTH_BUFFER = 8 * 1024
"""Bytes an unauthenticated peer may send ahead of the handshake before reading stops."""

Message = dict[str, Any]


def decode_turn(decoder: FrameDecoder) -> tuple[list[Frame], bool]:
    """What one event-loop turn decodes: slices of DECODE_BUDGET bytes until TURN_TIME is
    spent (cheap frames, most traffic, are all decoded in one turn; costly ones spread
    out); and whether more is ready to decode. Raises FrameError."""
    if decoder.light(GC_PAUSE_FROM):
        # A few small frames, most reads: one decode takes them all, well within a turn.
        return decoder.decode(DECODE_BUDGET), False
    # More, or a large frame: a frame of many small containers would trigger collections
    # that walk every object decoded so far; they run after the decoding instead.
    collecting = gc.isenabled()
    if collecting:
        gc.disable()
    try:
        began = time.perf_counter()
        messages = decoder.decode(DECODE_BUDGET)
        while (more := decoder.ready) and time.perf_counter() - began < TURN_TIME:
            messages += decoder.decode(DECODE_BUDGET)
    finally:
        if collecting:
            gc.enable()
    return messages, more


class ConnectionClosed(ConnectionError):
    """The connection to the peer is closed; nothing more can be sent on it."""


class Link(asyncio.Protocol):
    """Frames over one transport; see the module doc.

    ``on_made`` is called with the link once the transport is up (for TLS: once its
    handshake is done), which is how a listening server hands each new link to the node.
    """

    def __init__(
        self, decoder: FrameDecoder, on_made: Callable[[Link], None] | None = None
    ) -> None:
        self.last_received = time.monotonic()
        """When bytes last arrived (``time.monotonic()``), for the connection's ticks."""
        self._decoder = decoder
        self._on_made = on_made
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._closing = False
        self._failure: Exception | None = None
        """Why no more messages will come: FrameError, ConnectionClosed or an OSError."""
        self._inbox_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._resume: asyncio.Handle | None = None
        self._eof = False
        """The peer closed its side while decoded messages were still to come."""
        self._on_messages: Callable[[list[Frame]], None] | None = None
        self._on_lost: Callable[[Exception], None] | None = None
        self.frames_received = 0
        """Frames handed over since :meth:`attach` (counted here, published by the owner:
        a Prometheus counter per frame would cost more than the rest of a small message)."""
        self.frames_sent = 0
        """Frames written since :meth:`attach`."""
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._turn: asyncio.Handle | None = None
        self._receiving = False
        self.paused = False
        """Whether the transport holds more than WRITE_HIGH_WATER bytes (senders wait)."""
        self._batch_full = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._lost = self._loop.create_future()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport; tell ``on_made``."""
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self._on_made is not None:
            self._on_made(self)

    def data_received(self, data: bytes) -> None:
        """Decode whole frames; hand them to the connection, or wake the handshake."""
        self.last_received = time.monotonic()
        if self._failure is not None:
            return
        if (
            self._on_messages is not None
            and self._resume is None
            and len(data) <= GC_PAUSE_FROM
            and not self._reading_paused
        ):
            # Most reads: a few small frames and nothing waiting, all decoded at once (as
            # decode_turn's light branch would, without its calls).
            try:
                messages = self._decoder.decode_read(data)
            except FrameError as exc:
                self._fail(exc)
                return
            if messages is not None:
                if messages:
                    self._hand_over(messages)
                return
        self._decoder.feed(data)
        if self._on_messages is None:
            if self._decoder.pending > PREAUTH_BUFFER:
                self._pause_reading()
            self._wake_inbox()
            return
        if self._resume is None:
            self._decode()

    def _decode(self) -> None:
        """Decode one budget's worth and hand it over; if more waits, stop reading and go
        on in the next turn."""
        self._resume = None
        if self._failure is not None or self._on_messages is None:
            return
        try:
            messages, more = decode_turn(self._decoder)
        except FrameError as exc:
            self._fail(exc)
            return
        if more:
            self._pause_reading()
            self._resume = self._loop.call_soon(self._decode)
        elif self._eof:
            self._loop.call_soon(self._fail, ConnectionClosed("connection closed by the peer"))
        elif self._reading_paused:
            self._reading_paused = False
            if self._transport is not None and not self._closing:
                self._transport.resume_reading()
        if messages:
            self._hand_over(messages)

    def _hand_over(self, messages: list[Frame]) -> None:
        assert self._on_messages is not None
        self.frames_received += len(messages)
        # Frames written while these are handled (replies) leave together, at the end.
        self._receiving = True
        try:
            self._on_messages(messages)
        finally:
            self._receiving = False
            self._flush()

    @property
    def backlogged(self) -> bool:
        """Whether received bytes wait to be decoded in a later turn (reading is paused
        meanwhile): the peer is not silent, this node is behind."""
        return self._resume is not None

    def pause_reading(self) -> None:
        """Stop reading until the link resumes by itself (once it decoded what it holds, or
        once :meth:`start_tls` takes over the stream)."""
        self._pause_reading()

    async def start_tls(self, context: ssl.SSLContext, *, timeout: float) -> None:
        """Run TLS (as the server) over this stream, before any frame: within ``timeout``
        seconds, or raise (an OSError, or TimeoutError)."""
        transport = self._transport
        if transport is None or self._closing:
            raise ConnectionClosed("connection closed")
        secured = await asyncio.wait_for(
            self._loop.start_tls(
                transport, self, context, server_side=True, ssl_handshake_timeout=timeout
            ),
            timeout + 1.0,
        )
        if secured is None:
            raise ConnectionClosed("connection closed during the TLS handshake")
        self._transport = secured
        self._reading_paused = False  # start_tls resumed the stream under TLS
        secured.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None and not self._closing:
            self._reading_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        """The peer closed its side: no more messages once those received are decoded."""
        if self._on_messages is not None and self._resume is not None:
            self._eof = True
            return True  # the transport stays open until they are; then it is closed
        self._fail(ConnectionClosed("connection closed by the peer"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The transport is closed: fail whatever still waits on it."""
        self._closing = True
        self._fail(exc if exc is not None else ConnectionClosed("connection closed"))
        self._pending.clear()
        self._pending_size = 0
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionClosed("connection closed while sending"))
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        """The transport holds more than WRITE_HIGH_WATER bytes."""
        self.paused = True

    def resume_writing(self) -> None:
        """The transport drained below its low-water mark: wake the waiting senders."""
        self.paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- receiving --------------------------------------------------------------------------

    async def receive(self) -> Message:
        """The next message before :meth:`attach` (the handshake reads through this),
        decoded under the pre-authentication limits the decoder was made with.

        Raises FrameError for a bad frame, ConnectionClosed when the peer closed, or the
        OSError that broke the connection.
        """
        while True:
            if self._failure is None or isinstance(self._failure, ConnectionClosed):
                # What came before the end of the stream is still read.
                try:
                    decoded = self._decoder.decode(limit=1)
                except FrameError as exc:
                    self._fail(exc)
                    raise
                if decoded:
                    frame = decoded[0]
                    if isinstance(frame, UndecodableFrame):
                        # Only under an authenticated peer's limits, which the handshake
                        # never reads under: strict all the same.
                        failure = FrameError(f"cannot decode: {frame.problem.text}")
                        self._fail(failure)
                        raise failure
                    return frame
            if self._failure is not None:
                raise self._failure
            self._inbox_waiter = self._loop.create_future()
            try:
                await self._inbox_waiter
            finally:
                self._inbox_waiter = None

    def attach(
        self,
        limits: FrameLimits,
        on_messages: Callable[[list[Frame]], None],
        on_lost: Callable[[Exception], None],
    ) -> None:
        """The peer is authenticated: decode under ``limits`` from now on, and hand
        messages to ``on_messages`` as they are decoded.

        Bytes that came after the handshake are decoded first; if the link is already
        broken, ``on_lost`` is then called.
        """
        self._decoder.limits = limits
        self._on_messages = on_messages
        self._on_lost = on_lost
        self.frames_sent = 0
        if isinstance(self._failure, ConnectionClosed) and self._decoder.pending:
            # The peer closed right after the handshake: what it sent first still counts.
            self._failure = None
            self._eof = True
        if self._failure is not None:
            on_lost(self._failure)
            return
        self._decode()

    def _wake_inbox(self) -> None:
        if self._inbox_waiter is not None and not self._inbox_waiter.done():
            self._inbox_waiter.set_result(None)

    def _fail(self, failure: Exception) -> None:
        if self._failure is not None:
            return
        self._failure = failure
        self._wake_inbox()
        if self._on_lost is not None:
            self._on_lost(failure)

    # -- sending ----------------------------------------------------------------------------

    def write(self, frame: bytes) -> None:
        """Queue one frame, after every frame written before it (see the module doc)."""
        transport = self._transport
        if self._closing or transport is None or transport.is_closing():
            raise ConnectionClosed("connection closed")
        self.frames_sent += 1
        if self._receiving or self._turn is not None:
            self._pending.append(frame)
            self._pending_size += len(frame)
            if self._pending_size >= JOIN_LIMIT:
                self._flush()
                if not self._receiving:
                    self._batch_full = True
            return
        transport.write(frame)
        self._turn = self._loop.call_soon(self._end_turn)

    @property
    def congested(self) -> bool:
        """Whether a sender should :meth:`drain` before writing more."""
        return self.paused or self._batch_full

    async def drain(self) -> None:
        """Wait while the transport holds more than WRITE_HIGH_WATER bytes; after a full
        batch, give the event loop one turn."""
        if self._closing:
            raise ConnectionClosed("connection closed")
        if not self.paused:
            if self._batch_full:
                self._batch_full = False
                await asyncio.sleep(0)
            return
        self._batch_full = False
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            self._drain_waiters.remove(waiter)

    @property
    def joining(self) -> int:
        """Bytes of frames held to be joined into the next write (at most about
        JOIN_LIMIT)."""
        return self._pending_size

    @property
    def queued(self) -> int:
        """Bytes written but not yet handed to the operating system."""
        transport = self._transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        return self._pending_size + buffered

    def _end_turn(self) -> None:
        self._turn = None
        self._flush()

    def _flush(self) -> None:
        if self._pending and not self._closing and self._transport is not None:
            frames = self._pending
            self._pending = []
            self._pending_size = 0
            self._transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    # -- closing ----------------------------------------------------------------------------

    def extra_info(self, name: str) -> Any:
        """The transport's ``get_extra_info(name)`` (peername, sockname, peercert, ...)."""
        return self._transport.get_extra_info(name) if self._transport is not None else None

    def close(self) -> None:
        """Send what is queued, then close; idempotent."""
        if self._closing:
            return
        self._flush()
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is queued."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self, timeout: float) -> None:
        """Wait until the transport is closed; abort it if that takes over ``timeout`` s."""
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), timeout)
        except TimeoutError:
            self.abort()
