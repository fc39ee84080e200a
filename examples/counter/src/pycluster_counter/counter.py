"""The Counter: an Agent holding a number, registered once in the cluster as "counter"."""

from __future__ import annotations

from typing import Any

from pycluster import Actor

NAME = "counter"
"""The cluster-wide name the service registers its Counter under."""


class Counter(Actor):
    """An Agent holding a number: ``increment`` adds one, ``value`` reads it."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    async def handle_call(self, message: Any) -> Any:
        if message == "increment":
            self.value += 1
        return self.value
