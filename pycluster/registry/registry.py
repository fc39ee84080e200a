"""The registry API every node offers as ``node.registry``.

Its mailbox ``$names`` answers clients' requests (spawn here, call by name, what is
registered, what runs) and carries ring placement's; both are in
:mod:`~pycluster.registry.messages`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Literal

from pycluster.actors import Actor, ActorRestartPolicy, Actors
from pycluster.actors.actor import actor_class, class_path
from pycluster.actors.ref import ActorRef
from pycluster.registry.backend import RegistryBackend
from pycluster.registry.errors import AlreadyRegistered, AlreadyStarted, NotRegistered
from pycluster.registry.messages import (
    NAMES_MAILBOX,
    AlreadyRunning,
    CallRequest,
    MalformedMessage,
    RegisteredRequest,
    RunningRequest,
    Spawned,
    SpawnRequest,
    decode_names_request,
    decode_spawn_answer,
)
from pycluster.registry.placement import RingPlacement
from pycluster.registry.refusals import Refusals
from pycluster.transport.waist import Transport

log = logging.getLogger("pycluster.registry")


class Registry:
    """Cluster-unique names for actors, and process groups.

    ``whereis``, ``registered`` and ``members`` are local reads; ``spawn`` and
    ``register`` are claims the backend arbitrates (they raise rather than succeed
    silently when the claim cannot complete).
    """

    def __init__(self, node: Transport, actors: Actors, backend: RegistryBackend) -> None:
        self._node = node
        self._actors = actors
        self.backend = backend
        backend.on_lost = self._lost
        self._refusals = Refusals(node)
        self.ring = RingPlacement(node, actors, self, self._refusals)
        """Ring-placed actors (``spawn(..., placement="ring")``)."""
        backend.on_changed = self.ring.registry_changed
        node.register_mailbox(NAMES_MAILBOX, self._on_request)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start replicating and placing ring actors (the transport is started)."""
        await self.backend.start()
        self.ring.start_sweeping()

    async def drain(self, timeout: float) -> None:
        """Tell peers this node leaves and move its ring actors away, within ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await self.ring.drain(timeout)

    async def stop(self) -> None:
        """Stop the backend: this node's names are released."""
        await self.backend.stop()

    def ready(self) -> bool:
        """Whether this node has merged the registry of every peer connected now."""
        return self.backend.synced()

    def status(self) -> dict[str, Any]:
        """The ``registry`` object of ``/status``."""
        return self.backend.status()

    async def spawn(
        self,
        name: str,
        cls: type[Actor],
        *args: Any,
        on: str | None = None,
        placement: Literal["here", "ring"] = "here",
        policy: ActorRestartPolicy | None = None,
        timeout: float = 5.0,
        **kwargs: Any,
    ) -> ActorRef:
        """Start ``cls(*args, **kwargs)`` as ``name``, unique in the cluster, on this node
        (or on node ``on``, which must be able to import ``cls``).

        With ``placement="ring"`` the actor runs on the node a consistent hash of its name
        picks, moves (``handoff()`` -> ``resume(state)``) when nodes join or leave, and is
        restarted on its new owner if its node dies; ``cls`` must then be importable on
        every node, and its arguments msgpack values.

        Raises AlreadyStarted (with the running actor's ref) if the name is taken
        anywhere, ClaimFailed if the claim cannot complete within ``timeout``. The actor's
        code runs only once the claim is won.
        """
        if placement == "ring":
            if on is not None:
                raise ValueError("spawn takes either on= or placement='ring', not both")
            return await self.ring.spawn(name, cls, args, kwargs, policy, timeout)
        if placement != "here":
            raise ValueError(f"unknown placement {placement!r}: 'here' or 'ring'")
        if on is not None and self._node.canonical(on) != self._node.name:
            return await self._spawn_on(on, name, cls, args, kwargs, timeout)
        return await self.spawn_here(name, cls, args, kwargs, policy, timeout)

    async def spawn_here(
        self,
        name: str,
        cls: type[Actor],
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        policy: ActorRestartPolicy | None,
        timeout: float,
        state: tuple[Any, ...] = (),
    ) -> ActorRef:
        """Claim ``name`` and start the actor on this node (``state``: a one-element tuple
        holding what ``handoff()`` returned elsewhere, to ``resume`` from)."""
        actors = self._actors
        ref = actors.allocate()
        holder = await self.backend.claim(name, ref, timeout)
        if holder is not None:
            raise AlreadyStarted(name, holder)
        try:
            extra = {"state": state[0]} if state else {}
            actors.spawn(cls, *args, name=name, policy=policy, ref=ref, **extra, **kwargs)
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
        return await self._actors.call(self._resolve(target), message, timeout)

    async def cast(self, target: str | ActorRef, message: Any) -> None:
        """Cast to the actor registered as ``target`` (or the ref ``target``)."""
        await self._actors.cast(self._resolve(target), message)

    async def call_via(self, node: str, name: str, message: Any, timeout: float = 5.0) -> Any:
        """Have ``node`` call the actor registered as ``name`` (for hidden clients, which
        hold no copy of the registry)."""
        request = CallRequest(name, message, timeout).to_wire()
        return await self._node.call(node, NAMES_MAILBOX, request, timeout + 1)

    async def _spawn_on(
        self,
        node: str,
        name: str,
        cls: type[Actor],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float,
    ) -> ActorRef:
        request = SpawnRequest(name, class_path(cls), args, kwargs, timeout).to_wire()
        answer = await self._node.call(node, NAMES_MAILBOX, request, timeout + 1)
        try:
            decoded = decode_spawn_answer(answer)
        except ValueError as exc:
            raise TypeError(f"{node} answered a remote spawn: {exc}") from None
        if isinstance(decoded, AlreadyRunning):
            raise AlreadyStarted(name, decoded.ref)
        if not isinstance(decoded, Spawned):
            raise TypeError(f"{node} answered a remote spawn: {decoded}")
        return decoded.ref

    def _on_request(self, sender: str, body: Any) -> Any:
        try:
            request = decode_names_request(body)
        except MalformedMessage as exc:
            if not self._refusals.closing(sender):
                self._refusals.refuse(sender, "malformed", str(exc))
            if exc.expects_answer:
                raise  # a call: the caller is told, not answered None
            return None
        match request:
            case SpawnRequest():
                return self._remote_spawn(request, actor_class(request.cls))
            case CallRequest(name, message, timeout):
                return self.call(name, message, timeout)
            case RegisteredRequest():
                return self.registered()
            case RunningRequest():
                return self._actors.names()
            case _:
                return self.ring.on_request(sender, request)

    async def _remote_spawn(self, request: SpawnRequest, cls: type[Actor]) -> Any:
        try:
            ref = await self.spawn(
                request.name,
                cls,
                *request.args,
                placement=request.placement,
                timeout=request.timeout,
                **request.kwargs,
            )
        except AlreadyStarted as exc:
            return AlreadyRunning(exc.ref).to_wire()
        return Spawned(ref).to_wire()

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
        task = asyncio.ensure_future(self._actors.stop(ref, reason))
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        if not isinstance(exc, LookupError):
            log.error("registry housekeeping failed: %s", exc)
