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

Before authentication every frame is decoded strictly (string keys, and whatever cannot
be decoded is a :class:`FrameError`). After it, a frame is length-prefixed, so a value
inside it that this node cannot decode (an extension code it did not register, a decoder
that raised, a timestamp) leaves the stream sound: the frame comes out as an
:class:`UndecodableFrame` and only its message fails. A :class:`FrameError` is left for
what breaks the stream or the protocol: a bad length, a frame over the cap, bytes that are
not one msgpack value within the limits, a value that is not a map with a string ``t``.
"""

from __future__ import annotations

import collections
import struct
from typing import Any

import attrs
import msgpack

from pycluster.codec import (
    TIMESTAMP_REFUSED,
    Codec,
    CodecError,
    Limits,
    Problem,
    Reader,
    may_hold_timestamp,
    search_timestamps,
)

HEADER = struct.Struct(">I")
_HEADER_AT = HEADER.unpack_from
_HEADER_SIZE = HEADER.size
PLAIN = Codec()
"""Plain msgpack values only: what the handshake and a node without registered types use."""
SLICE = 32 * 1024
"""Frames up to this many bytes are decoded at once; larger ones in pieces of this size.
32 KiB of the costliest msgpack (one byte per empty container) decodes in about 2 ms."""

SEARCH_SLICE = 16 * 1024
"""Values of a decoded frame searched for a msgpack timestamp per call (a few ms)."""

Message = dict[str, Any]


@attrs.frozen
class UndecodableFrame:
    """A sound frame holding a value this node cannot decode: ``frame`` is the map decoded
    around it (an :class:`~pycluster.codec.Undecoded` where that value was), ``problem``
    says why. Its message fails; the stream goes on."""

    frame: Message
    problem: Problem


Frame = Message | UndecodableFrame
"""What a :class:`FrameDecoder` yields per frame."""


@attrs.frozen
class FrameLimits:
    """The largest frame, what one decoded frame may hold, and whether it comes from an
    authenticated peer (then a value that cannot be decoded fails its message only: an
    :class:`UndecodableFrame`; else the frame is a :class:`FrameError`)."""

    max_frame_size: int
    values: Limits
    authenticated_peer: bool = False

    @classmethod
    def authenticated(cls, max_frame_size: int) -> FrameLimits:
        """Limits for an authenticated peer with the node's ``max_frame_size``."""
        return cls(max_frame_size, Limits.for_frames(max_frame_size), authenticated_peer=True)


PREAUTH = FrameLimits(4096, Limits(max_bytes=1024, max_items=16))
"""Limits before the peer is authenticated: the handshake's messages fit, nothing else,
decoded strictly."""


class FrameError(Exception):
    """A peer sent something that is not a valid frame; the connection must be closed."""


class HttpAnswer(FrameError):
    """Where a frame's length was expected, the peer sent the start of an HTTP response
    (``HTTP/``): it is an HTTP server, such as a node's ``node.http`` port."""


_HTTP = b"HTTP/"
_HTTP_SIZE = HEADER.unpack(_HTTP[:4])[0]
"""The length ``HTTP`` reads as (1213486160): over any frame cap."""


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
        self._small = min(SLICE, limits.max_frame_size)
        """Frames up to this many bytes are decoded whole by :meth:`_whole_frames`."""
        self._reader = self._codec.reader() if limits.authenticated_peer else None

    @property
    def pending(self) -> int:
        """Bytes received and not yet decoded."""
        return len(self._data) - self._offset + len(self._tail)

    def light(self, most: int) -> bool:
        """Whether at most ``most`` bytes wait to be decoded, none of them part of a large
        frame: one :meth:`decode` with a budget of ``most`` or more decodes every whole
        frame among them, so :attr:`ready` is False after it."""
        return self._large is None and len(self._data) - self._offset + len(self._tail) <= most

    def feed(self, data: bytes) -> None:
        """Add received bytes (decoded by later :meth:`decode` calls)."""
        if self._offset >= len(self._data) and not self._tail:
            self._data, self._offset = data, 0
        else:
            self._tail += data

    def decode_read(self, data: bytes) -> list[Frame] | None:
        """:meth:`feed` and :meth:`decode` in one, for a read that arrives with nothing
        waiting to be decoded: the messages of its whole frames (a partial one at its end
        waits for the next read). None, with nothing done, if bytes were waiting."""
        if self._offset < len(self._data) or self._tail or self._large is not None:
            return None
        self._data, self._offset = data, 0
        messages: list[Frame] = []
        spent, starved = self._whole_frames(messages, SLICE)
        if not starved:  # a frame over SLICE bytes: the general loop takes it from there
            messages += self.decode(SLICE - spent)
        return messages

    def decode(self, budget: int = SLICE, limit: int | None = None) -> list[Frame]:
        """The messages of the next whole frames, decoding about ``budget`` bytes at most
        (one frame more than that is never decoded in one call, and a large frame only a
        :data:`SLICE` of it), and at most ``limit`` messages. Call again while
        :attr:`ready` is True."""
        messages: list[Frame] = []
        spent = 0
        if limit is None and self._large is None and not self._tail:
            spent, starved = self._whole_frames(messages, budget)
            if starved:
                return messages
        reader = self._reader
        while spent < budget and (limit is None or len(messages) < limit):
            if self._tail and len(self._data) - self._offset < SLICE + HEADER.size:
                self._join()
            data, offset = self._data, self._offset
            available = len(data) - offset
            large = self._large
            if large is not None and large.replaying:
                spent += SLICE  # a kept piece fed again (each at most a SLICE)
                message = large.replay()
                if message is not None:
                    self._large = None
                    messages.append(message)
                continue
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
                if size == _HTTP_SIZE and data[offset + 4 : offset + 5] in (b"/", b""):
                    raise HttpAnswer("the peer answered HTTP")
                raise FrameError(
                    f"frame of {size} bytes exceeds the {self.limits.max_frame_size} cap"
                )
            if size > SLICE:
                self._offset = offset + HEADER.size
                self._large = _LargeFrame(size, self._codec, reader, self.limits.values)
                continue
            end = offset + HEADER.size + size
            if end > len(data):
                if not self._tail:
                    break
                self._join()
                continue
            # A whole small frame: it, and under no limit the whole ones after it.
            got, starved = self._whole_frames(messages, budget - spent if limit is None else 1)
            spent += got
            if starved and not self._tail:
                break
        return messages

    def _whole_frames(self, messages: list[Frame], budget: int) -> tuple[int, bool]:
        """Decode the whole frames of at most :data:`SLICE` bytes at the start of ``_data``
        (all of a read, most of the time), about ``budget`` bytes of them: the bytes
        spent, and whether it stopped for want of bytes in ``_data`` (a partial frame or
        none). A frame over that size is left to :meth:`decode`'s general loop."""
        data, offset = self._data, self._offset
        stop = len(data)
        small, within, values = self._small, self._within_limits, self._limits.values
        reader = self._reader
        unpack = self._codec.unpack if reader is None else reader.unpack
        spent = 0
        while spent < budget:
            if stop - offset < _HEADER_SIZE:
                self._offset = offset
                return spent, True
            (size,) = _HEADER_AT(data, offset)
            if size > small:
                break
            start = offset + _HEADER_SIZE
            end = start + size
            if end > stop:
                self._offset = offset
                return spent, True
            try:
                message = unpack(data[start:end], None if size <= within else values)
            except CodecError as exc:
                self._offset = offset
                raise FrameError(str(exc)) from None
            if type(message) is not dict or type(message.get("t")) is not str:
                _checked(message)  # raises FrameError
            if reader is not None and reader.problem is not None:
                messages.append(UndecodableFrame(message, reader.problem))
                reader.problem = None
            else:
                messages.append(message)
            spent += end - offset
            offset = end
        self._offset = offset
        return spent, False

    @property
    def ready(self) -> bool:
        """Whether :meth:`decode` would find more to decode right now (it stopped at its
        budget or limit, not for lack of bytes)."""
        available = len(self._data) - self._offset + len(self._tail)
        if self._large is not None:
            return self._large.searching or self._large.replaying or available > 0
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
    bytes hold what may start a msgpack timestamp, searched for one a slice at a time.

    From an authenticated peer (``reader`` given) its pieces are kept until it is whole:
    a map key msgpack cannot make a Python key (a tuple on the sender) stops the first
    pass, and a second one decodes the kept pieces again, a piece per :meth:`replay`,
    building each map itself (see :meth:`Reader.unpacker`)."""

    def __init__(self, size: int, codec: Codec, reader: Reader | None, limits: Limits) -> None:
        self.size = size
        self.remaining = size
        self._reader = reader
        self._limits = limits
        self._unpacker = (
            codec.unpacker(size, limits)
            if reader is None
            else reader.unpacker(size, limits, keys_as_tuples=False)
        )
        self._kept: list[bytes] | None = [] if reader is not None else None
        """Pieces fed so far, while a second pass may need them again."""
        self._replay: collections.deque[bytes] = collections.deque()
        """Kept pieces the second pass has still to be fed (then pieces arriving meanwhile)."""
        self._marked = False
        self._last = b""
        self._value: Any = None
        self._unsearched: list[Any] = []

    @property
    def searching(self) -> bool:
        """Whether the value is whole and still being searched for timestamps."""
        return bool(self._unsearched)

    @property
    def replaying(self) -> bool:
        """Whether a second pass has kept pieces still to decode (see :meth:`replay`)."""
        return bool(self._replay)

    def feed(self, piece: bytes) -> Frame | None:
        """Add the next piece; return the message once the frame is whole (and searched)."""
        self.remaining -= len(piece)
        # A timestamp's marker may straddle two pieces: look across the seam too.
        self._marked = self._marked or may_hold_timestamp(self._last + piece[:2])
        self._marked = self._marked or may_hold_timestamp(piece)
        self._last = piece[-2:]
        if self._replay:
            self._replay.append(piece)  # after the kept ones
            return None
        if self._kept is not None:
            self._kept.append(piece)
        return self._decode(piece)

    def replay(self) -> Frame | None:
        """Feed the second pass the next kept piece; the message once the frame is whole."""
        return self._decode(self._replay.popleft())

    def _decode(self, piece: bytes) -> Frame | None:
        self._unpacker.feed(piece)
        try:
            value = self._unpacker.unpack()
        except msgpack.OutOfData:
            if self.remaining == 0 and not self._replay:
                raise FrameError("truncated msgpack value in a frame") from None
            return None
        except CodecError as exc:
            raise FrameError(str(exc)) from None
        except TypeError:
            if self._kept is None or self._reader is None:  # strict, or already the second
                raise FrameError("undecodable (TypeError)") from None
            self._second_pass(self._reader, self._kept)
            return None
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise FrameError(f"undecodable ({type(exc).__name__})") from None
        if self.remaining or self._replay or self._unpacker.tell() != self.size:
            raise FrameError("bytes after the value in a frame")
        self._kept = None
        message = _checked(value)
        if not self._marked:
            return self._whole(message)
        self._value, self._unsearched = message, [message]
        return None

    def _second_pass(self, reader: Reader, kept: list[bytes]) -> None:
        """A map key stopped the first pass: decode every piece again, maps built here."""
        reader.problem = None  # the first pass stopped midway: this one finds it all again
        self._unpacker = reader.unpacker(self.size, self._limits, keys_as_tuples=True)
        self._replay = collections.deque(kept)
        self._kept = None

    def search(self, budget: int) -> Frame | None:
        """Look at up to ``budget`` more values; the message once none holds a timestamp."""
        try:
            done = search_timestamps(self._unsearched, budget)
        except CodecError as exc:
            if self._reader is None:
                raise FrameError(str(exc)) from None
            self._reader.failed(TIMESTAMP_REFUSED)
            self._unsearched = []
            done = True
        if not done:
            return None
        message: Message = self._value
        self._value = None
        return self._whole(message)

    def _whole(self, message: Message) -> Frame:
        reader = self._reader
        if reader is None or reader.problem is None:
            return message
        problem, reader.problem = reader.problem, None
        return UndecodableFrame(message, problem)


def _checked(message: object) -> Message:
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise FrameError("a frame must hold a map with a string 't' (message type)")
    return message
