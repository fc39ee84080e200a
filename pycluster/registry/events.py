"""What the registry tells its listeners: every change this node learns of, whichever node
made it, and a bounded stream of them per consumer.

A consumer that falls behind never slows the registry: its oldest events are dropped, and
the next one it reads is :class:`EventsLost` saying how many.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import attrs

from pycluster.actors.ref import ActorRef


@attrs.frozen(init=False)
class Registered:
    """``name`` now names ``ref`` as this node sees it (also after a metadata update)."""

    name: str
    ref: ActorRef
    meta: Any = attrs.field(default=None, eq=False)

    def __init__(self, name: str, ref: ActorRef, meta: Any = None) -> None:
        # The slots' own setters, not attrs' frozen __init__ (see ActorRef's): one of
        # these per registration on every node.
        _set_name(self, name)
        _set_ref(self, ref)
        _set_meta(self, meta)


_set_name, _set_ref, _set_meta = (
    Registered.__dict__[field.name].__set__ for field in attrs.fields(Registered)
)


@attrs.frozen
class Unregistered:
    """``name`` no longer names ``ref``; ``reason`` is ``"unregistered"``, the actor's end
    reason (``"normal"``, a crash's, ``"name conflict"``...), ``"nodedown"``, or
    ``"resync"`` (the holder's node sent a state without it after reconnecting)."""

    name: str
    ref: ActorRef
    reason: str


@attrs.frozen
class Joined:
    """``ref`` is a member of ``group`` (also after a metadata update)."""

    group: str
    ref: ActorRef
    meta: Any = attrs.field(default=None, eq=False)


@attrs.frozen
class Left:
    """``ref`` is no longer a member of ``group``; ``reason`` as for :class:`Unregistered`
    (``"left"`` for an explicit leave)."""

    group: str
    ref: ActorRef
    reason: str


@attrs.frozen
class NameConflict:
    """Two actors were registered as ``name`` independently (on both sides of a partition,
    or one took it over from the other's frozen node): ``winner`` keeps it, ``loser`` is
    stopped with reason ``"name conflict"``."""

    name: str
    winner: ActorRef
    loser: ActorRef


@attrs.frozen
class EventsLost:
    """The consumer fell behind: ``count`` events before this one were dropped."""

    count: int


RegistryEvent = Registered | Unregistered | Joined | Left | NameConflict
"""One change of the registry."""
Listener = Callable[[Sequence[tuple[str, RegistryEvent]]], None]
"""Called synchronously with the events of one change, or of one peer's batch of changes,
in order, each with its scope (``""``: the default)."""

DEFAULT_BACKLOG = 10_000
"""Events a consumer may fall behind by before the oldest are dropped."""


class EventStream:
    """The events of one ``async with registry.events()`` block, as an async iterator."""

    def __init__(self, backlog: int = DEFAULT_BACKLOG) -> None:
        if backlog < 1:
            raise ValueError("an event stream's backlog is at least 1")
        self._queue: collections.deque[RegistryEvent] = collections.deque()
        self._backlog = backlog
        self._lost = 0
        self._waiter: asyncio.Future[None] | None = None
        """The consumer's, while it waits for an event."""
        self.closed = False

    def put(self, event: RegistryEvent) -> None:
        """Queue ``event`` (dropping the oldest when the consumer is ``backlog`` behind)."""
        queue = self._queue
        if len(queue) >= self._backlog:
            queue.popleft()
            self._lost += 1
        queue.append(event)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def __aiter__(self) -> AsyncIterator[RegistryEvent | EventsLost]:
        return self

    async def __anext__(self) -> RegistryEvent | EventsLost:
        while not self._queue and not self._lost:
            if self.closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if self._lost:
            lost, self._lost = self._lost, 0
            return EventsLost(lost)
        return self._queue.popleft()

    def pending(self) -> int:
        """Events queued and not read yet."""
        return len(self._queue)

    def close(self) -> None:
        """End the iteration once what is queued has been read."""
        self.closed = True
        self._wake()
