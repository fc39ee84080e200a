"""The actor base class and how a crashed actor is restarted."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs

if TYPE_CHECKING:
    from pycluster.actors.ref import ActorRef

Restart = Literal["permanent", "transient", "temporary"]


class ActorCalls(Protocol):
    """What an actor can do with other actors, by ref, on any node (the node's
    :class:`~pycluster.actors.runtime.Actors`)."""

    async def call(self, ref: ActorRef, message: Any, timeout: float = 5.0) -> Any:
        """Send ``message`` to the actor and wait for its reply."""
        ...

    async def cast(self, ref: ActorRef, message: Any) -> None:
        """Send ``message`` to the actor; no reply."""
        ...

    async def stop(self, ref: ActorRef, reason: str = "normal", timeout: float = 5.0) -> str:
        """Stop the actor after the message it is handling; its end reason."""
        ...

    async def wait(self, ref: ActorRef) -> str:
        """Wait until the actor has ended; its end reason."""
        ...

    def stop_self(self, ref: ActorRef) -> None:
        """Stop the local actor ``ref`` once its current message is handled."""
        ...


class ActorHost(Protocol):
    """What an actor sees of its node (a :class:`pycluster.node.Node`)."""

    @property
    def name(self) -> str:
        """The node's name."""
        ...

    @property
    def actors(self) -> ActorCalls:
        """The node's actors: ``call``, ``cast``, ``stop``, ``wait`` by ref."""
        ...

    @property
    def registry(self) -> Any:
        """The node's :class:`~pycluster.registry.Registry` (names and groups)."""
        ...

    def nodes(self) -> list[str]:
        """The node's connected peers."""
        ...


class ActorCrashed(Exception):
    """The actor ended by crashing before it could answer."""


@attrs.frozen(kw_only=True)
class ActorRestartPolicy:
    """When a crashed actor is restarted (as in OTP).

    ``permanent``: always restarted, even after a normal stop of its own; ``transient``:
    restarted only after a crash; ``temporary``: never. More than ``max_restarts``
    restarts within ``window`` seconds and the actor stays down (reason ``crashed``).
    """

    restart: Restart = "temporary"
    max_restarts: int = 3
    window: float = 5.0


class Actor:
    """Base class of actors.

    An actor's messages are handled one at a time, in order, on its node's event loop, so
    its state needs no locks; a handler runs as the actor's own task (a call from another
    node to an idle actor starts at once, in the turn it arrives: see "A call to an idle
    actor is answered in the turn it arrives" in the docs). Override :meth:`handle_call`
    (request/reply) and :meth:`handle_cast` (fire-and-forget); :meth:`started` and
    :meth:`stopped` run around its life. An exception raised by a handler crashes the
    actor: the caller gets the exception, and the restart policy decides what happens
    next.

    Actors placed on the hash ring move between nodes: :meth:`handoff` returns the state
    to carry over (msgpack values), :meth:`resume` takes it on the new node.
    """

    ref: ActorRef
    """This actor's reference (set before :meth:`started`)."""
    node: ActorHost
    """The node the actor runs on (a :class:`pycluster.node.Node`)."""
    name: str | None = None
    """The registered name, if any."""
    _runtime: ActorCalls

    async def started(self) -> None:
        """Called before the first message."""

    async def handle_call(self, message: Any) -> Any:
        """Answer a call; the return value is the reply."""
        raise NotImplementedError(f"{type(self).__name__} does not handle calls")

    async def handle_cast(self, message: Any) -> None:
        """Handle a message that expects no reply."""
        raise NotImplementedError(f"{type(self).__name__} does not handle casts")

    async def stopped(self, reason: str) -> None:
        """Called once the actor is stopping, with the reason."""

    def stop(self) -> None:
        """Stop this actor normally once the current message is handled (a ``permanent``
        actor is then restarted, a ``transient`` or ``temporary`` one is not)."""
        self._runtime.stop_self(self.ref)

    def handoff(self) -> Any:
        """The state to carry to the actor's new node when the ring moves it."""
        return None

    def resume(self, state: Any) -> None:
        """Take over the state :meth:`handoff` returned on the old node."""


def class_path(cls: type[Actor]) -> str:
    """``module:qualname`` of an actor class: how other nodes import it."""
    return f"{cls.__module__}:{cls.__qualname__}"


def actor_class(path: object) -> type[Actor]:
    """The Actor subclass at ``module:qualname`` (only Actor subclasses are accepted)."""
    if not isinstance(path, str) or ":" not in path:
        raise ValueError("an actor class is given as 'module:qualname'")
    module_name, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, Actor)):
        raise TypeError(f"{path} is not an Actor class")
    return target
