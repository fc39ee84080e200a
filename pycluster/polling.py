"""Polling with backoff, the one mechanism every polling strategy shares.

:class:`PollSchedule` is the pure part: told how each attempt went, it says how long to
wait before the next. :func:`poll` is the thin loop around it: attempt, ask the schedule,
sleep through the topology (so shutdown wakes it at once), again.

The schedule has one jitter rule: **every delay is cut by a random fraction of up to**
``jitter`` (20 % by default), so nodes started together do not poll in step, and no delay
ever exceeds its nominal value.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Protocol

JITTER = 0.2
"""The fraction a delay may be cut by, at most (the built-in strategies all use it)."""
FIRST_RETRY = 0.2
"""Seconds before the first quick retry, by default."""


class PollSchedule:
    """When to attempt again: after ``interval`` seconds once an attempt succeeded; after
    a failure, ``first`` seconds, then twice as long after each further failure, up to
    ``longest`` (default: ``interval``).

    A new schedule starts as after a failure, so while a cluster forms (peers not up yet)
    the first attempts come quickly: 0.2 s, 0.4 s, 0.8 s... A success resets the
    backoff: the next failure is retried after ``first`` again. Every delay is cut by a
    random fraction of up to ``jitter``; delays therefore lie between
    ``(1 - jitter) * min(first, longest)`` and ``max(interval, longest)``.
    """

    def __init__(
        self,
        interval: float,
        *,
        first: float = FIRST_RETRY,
        longest: float | None = None,
        jitter: float = JITTER,
        rng: random.Random | None = None,
    ) -> None:
        longest = interval if longest is None else longest
        if not (interval > 0 and first > 0 and longest > 0):
            raise ValueError("interval, first and longest must be positive")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be at least 0 and below 1")
        self.interval = interval
        self.first = min(first, longest)
        self.longest = longest
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._next = self.first

    def succeeded(self) -> float:
        """The delay after a successful attempt (``interval``, jittered); resets the
        backoff."""
        self.reset()
        return self._jittered(self.interval)

    def failed(self) -> float:
        """The delay after a failed attempt (jittered); the next one is twice as long,
        up to ``longest``."""
        delay = self._next
        self._next = min(delay * 2, self.longest)
        return self._jittered(delay)

    def reset(self) -> None:
        """Start the backoff again from ``first`` (after a success, or news)."""
        self._next = self.first

    def _jittered(self, delay: float) -> float:
        return delay * (1 - self._rng.uniform(0, self.jitter))


class Sleeper(Protocol):
    """What :func:`pycluster.poll` sleeps through: a :class:`~pycluster.Topology`."""

    async def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``; False as soon as the node shuts down."""
        ...  # pragma: no cover


async def poll(
    topology: Sleeper, attempt: Callable[[], Awaitable[bool]], schedule: PollSchedule
) -> None:
    """Call ``attempt`` until the node shuts down.

    ``attempt`` returns True when it succeeded (the next comes after the schedule's
    ``interval``) and False when it should be retried sooner (the lookup failed, or
    nodes it listed are not connected yet). Returns when ``topology.sleep`` says the node
    is shutting down; an exception from ``attempt`` propagates (a strategy crash).
    """
    while True:
        delay = schedule.succeeded() if await attempt() else schedule.failed()
        if not await topology.sleep(delay):
            return
