"""The transport between nodes: frames, the cookie handshake, and (to come) TCP and ticks.

The protocol logic here is sans-I/O: it takes bytes or messages and returns decisions, so
it is tested without sockets; the asyncio code that moves the bytes stays thin.
"""

from pycluster.transport.frames import FrameDecoder, FrameError, encode_frame
from pycluster.transport.handshake import PROTOCOL_VERSION, Handshake, HandshakeError

__all__ = [
    "PROTOCOL_VERSION",
    "FrameDecoder",
    "FrameError",
    "Handshake",
    "HandshakeError",
    "encode_frame",
]
