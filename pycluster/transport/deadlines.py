"""Timeouts of outstanding calls, on one event-loop timer for all of them.

A call's round trip takes microseconds and its timeout seconds, so almost no deadline is
ever reached. ``asyncio.timeout()`` or a ``call_later`` per call pays for a timer object,
its heap entry and its cancellation on every call; here a call costs one tuple pushed on a
heap, and entries of calls that ended are dropped lazily (at the latest when the heap holds
twice as many entries as live calls, so memory stays bounded by the calls in flight).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")

EARLY = 1e-3
"""Seconds before its deadline at which an entry counts as due (the loop's timers may fire
a hair early; without this an entry could be re-armed for the instant that just passed)."""
SLACK = 64
"""Dead entries tolerated beyond the live ones before the heap is rebuilt."""


class Deadlines(Generic[K]):
    """Calls ``expire(key)`` once ``timeout`` seconds have passed, unless ``pending(key)``
    is False by then (the call ended: nothing to cancel)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        expire: Callable[[K], None],
        pending: Callable[[K], bool],
    ) -> None:
        self.loop = loop
        """The event loop the deadlines are kept on."""
        self._expire = expire
        self._pending = pending
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._prune_at = SLACK

    def __len__(self) -> int:
        """Entries held, live or not (for tests of the memory bound)."""
        return len(self._heap)

    def add(self, key: K, timeout: float) -> None:
        """Expire ``key`` after ``timeout`` seconds (if it is still pending then)."""
        when = self.loop.time() + timeout
        heapq.heappush(self._heap, (when, next(self._order), key))
        if len(self._heap) > self._prune_at:
            self._prune()
        timer = self._timer
        if timer is None or when < timer.when():
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._fire)

    def _prune(self) -> None:
        self._heap = [entry for entry in self._heap if self._pending(entry[2])]
        heapq.heapify(self._heap)
        self._prune_at = 2 * len(self._heap) + SLACK

    def _fire(self) -> None:
        self._timer = None
        heap = self._heap
        due = self.loop.time() + EARLY
        while heap and (heap[0][0] <= due or not self._pending(heap[0][2])):
            _, _, key = heapq.heappop(heap)
            if self._pending(key):
                self._expire(key)
        if heap:
            self._arm(heap[0][0])
