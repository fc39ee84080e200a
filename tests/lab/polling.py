"""Waiting for a condition with a deadline: the one way tests, the lab and the benchmarks
wait for something to become true (never a bare sleep standing in for it)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


class NotWithin(AssertionError, TimeoutError):
    """The condition did not hold in time: a failed assertion to a test, a timeout to
    code that waits (a benchmark)."""


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 5.0,
    what: str = "condition",
    interval: float = 0.005,
) -> float:
    """Poll ``condition`` (a function, or a coroutine function) every ``interval`` seconds
    until it holds; return time.monotonic() when it first did.

    Raises :class:`NotWithin`, saying ``what`` was awaited, after ``timeout`` seconds.
    ``interval`` 0 checks on every turn of the event loop (for measuring).
    """
    deadline = time.monotonic() + timeout
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise NotWithin(f"not within {timeout}s: {what}")
        await asyncio.sleep(interval)
