"""Errors an application sees when talking to other nodes."""

from __future__ import annotations


class RemoteError(Exception):
    """A handler on another node raised; ``type`` and ``message`` describe what it raised."""

    def __init__(self, node: str, type: str, message: str) -> None:
        super().__init__(f"{type} on {node}: {message}")
        self.node = node
        self.type = type
        self.message = message


class NotConnected(ConnectionError):
    """There is no connection to that node (or it was lost before the reply came)."""
