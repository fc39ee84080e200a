"""The registry API every node offers as ``node.registry``.

Its mailbox ``$names`` answers clients' requests (spawn here, call by name, register,
unregister, join or leave on behalf of another node, what is registered, what runs) and
carries ring placement's; all are in :mod:`~pycluster.registry.messages`.

Every name and group membership belongs to the node of its actor: a request about
another node's actor is forwarded there, and that node holds the entry, so it ends when
the actor ends (whatever the reason) or when the node goes down. Scopes
(:meth:`Registry.scope`) are separate namespaces over the same backend: a scoped name is
stored as ``scope + SEPARATOR + name``, and names may not contain :data:`SEPARATOR`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import attrs

from pycluster.actors import Actor, ActorRestartPolicy, Actors
from pycluster.actors.actor import actor_class, class_path
from pycluster.actors.ref import ActorRef
from pycluster.actors.runtime import NoSuchActor
from pycluster.errors import NotConnected
from pycluster.registry.backend import Registration, RegistryBackend
from pycluster.registry.errors import AlreadyRegistered, AlreadyStarted, NotRegistered
from pycluster.registry.events import (
    DEFAULT_BACKLOG,
    EventStream,
    Joined,
    Left,
    Listener,
    RegistryEvent,
)
from pycluster.registry.messages import (
    NAMES_MAILBOX,
    AlreadyRunning,
    CallRequest,
    JoinRequest,
    LeaveRequest,
    MalformedMessage,
    MetaRequest,
    RegisteredRequest,
    RegisterRequest,
    RunningRequest,
    Spawned,
    SpawnRequest,
    UnregisterRequest,
    decode_names_request,
    decode_spawn_answer,
)
from pycluster.registry.placement import RingPlacement
from pycluster.registry.refs import checked_meta
from pycluster.registry.refusals import Refusals
from pycluster.transport.waist import Transport

log = logging.getLogger("pycluster.registry")

SEPARATOR = "\x00"
"""Between a scope and a name in the backend's keys; no name or group may contain it."""


def _checked(name: object, what: str = "name") -> str:
    if not isinstance(name, str):
        raise TypeError(f"a registry {what} is a string, not {type(name).__name__}")
    if SEPARATOR in name:
        raise ValueError(f"a registry {what} may not contain NUL characters: {name!r}")
    return name


_MEMBERSHIP_EVENTS = (Joined, Left)
"""The events of a group (the others are of a name)."""


class Registry:
    """Cluster-unique names for actors, and process groups, in one scope (``node.registry``
    is the default scope; :meth:`scope` gives others).

    ``whereis``, ``lookup``, ``registered``, ``members`` and the other reads are local;
    ``spawn`` and ``register`` are claims the backend arbitrates (they raise rather than
    succeed silently when the claim cannot complete).
    """

    def __init__(
        self,
        node: Transport,
        actors: Actors,
        backend: RegistryBackend,
        *,
        _scope: str = "",
        _root: Registry | None = None,
    ) -> None:
        self._node = node
        self._actors = actors
        self.backend = backend
        self.scope_name = _scope
        """The scope of this view (``""``: the default)."""
        self._prefix = f"{_scope}{SEPARATOR}" if _scope else ""
        if _root is None:
            self._root = self
            self._scopes: dict[str, Registry] = {}
            self._names_of: dict[ActorRef, list[str]] = {}
            """The names each local actor holds (keys): they end when it ends."""
            self._groups_of: dict[ActorRef, list[str]] = {}
            """The groups each local actor is a member of (keys): it leaves when it ends."""
            actors.end_listeners.append(self._ended)
            self._streams: dict[str, set[EventStream]] = {}
            self.listeners: list[Listener] = []
            """Called with the ``(scope, event)`` pairs of every registry change, at the end
            of the loop turn that made them: the changes of one turn at once, in order
            (the node's plugins, the cluster view)."""
            self._unheard: list[tuple[str, RegistryEvent]] = []
            """Changes of this loop turn the listeners have not heard yet."""
            backend.on_lost = self._lost
            backend.on_event = self._on_event
            backend.on_events = self._on_events
            self._refusals = Refusals(node)
            self.ring = RingPlacement(node, actors, self, self._refusals)
            """Ring-placed actors (``spawn(..., placement="ring")``)."""
            backend.on_changed = self.ring.registry_changed
            node.register_mailbox(NAMES_MAILBOX, self._on_request)
        else:
            self._root = _root
            self.ring = _root.ring

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start replicating and placing ring actors (the transport is started)."""
        await self.backend.start()
        self.ring.start_sweeping()

    async def drain(self, timeout: float) -> None:
        """Tell peers this node leaves and move its ring actors away, within ``timeout`` (a
        move whose actor has stopped gets at least a second more to hand its state over)."""
        with contextlib.suppress(TimeoutError):
            await self.ring.drain(timeout)

    async def stop(self) -> None:
        """Stop the backend: this node's names are released."""
        await self.backend.stop()
        for streams in self._root._streams.values():
            for stream in streams:
                stream.close()

    def ready(self) -> bool:
        """Whether this node has merged the registry of every peer connected now."""
        return self.backend.synced()

    def status(self) -> dict[str, Any]:
        """The ``registry`` object of ``/status``."""
        return self.backend.status()

    # -- scopes -----------------------------------------------------------------------------

    def scope(self, name: str) -> Registry:
        """The registry of scope ``name``: the same API over a separate namespace (its
        names and groups never collide with another scope's). ``scope("")`` is the
        default scope, ``node.registry`` itself."""
        _checked(name, "scope")
        root = self._root
        if not name:
            return root
        view = root._scopes.get(name)
        if view is None:
            view = Registry(self._node, self._actors, self.backend, _scope=name, _root=root)
            root._scopes[name] = view
        return view

    def _key(self, name: str, what: str = "name") -> str:
        return self._prefix + _checked(name, what)

    def _mine(self, key: str) -> str | None:
        """The name of backend key ``key`` in this scope, or None if it is another's."""
        if not self._prefix:
            return None if SEPARATOR in key else key
        return key[len(self._prefix) :] if key.startswith(self._prefix) else None

    # -- names ------------------------------------------------------------------------------

    async def spawn(
        self,
        name: str,
        cls: type[Actor],
        *args: Any,
        on: str | None = None,
        placement: Literal["here", "ring"] = "here",
        policy: ActorRestartPolicy | None = None,
        timeout: float = 5.0,
        meta: Any = None,
        if_exists: Literal["raise", "return"] = "raise",
        **kwargs: Any,
    ) -> ActorRef:
        """Start ``cls(*args, **kwargs)`` as ``name``, unique in the cluster, on this node
        (or on node ``on``, which must be able to import ``cls``), registered with
        metadata ``meta``.

        With ``placement="ring"`` the actor runs on the node a consistent hash of its name
        picks, moves (``handoff()`` -> ``resume(state)``) when nodes join or leave, and is
        restarted on its new owner if its node dies; ``cls`` must then be importable on
        every node, and its arguments msgpack values.

        Raises AlreadyStarted (with the running actor's ref) if the name is taken
        anywhere, unless ``if_exists="return"``: then the running actor's ref is returned.
        ClaimFailed if the claim cannot complete within ``timeout``. The actor's code
        runs only once the claim is won.
        """
        if if_exists not in ("raise", "return"):
            raise ValueError(f"if_exists is 'raise' or 'return', not {if_exists!r}")
        key = self._key(name)
        meta = checked_meta(meta)
        try:
            if placement == "ring":
                if on is not None:
                    raise ValueError("spawn takes either on= or placement='ring', not both")
                return await self.ring.spawn(key, cls, args, kwargs, policy, timeout, meta)
            if placement != "here":
                raise ValueError(f"unknown placement {placement!r}: 'here' or 'ring'")
            if on is not None and self._node.canonical(on) != self._node.name:
                return await self._spawn_on(on, key, cls, args, kwargs, timeout, meta)
            if self._node.hidden:
                raise ValueError(
                    "a hidden client runs no actors of the cluster: spawn on a member "
                    "(on='NODE') or on the ring (placement='ring')"
                )
            return await self.spawn_here(key, cls, args, kwargs, policy, timeout, (), meta)
        except AlreadyStarted as exc:
            if if_exists == "return":
                return exc.ref
            raise AlreadyStarted(name, exc.ref) from None

    async def spawn_here(
        self,
        name: str,
        cls: type[Actor],
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        policy: ActorRestartPolicy | None,
        timeout: float,
        state: tuple[Any, ...] = (),
        meta: Any = None,
    ) -> ActorRef:
        """Claim backend key ``name`` and start the actor on this node (``state``: a
        one-element tuple holding what ``handoff()`` returned elsewhere, to ``resume``
        from)."""
        actors = self._actors
        ref = actors.allocate()
        holder = await self.backend.claim(name, ref, timeout, meta)
        if holder is not None:
            raise AlreadyStarted(name, holder)
        try:
            extra = {"state": state[0]} if state else {}
            actors.spawn(cls, *args, name=name, policy=policy, ref=ref, **extra, **kwargs)
        except BaseException:
            await self.backend.release(name, ref, "failed to start")
            raise
        self._root._bind(self._root._names_of, ref, name)
        return ref

    async def register(
        self, name: str, ref: ActorRef, *, meta: Any = None, timeout: float = 5.0
    ) -> None:
        """Register the running actor ``ref`` (of any node) as ``name``, with metadata
        ``meta``; AlreadyRegistered if taken. The name ends when the actor ends."""
        key = self._key(name)
        meta = checked_meta(meta)
        if ref.node == self._node.name:
            holder = await self._root._register_here(key, ref, meta, timeout)
        else:
            request = RegisterRequest(key, ref, meta, timeout).to_wire()
            answer = await self._node.call(ref.node, NAMES_MAILBOX, request, timeout + 1)
            holder = _holder(answer, ref.node)
        if holder is not None:
            raise AlreadyRegistered(name, holder)

    async def register_many(
        self, names: Mapping[str, ActorRef], *, meta: Any = None, timeout: float = 5.0
    ) -> dict[str, ActorRef]:
        """Register each running actor of ``names`` (name -> ref, of any node) as its
        name, all at once: the claims to one arbiter travel in one message. Returns the
        names that were taken, each with its holder (``{}`` when all were registered);
        the others are registered. Any other error (ClaimFailed, NoSuchActor...) is
        raised, the first one, once every claim has completed."""
        items = list(names.items())
        outcomes = await asyncio.gather(
            *(self.register(name, ref, meta=meta, timeout=timeout) for name, ref in items),
            return_exceptions=True,
        )
        taken: dict[str, ActorRef] = {}
        failure: BaseException | None = None
        for (name, _), outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, AlreadyRegistered):
                taken[name] = outcome.ref
            elif isinstance(outcome, BaseException) and failure is None:
                failure = outcome
        if failure is not None:
            raise failure
        return taken

    async def unregister(self, name: str) -> None:
        """Drop the registration of ``name``, whichever node made it (the actor keeps
        running); nothing if it is not registered."""
        key = self._key(name)
        ref = self.backend.whereis(key)
        if ref is None:
            return
        if ref.node == self._node.name:
            await self._root._release(key, ref, "unregistered")
        else:
            request = UnregisterRequest(key, ref).to_wire()
            await self._node.call(ref.node, NAMES_MAILBOX, request)

    async def update_meta(self, name: str, meta: Any) -> None:
        """Replace the whole metadata of ``name``'s registration (from any node);
        NotRegistered if it is not registered."""
        key = self._key(name)
        meta = checked_meta(meta)
        ref = self.backend.whereis(key)
        updated = False
        if ref is not None and ref.node == self._node.name:
            updated = await self.backend.update_meta(key, ref, meta)
        elif ref is not None:
            request = MetaRequest(key, ref, meta).to_wire()
            updated = await self._node.call(ref.node, NAMES_MAILBOX, request) is True
        if not updated:
            raise NotRegistered(name)

    def whereis(self, name: str) -> ActorRef | None:
        """The actor registered as ``name``, or None: a local read, no network."""
        if self._prefix:
            return self.backend.whereis(self._key(name))
        return self.backend.whereis(name)  # the default scope's key is the name

    def lookup(self, name: str) -> Registration | None:
        """The registration of ``name`` (``.ref``, ``.meta``), or None: a local read."""
        found = self.backend.lookup(self._key(name))
        return None if found is None else Registration(name, found.ref, found.meta)

    def registered(self) -> dict[str, ActorRef]:
        """Every registered name of this scope and its actor."""
        mine = self._mine
        found = {}
        for key, ref in self.backend.registered().items():
            name = mine(key)
            if name is not None:
                found[name] = ref
        return found

    # -- groups -----------------------------------------------------------------------------

    async def join(self, group: str, ref: ActorRef, *, meta: Any = None) -> None:
        """Add the running actor ``ref`` (of any node) to process group ``group``, with
        metadata ``meta`` (joining again replaces it). It leaves when it ends."""
        key = self._key(group, "group")
        meta = checked_meta(meta)
        if ref.node == self._node.name:
            await self._root._join_here(key, ref, meta)
        else:
            request = JoinRequest(key, ref, meta).to_wire()
            await self._node.call(ref.node, NAMES_MAILBOX, request)

    async def leave(self, group: str, ref: ActorRef) -> None:
        """Remove ``ref`` from ``group`` (from any node)."""
        key = self._key(group, "group")
        if ref.node == self._node.name:
            await self._root._leave_here(key, ref, "left")
        else:
            await self._node.call(ref.node, NAMES_MAILBOX, LeaveRequest(key, ref).to_wire())

    def members(self, group: str) -> list[ActorRef]:
        """Members of ``group`` on every node, sorted: a local read."""
        return self.backend.members(self._key(group, "group"))

    def memberships(self, group: str) -> dict[ActorRef, Any]:
        """Members of ``group`` on every node, each with its metadata: a local read."""
        return self.backend.memberships(self._key(group, "group"))

    def local_members(self, group: str) -> list[ActorRef]:
        """Members of ``group`` running on this node, sorted."""
        me = self._node.name
        return [ref for ref in self.members(group) if ref.node == me]

    def which_groups(self, ref: ActorRef) -> list[str]:
        """The groups of this scope ``ref`` is a member of, sorted."""
        found = []
        for key in self.backend.groups():
            group = self._mine(key)
            if group is not None and ref in self.backend.memberships(key):
                found.append(group)
        return found

    def groups(self) -> list[str]:
        """Every group of this scope with at least one member, sorted."""
        return [group for key in self.backend.groups() if (group := self._mine(key)) is not None]

    def count(self, group: str) -> int:
        """How many members ``group`` has."""
        return len(self.backend.memberships(self._key(group, "group")))

    async def publish(self, group: str, message: Any) -> int:
        """Cast ``message`` to every member of ``group``; return to how many it was sent
        (members whose node is not connected, or that ended meanwhile, are skipped)."""
        sent = 0
        for ref in self.backend.memberships(self._key(group, "group")):
            try:
                await self._actors.cast(ref, message)
            except (NotConnected, NoSuchActor):
                continue
            sent += 1
        return sent

    async def multi_call(
        self, group: str, message: Any, timeout: float = 5.0
    ) -> tuple[dict[ActorRef, Any], dict[ActorRef, Exception]]:
        """Call every member of ``group`` at once; return ``(replies, failures)``: each
        member's reply, and the exception of each member that failed or timed out."""
        members = self.members(group)
        results = await asyncio.gather(
            *(self._actors.call(ref, message, timeout) for ref in members),
            return_exceptions=True,
        )
        replies: dict[ActorRef, Any] = {}
        failures: dict[ActorRef, Exception] = {}
        for ref, result in zip(members, results, strict=True):
            if isinstance(result, Exception):
                failures[ref] = result
            elif isinstance(result, BaseException):
                raise result  # cancellation and the like are not a member's failure
            else:
                replies[ref] = result
        return replies, failures

    # -- events -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def events(self, backlog: int = DEFAULT_BACKLOG) -> AsyncIterator[EventStream]:
        """``async with registry.events() as stream: async for event in stream:`` every
        change of this scope this node learns of, whichever node made it. A consumer more
        than ``backlog`` events behind loses the oldest, then reads
        :class:`~pycluster.registry.events.EventsLost`; it never slows the registry."""
        stream = EventStream(backlog)
        streams = self._root._streams.setdefault(self.scope_name, set())
        streams.add(stream)
        try:
            yield stream
        finally:
            streams.discard(stream)
            stream.close()

    def _on_event(self, event: RegistryEvent) -> None:
        self._on_events((event,))

    def _on_events(self, events: Sequence[RegistryEvent]) -> None:
        # The listeners hear the changes of a loop turn at once (a peer's batch, or this
        # node's 100 registrations in flight): the node's plugins look their hooks up,
        # and the view its ring actors, once per turn, not per change.
        unheard = self._unheard
        was_empty = not unheard
        streams_of = self._streams
        for event in events:
            key = event.group if isinstance(event, _MEMBERSHIP_EVENTS) else event.name
            scope = ""
            if SEPARATOR in key:
                scope, _, name = key.partition(SEPARATOR)
                if not scope:
                    continue  # no scope makes such a key
                if isinstance(event, _MEMBERSHIP_EVENTS):
                    event = attrs.evolve(event, group=name)
                else:
                    event = attrs.evolve(event, name=name)
            if streams_of:
                streams = streams_of.get(scope)
                if streams:
                    for stream in streams:
                        stream.put(event)
            unheard.append((scope, event))
        if was_empty and unheard:
            if self.listeners:
                asyncio.get_running_loop().call_soon(self._tell_listeners)
            else:
                unheard.clear()

    def _tell_listeners(self) -> None:
        heard, self._unheard = self._unheard, []
        for listener in list(self.listeners):
            try:
                listener(heard)
            except Exception:
                log.exception("%s: a registry event listener failed", self._node.name)

    # -- calls ------------------------------------------------------------------------------

    async def call(self, target: str | ActorRef, message: Any, timeout: float = 5.0) -> Any:
        """Call the actor registered as ``target`` (or the ref ``target``)."""
        return await self._actors.call(self._resolve(target), message, timeout)

    async def cast(self, target: str | ActorRef, message: Any) -> None:
        """Cast to the actor registered as ``target`` (or the ref ``target``)."""
        await self._actors.cast(self._resolve(target), message)

    async def call_via(self, node: str, name: str, message: Any, timeout: float = 5.0) -> Any:
        """Have ``node`` call the actor registered as ``name`` (for hidden clients, which
        hold no copy of the registry)."""
        request = CallRequest(self._key(name), message, timeout).to_wire()
        return await self._node.call(node, NAMES_MAILBOX, request, timeout + 1)

    def _resolve(self, target: str | ActorRef) -> ActorRef:
        if isinstance(target, ActorRef):
            return target
        ref = self.backend.whereis(self._key(target))
        if ref is None:
            raise NotRegistered(target)
        return ref

    # -- this node's entries, bound to their actors' lives -----------------------------------

    def _alive(self, ref: ActorRef) -> None:
        if self._actors.local(ref) is None:
            raise NoSuchActor(f"{ref} is not running")

    async def _register_here(
        self, key: str, ref: ActorRef, meta: Any, timeout: float
    ) -> ActorRef | None:
        self._alive(ref)
        holder = await self.backend.claim(key, ref, timeout, meta)
        if holder is None:
            self._bind(self._names_of, ref, key)
            if self._actors.local(ref) is None:  # it ended during the claim
                await self._release(key, ref, "ended")
        return holder

    async def _release(self, key: str, ref: ActorRef, reason: str) -> None:
        _unbind(self._names_of, ref, key)
        await self.backend.release(key, ref, reason)

    async def _join_here(self, key: str, ref: ActorRef, meta: Any) -> None:
        self._alive(ref)
        await self.backend.join(key, ref, meta)
        self._bind(self._groups_of, ref, key)
        if self._actors.local(ref) is None:  # it ended meanwhile
            await self._leave_here(key, ref, "ended")

    async def _leave_here(self, key: str, ref: ActorRef, reason: str) -> None:
        _unbind(self._groups_of, ref, key)
        await self.backend.leave(key, ref, reason)

    @staticmethod
    def _bind(table: dict[ActorRef, list[str]], ref: ActorRef, key: str) -> None:
        keys = table.get(ref)
        if keys is None:
            table[ref] = [key]
        elif key not in keys:
            keys.append(key)

    def _ended(self, ref: ActorRef, reason: str) -> None:
        """A local actor ended: its names and memberships end with it, on every node."""
        names = self._names_of.pop(ref, None)
        groups = self._groups_of.pop(ref, None)
        if names is None and groups is None:
            return
        task = asyncio.ensure_future(self._end_entries(ref, names or [], groups or [], reason))
        task.add_done_callback(_log_failure)

    async def _end_entries(
        self, ref: ActorRef, names: list[str], groups: list[str], reason: str
    ) -> None:
        for key in names:
            await self.backend.release(key, ref, reason)
        for key in groups:
            await self.backend.leave(key, ref, reason)

    def _lost(self, name: str, ref: ActorRef, reason: str) -> None:
        """The backend took ``name`` away from this node's actor ``ref``: stop it."""
        if ref.node != self._node.name:
            return
        task = asyncio.ensure_future(self._actors.stop(ref, reason))
        task.add_done_callback(_log_failure)

    # -- requests from other nodes ----------------------------------------------------------

    async def _spawn_on(
        self,
        node: str,
        key: str,
        cls: type[Actor],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float,
        meta: Any,
    ) -> ActorRef:
        request = SpawnRequest(key, class_path(cls), args, kwargs, timeout, meta=meta).to_wire()
        answer = await self._node.call(node, NAMES_MAILBOX, request, timeout + 1)
        try:
            decoded = decode_spawn_answer(answer)
        except ValueError as exc:
            raise TypeError(f"{node} answered a remote spawn: {exc}") from None
        if isinstance(decoded, AlreadyRunning):
            raise AlreadyStarted(key, decoded.ref)
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
                return self._call_key(name, message, timeout)
            case RegisterRequest(key, ref, meta, timeout):
                return self._remote_register(key, ref, meta, timeout)
            case UnregisterRequest(key, ref):
                return self._release(key, ref, "unregistered")
            case MetaRequest(key, ref, meta):
                return self.backend.update_meta(key, ref, meta)
            case JoinRequest(key, ref, meta):
                return self._join_here(key, ref, meta)
            case LeaveRequest(key, ref):
                return self._leave_here(key, ref, "left")
            case RegisteredRequest():
                return self.registered()
            case RunningRequest():
                return self._actors.names()
            case _:
                return self.ring.on_request(sender, request)

    async def _call_key(self, key: str, message: Any, timeout: float) -> Any:
        ref = self.backend.whereis(key)
        if ref is None:
            raise NotRegistered(key.rpartition(SEPARATOR)[2])
        return await self._actors.call(ref, message, timeout)

    async def _remote_register(self, key: str, ref: ActorRef, meta: Any, timeout: float) -> Any:
        if ref.node != self._node.name:
            raise ValueError(f"{ref} is not an actor of {self._node.name}")
        holder = await self._register_here(key, ref, meta, timeout)
        return None if holder is None else AlreadyRunning(holder).to_wire()

    async def _remote_spawn(self, request: SpawnRequest, cls: type[Actor]) -> Any:
        name, args, kwargs = request.name, request.args, request.kwargs
        timeout, meta = request.timeout, request.meta
        try:
            if request.placement == "ring":
                ref = await self.ring.spawn(name, cls, args, kwargs, None, timeout, meta)
            else:
                ref = await self.spawn_here(name, cls, args, kwargs, None, timeout, (), meta)
        except AlreadyStarted as exc:
            return AlreadyRunning(exc.ref).to_wire()
        return Spawned(ref).to_wire()


def _unbind(table: dict[ActorRef, list[str]], ref: ActorRef, key: str) -> None:
    keys = table.get(ref)
    if keys is not None and key in keys:
        keys.remove(key)
        if not keys:
            del table[ref]


def _holder(answer: object, node: str) -> ActorRef | None:
    """The holder in ``node``'s answer to a :class:`RegisterRequest` (None: granted)."""
    if answer is None:
        return None
    try:
        decoded = decode_spawn_answer(answer)
    except ValueError as exc:
        raise TypeError(f"{node} answered a registration: {exc}") from None
    if not isinstance(decoded, AlreadyRunning):
        raise TypeError(f"{node} answered a registration: {decoded}")
    return decoded.ref


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        if not isinstance(exc, LookupError):
            log.error("registry housekeeping failed: %s", exc)
