"""One timer for all the connections of a node: their ticks and their silence checks.

A connection needs attention only when a tick is due (it sent nothing for a tick
interval) or when its peer's silence may reach the tick timeout. The ticker keeps one
timer, set to the earliest such moment over all connections. When it fires, every
connection whose tick is due within ``early`` seconds sends it then, so the ticks of an
idle node leave together: one wake-up per interval for the whole node, instead of one
per connection (24 a second at 25 nodes, each a task, a timer and a loop turn).

A node whose own loop runs late gives its peers as much more time: see
:attr:`Ticker.patience`.

The timer is set on a grid of ``early`` seconds of the wall clock, at the grid point just
before the moment it is set for (never later). Nodes with the same ``early`` share the
grid, so idle nodes tick at the same moments: a node's peers' ticks arrive together and
are read in a few wake-ups, not one per peer. A wall clock that jumps only moves the grid.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Protocol

TIMER_SLACK = 0.005
"""Seconds an asyncio timer may fire early or late: a tick due within it is sent now."""
PATIENCE_MEMORY = 30.0
"""Seconds a node remembers how late its own loop ran (see :attr:`Ticker.patience`)."""


class Ticking(Protocol):
    """A connection as the ticker sees it."""

    def tick(self, now: float, early: float) -> float:
        """Send a tick if one is due within ``early`` seconds, end the connection if its
        peer was silent too long; return when it next needs attention (``math.inf`` once
        it is closed). Times are ``time.monotonic()``."""
        ...


class Ticker:
    """Wakes the connections added to it when one of them may have something due."""

    def __init__(self, early: float = TIMER_SLACK) -> None:
        self.early = early
        """A tick due within this many seconds of a wake-up is sent with it."""
        self._connections: set[Ticking] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._when = 0.0
        """When the timer was set to fire (``time.monotonic()``)."""
        self.patience = 0.0
        """Seconds of silence a peer is allowed on top of the tick timeout: twice the
        longest this node's own timer fired late in the last :data:`PATIENCE_MEMORY`
        seconds. A loop runs late when its process waits for a CPU or runs long turns;
        its peers, most often busy at the same moment (a burst of work all over the
        cluster, processes sharing CPUs), are then silent for the same reason, not dead.
        About 0 on a node that keeps up."""
        self._patient_since = 0.0

    def __len__(self) -> int:
        return len(self._connections)

    def add(self, connection: Ticking, due: float) -> None:
        """Look after ``connection`` from now on, first at ``due`` (monotonic time).

        A connection's later moments only move away (it sent or heard something since),
        so only a new one can need the timer sooner."""
        self._connections.add(connection)
        self._schedule(due)

    def discard(self, connection: Ticking) -> None:
        """Stop looking after ``connection`` (it closed)."""
        self._connections.discard(connection)
        if not self._connections and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self, due: float) -> None:
        now = time.monotonic()
        # The wake-up moves to the grid point just before ``due`` (all nodes on the same
        # wall-clock grid; asyncio's clock is time.monotonic(), the connections' clock),
        # unless that has passed: then it stays at ``due``, a silence check's moment.
        offset = time.time() - now
        aligned = math.floor((due + offset) / self.early) * self.early - offset
        if aligned > now + TIMER_SLACK:
            due = aligned
        if self._timer is not None:
            if self._timer.when() <= due:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._when = max(due, now + TIMER_SLACK)
        self._timer = loop.call_at(self._when, self._wake)

    def _wake(self) -> None:
        self._timer = None
        now = time.monotonic()
        late = max(0.0, now - self._when)
        if 2 * late >= self.patience or now - self._patient_since > PATIENCE_MEMORY:
            self.patience, self._patient_since = 2 * late, now
        due = math.inf
        for connection in list(self._connections):
            due = min(due, connection.tick(now, self.early))
        if due < math.inf and self._connections:
            self._schedule(due)
