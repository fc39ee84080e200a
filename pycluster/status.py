"""Asking a running node, as a hidden client: its view (``pycluster status``, the demo), or
to leave the cluster (``pycluster leave``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
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
    ``port`` is. NotConnected says why the node could not be asked (the reason of the
    failed connection: a cookie mismatch, a name not resolved, a port that answers HTTP,
    which is a node's ``node.http`` port, not its cluster port...).
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
    async with hidden_client(node, cookie, port=port, timeout=timeout) as client:
        return await client.call(node, mailbox, None, timeout=timeout)


@contextlib.asynccontextmanager
async def hidden_client(
    node: str,
    cookie: str | tuple[str, ...],
    *,
    port: int = DEFAULT_PORT,
    timeout: float = 5.0,
    role: str = "status",
) -> AsyncIterator[Node]:
    """A hidden client (named ``pycluster-ROLE-PID@localhost``) connected to ``node``,
    stopped when the block ends; NotConnected saying why it could not connect (with a
    word of its own for a node's HTTP port)."""
    config = load_config(
        {"node": {"name": f"pycluster-{role}-{os.getpid()}@localhost", "port": port}}, env={}
    )
    async with Node(config, cookie=cookie, hidden=True, handshake_timeout=timeout) as client:
        failure = await client.transport.dial(node)
        if failure is not None and failure.reason == "http":
            raise NotConnected(
                f"{_address(node, port)} answers HTTP: that is a node's HTTP port "
                f"(node.http), not its cluster port (node.port, default {DEFAULT_PORT})"
            )
        if failure is not None:
            raise NotConnected(f"could not connect to {node}: {failure}")
        yield client


def _address(node: str, port: int) -> str:
    """The address ``node`` is dialled at, as ``host:port``."""
    try:
        target = parse_node_name(node)
    except NodeNameError:
        return node
    host, port = target.host, target.port or port
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
