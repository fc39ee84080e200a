"""Asking a running node for its view, as a hidden client (``pycluster status``, the demo)."""

from __future__ import annotations

import os
from typing import Any

from pycluster.errors import NotConnected
from pycluster.node import STATUS_MAILBOX, Node
from pycluster.nodename import DEFAULT_PORT
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
    ``port`` is.
    """
    config = load_config(
        {"node": {"name": f"pycluster-status-{os.getpid()}@localhost", "port": port}}, env={}
    )
    async with Node(config, cookie=cookie, hidden=True, handshake_timeout=timeout) as client:
        if not await client.connect(node):
            raise NotConnected(f"could not connect to {node} (see the log above)")
        status: dict[str, Any] = await client.call(node, STATUS_MAILBOX, None, timeout=timeout)
        return status
