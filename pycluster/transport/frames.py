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

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add received bytes; return the messages of every frame they complete."""
        self._buffer += data
        messages = []
        while len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            if size > self.max_frame_size:
                raise FrameError(f"frame of {size} bytes exceeds the {self.max_frame_size} cap")
            end = HEADER.size + size
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            messages.append(self._decode(payload))
        return messages

    def _decode(self, payload: bytes) -> dict[str, Any]:
        try:
            message = self._codec.unpack(payload)
        except CodecError as exc:
            raise FrameError(str(exc)) from None
        if not isinstance(message, dict) or not isinstance(message.get("t"), str):
            raise FrameError("a frame must hold a map with a string 't' (message type)")
        return message
