"""The registry API every node offers as ``node.registry``."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from pycluster.actors import Actor, RestartPolicy
from pycluster.registry.backend import RegistryBackend
from pycluster.registry.refs import ActorRef

if TYPE_CHECKING:
    from pycluster.node import Node

log = logging.getLogger("pycluster.registry")


class AlreadyRegistered(Exception):
    """The name is taken; ``ref`` is the actor holding it."""

    def __init__(self, name: str, ref: ActorRef) -> None:
        super().__init__(f"{name!r} is already registered to {ref}")
        self.name = name
        self.ref = ref


class AlreadyStarted(AlreadyRegistered):
    """``spawn`` found the name taken: ``ref`` is the running actor (Elixir's
    ``{:error, {:already_started, pid}}``)."""

    def __init__(self, name: str, ref: ActorRef) -> None:
        Exception.__init__(self, f"{name!r} is already started as {ref}")
        self.name = name
        self.ref = ref


class NotRegistered(LookupError):
    """No actor is registered under that name."""


class Registry:
    """Cluster-unique names for actors, and process groups.

    ``whereis``, ``registered`` and ``members`` are local reads; ``spawn`` and
    ``register`` are claims the backend arbitrates (they raise rather than succeed
    silently when the claim cannot complete).
    """

    def __init__(self, node: Node, backend: RegistryBackend) -> None:
        self._node = node
        self.backend = backend
        backend.on_lost = self._lost

    async def spawn(
        self,
        name: str,
        cls: type[Actor],
        *args: Any,
        policy: RestartPolicy | None = None,
        timeout: float = 5.0,
        **kwargs: Any,
    ) -> ActorRef:
        """Start ``cls(*args, **kwargs)`` on this node as ``name``, unique in the cluster.

        Raises AlreadyStarted (with the running actor's ref) if the name is taken
        anywhere, ClaimFailed if the claim cannot complete within ``timeout``. The actor's
        code runs only once the claim is won.
        """
        actors = self._node.actors
        ref = actors.allocate()
        holder = await self.backend.claim(name, ref, timeout)
        if holder is not None:
            raise AlreadyStarted(name, holder)
        try:
            actors.spawn(cls, *args, name=name, policy=policy, ref=ref, **kwargs)
        except BaseException:
            await self.backend.release(name, ref)
            raise
        actors.on_end(ref, lambda reason: self._released(name, ref))
        return ref

    async def register(self, name: str, ref: ActorRef, timeout: float = 5.0) -> None:
        """Register an existing actor as ``name``; AlreadyRegistered if taken."""
        holder = await self.backend.claim(name, ref, timeout)
        if holder is not None:
            raise AlreadyRegistered(name, holder)

    async def unregister(self, name: str) -> None:
        """Drop this node's registration of ``name`` (the actor keeps running)."""
        ref = self.backend.whereis(name)
        if ref is not None and ref.node == self._node.name:
            await self.backend.release(name, ref)

    def whereis(self, name: str) -> ActorRef | None:
        """The actor registered as ``name``, or None: a local read, no network."""
        return self.backend.whereis(name)

    def registered(self) -> dict[str, ActorRef]:
        """Every registered name and its actor."""
        return self.backend.registered()

    async def join(self, group: str, ref: ActorRef) -> None:
        """Add ``ref`` to process group ``group``."""
        await self.backend.join(group, ref)

    async def leave(self, group: str, ref: ActorRef) -> None:
        """Remove ``ref`` from ``group``."""
        await self.backend.leave(group, ref)

    def members(self, group: str) -> list[ActorRef]:
        """Members of ``group`` on every node: a local read."""
        return self.backend.members(group)

    async def call(self, target: str | ActorRef, message: Any, timeout: float = 5.0) -> Any:
        """Call the actor registered as ``target`` (or the ref ``target``)."""
        return await self._node.actors.call(self._resolve(target), message, timeout)

    async def cast(self, target: str | ActorRef, message: Any) -> None:
        """Cast to the actor registered as ``target`` (or the ref ``target``)."""
        await self._node.actors.cast(self._resolve(target), message)

    def _resolve(self, target: str | ActorRef) -> ActorRef:
        if isinstance(target, ActorRef):
            return target
        ref = self.backend.whereis(target)
        if ref is None:
            raise NotRegistered(target)
        return ref

    def _released(self, name: str, ref: ActorRef) -> None:
        task = asyncio.ensure_future(self.backend.release(name, ref))
        task.add_done_callback(_log_failure)

    def _lost(self, name: str, ref: ActorRef, reason: str) -> None:
        if ref.node != self._node.name:
            return
        task = asyncio.ensure_future(self._node.actors.stop(ref, reason))
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        if not isinstance(exc, LookupError):
            log.error("registry housekeeping failed: %s", exc)
