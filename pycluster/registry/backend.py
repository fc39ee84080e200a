"""The registry backend contract, a strict point of cut-off.

A backend is chosen by ``registry.backend`` in YAML and provided by a plugin through
``pycluster_register_registry_backends``. It maps names to :class:`ActorRef`s and groups to
sets of refs, for the whole cluster. What crosses this line: names, refs and group names;
claims, which must be arbitrated (a claim that cannot complete raises, it never succeeds
silently); losses, reported through ``on_lost`` when the backend takes a name away from
one of this node's actors (a name conflict after a partition, an expired lease); every
change it learns of, whichever node made it, as a registry event through ``on_event``
(or several at once, in order, through ``on_events``);
and, from a backend that declares ``reports_changes``, the names whose holder changed,
through ``on_changed`` (ring placement then works only on those, instead of polling).

The :class:`~pycluster.Registry` only ever asks a backend to claim, release, join or
leave for actors of *this* node (requests for another node's actor are forwarded to that
node), so a backend may tie every entry to this node's life: when the node goes, its
entries go.
Actors, messages and placement stay on the other side, in :class:`~pycluster.Registry`.
Lookups are local reads: they never wait on the network.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import attrs

from pycluster.actors.ref import ActorRef
from pycluster.registry.events import RegistryEvent
from pycluster.registry.refs import Entry
from pycluster.transport.waist import Transport


class ClaimFailed(RuntimeError):
    """A name could not be claimed in time (no arbiter reachable, timeout, store down)."""


# Called with (name, ref, reason) when this node's registration of a name is taken away.
LostCallback = Callable[[str, ActorRef, str], None]
# Called with names whose holder may have changed (registered, released, lost, gone).
ChangedCallback = Callable[[list[str]], None]
# Called with each change of the registry this node learns of, in order.
EventCallback = Callable[[RegistryEvent], None]
# The same for several changes at once, in order.
EventsCallback = Callable[[Sequence[RegistryEvent]], None]
# Picks the winner of two registrations of one name; must be a pure function.
Resolve = Callable[[Entry, Entry], Entry]


@attrs.frozen
class Registration:
    """What ``registry.lookup(name)`` returns: the actor registered as ``name`` and the
    registration's metadata."""

    name: str
    ref: ActorRef
    meta: Any = attrs.field(default=None, eq=False)


class RegistryBackend(abc.ABC):
    """Base class of registry backends."""

    name: ClassVar[str]
    """The ``registry.backend`` value that selects this backend."""

    Options: ClassVar[type[Any]]
    """attrs config class validating ``registry.options``."""

    forget_after: float = 1.0
    """Seconds, after this node sees a peer down, within which the peer's names are gone
    (a lease-based backend sets it from its configured lease, per instance). The contract
    tests hold it to this."""

    reports_changes: ClassVar[bool] = False
    """Whether the backend calls ``on_changed`` with every name whose ``whereis`` answer
    changed (this node's own claims and releases included), and ``synced()`` only turns
    true in a change it reports or on a node event. Ring placement polls the registry of
    a backend that does not, every 0.1 s, however idle the cluster."""

    def __init__(self, node: Transport, options: Any, resolve: Resolve) -> None:
        self.node = node
        """The node's transport waist: its name, peers, mailboxes and node events."""
        self.options = options
        self.resolve = resolve
        self.on_lost: LostCallback = lambda name, ref, reason: None
        self.on_changed: ChangedCallback = lambda names: None
        self.on_event: EventCallback = lambda event: None
        self.on_events: EventsCallback = lambda events: None
        """Like ``on_event``, for several events at once (in order): cheaper for a backend
        that learns of many changes together."""

    async def start(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Start replicating (the node is started)."""

    async def stop(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Stop; this node's names are released."""

    @abc.abstractmethod
    async def claim(
        self, name: str, ref: ActorRef, timeout: float, meta: Any = None
    ) -> ActorRef | None:
        """Register ``name`` for this node's actor ``ref`` (with ``meta``) if nobody holds
        it: None when granted, else the ref holding it. Raises ClaimFailed if the claim
        cannot complete in ``timeout``."""

    @abc.abstractmethod
    async def release(self, name: str, ref: ActorRef, reason: str = "unregistered") -> None:
        """Drop this node's registration of ``name``, if it still names ``ref``."""

    @abc.abstractmethod
    async def update_meta(self, name: str, ref: ActorRef, meta: Any) -> bool:
        """Replace the metadata of this node's registration of ``name`` if it still names
        ``ref``; False if it does not."""

    @abc.abstractmethod
    def whereis(self, name: str) -> ActorRef | None:
        """The actor registered as ``name`` (a local read)."""

    @abc.abstractmethod
    def lookup(self, name: str) -> Registration | None:
        """The registration of ``name``, with its metadata (a local read)."""

    @abc.abstractmethod
    def registered(self) -> dict[str, ActorRef]:
        """Every registered name."""

    @abc.abstractmethod
    async def join(self, group: str, ref: ActorRef, meta: Any = None) -> None:
        """Add this node's actor ``ref`` to ``group`` (or replace its metadata)."""

    @abc.abstractmethod
    async def leave(self, group: str, ref: ActorRef, reason: str = "left") -> None:
        """Remove this node's actor ``ref`` from ``group``."""

    @abc.abstractmethod
    def memberships(self, group: str) -> dict[ActorRef, Any]:
        """Members of ``group`` on every node, with their metadata (a local read)."""

    @abc.abstractmethod
    def groups(self) -> list[str]:
        """Every group with at least one member, sorted (a local read)."""

    def members(self, group: str) -> list[ActorRef]:
        """Members of ``group`` on every node, sorted (a local read)."""
        return sorted(self.memberships(group))

    def synced(self) -> bool:
        """Whether this node has merged the registry of every peer connected now."""
        return True

    def status(self) -> dict[str, Any]:
        """The ``registry`` object of ``/status``."""
        return {"backend": self.name, "names": len(self.registered()), "synced": self.synced()}
