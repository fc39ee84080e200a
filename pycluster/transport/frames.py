"""Length-prefixed msgpack frames: a 4-byte big-endian length, then a msgpack map.

The decoder checks the length prefix against the cap before buffering a byte of payload,
so a peer announcing a 1 GiB frame costs nothing but the connection. Only plain msgpack
values are decoded, plus the extension types registered with the node's codec; never
pickle.
"""

from __future__ import annotations

import struct
from typing import Any

from pycluster.codec import Codec, CodecError

HEADER = struct.Struct(">I")
PLAIN = Codec()
"""Plain msgpack values only: what the handshake and a node without registered types use."""


class FrameError(Exception):
    """A peer sent something that is not a valid frame; the connection must be closed."""


def encode_frame(message: dict[str, Any], codec: Codec = PLAIN) -> bytes:
    """One frame holding ``message`` (a map with a string ``t``, the message type)."""
    payload = codec.pack(message)
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Turns a byte stream into messages; raises FrameError on the first bad frame."""

    def __init__(self, max_frame_size: int, codec: Codec = PLAIN) -> None:
        self.max_frame_size = max_frame_size
        self._codec = codec
        self._buffer = bytearray()
        self._needed = HEADER.size
        """Bytes the buffer must hold before the next frame is whole."""

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add received bytes; return the messages of every frame they complete."""
        # Frames are cut straight out of ``data``; only an incomplete tail is kept over,
        # and a large frame arriving in pieces is not looked at again until it is whole.
        buffer = data
        if self._buffer:
            self._buffer += data
            if len(self._buffer) < self._needed:
                return []
            buffer = bytes(self._buffer)
        messages = []
        offset = 0
        available = len(buffer)
        unpack = self._codec.unpack
        try:
            while available - offset >= HEADER.size:
                (size,) = HEADER.unpack_from(buffer, offset)
                if size > self.max_frame_size:
                    raise FrameError(f"frame of {size} bytes exceeds the {self.max_frame_size} cap")
                end = offset + HEADER.size + size
                if end > available:
                    break
                message = unpack(buffer[offset + HEADER.size : end])
                if not isinstance(message, dict) or not isinstance(message.get("t"), str):
                    raise FrameError("a frame must hold a map with a string 't' (message type)")
                messages.append(message)
                offset = end
        except CodecError as exc:
            raise FrameError(str(exc)) from None
        if offset < available:
            self._buffer = bytearray(buffer[offset:])
            self._needed = HEADER.size
            if available - offset >= HEADER.size:
                self._needed += HEADER.unpack_from(buffer, offset)[0]
        elif self._buffer:
            self._buffer = bytearray()
        return messages
