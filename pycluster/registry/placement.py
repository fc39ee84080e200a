"""Ring placement: actors that live on the node the hash ring picks for their name.

``spawn(name, cls, placement="ring")`` starts the actor on the ring owner of ``name``
among the connected nodes, and records its *spec* (class, arguments, restart policy) on
every node. From then on each node runs the same small loop over the specs it knows:

- an actor this node runs whose owner is now another node is *moved*: it stops after the
  message it is handling, its ``handoff()`` state is taken, its name released, and the
  owner adopts it (claims the name, starts it with ``resume(state)``); if the owner
  cannot, it is restarted here with that state, and the next round tries again;
- a name that nobody holds any more because its node went down is started afresh from
  its spec by its owner (its state died with its node); a name unheld for other reasons
  (its host unknown here, or still connected) is restarted only after a grace period.

A node that leaves gracefully first tells its peers (they stop counting it as an owner),
then moves its ring actors away before it stops. Specs travel with moves and spawns and
are exchanged on every new connection; an actor that ends normally (or crashes past its
restart limit) is forgotten everywhere, so it is not brought back.

The loop does work only when something that decides placement changed, so an idle node
spends nothing on it, however many ring actors the cluster holds: every name after a
membership change (a node up or down, a peer leaving); one name when its spec is learned
or its registration changes (the backend reports those, see ``reports_changes``), and
after this node started or moved it; a name waiting out a grace period at its deadline.
A backend that does not report changes is polled, every name every 0.1 s.

What nodes tell each other about ring actors travels as the ``ring-*`` requests of
:mod:`~pycluster.registry.messages`, through the registry's ``$names`` mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
import uuid
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol

from pycluster import ring
from pycluster.actors import Actor, ActorRestartPolicy, Actors
from pycluster.actors.actor import actor_class, class_path
from pycluster.actors.ref import ActorRef
from pycluster.errors import NotConnected, RemoteError
from pycluster.events import NodeDown, NodeUp
from pycluster.registry.backend import ClaimFailed, RegistryBackend
from pycluster.registry.errors import AlreadyStarted
from pycluster.registry.messages import (
    NAMES_MAILBOX,
    RING_LEAVING,
    AlreadyRunning,
    NotOwner,
    RingAdopt,
    RingForget,
    RingLeaving,
    RingRequest,
    RingSpawn,
    RingSpecs,
    Spawned,
    Spec,
    decode_spawn_answer,
)
from pycluster.registry.refusals import Refusals
from pycluster.transport.waist import Transport

log = logging.getLogger("pycluster.registry")

ABSENT_GRACE = 2.0
"""Seconds a ring actor's name must stay unheld, when this node did not see its host go
down, before its owner restarts it (a node that just joined may not have reached the
host yet)."""
STALE_HOST = 5.0
"""Seconds after which a name unheld although its last host is still connected (a move
that went wrong) is restarted by its owner anyway."""
SWEEP_INTERVAL = 0.1
"""Seconds after which a move or restart this node made is looked at again (one that did
not go through is then retried); the polling period for a backend that reports no
changes."""
HANDOFF_MIN = 1.0
"""Seconds a move offers an actor's state to its owner at least, even when the move's
budget was spent stopping the actor."""
FORGOTTEN_MEMORY = 60.0
"""Seconds a forgotten spec is remembered, so a late copy from a peer does not revive it."""


class Names(Protocol):
    """What ring placement uses of the registry: its backend, lookups, and starting a named
    actor on this node (:meth:`pycluster.Registry.spawn_here`)."""

    backend: RegistryBackend

    def whereis(self, name: str) -> ActorRef | None: ...

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
    ) -> ActorRef: ...


class RingPlacement:
    """Keeps ring-placed actors on their owners; one per node (``node.registry.ring``)."""

    def __init__(
        self, node: Transport, actors: Actors, registry: Names, refusals: Refusals
    ) -> None:
        self._node = node
        self._actors = actors
        self._registry = registry
        self.specs: dict[str, Spec] = {}
        self._forgotten: dict[str, float] = {}
        self._leaving: set[str] = set()
        """Peers that announced they are leaving: no longer owners of anything."""
        self._absent: dict[str, float] = {}
        self._hosts: dict[str, str] = {}
        """The node each ring actor was last seen on."""
        self._down: set[str] = set()
        """Peers this node saw go down (and not come back)."""
        self._busy: set[str] = set()
        """Names being started or moved by this node right now."""
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._polling = not registry.backend.reports_changes
        self._everything = False
        """Every name is to be checked in the next round (membership changed)."""
        self._dirty: set[str] = set()
        """Names to check in the next round."""
        self._unsynced: set[str] = set()
        """Names this node would restart, but not before its registry is synced."""
        self._deadlines: list[tuple[float, str]] = []
        """A heap of (when, name): names to check again then."""
        self._due: dict[str, float] = {}
        """The earliest pending deadline of each name (older heap entries are stale)."""
        self._wake = asyncio.Event()
        self._refusals = refusals
        self.checks = 0
        """Ring actors looked at so far, by all rounds (an idle node adds none)."""
        node.subscribe(self._on_event)

    # -- the ring ---------------------------------------------------------------------------

    def members(self) -> list[str]:
        """The nodes that may own ring actors, as this node sees them."""
        own = [] if self._stopping else [self._node.name]
        return own + [p for p in self._node.nodes() if p not in self._leaving]

    def owner(self, name: str) -> str | None:
        """The node that should run ring actor ``name`` (None when nobody may)."""
        members = self.members()
        return ring.owner(name, members) if members else None

    @property
    def idle(self) -> bool:
        """Whether this node has nothing to do about ring actors, now or at a deadline."""
        return not (self._everything or self._dirty or self._due or self._busy)

    # -- spawning ---------------------------------------------------------------------------

    async def spawn(
        self,
        name: str,
        cls: type[Actor],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: ActorRestartPolicy | None,
        timeout: float,
        meta: Any = None,
    ) -> ActorRef:
        """Start ``name`` on its ring owner; AlreadyStarted if it runs anywhere."""
        spec = Spec(
            name,
            class_path(cls),
            list(args),
            dict(kwargs),
            policy or ActorRestartPolicy(),
            uuid.uuid4().hex,
            meta,
        )
        # Every node must receive the spec, now and on each later connection: refuse here
        # what could not travel, rather than start an actor no other node can know of.
        try:
            self._node.codec.pack(spec.to_wire())
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"ring actor {name!r}: arguments must be msgpack values ({exc})"
            ) from None
        deadline = time.monotonic() + timeout
        while True:
            holder = self._registry.whereis(name)
            if holder is not None:
                raise AlreadyStarted(name, holder)
            owner = self.owner(name)
            remaining = deadline - time.monotonic()
            if owner is None or remaining <= 0:
                raise ClaimFailed(f"no node could start ring actor {name!r} in time")
            if owner == self._node.name:
                return await self.start(spec, remaining)
            request = RingSpawn(spec, remaining).to_wire()
            try:
                answer = decode_spawn_answer(
                    await self._node.call(owner, NAMES_MAILBOX, request, remaining + 1)
                )
            except (NotConnected, TimeoutError, ValueError) as exc:
                log.info("ring spawn of %r via %s failed (%s); retrying", name, owner, exc)
                answer = None
            if isinstance(answer, Spawned):
                return answer.ref
            if isinstance(answer, AlreadyRunning):
                raise AlreadyStarted(name, answer.ref)
            # The owner sees another ring (a node just came or went): ask again shortly.
            await asyncio.sleep(0.05)

    async def start(
        self, spec: Spec, timeout: float, state: Any = None, resumed: bool = False
    ) -> ActorRef:
        """Claim ``spec.name`` and run it here (AlreadyStarted if taken)."""
        self._busy.add(spec.name)
        try:
            self.learn(spec)
            ref = await self._registry.spawn_here(
                spec.name,
                actor_class(spec.cls),
                spec.args,
                spec.kwargs,
                spec.policy,
                timeout,
                (state,) if resumed else (),
                spec.meta,
            )
        finally:
            self._busy.discard(spec.name)
            # Changes seen while it was busy were skipped; and a claim that failed is
            # tried again from there.
            self._check_later(spec.name, SWEEP_INTERVAL)
        self._actors.on_end(ref, lambda reason: self._ended(spec, reason))
        self._hosts[spec.name] = self._node.name
        self._tell_all(RingSpecs(((spec, self._node.name),)).to_wire())
        return ref

    def on_request(self, sender: str, request: RingRequest) -> Any:
        """A ring request from a peer (through the registry's mailbox): only members send
        them; one whose host is no node name is refused (counted, the connection closed)."""
        if self._refusals.closing(sender):
            return None
        if sender not in self._node.nodes():
            # A hidden client owns nothing and runs no ring actor: ring messages are
            # between members (and "ring-leaving" would cost every node a full round).
            self._refusals.refuse(sender, "hidden", f"{request.KIND} comes from members")
            return None
        match request:
            case RingSpecs(specs):
                try:  # all checked before any is used
                    known = [(spec, self._canonical(host)) for spec, host in specs]
                except ValueError as exc:
                    self._refusals.refuse(sender, "malformed", str(exc))
                    return None
                for spec, host in known:
                    if host is not None and spec.name not in self._hosts:
                        self._hosts[spec.name] = host
                        self._check_soon(spec.name)
                    self.learn(spec)
            case RingForget(specs):
                for spec in specs:
                    self._forget(spec)
            case RingSpawn(spec, timeout):
                return self._adopt(spec, timeout, None, resumed=False)
            case RingAdopt(spec, state, timeout):
                return self._adopt(spec, timeout, state, resumed=True)
            case RingLeaving():
                self._leaving.add(sender)
                self._check_everything()
        return None

    def _canonical(self, host: str | None) -> str | None:
        return None if host is None else self._node.canonical(host)

    async def _adopt(self, spec: Spec, timeout: float, state: Any, resumed: bool) -> Any:
        owner = self.owner(spec.name)
        if owner != self._node.name:
            return NotOwner(owner).to_wire()
        try:
            ref = await self.start(spec, timeout, state, resumed)
        except AlreadyStarted as exc:
            return AlreadyRunning(exc.ref).to_wire()
        return Spawned(ref).to_wire()

    # -- what every node knows --------------------------------------------------------------

    def learn(self, spec: Spec) -> None:
        """Remember a ring actor's spec (unless it was forgotten lately)."""
        if spec.id not in self._forgotten and self.specs.get(spec.name) != spec:
            self.specs[spec.name] = spec
            self._check_soon(spec.name)

    def _forget(self, spec: Spec) -> None:
        now = time.monotonic()
        self._forgotten[spec.id] = now
        if self.specs.get(spec.name) == spec:
            del self.specs[spec.name]
            self._absent.pop(spec.name, None)
            self._hosts.pop(spec.name, None)
            self._unsynced.discard(spec.name)
            self._due.pop(spec.name, None)
        for spec_id, when in list(self._forgotten.items()):
            if now - when > FORGOTTEN_MEMORY:
                del self._forgotten[spec_id]

    def _ended(self, spec: Spec, reason: str) -> None:
        # Moved, lost to a conflict, or taken down with its node: it lives on elsewhere.
        if reason in ("normal", "crashed") and not self._stopping:
            self._forget(spec)
            self._tell_all(RingForget((spec,)).to_wire())

    def _tell_all(self, body: list[Any]) -> None:
        for peer in self._node.nodes():
            with contextlib.suppress(NotConnected):
                self._node.send_nowait(peer, NAMES_MAILBOX, body)

    def _on_event(self, event: NodeUp | NodeDown) -> None:
        if isinstance(event, NodeUp):
            self._leaving.discard(event.peer)
            self._down.discard(event.peer)
            if self.specs:
                known = RingSpecs(tuple((s, self._host_of(s.name)) for s in self.specs.values()))
                with contextlib.suppress(NotConnected):
                    self._node.send_nowait(event.peer, NAMES_MAILBOX, known.to_wire())
        else:
            self._leaving.discard(event.peer)
            self._down.add(event.peer)
        self._check_everything()

    def registry_changed(self, names: Iterable[str]) -> None:
        """The backend's report that these names' holders may have changed."""
        for name in names if self.specs else ():
            if name not in self.specs:
                continue
            holder = self._registry.whereis(name)
            if holder is not None:
                # Noted now, not when the round runs: if the holder dies first, this is
                # how its heir knows the actor died with it (and restarts it at once).
                self._hosts[name] = holder.node
                self._absent.pop(name, None)
            self._dirty.add(name)
        if self._unsynced and self._registry.backend.synced():
            self._dirty |= self._unsynced
            self._unsynced.clear()
        if self._dirty:
            self._wake.set()

    def _host_of(self, name: str) -> str | None:
        holder = self._registry.whereis(name)
        return holder.node if holder is not None else self._hosts.get(name)

    # -- keeping actors on their owners ----------------------------------------------------

    def start_sweeping(self) -> None:
        """Start the loop that moves and restarts ring actors (the node started)."""
        self._stopping = False
        self._wake = asyncio.Event()  # bound to the loop the node now runs on
        self._check_everything()
        self._task = asyncio.create_task(self._sweep_forever(), name="ring placement")

    def _check_everything(self) -> None:
        self._everything = True
        self._wake.set()

    def _check_soon(self, name: str) -> None:
        self._dirty.add(name)
        self._wake.set()

    def _check_later(self, name: str, delay: float) -> None:
        when = time.monotonic() + delay
        pending = self._due.get(name)
        if pending is not None and pending <= when:
            return  # an earlier check is due anyway: it reschedules what it still needs
        self._due[name] = when
        heapq.heappush(self._deadlines, (when, name))
        self._wake.set()

    def _take_due(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            when, name = heapq.heappop(self._deadlines)
            if self._due.get(name) == when:
                del self._due[name]
                self._dirty.add(name)

    async def _sweep_forever(self) -> None:
        while True:
            await self._until_due()
            try:
                await self.sweep()
            except Exception:
                log.exception("%s: ring placement round failed", self._node.name)

    async def _until_due(self) -> None:
        """Return when a round has something to check."""
        if self._polling:
            await asyncio.sleep(SWEEP_INTERVAL)
            self._everything = True
            return
        while True:
            now = time.monotonic()
            self._take_due(now)
            if self._everything or self._dirty:
                return
            self._wake.clear()
            delay = self._deadlines[0][0] - now if self._deadlines else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def sweep(self) -> None:
        """One round over the ring actors that may need something done (every one after
        a membership change): move what runs here but belongs elsewhere, restart what is
        gone."""
        self._take_due(time.monotonic())
        if self._everything:
            self._everything = False
            self._unsynced.clear()
            names = list(self.specs)
        else:
            names = [name for name in self._dirty if name in self.specs]
        self._dirty.clear()
        now = time.monotonic()
        synced = self._registry.backend.synced()
        # A leaving peer still connected is still moving its actors away: a name it held
        # and released is a move in flight (STALE_HOST), not one to restart after the grace.
        connected = set(self._node.nodes())
        members = self.members()
        placed = ring.Members(members)
        moves = []
        for name in names:
            if name in self._busy:
                continue  # whatever is being done to it ends with a check
            self.checks += 1
            owner = placed.owner(name) if members else None
            move = self._check(self.specs[name], owner, now, synced, connected)
            if move is not None:
                moves.append(move)
        if moves:
            await asyncio.gather(*moves)

    def _check(
        self, spec: Spec, owner: str | None, now: float, synced: bool, connected: set[str]
    ) -> Coroutine[Any, Any, None] | None:
        """What to do about one ring actor: a move or a restart to run, or nothing (then
        any wait it is in has its deadline set)."""
        name = spec.name
        holder = self._registry.whereis(name)
        if holder is not None:
            self._absent.pop(name, None)
            self._hosts[name] = holder.node
            if holder.node == self._node.name and owner not in (None, self._node.name):
                return self._move(spec, holder, owner)
            return None
        absent = now - self._absent.setdefault(name, now)
        if owner != self._node.name:
            return None
        if not synced:
            self._unsynced.add(name)
            return None
        host = self._hosts.get(name)
        if host in connected:
            wait = STALE_HOST  # a move in flight, unless it takes far too long
        elif host in self._down:
            wait = 0.0  # its node died: its names are gone for good
        else:
            wait = ABSENT_GRACE
        if absent >= wait:
            return self._restart(spec)
        self._check_later(name, wait - absent)
        return None

    async def _restart(self, spec: Spec) -> None:
        try:
            ref = await self.start(spec, timeout=2.0)
        except AlreadyStarted:
            return
        except ClaimFailed as exc:
            log.warning("%s: could not restart ring actor %r: %s", self._node.name, spec.name, exc)
            return
        log.info(
            "%s: restarted ring actor %r as %s (its node is gone)", self._node.name, spec.name, ref
        )

    async def _move(self, spec: Spec, ref: ActorRef, owner: str, timeout: float = 5.0) -> None:
        name = spec.name
        deadline = time.monotonic() + timeout
        self._busy.add(name)
        try:
            try:
                state = await self._actors.handoff(ref, timeout)
            except (LookupError, TimeoutError):
                return  # it ended meanwhile; its end decides what happens next
            await self._registry.backend.release(name, ref, "moved")
            # The actor has stopped: its state is only here now. Offer it for what is left
            # of the budget, but for at least HANDOFF_MIN seconds.
            remaining = max(deadline - time.monotonic(), HANDOFF_MIN)
            if await self._hand_to(owner, spec, state, remaining):
                return
        finally:
            self._busy.discard(name)
            self._check_later(name, SWEEP_INTERVAL)
        if self._stopping:
            # Restarting it here would only claim the name against the owner (which may
            # have adopted it after all, its answer late) for an actor that stops with this
            # node in a moment.
            log.warning(
                "%s: %s did not confirm adopting ring actor %r before this node left",
                self._node.name,
                owner,
                name,
            )
            return
        # The owner could not take it: keep it here, with its state, and try again later.
        try:
            await self.start(spec, timeout, state, resumed=True)
        except Exception as exc:
            if isinstance(exc, AlreadyStarted) and exc.ref.node == owner:
                # Its answer came too late: the owner holds it (adopted, or restarted).
                log.info("%s: %s holds ring actor %r after all", self._node.name, owner, name)
                return
            log.error(
                "%s: ring actor %r lost its state in a failed move: %s", self._node.name, name, exc
            )

    async def _hand_to(self, owner: str, spec: Spec, state: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            request = RingAdopt(spec, state, remaining).to_wire()
            try:
                answer = await self._node.call(owner, NAMES_MAILBOX, request, remaining + 1)
            except (NotConnected, TimeoutError, RemoteError) as exc:
                log.warning("%s: %s could not adopt %r: %s", self._node.name, owner, spec.name, exc)
                return False
            try:
                decoded = decode_spawn_answer(answer)
            except ValueError as exc:
                log.warning("%s: %s could not adopt %r: %s", self._node.name, owner, spec.name, exc)
                return False
            if isinstance(decoded, Spawned):
                log.info("%s: moved ring actor %r to %s", self._node.name, spec.name, owner)
                return True
            if isinstance(decoded, NotOwner):
                return False
            # Still held: the arbiter has not seen the release yet.
            await asyncio.sleep(0.02)
        return False

    async def drain(self, timeout: float) -> None:
        """Before this node leaves: stop owning anything, move ring actors to their owners."""
        self._tell_all(RING_LEAVING.to_wire())
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        moves = []
        for name, spec in list(self.specs.items()):
            holder = self._registry.whereis(name)
            owner = self.owner(name)
            if holder is not None and holder.node == self._node.name and owner is not None:
                moves.append(self._move(spec, holder, owner, timeout))
        if moves:
            # Not cancelled at ``timeout``: a move cancelled after its actor stopped would
            # drop the actor's state, and its owner would start it afresh. Each move ends by
            # itself, within ``timeout`` plus HANDOFF_MIN and a call's grace of 1 s; the
            # bound here only stops a backend that never answers from holding the leave.
            await asyncio.wait_for(
                asyncio.gather(*moves, return_exceptions=True), timeout + HANDOFF_MIN + 2.0
            )
