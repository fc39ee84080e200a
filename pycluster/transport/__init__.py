"""The transport between nodes: frames, the cookie handshake, links and connections.

The protocol logic (frames, handshake, mesh tie-break, call deadlines) is sans-I/O: it
takes bytes or messages and returns decisions, so it is tested without sockets. The
asyncio code that moves the bytes stays thin: a :class:`~pycluster.transport.link.Link`
is the asyncio Protocol of one TCP or TLS stream, handshake included, and a
:class:`~pycluster.transport.connection.Connection` is an authenticated peer on a link,
with ticks and backpressure.
"""

from pycluster.transport.frames import (
    PREAUTH,
    FrameDecoder,
    FrameError,
    FrameLimits,
    encode_frame,
)
from pycluster.transport.handshake import (
    PROTOCOL_VERSION,
    Handshake,
    HandshakeError,
    cookie_key,
)

__all__ = [
    "PREAUTH",
    "PROTOCOL_VERSION",
    "FrameDecoder",
    "FrameError",
    "FrameLimits",
    "Handshake",
    "HandshakeError",
    "cookie_key",
    "encode_frame",
]
