"""A hand-driven peer: raw bytes, or the real handshake and frames, over one TCP stream.

Tests use it to send what a well-behaved node never would (garbage, a huge length prefix,
a truncated frame, an unknown message after authenticating, an oversized frame) from a
loopback address of their choosing.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

from pycluster.transport import FrameDecoder, FrameLimits, Handshake, cookie_key, encode_frame
from pycluster.transport.frames import UndecodableFrame

READ_SIZE = 65536


class RawPeer:
    """One TCP connection to a node, driven by the test."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame_size: int = 16 * 1024 * 1024,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(FrameLimits.authenticated(max_frame_size))
        self._received: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, host: str, port: int, *, source: str, timeout: float = 5.0) -> RawPeer:
        """Connect to ``host:port`` from address ``source``."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=(source, 0)), timeout
        )
        return cls(reader, writer)

    async def handshake(
        self,
        *,
        me: str,
        peer: str,
        cookie: str,
        hidden: bool = False,
        timeout: float = 5.0,
    ) -> None:
        """Authenticate as node ``me`` to ``peer``; raises HandshakeError if refused (a
        wrong ``cookie`` is refused by the node, which then proves nothing itself)."""
        handshake = Handshake(
            role="dialer",
            me=me,
            peer=peer,
            keys=[cookie_key(cookie)],
            hidden=hidden,
            incarnation=secrets.token_bytes(16),
        )
        for message in handshake.start():
            await self.send(message)
        async with asyncio.timeout(timeout):
            while not handshake.done:
                for reply in handshake.receive(await self.receive()):
                    await self.send(reply)

    def write(self, data: bytes) -> None:
        """Queue raw bytes."""
        self._writer.write(data)

    async def send_bytes(self, data: bytes) -> None:
        """Send raw bytes and wait until the kernel took them."""
        self._writer.write(data)
        await self._writer.drain()

    async def send(self, message: dict[str, Any]) -> None:
        """Send one well-formed frame."""
        await self.send_bytes(encode_frame(message))

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next message from the node; ConnectionError if it closed the connection."""
        async with asyncio.timeout(timeout):
            while not self._received:
                data = await self._reader.read(READ_SIZE)
                if not data:
                    raise ConnectionError("the node closed the connection")
                self._decoder.feed(data)
                for frame in self._decoder.decode(budget=1 << 30):
                    if isinstance(frame, UndecodableFrame):
                        raise ConnectionError(f"the node sent what cannot be decoded: {frame}")
                    self._received.append(frame)
        return self._received.pop(0)

    async def receive_until(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message of type ``kind``, skipping others (ticks)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.receive(timeout)
                if message["t"] == kind:
                    return message

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """Read (and discard) until the node closes the connection; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while await self._reader.read(READ_SIZE):
                    pass
        except TimeoutError:
            return False
        except (ConnectionError, OSError):
            pass  # reset by the node: closed all the same
        return True

    async def close(self) -> None:
        """Close our end."""
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
