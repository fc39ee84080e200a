"""The ``crdt`` registry backend: replicated to every node, merged on join, no leader.

Lookups read the local :class:`~pycluster.registry.replica.Replica`. Joins never wait on
anyone: when two nodes connect, each sends the other its own slice at once and merges
what it receives (see ``docs/registry.md``). Claims are arbitrated by the node that owns
the name on the hash ring of the connected nodes, which answers claims one at a time.

Its messages (claims, snapshots and changes) are those of
:mod:`~pycluster.registry.messages`. A registry message from a peer that is malformed, or
carries a Lamport time out of bounds, is refused (:mod:`~pycluster.registry.refusals`):
counted, and the connection closed. A snapshot or change this node cannot send closes
that connection too, loudly: a peer is never left half-synced, nor a claim failing with
an encoder's error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import attrs

from pycluster import ring
from pycluster.actors.ref import ActorRef
from pycluster.config import checks, setting
from pycluster.errors import NotConnected, RemoteError
from pycluster.events import NodeDown, NodeUp
from pycluster.registry.backend import ClaimFailed, Registration, RegistryBackend, Resolve
from pycluster.registry.messages import (
    MAX_BATCH,
    REGISTRY_MAILBOX,
    Change,
    Changes,
    Claim,
    ClaimAnswer,
    Claims,
    MalformedMessage,
    Snapshot,
    decode_registry_message,
)
from pycluster.registry.refusals import Refusals
from pycluster.registry.replica import ClockRejected, Replica
from pycluster.transport.waist import Transport

log = logging.getLogger("pycluster.registry")


@attrs.frozen(kw_only=True)
class CrdtOptions:
    """Options of the ``crdt`` backend."""

    reservation_ttl: float = setting(
        default=10.0,
        doc="How long an arbiter keeps a granted claim while waiting to see the claimant "
        "register it (the claimant registers at once; this only bounds a lost message).",
        unit="s",
        check=checks.positive_duration,
    )


@attrs.frozen
class _Reservation:
    ref: ActorRef
    expires: float


class CrdtRegistry(RegistryBackend):
    """The embedded default backend: every node holds the whole registry."""

    name = "crdt"
    Options = CrdtOptions
    forget_after = 1.0
    reports_changes = True

    def __init__(self, node: Transport, options: CrdtOptions, resolve: Resolve) -> None:
        super().__init__(node, options, resolve)
        self.replica = Replica(node.name, resolve)
        self._awaiting: set[str] = set()
        self._reservations: dict[str, _Reservation] = {}
        self._pruned = 0.0
        self._refusals = Refusals(node)
        self._claims: dict[tuple[str, float], list[tuple[Claim, asyncio.Future[Any]]]] = {}
        """Claims of this loop turn not sent yet, by arbiter and timeout."""
        self._asking: set[asyncio.Task[None]] = set()
        self._outbox: list[dict[str, Any]] = []
        """Changes of this loop turn not sent yet (their wire form)."""
        self._peers: list[str] | None = None
        self._members = ring.Members([node.name])
        """This node and ``_peers``: the arbiters of claims."""
        node.register_mailbox(REGISTRY_MAILBOX, self._on_message)
        node.subscribe(self._on_event)

    # -- reads ------------------------------------------------------------------------------

    def whereis(self, name: str) -> ActorRef | None:
        return self.replica.whereis(name)

    def registered(self) -> dict[str, ActorRef]:
        return self.replica.names()

    def lookup(self, name: str) -> Registration | None:
        entry = self.replica.lookup(name)
        return None if entry is None else Registration(name, entry.ref, entry.meta)

    def memberships(self, group: str) -> dict[ActorRef, Any]:
        return self.replica.memberships(group)

    def groups(self) -> list[str]:
        return self.replica.groups()

    def synced(self) -> bool:
        return not self._awaiting

    def status(self) -> dict[str, Any]:
        return {"backend": self.name, "names": self.replica.count(), "synced": self.synced()}

    # -- this node's changes ----------------------------------------------------------------

    async def claim(
        self, name: str, ref: ActorRef, timeout: float, meta: Any = None
    ) -> ActorRef | None:
        holder = self.replica.whereis(name)
        if holder is not None:
            return holder
        peers = self.node.nodes()
        if peers != self._peers:
            self._peers, self._members = peers, ring.Members([self.node.name, *peers])
        arbiter = self._members.owner(name)
        if arbiter == self.node.name:
            holder = self._arbitrate(name, ref)
        else:
            holder = await self._claim_via(arbiter, name, ref, timeout)
        if holder is not None and holder != ref:
            return holder
        if not self.replica.owns(name):
            self._broadcast(self.replica.register(name, ref, meta))
            self.on_changed([name])
        self._settle_reservations([name])  # granted here: the registration is now visible
        return None

    async def release(self, name: str, ref: ActorRef, reason: str = "unregistered") -> None:
        op = self.replica.unregister(name, ref, reason)
        self._broadcast(op)
        if op is not None:
            self.on_changed([name])

    async def update_meta(self, name: str, ref: ActorRef, meta: Any) -> bool:
        if self.replica.whereis(name) != ref:
            return False
        op = self.replica.update_meta(name, meta)
        self._broadcast(op)
        return op is not None

    async def join(self, group: str, ref: ActorRef, meta: Any = None) -> None:
        self._broadcast(self.replica.join(group, ref, meta))

    async def leave(self, group: str, ref: ActorRef, reason: str = "left") -> None:
        self._broadcast(self.replica.leave(group, ref, reason))

    def _claim_via(
        self, arbiter: str, name: str, ref: ActorRef, timeout: float
    ) -> asyncio.Future[ActorRef | None]:
        """The arbiter's answer to a claim, to come. The claims of one loop turn to one
        arbiter with one timeout travel in one message (see ``docs/registry.md``). A
        future, not a coroutine: one frame less to resume for every remote claim."""
        future: asyncio.Future[ActorRef | None] = asyncio.get_running_loop().create_future()
        key = (arbiter, timeout)
        batch = self._claims.get(key)
        if batch is None:
            batch = self._claims[key] = []
            asyncio.get_running_loop().call_soon(self._send_claims, key)
        batch.append((Claim(name, ref), future))
        return future

    def _send_claims(self, key: tuple[str, float]) -> None:
        batch = self._claims.pop(key)
        for first in range(0, len(batch), MAX_BATCH):
            task = asyncio.create_task(self._ask(*key, batch[first : first + MAX_BATCH]))
            self._asking.add(task)
            task.add_done_callback(self._asking.discard)

    async def _ask(
        self,
        arbiter: str,
        timeout: float,
        batch: list[tuple[Claim, asyncio.Future[ActorRef | None]]],
    ) -> None:
        claims = Claims(tuple(claim for claim, _ in batch))
        problem = None
        try:
            answers = await self.node.call(arbiter, REGISTRY_MAILBOX, claims.to_wire(), timeout)
            if not (isinstance(answers, list) and len(answers) == len(batch)):
                raise ValueError(f"expected {len(batch)} answers")
        except (TimeoutError, NotConnected, RemoteError) as exc:
            problem = f"failed: {exc}"
        except ValueError as exc:
            problem = f"answered: {exc}"
        except BaseException as exc:  # cancelled at shutdown: every claimant is told
            for _, future in batch:
                if not future.done():
                    future.set_exception(ClaimFailed(f"claim via {arbiter} ended: {exc!r}"))
            raise
        for index, (claim, future) in enumerate(batch):
            if future.done():  # its claimant was cancelled
                continue
            if problem is None:
                try:
                    future.set_result(ClaimAnswer.from_wire(answers[index]).holder)
                    continue
                except ValueError as exc:
                    failure = f"{arbiter} answered a claim of {claim.name!r}: {exc}"
            else:
                failure = f"claim of {claim.name!r} via {arbiter} {problem}"
            future.set_exception(ClaimFailed(failure))

    def _emit(self) -> None:
        events = self.replica.take_events()
        if events:
            self.on_events(events)

    def _broadcast(self, change: Change | None) -> None:
        """Send ``change`` to every peer, with the others of this loop turn (in order)."""
        self._emit()
        if change is None or not self.node.nodes():
            return  # nobody to tell: a peer that comes gets the change in our snapshot
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(change.to_wire()[1])
        if len(self._outbox) >= MAX_BATCH:
            self._flush()  # a turn that makes many changes sends them a batch at a time

    def _flush(self, new_peer: str | None = None) -> None:
        """Send the changes not sent yet to every peer but ``new_peer`` (which is about to
        get a snapshot that holds them)."""
        outbox, self._outbox = self._outbox, []
        for first in range(0, len(outbox), MAX_BATCH):
            ops = outbox[first : first + MAX_BATCH]
            body = ["op", ops[0]] if len(ops) == 1 else [Changes.KIND, ops]
            for peer in self.node.nodes():
                if peer != new_peer:
                    self._send(peer, body, "change")

    def _send(self, peer: str, body: list[Any], what: str) -> bool:
        """Send ``body`` to ``peer``'s registry; False if the connection is gone (a peer
        that went down meanwhile gets a snapshot when it comes back) or closing."""
        try:
            self.node.send_nowait(peer, REGISTRY_MAILBOX, body)
        except NotConnected:
            return False
        except (TypeError, ValueError, OverflowError) as exc:
            # Our slice holds only what replica checks let in, so this is a bug; the peer
            # would miss this and every later change: it must resynchronise from scratch.
            self.node.drop(peer, f"registry {what} cannot be sent ({exc})")
            return False
        return True

    # -- arbitration ------------------------------------------------------------------------

    def _arbitrate(self, name: str, ref: ActorRef) -> ActorRef | None:
        """One claim at a time (we are on the event loop): the first one wins."""
        holder = self.replica.whereis(name)
        if holder is not None:
            return holder
        now = time.monotonic()
        reservation = self._reservations.get(name)
        if (
            reservation is not None
            and reservation.ref != ref
            and reservation.expires > now
            and reservation.ref.node in (self.node.name, *self.node.nodes())
        ):
            return reservation.ref
        self._reservations[name] = _Reservation(ref, now + self.options.reservation_ttl)
        if len(self._reservations) > 1024 and now - self._pruned > 1.0:
            # Grants settle as soon as the claimant's registration is seen; this only
            # sweeps those whose claimant never registered, at most once a second.
            self._pruned = now
            self._reservations = {n: r for n, r in self._reservations.items() if r.expires > now}
        return None

    # -- what peers send --------------------------------------------------------------------

    def _on_event(self, event: NodeUp | NodeDown) -> None:
        peer = event.peer
        if isinstance(event, NodeUp):
            # The changes not sent yet go to the others; the new peer gets them in our
            # whole slice, first on the new connection, before any later change.
            self._flush(new_peer=peer)
            self._awaiting.add(peer)
            if not self._send(peer, self.replica.snapshot().to_wire(), "snapshot"):
                self._awaiting.discard(peer)
            return
        self._awaiting.discard(peer)
        gone = self.replica.drop(peer)
        self._emit()
        for name in [n for n, r in self._reservations.items() if r.ref.node == peer]:
            del self._reservations[name]
        if gone:
            log.info("%s: %d name(s) of %s are gone with it", self.node.name, len(gone), peer)
        self.on_changed(gone)

    def _on_message(self, sender: str, body: Any) -> Any:
        try:
            message = decode_registry_message(body)
        except MalformedMessage as exc:
            if exc.expects_answer:
                self._refusals.refuse(sender, "malformed", str(exc))
                raise  # a claim is a call: the caller is told, rather than granted by a None
            if self._admits(sender):
                self._refusals.refuse(sender, "malformed", str(exc))
            return None
        if isinstance(message, Claim):
            return ClaimAnswer(self._arbitrate(message.name, message.ref)).to_wire()
        if isinstance(message, Claims):
            return [
                ClaimAnswer(self._arbitrate(claim.name, claim.ref)).to_wire()
                for claim in message.claims
            ]
        if not self._admits(sender):
            return None
        try:
            if isinstance(message, Snapshot):
                names = self.replica.load(sender, message)
                self._awaiting.discard(sender)
            elif isinstance(message, Changes):
                applied = (self.replica.apply(sender, change) for change in message.changes)
                names = [name for name in applied if name is not None]
            else:
                name = self.replica.apply(sender, message)
                names = [] if name is None else [name]
        except ClockRejected as exc:
            self._refusals.refuse(sender, "clock", str(exc))
            return None
        except ValueError as exc:  # a change before the snapshot
            self._refusals.refuse(sender, "malformed", str(exc))
            return None
        self._emit()
        self._check_lost(names)
        self._settle_reservations(names)
        self.on_changed(names)
        return None

    def _admits(self, sender: str) -> bool:
        """Whether a snapshot or change from ``sender`` is looked at: not if its connection
        is being closed (ignored), nor if it is a hidden client's (refused)."""
        if self._refusals.closing(sender):
            return False
        if sender not in self.node.nodes():
            self._refusals.refuse(sender, "hidden", "snapshots and changes come from members")
            return False
        return True

    def _settle_reservations(self, names: list[str]) -> None:
        if not self._reservations:
            return
        for name in names:
            reservation = self._reservations.get(name)
            if reservation is not None and self.replica.whereis(name) == reservation.ref:
                del self._reservations[name]

    def _check_lost(self, names: list[str]) -> None:
        for entry in self.replica.lost(names):
            winner = self.replica.whereis(entry.name)
            log.warning(
                "%s: name %r is also registered by %s, which wins; stopping %s",
                self.node.name,
                entry.name,
                winner,
                entry.ref,
            )
            self._broadcast(self.replica.unregister(entry.name, entry.ref, "name conflict"))
            self.on_lost(entry.name, entry.ref, "name conflict")
            self.on_changed([entry.name])
