"""One rule for repeated warnings: each key at most once per interval, and few in all."""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Hashable, Mapping


class Throttle:
    """Decides whether a repeated event is worth a log line.

    A key (a source address, a kind of trouble) is admitted at most once per ``interval``
    seconds, and at most ``burst`` keys in all per interval: keys may come from strangers
    (spoofed addresses), so what they cost is bounded whatever they send. At most ``size``
    keys are remembered, the least recently admitted forgotten first; every call is O(1).
    """

    def __init__(self, interval: float, *, burst: int = 16, size: int = 1024) -> None:
        self.interval = interval
        self.burst = burst
        self.size = size
        self._seen: collections.OrderedDict[Hashable, list[float]] = collections.OrderedDict()
        """key -> [when it was last admitted, repeats not admitted since]"""
        self._window = -interval
        self._admitted = 0

    def admit(self, key: Hashable, now: float | None = None) -> int | None:
        """None to stay quiet about ``key`` now; else log it now, saying it stands for this
        many repeats that were not logged since it last was (0: none)."""
        now = time.monotonic() if now is None else now
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return None
        if now - self._window >= self.interval:
            self._window, self._admitted = now, 0
        if self._admitted >= self.burst:
            if entry is not None:
                entry[1] += 1
            return None
        self._admitted += 1
        repeats = int(entry[1]) if entry is not None else 0
        self._seen[key] = [now, 0]
        self._seen.move_to_end(key)
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return repeats

    def warn(
        self,
        logger: logging.Logger,
        key: Hashable,
        message: str,
        *args: object,
        quiet: int | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        """Log ``message`` as a warning if ``key`` is admitted, saying how many repeats it
        stands for (also as the record's ``repeats`` field); else at level ``quiet`` (None:
        not at all, when strangers set the pace of the repeats). ``extra`` holds the
        record's event fields."""
        repeats = self.admit(key)
        if repeats is None:
            if quiet is not None:
                logger.log(quiet, message, *args, extra=extra)
            return
        if repeats:
            message += f" ({repeats} more since the last report)"
        logger.warning(message, *args, extra={**(extra or {}), "repeats": repeats})

    def __len__(self) -> int:
        """Keys remembered (at most ``size``)."""
        return len(self._seen)
