"""Length-prefixed msgpack frames: a 4-byte big-endian length, then a msgpack map.

The decoder checks the length prefix against the cap before buffering a byte of payload,
so a peer announcing a 1 GiB frame costs nothing but the connection. Only plain msgpack
values are decoded, plus the extension types registered with the node's codec; never
pickle. Every decode is bounded twice:

- in size, by :class:`FrameLimits`: before authentication frames are tiny
  (:data:`PREAUTH`: 4 KiB, short strings, a few entries per container); after it they are
  sized to ``node.max_frame_size``, with containers holding far fewer entries than bytes;
- in time: :meth:`FrameDecoder.decode` decodes about ``budget`` bytes per call, and a
  frame larger than :data:`SLICE` is decoded piece by piece as its bytes arrive (msgpack's
  streaming unpacker resumes where it stopped), so the caller can give the event loop a
  turn between two calls whatever the frame holds (see ``link.decode_turn``).
"""

from __future__ import annotations

import struct
from typing import Any

import attrs
import msgpack

from pycluster.codec import Codec, CodecError, Limits, may_hold_timestamp, search_timestamps

HEADER = struct.Struct(">I")
PLAIN = Codec()
"""Plain msgpack values only: what the handshake and a node without registered types use."""
SLICE = 32 * 1024
"""Frames up to this many bytes are decoded at once; larger ones in pieces of this size.
32 KiB of the costliest msgpack (one byte per empty container) decodes in about 2 ms."""

SEARCH_SLICE = 16 * 1024
"""Values of a decoded frame searched for a msgpack timestamp per call (a few ms)."""

Message = dict[str, Any]


@attrs.frozen
class FrameLimits:
    """The largest frame, and what one decoded frame may hold."""

    max_frame_size: int
    values: Limits

    @classmethod
    def authenticated(cls, max_frame_size: int) -> FrameLimits:
        """Limits for an authenticated peer with the node's ``max_frame_size``."""
        return cls(max_frame_size, Limits.for_frames(max_frame_size))


PREAUTH = FrameLimits(4096, Limits(max_bytes=1024, max_items=16))
"""Limits before the peer is authenticated: the handshake's messages fit, nothing else."""


class FrameError(Exception):
    """A peer sent something that is not a valid frame; the connection must be closed."""


def encode_frame(message: Message, codec: Codec = PLAIN) -> bytes:
    """One frame holding ``message`` (a map with a string ``t``, the message type)."""
    payload = codec.pack(message)
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Turns a byte stream into messages; raises FrameError on the first bad frame.

    :meth:`feed` only stores bytes; :meth:`decode` decodes. So the limits can change
    between two frames (:attr:`limits`, raised once the peer is authenticated) without a
    frame that arrived early being decoded under the wrong ones.
    """

    def __init__(self, limits: FrameLimits, codec: Codec = PLAIN) -> None:
        self._codec = codec
        self.limits = limits
        self._data = b""
        self._offset = 0
        self._tail = bytearray()
        """Bytes received while ``_data`` still held undecoded ones."""
        self._large: _LargeFrame | None = None

    @property
    def limits(self) -> FrameLimits:
        """The limits frames are decoded under (raised once the peer is authenticated)."""
        return self._limits

    @limits.setter
    def limits(self, limits: FrameLimits) -> None:
        self._limits = limits
        # A frame no longer than every limit cannot break one: msgpack bounds each length
        # by the bytes it is given.
        self._within_limits = min(limits.values.max_bytes, limits.values.max_items)

    @property
    def in_large_frame(self) -> bool:
        """Whether a frame above :data:`SLICE` bytes is partly decoded."""
        return self._large is not None

    @property
    def pending(self) -> int:
        """Bytes received and not yet decoded."""
        return len(self._data) - self._offset + len(self._tail)

    def feed(self, data: bytes) -> None:
        """Add received bytes (decoded by later :meth:`decode` calls)."""
        if self._offset >= len(self._data) and not self._tail:
            self._data, self._offset = data, 0
        else:
            self._tail += data

    def decode(self, budget: int = SLICE, limit: int | None = None) -> list[Message]:
        """The messages of the next whole frames, decoding about ``budget`` bytes at most
        (one frame more than that is never decoded in one call, and a large frame only a
        :data:`SLICE` of it), and at most ``limit`` messages. Call again while
        :attr:`ready` is True."""
        messages: list[Message] = []
        spent = 0
        while spent < budget and (limit is None or len(messages) < limit):
            if self._tail and len(self._data) - self._offset < SLICE + HEADER.size:
                self._join()
            data, offset = self._data, self._offset
            available = len(data) - offset
            large = self._large
            if large is not None and large.searching:
                spent += SLICE  # values looked at, each at least a byte
                message = large.search(SEARCH_SLICE)
                if message is not None:
                    self._large = None
                    messages.append(message)
                continue
            if large is not None:
                take = min(large.remaining, available, SLICE)
                if take == 0:
                    break
                self._offset = offset + take
                spent += take
                message = large.feed(data[offset : offset + take])
                if message is not None:
                    self._large = None
                    messages.append(message)
                continue
            if available < HEADER.size:
                break
            (size,) = HEADER.unpack_from(data, offset)
            if size > self.limits.max_frame_size:
                raise FrameError(
                    f"frame of {size} bytes exceeds the {self.limits.max_frame_size} cap"
                )
            if size > SLICE:
                self._offset = offset + HEADER.size
                self._large = _LargeFrame(size, self._codec, self.limits.values)
                continue
            end = offset + HEADER.size + size
            if end > len(data):
                if not self._tail:
                    break
                self._join()
                continue
            try:
                message = self._codec.unpack(
                    data[offset + HEADER.size : end],
                    None if size <= self._within_limits else self.limits.values,
                )
            except CodecError as exc:
                raise FrameError(str(exc)) from None
            if type(message) is not dict or type(message.get("t")) is not str:
                _checked(message)  # raises FrameError
            messages.append(message)
            self._offset = end
            spent += HEADER.size + size
        return messages

    @property
    def ready(self) -> bool:
        """Whether :meth:`decode` would find more to decode right now (it stopped at its
        budget or limit, not for lack of bytes)."""
        available = len(self._data) - self._offset + len(self._tail)
        if self._large is not None:
            return self._large.searching or available > 0
        if available < HEADER.size:
            return False
        self._join()
        size: int = HEADER.unpack_from(self._data, self._offset)[0]
        return size > SLICE or available >= HEADER.size + size

    def _join(self) -> None:
        """Move the tail behind the undecoded part of ``_data`` (copies at most what is
        undecoded: a large frame never waits whole in the buffer)."""
        if self._tail:
            self._data = bytes(self._data[self._offset :]) + bytes(self._tail)
            self._offset = 0
            self._tail = bytearray()


class _LargeFrame:
    """One frame above :data:`SLICE` bytes, decoded as its pieces are fed; then, if its
    bytes hold what may start a msgpack timestamp, searched for one a slice at a time."""

    def __init__(self, size: int, codec: Codec, limits: Limits) -> None:
        self.size = size
        self.remaining = size
        self._unpacker = codec.unpacker(size, limits)
        self._marked = False
        self._last = b""
        self._value: Any = None
        self._unsearched: list[Any] = []

    @property
    def searching(self) -> bool:
        """Whether the value is whole and still being searched for timestamps."""
        return bool(self._unsearched)

    def feed(self, piece: bytes) -> Message | None:
        """Add the next piece; return the message once the frame is whole (and searched)."""
        self.remaining -= len(piece)
        # A timestamp's marker may straddle two pieces: look across the seam too.
        self._marked = self._marked or may_hold_timestamp(self._last + piece[:2])
        self._marked = self._marked or may_hold_timestamp(piece)
        self._last = piece[-2:]
        self._unpacker.feed(piece)
        try:
            value = self._unpacker.unpack()
        except msgpack.OutOfData:
            if self.remaining == 0:
                raise FrameError("truncated msgpack value in a frame") from None
            return None
        except CodecError as exc:
            raise FrameError(str(exc)) from None
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise FrameError(f"undecodable ({type(exc).__name__})") from None
        if self.remaining or self._unpacker.tell() != self.size:
            raise FrameError("bytes after the value in a frame")
        message = _checked(value)
        if not self._marked:
            return message
        self._value, self._unsearched = message, [message]
        return None

    def search(self, budget: int) -> Message | None:
        """Look at up to ``budget`` more values; the message once none holds a timestamp."""
        try:
            done = search_timestamps(self._unsearched, budget)
        except CodecError as exc:
            raise FrameError(str(exc)) from None
        if not done:
            return None
        message: Message = self._value
        self._value = None
        return message


def _checked(message: object) -> Message:
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise FrameError("a frame must hold a map with a string 't' (message type)")
    return message
