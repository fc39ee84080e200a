"""Free ports: the one way tests, the lab and the benchmarks pick a port to listen on."""

from __future__ import annotations

import random
import socket
from collections.abc import Sequence

LASTING_RANGE = (20000, 32000)
"""Where lasting ports are picked: below Linux's ephemeral range (32768-60999 by default),
so that a client socket's automatic source port cannot take one meanwhile."""


def free_port(
    host: str = "127.0.0.1",
    *,
    also: Sequence[str] = (),
    udp: bool = False,
    lasting: bool = False,
) -> int:
    """A TCP port that nothing uses on ``host`` right now, nor on the hosts of ``also``
    (with ``udp``, free for UDP too).

    ``lasting``: one from :data:`LASTING_RANGE`, for a server that keeps its port across
    restarts; otherwise one the kernel hands out (which a client may later get as its
    source port: fine for a port that is listened on at once).
    """
    for _ in range(200):
        port = random.randrange(*LASTING_RANGE) if lasting else _any_port(host)
        kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
        if all(_free(h, port, kind) for h in (host, *also) for kind in kinds):
            return port
    raise RuntimeError(f"no port free on {', '.join((host, *also))}")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _any_port(host: str) -> int:
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _free(host: str, port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(_family(host), kind) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
