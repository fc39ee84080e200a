"""One rule for repeated warnings: each key at most once per interval, and few in all."""

from __future__ import annotations

import collections
import time
from collections.abc import Hashable


class Throttle:
    """Decides whether a repeated event is worth a log line.

    A key is admitted at most once per ``interval`` seconds, and at most ``burst`` keys in
    all per interval (keys may come from strangers: source addresses, names). At most
    ``size`` keys are remembered, the least recently admitted forgotten first; every call
    is O(1). :attr:`suppressed` counts what was not admitted since the last admission, so
    the next line can say how many it stands for.
    """

    def __init__(self, interval: float, *, burst: int = 16, size: int = 1024) -> None:
        self.interval = interval
        self.burst = burst
        self.size = size
        self.suppressed = 0
        self._seen: collections.OrderedDict[Hashable, float] = collections.OrderedDict()
        self._window = -interval
        self._admitted = 0

    def admit(self, key: Hashable, now: float | None = None) -> bool:
        """Whether to log ``key`` now."""
        now = time.monotonic() if now is None else now
        last = self._seen.get(key)
        if last is not None and now - last < self.interval:
            self.suppressed += 1
            return False
        if now - self._window >= self.interval:
            self._window, self._admitted = now, 0
        if self._admitted >= self.burst:
            self.suppressed += 1
            return False
        self._admitted += 1
        self._seen[key] = now
        self._seen.move_to_end(key)
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True

    def take_suppressed(self) -> int:
        """How many were not admitted since the last call (then zero again)."""
        count, self.suppressed = self.suppressed, 0
        return count
