"""Asking a running node, as a hidden client: its view (``pycluster status``, the demo), or
to leave the cluster (``pycluster leave``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from pycluster.errors import NotConnected
from pycluster.node import STATUS_MAILBOX, Node
from pycluster.nodename import DEFAULT_PORT, NodeNameError, parse_node_name
from pycluster.plugins import load_config


async def ask_status(
    node: str,
    cookie: str | tuple[str, ...],
    *,
    port: int = DEFAULT_PORT,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Connect to ``node`` as a hidden client and return its status.

    ``node`` may be written in any form of the node's name; ``port`` is what a name
    without a port means (the cluster's ``node.port``). The handshake compares names with
    their ports written out, so a name that spells out the node's port works whatever
    ``port`` is. NotConnected says why the node could not be asked when the log cannot:
    when the port answers HTTP (a node's ``node.http`` port, not its cluster port).
    """
    status: dict[str, Any] = await ask(node, cookie, STATUS_MAILBOX, port=port, timeout=timeout)
    return status


LEAVE_MAILBOX = "$leave"
"""A node run by ``pycluster run`` leaves the cluster when called here."""


async def ask_to_leave(
    node: str, cookie: str | tuple[str, ...], *, port: int = DEFAULT_PORT, timeout: float = 5.0
) -> None:
    """Ask ``node`` (run by ``pycluster run``) to leave the cluster gracefully and exit;
    RemoteError if it is a node that takes no such request (an embedded one)."""
    await ask(node, cookie, LEAVE_MAILBOX, port=port, timeout=timeout)


async def ask(
    node: str,
    cookie: str | tuple[str, ...],
    mailbox: str,
    *,
    port: int = DEFAULT_PORT,
    timeout: float = 5.0,
) -> Any:
    """Call ``mailbox`` on ``node`` as a hidden client (see :func:`ask_status`)."""
    config = load_config(
        {"node": {"name": f"pycluster-status-{os.getpid()}@localhost", "port": port}}, env={}
    )
    async with Node(config, cookie=cookie, hidden=True, handshake_timeout=timeout) as client:
        if not await client.connect(node):
            http = await _http_address(node, port, timeout) if _malformed(client) else None
            if http is not None:
                raise NotConnected(
                    f"{http} answers HTTP: that is a node's HTTP port (node.http), "
                    f"not its cluster port (node.port, default {DEFAULT_PORT})"
                )
            raise NotConnected(f"could not connect to {node} (see the log above)")
        return await client.call(node, mailbox, None, timeout=timeout)


def _malformed(client: Node) -> float:
    """How many of ``client``'s handshakes failed on bytes that were not our protocol."""
    value = client.metrics.registry.get_sample_value(
        "pycluster_handshake_failures_total", {"kind": "malformed"}
    )
    return value or 0.0


async def _http_address(node: str, port: int, timeout: float) -> str | None:
    """``node``'s address as ``host:port`` if it answers a plain HTTP request like an
    HTTP server, else None.

    Asked only after a handshake with it failed on bytes that were not our protocol: a
    node's cluster port, which speaks that protocol, is not sent HTTP.
    """
    try:
        target = parse_node_name(node)
    except NodeNameError:
        return None
    host, port = target.host, target.port or port
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"HEAD / HTTP/1.0\r\n\r\n")
                await writer.drain()
                answer = await reader.read(5)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return None
    if answer != b"HTTP/":
        return None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
