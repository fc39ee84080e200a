"""The registry API every node offers as ``node.registry``."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from typing import Any, Literal

from pycluster.actors import Actor, Actors, RestartPolicy
from pycluster.actors.ref import ActorRef
from pycluster.registry.backend import RegistryBackend
from pycluster.registry.placement import RingPlacement
from pycluster.registry.refusals import Refusals
from pycluster.transport.waist import Transport

log = logging.getLogger("pycluster.registry")

NAMES_MAILBOX = "$names"


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
        policy: RestartPolicy | None = None,
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
        policy: RestartPolicy | None,
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
        return await self._node.call(
            node, NAMES_MAILBOX, ["call", name, message, timeout], timeout + 1
        )

    async def _spawn_on(
        self,
        node: str,
        name: str,
        cls: type[Actor],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float,
    ) -> ActorRef:
        path = f"{cls.__module__}:{cls.__qualname__}"
        answer = await self._node.call(
            node, NAMES_MAILBOX, ["spawn", name, path, list(args), kwargs, timeout], timeout + 1
        )
        if isinstance(answer, dict) and isinstance(answer.get("already_started"), ActorRef):
            raise AlreadyStarted(name, answer["already_started"])
        if not isinstance(answer, ActorRef):
            raise TypeError(f"unexpected answer to a remote spawn: {answer!r}")
        return answer

    def _on_request(self, sender: str, body: Any) -> Any:
        if not (isinstance(body, list) and body and isinstance(body[0], str)):
            return self._refuse(sender, "a registry request is [kind, ...]")
        if body[0] == "spawn" and len(body) in (6, 7):
            _, name, path, args, kwargs, timeout, *placement = body
            cls = _actor_class(path)
            return self._remote_spawn(name, cls, args, kwargs, float(timeout), *placement)
        if body[0].startswith("ring-"):
            return self.ring.on_request(sender, body)
        if body[0] == "registered":
            return self.registered()
        if body[0] == "running":
            return self._actors.names()
        if body[0] == "call" and len(body) == 4:
            _, name, message, timeout = body
            return self.call(str(name), message, float(timeout))
        return self._refuse(sender, f"unknown registry request {body[0][:40]!r}")

    def _refuse(self, sender: str, problem: str) -> Any:
        self._refusals.refuse(sender, "malformed", problem)
        # Requests here are calls (ring casts aside): the caller is told, not answered None.
        raise ValueError(problem)

    async def _remote_spawn(
        self,
        name: str,
        cls: type[Actor],
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float,
        placement: Any = "here",
    ) -> Any:
        try:
            return await self.spawn(
                name, cls, *args, placement=placement, timeout=timeout, **kwargs
            )
        except AlreadyStarted as exc:
            return {"already_started": exc.ref}

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


def _actor_class(path: object) -> type[Actor]:
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


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        if not isinstance(exc, LookupError):
            log.error("registry housekeeping failed: %s", exc)
