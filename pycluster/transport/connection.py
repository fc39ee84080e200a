"""One authenticated connection to a peer: messages in and out, ticks, backpressure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from pycluster.codec import Codec
from pycluster.metrics import NodeMetrics
from pycluster.throttle import Throttle
from pycluster.transport.frames import Frame, FrameError, FrameLimits, encode_frame
from pycluster.transport.handshake import PROTOCOL_VERSION
from pycluster.transport.link import WRITE_HIGH_WATER, ConnectionClosed, Link
from pycluster.transport.ticker import TIMER_SLACK, Ticker
from pycluster.transport.wire import (
    LEAVE,
    TICK,
    TOCK,
    Call,
    Leave,
    Message,
    Msg,
    Received,
    Reply,
    Tick,
    Undecodable,
    WireError,
    decode,
)

log = logging.getLogger("pycluster.transport")

_MALFORMED = Throttle(60.0)
"""One warning a minute per peer about messages outside the wire vocabulary."""
CLOSE_GRACE = 1.0
"""Seconds a closing connection gets to send what it queued before it is cut."""

__all__ = ["WRITE_HIGH_WATER", "Connection", "ConnectionClosed"]


class Connection:
    """Messages to and from one authenticated peer, over a :class:`Link`.

    Idle connections send a tick every ``tick_interval`` (and answer a peer's tick with a
    tock, unless they sent something since its previous one); a peer silent for
    ``tick_timeout`` is declared down. ``on_message`` gets every
    message but ticks, tocks and ``leave`` (an :class:`~pycluster.transport.wire.Undecodable`
    too: the connection stays up), in arrival order, decoded under ``limits`` (the peer is
    authenticated), called from the link; ``on_closed`` is called once, with
    the reason. Frames in and out are added to ``metrics`` on each tick round (at least
    every ``tick_interval``) and at close. The connections of a node share one
    ``ticker`` (see :mod:`pycluster.transport.ticker`).
    """

    def __init__(
        self,
        *,
        peer: str,
        incarnation: bytes,
        hidden: bool,
        link: Link,
        version: int = PROTOCOL_VERSION,
        limits: FrameLimits,
        tick_interval: float,
        tick_timeout: float,
        metrics: NodeMetrics,
        codec: Codec,
        on_message: Callable[[Connection, Received], None],
        on_closed: Callable[[Connection, str], None],
        ticker: Ticker,
    ) -> None:
        self.peer = peer
        self.incarnation = incarnation
        self.hidden = hidden
        self.version = version
        """The protocol version negotiated in the handshake (what this connection speaks)."""
        self.closed = False
        self.close_reason: str | None = None
        self.ignored = 0
        """Messages from the peer that were no message of the wire vocabulary."""
        self._link = link
        self._limits = limits
        self._tick_interval = tick_interval
        self._tick_timeout = tick_timeout
        self._metrics = metrics
        self._codec = codec
        self._on_message = on_message
        self._on_closed = on_closed
        self._last_sent = time.monotonic()
        self._tick_heard: float | None = None
        """When the peer's last tick arrived."""
        self._suspected = False
        """Whether the last tick round found the peer silent for the timeout."""
        self._ticker = ticker
        self._published = (0, 0)
        """Frames in and out already added to the node's metrics."""

    def start(self) -> None:
        """Handle the messages read along with the handshake, then every later one; tick."""
        self._ticker.add(self, self._due())
        self._link.attach(self._limits, self._received, self._lost)

    @property
    def last_heard(self) -> float:
        """When bytes last arrived from the peer (``time.monotonic()``): ticks included."""
        return self._link.last_received

    @property
    def congested(self) -> bool:
        """Whether a sender should :meth:`drain` first: the peer has too much unread, or
        the sender wrote a whole batch without giving the event loop a turn."""
        return self._link.congested

    @property
    def queued(self) -> int:
        """Bytes sent to this peer that the operating system has not taken yet."""
        return self._link.queued

    def extra_info(self, name: str) -> Any:
        """The transport's extra info ``name`` (``peername``, ``sockname``, ``peercert``)."""
        return self._link.extra_info(name)

    def send_nowait(self, message: Message) -> None:
        """Queue one message (FIFO with every other send on this connection).

        Raises ConnectionClosed if the connection is closed, TypeError if ``message``
        holds a value the codec cannot encode (then nothing is sent).
        """
        if self.closed:
            raise ConnectionClosed(f"connection to {self.peer} is closed")
        try:
            self._link.write(encode_frame(message.to_wire(), self._codec))
        except ConnectionClosed:
            raise ConnectionClosed(f"connection to {self.peer} is closed") from None
        self._last_sent = time.monotonic()

    async def drain(self) -> None:
        """Wait while the peer has too much unread (more than WRITE_HIGH_WATER bytes); after
        a whole batch written in one turn, give the event loop one turn."""
        try:
            await self._link.drain()
        except ConnectionClosed:
            raise ConnectionClosed(f"connection to {self.peer} lost") from None

    async def close(self, reason: str, *, leave: bool = False) -> None:
        """Close the connection (telling the peer we leave, if ``leave``); idempotent."""
        if self.closed:
            return
        if leave:
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                self.send_nowait(LEAVE)
                if self._link.paused:  # else no yield: "left" is this side's reason
                    await asyncio.wait_for(self._link.drain(), timeout=CLOSE_GRACE)
        self._finish(reason)
        await self._link.wait_closed(CLOSE_GRACE)

    def _finish(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._publish()
        self._ticker.discard(self)
        self._link.close()
        self._on_closed(self, reason)

    def _received(self, messages: list[Frame]) -> None:
        try:
            for message in messages:
                if self.closed:
                    return
                try:
                    received = decode(message)
                except WireError as exc:
                    self.ignored += 1
                    self._metrics.messages_ignored.inc()
                    _MALFORMED.warn(
                        log,
                        self.peer,
                        "ignored a %s from %s",
                        exc,
                        self.peer,
                        quiet=logging.DEBUG,
                    )
                    continue
                kind = type(received)
                if kind is Msg or kind is Call or kind is Reply:
                    self._on_message(self, received)
                elif kind is Tick:
                    # Answered, so a peer with a shorter tick timeout than ours (a hidden
                    # client with the default, a node configured apart) hears from us
                    # often enough: unless we sent something since its previous tick,
                    # which it has heard (the peer then never waits two of its tick
                    # intervals for us, within its timeout of three).
                    previous, self._tick_heard = self._tick_heard, time.monotonic()
                    if previous is None or self._last_sent <= previous:
                        with contextlib.suppress(ConnectionClosed):
                            self.send_nowait(TOCK)
                elif kind is Leave:
                    self._finish("left")
                elif kind is Undecodable:
                    self._on_message(self, received)
        except Exception as exc:
            # A bug in a handler: the messages behind it would be lost in silence, so the
            # connection ends here (the peer reconnects and resynchronises).
            log.exception("handling a message from %s failed", self.peer)
            self._finish(f"internal error: {exc.__class__.__name__}")

    def _lost(self, failure: Exception) -> None:
        if isinstance(failure, FrameError):
            log.warning("closing the connection to %s: %s", self.peer, failure)
            self._finish(f"bad frame: {failure}")
        elif isinstance(failure, ConnectionClosed):
            self._finish("connection closed by the peer")
        else:
            self._finish(f"connection lost: {failure.__class__.__name__}")

    def _publish(self) -> None:
        """Add the frames counted since the last time to the node's metrics."""
        counted = (self._link.frames_received, self._link.frames_sent)
        published, self._published = self._published, counted
        if counted[0] > published[0]:
            self._metrics.frames_in.inc(counted[0] - published[0])
        if counted[1] > published[1]:
            self._metrics.frames_out.inc(counted[1] - published[1])

    def tick(self, now: float, early: float) -> float:
        """The ticker's call (see :class:`~pycluster.transport.ticker.Ticking`): end the
        connection if the peer was silent for the tick timeout (and the ticker's
        patience), else tick if nothing was sent for the tick interval (less ``early``);
        when to look again."""
        if self.closed:
            return math.inf
        self._publish()
        silent = 0.0 if self._link.backlogged else now - self._link.last_received
        allowed = self._tick_timeout + self._ticker.patience
        if silent > allowed and self._suspected:
            self._finish(f"net tick timeout ({silent:.1f}s silent)")
            return math.inf
        if now - self._last_sent >= self._tick_interval - max(early, TIMER_SLACK):
            with contextlib.suppress(ConnectionClosed):
                self.send_nowait(TICK)
        if silent > allowed:
            # This call may come late, after a stall of this node's own loop, before the
            # loop has read what the peer sent meanwhile: the verdict waits for the next
            # wake-up, which comes after the loop has polled its sockets once more.
            self._suspected = True
            return now
        self._suspected = False
        return self._due()

    def _due(self) -> float:
        """When a tick is next due or the peer's silence may reach the timeout (and the
        ticker's patience)."""
        return min(
            self._last_sent + self._tick_interval,
            self._link.last_received + self._tick_timeout + self._ticker.patience + TIMER_SLACK,
        )
