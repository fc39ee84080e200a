"""The registry's wire vocabulary: every message of its two mailboxes, one class each.

Each message travels as a list whose first item names its kind. ``$registry`` is the
``crdt`` backend's, between members (``ref`` is an actor ref's plain form ``[node, id]``,
an entry ``[name, node, id, lamport]``):

=========  ================================  =============================================
kind       fields                            meaning
=========  ================================  =============================================
``claim``  ``name``, ``ref``                 a call to the arbiter of ``name`` (its ring
                                             owner): may ``ref`` take it? Answered None
                                             (granted) or the ``ref`` that holds it
``snap``   ``{lamport, entries, groups}``    the sender's whole slice, first on a new
                                             connection (``groups``: name -> refs)
``op``     ``{op: "reg", e: entry}``         the sender registered a name ...
           ``{op: "unreg", name}``           ... dropped its registration of ``name``
           ``{op: "join", g, r}``            ... added ``r`` to group ``g``
           ``{op: "leave", g, r}``           ... removed ``r`` from group ``g``
=========  ================================  =============================================

``$names`` is the :class:`~pycluster.registry.Registry`'s, for clients (hidden ones too)
and, for ``ring-*``, between members. A ``spec`` is a ring actor's
:class:`Spec` ``[name, class, args, kwargs, [restart, max_restarts, window], id]``; refs in
answers are :class:`~pycluster.actors.ref.ActorRef` values (the codec's extension):

================  ================================  ======================================
kind              fields                            meaning
================  ================================  ======================================
``spawn``         ``name``, ``class``, ``args``,    a call: start ``class`` as ``name``
                  ``kwargs``, ``timeout``           here (or on the ring); answered the
                  [, ``placement``]                 ref, or ``{already_started: ref}``
``call``          ``name``, ``message``,            a call: call the actor registered as
                  ``timeout``                       ``name``; answered its reply
``registered``                                      a call: answered ``{name: ref}``
``running``                                         a call: answered the names of the
                                                    actors running on the node
``ring-specs``    ``[[spec, host], ...]``           ring actors the sender knows, with the
                                                    node each was last seen on (or None)
``ring-forget``   ``[spec, ...]``                   ring actors that ended for good
``ring-leaving``                                    the sender leaves: it owns nothing now
``ring-spawn``    ``spec``, ``timeout``             a call to the ring owner: start it;
                                                    answered the ref,
                                                    ``{already_started: ref}`` or
                                                    ``{not_owner: node}``
``ring-adopt``    ``spec``, ``state``,              the same, resuming from ``state`` (a
                  ``timeout``                       move's ``handoff()``)
================  ================================  ======================================

``to_wire()`` gives a message's one encoding; :func:`decode_registry_message` and
:func:`decode_names_request` give the message of a received body, and
:func:`decode_spawn_answer` the answer to a spawn. Anything else is a
:class:`MalformedMessage` (a ValueError), never a guess; the receiver refuses it
(``pycluster.registry.refusals``). Decoding does work proportional to the body, which
the frame limits bound; whether a Lamport time may be adopted is the replica's decision.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import attrs

from pycluster.actors import ActorRestartPolicy
from pycluster.actors.ref import ActorRef
from pycluster.registry.refs import Entry

REGISTRY_MAILBOX = "$registry"
"""The ``crdt`` backend's mailbox."""
NAMES_MAILBOX = "$names"
"""The registry's mailbox for clients and ring placement."""

Placement = Literal["here", "ring"]


class MalformedMessage(ValueError):
    """A registry message that is none of this vocabulary; its text says what is wrong.

    ``expects_answer``: whether its sender waits for an answer (its kind is a call's, or, on
    ``$names``, a kind unknown here), so is to be told why rather than left to time out.
    """

    def __init__(self, problem: str, *, expects_answer: bool) -> None:
        super().__init__(problem)
        self.expects_answer = expects_answer


def _timeout(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # Checked where a request is made too: a timeout its receiver would refuse must fail
    # here, not close the connection there.
    _seconds(value)


# -- what messages carry ----------------------------------------------------------------------


@attrs.frozen
class Spec:
    """How to start a ring-placed actor anywhere: plain msgpack values only."""

    name: str
    cls: str
    """The actor class as ``module:qualname``; every node must be able to import it."""
    args: list[Any]
    kwargs: dict[str, Any]
    policy: ActorRestartPolicy
    id: str
    """Unique to this spawn: a forgotten spec is not revived by a late copy."""

    def to_wire(self) -> list[Any]:
        """The spec as plain msgpack values."""
        p = self.policy
        return [
            self.name,
            self.cls,
            self.args,
            self.kwargs,
            [p.restart, p.max_restarts, p.window],
            self.id,
        ]

    @classmethod
    def from_wire(cls, data: object) -> Spec:
        """A spec from a peer; ValueError when ``data`` is not one."""
        if not (isinstance(data, list) and len(data) == 6):
            raise ValueError("a ring spec is [name, class, args, kwargs, policy, id]")
        name, path, args, kwargs, policy, spec_id = data
        if not (isinstance(name, str) and isinstance(spec_id, str)):
            raise ValueError("ring spec name and id must be strings")
        if not isinstance(args, list):
            raise ValueError("ring spec args must be a list")
        if not (isinstance(policy, list) and len(policy) == 3):
            raise ValueError("a ring spec policy is [restart, max_restarts, window]")
        restart, max_restarts, window = policy
        if restart not in ("permanent", "transient", "temporary"):
            raise ValueError(f"unknown restart {_shown(restart)}")
        if not isinstance(max_restarts, int) or isinstance(max_restarts, bool):
            raise ValueError("a ring spec's max_restarts is an integer")
        return cls(
            name,
            _class_path(path),
            args,
            _kwargs(kwargs),
            ActorRestartPolicy(
                restart=restart,
                max_restarts=max_restarts,
                window=_seconds(window, "a restart window"),
            ),
            spec_id,
        )


# -- $registry: the crdt backend ----------------------------------------------------------------


@attrs.frozen
class Claim:
    """A call to the arbiter of ``name``: may ``ref`` take it? (:class:`ClaimAnswer`)"""

    KIND: ClassVar[str] = "claim"
    name: str
    ref: ActorRef

    def to_wire(self) -> list[Any]:
        return ["claim", self.name, self.ref.to_wire()]

    @classmethod
    def from_wire(cls, data: object) -> Claim:
        """A claim; ValueError when ``data`` is not one."""
        if not (isinstance(data, list) and len(data) == 3 and data[0] == cls.KIND):
            raise ValueError("a claim is ['claim', name, ref]")
        if not isinstance(data[1], str):
            raise ValueError("a claimed name is a string")
        return cls(data[1], ActorRef.from_wire(data[2]))


@attrs.frozen
class ClaimAnswer:
    """The arbiter's answer to a :class:`Claim`: ``holder`` None if granted, else the actor
    that holds the name (or was granted it first)."""

    holder: ActorRef | None

    def to_wire(self) -> list[str] | None:
        return None if self.holder is None else self.holder.to_wire()

    @classmethod
    def from_wire(cls, data: object) -> ClaimAnswer:
        """An arbiter's answer; ValueError when ``data`` is not one."""
        return cls(None if data is None else ActorRef.from_wire(data))


@attrs.frozen
class Snapshot:
    """A node's whole slice, sent first on each new connection; it replaces what the
    receiver held of the sender. ``entries`` name each name at most once."""

    KIND: ClassVar[str] = "snap"
    lamport: int
    entries: tuple[Entry, ...]
    groups: Mapping[str, frozenset[ActorRef]]

    def to_wire(self) -> list[Any]:
        return [
            "snap",
            {
                "lamport": self.lamport,
                "entries": [entry.to_wire() for entry in self.entries],
                "groups": {
                    group: [ref.to_wire() for ref in sorted(refs)]
                    for group, refs in self.groups.items()
                },
            },
        ]

    @classmethod
    def from_wire(cls, data: object) -> Snapshot:
        """A snapshot; ValueError when ``data`` is not one."""
        if not (isinstance(data, list) and len(data) == 2 and data[0] == cls.KIND):
            raise ValueError("a snapshot is ['snap', {lamport, entries, groups}]")
        fields = data[1]
        if not isinstance(fields, dict):
            raise ValueError("snapshot: expected a map")
        entries = fields.get("entries")
        if not isinstance(entries, list):
            raise ValueError("snapshot entries: expected a list")
        decoded = tuple(Entry.from_wire(item) for item in entries)
        names = {entry.name for entry in decoded}
        if len(names) != len(decoded):
            # One entry per name: a slice is a map (and a repeated name would be added
            # twice, then removed once).
            raise ValueError("snapshot entries repeat a name")
        groups = fields.get("groups")
        if not isinstance(groups, dict):
            raise ValueError("snapshot groups must be a map")
        members = {
            _string(group, "a group name"): frozenset(map(ActorRef.from_wire, _list(refs)))
            for group, refs in groups.items()
        }
        return cls(_lamport(fields.get("lamport")), decoded, members)


@attrs.frozen
class Registered:
    """The sender registered ``entry.name`` (replacing its own earlier entry for it)."""

    OP: ClassVar[str] = "reg"
    entry: Entry

    def to_wire(self) -> list[Any]:
        return ["op", {"op": "reg", "e": self.entry.to_wire()}]

    @classmethod
    def from_op(cls, op: dict[Any, Any]) -> Registered:
        return cls(Entry.from_wire(op.get("e")))


@attrs.frozen
class Unregistered:
    """The sender dropped its registration of ``name``."""

    OP: ClassVar[str] = "unreg"
    name: str

    def to_wire(self) -> list[Any]:
        return ["op", {"op": "unreg", "name": self.name}]

    @classmethod
    def from_op(cls, op: dict[Any, Any]) -> Unregistered:
        return cls(_string(op.get("name"), "an unregistered name"))


@attrs.frozen
class Joined:
    """The sender added ``ref`` to process group ``group``."""

    OP: ClassVar[str] = "join"
    group: str
    ref: ActorRef

    def to_wire(self) -> list[Any]:
        return ["op", {"op": "join", "g": self.group, "r": self.ref.to_wire()}]

    @classmethod
    def from_op(cls, op: dict[Any, Any]) -> Joined:
        return cls(_string(op.get("g"), "a group name"), ActorRef.from_wire(op.get("r")))


@attrs.frozen
class Left:
    """The sender removed ``ref`` from process group ``group``."""

    OP: ClassVar[str] = "leave"
    group: str
    ref: ActorRef

    def to_wire(self) -> list[Any]:
        return ["op", {"op": "leave", "g": self.group, "r": self.ref.to_wire()}]

    @classmethod
    def from_op(cls, op: dict[Any, Any]) -> Left:
        return cls(_string(op.get("g"), "a group name"), ActorRef.from_wire(op.get("r")))


Change = Registered | Unregistered | Joined | Left
"""One change a node made to its own slice, sent to every peer in order."""
RegistryMessage = Claim | Snapshot | Change

_CHANGES: dict[object, Callable[[dict[Any, Any]], Change]] = {
    change.OP: change.from_op for change in (Registered, Unregistered, Joined, Left)
}


def decode_change(data: object) -> Change:
    """A change; ValueError when ``data`` is not one."""
    if not (isinstance(data, list) and len(data) == 2 and data[0] == "op"):
        raise ValueError("a change is ['op', {op, ...}]")
    op = data[1]
    if not isinstance(op, dict):
        raise ValueError("a change is a map")
    kind = op.get("op")
    decode = _CHANGES.get(kind) if isinstance(kind, str) else None
    if decode is None:
        raise ValueError(f"unknown registry operation {_shown(kind)}")
    return decode(op)


_REGISTRY_KINDS: dict[str, Callable[[object], RegistryMessage]] = {
    Claim.KIND: Claim.from_wire,
    Snapshot.KIND: Snapshot.from_wire,
    "op": decode_change,
}


def decode_registry_message(body: object) -> RegistryMessage:
    """The message a ``$registry`` body holds; MalformedMessage if it holds none."""
    kind = body[0] if isinstance(body, list) and body else None
    decode = _REGISTRY_KINDS.get(kind) if isinstance(kind, str) else None
    if decode is None:
        raise MalformedMessage(f"unknown registry message {_shown(kind)}", expects_answer=False)
    try:
        return decode(body)
    except ValueError as exc:
        raise MalformedMessage(str(exc), expects_answer=kind == Claim.KIND) from None


# -- $names: the registry's requests ----------------------------------------------------------


@attrs.frozen
class SpawnRequest:
    """A call: start actor class ``cls`` (``module:qualname``) as ``name`` on the receiver,
    or on the ring (``placement``); answered :class:`Spawned` or :class:`AlreadyRunning`."""

    KIND: ClassVar[str] = "spawn"
    name: str
    cls: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    timeout: float = attrs.field(validator=_timeout)
    placement: Placement = "here"

    def to_wire(self) -> list[Any]:
        body = ["spawn", self.name, self.cls, list(self.args), self.kwargs, self.timeout]
        if self.placement != "here":
            body.append(self.placement)
        return body

    @classmethod
    def from_wire(cls, data: object) -> SpawnRequest:
        """A spawn request; ValueError when ``data`` is not one."""
        if not (isinstance(data, list) and len(data) in (6, 7) and data[0] == cls.KIND):
            raise ValueError(
                "a spawn request is ['spawn', name, class, args, kwargs, timeout(, placement)]"
            )
        _, name, path, args, kwargs, timeout, *rest = data
        placement: Placement = "here"
        if rest and rest[0] == "ring":
            placement = "ring"
        elif rest and rest[0] != "here":
            raise ValueError(f"unknown placement {_shown(rest[0])}: 'here' or 'ring'")
        if not isinstance(args, list):
            raise ValueError("spawn args must be a list")
        return cls(
            _string(name, "a spawned name"),
            _class_path(path),
            tuple(args),
            _kwargs(kwargs),
            _seconds(timeout),
            placement,
        )


@attrs.frozen
class CallRequest:
    """A call: call the actor registered as ``name`` on the receiver's behalf (for hidden
    clients, which hold no registry); answered the actor's reply."""

    KIND: ClassVar[str] = "call"
    name: str
    message: Any
    timeout: float = attrs.field(validator=_timeout)

    def to_wire(self) -> list[Any]:
        return ["call", self.name, self.message, self.timeout]

    @classmethod
    def from_wire(cls, data: object) -> CallRequest:
        """A call request; ValueError when ``data`` is not one."""
        if not (isinstance(data, list) and len(data) == 4 and data[0] == cls.KIND):
            raise ValueError("a call request is ['call', name, message, timeout]")
        return cls(_string(data[1], "a called name"), data[2], _seconds(data[3]))


@attrs.frozen
class RegisteredRequest:
    """A call: every registered name and its actor, as the receiver sees them."""

    KIND: ClassVar[str] = "registered"

    def to_wire(self) -> list[Any]:
        return ["registered"]

    @classmethod
    def from_wire(cls, data: object) -> RegisteredRequest:
        _bare(cls.KIND, data)
        return cls()


@attrs.frozen
class RunningRequest:
    """A call: the names of the actors running on the receiver, registered or not."""

    KIND: ClassVar[str] = "running"

    def to_wire(self) -> list[Any]:
        return ["running"]

    @classmethod
    def from_wire(cls, data: object) -> RunningRequest:
        _bare(cls.KIND, data)
        return cls()


@attrs.frozen
class RingSpecs:
    """Ring actors the sender knows, each with the node it was last seen on (or None);
    sent on each new connection and after this node started one."""

    KIND: ClassVar[str] = "ring-specs"
    specs: tuple[tuple[Spec, str | None], ...]

    def to_wire(self) -> list[Any]:
        return ["ring-specs", [[spec.to_wire(), host] for spec, host in self.specs]]

    @classmethod
    def from_wire(cls, data: object) -> RingSpecs:
        """Known specs; ValueError when ``data`` is not that."""
        if not (isinstance(data, list) and len(data) == 2 and data[0] == cls.KIND):
            raise ValueError("ring specs are ['ring-specs', [[spec, host], ...]]")
        specs = []
        for item in _list(data[1]):
            if not (isinstance(item, list) and len(item) == 2):
                raise ValueError("ring specs are [[spec, host], ...]")
            host = item[1]
            if host is not None and not isinstance(host, str):
                raise ValueError("a ring actor's host is a node name or None")
            specs.append((Spec.from_wire(item[0]), host))
        return cls(tuple(specs))


@attrs.frozen
class RingForget:
    """Ring actors that ended for good (normally, or past their restart limit)."""

    KIND: ClassVar[str] = "ring-forget"
    specs: tuple[Spec, ...]

    def to_wire(self) -> list[Any]:
        return ["ring-forget", [spec.to_wire() for spec in self.specs]]

    @classmethod
    def from_wire(cls, data: object) -> RingForget:
        """Forgotten specs; ValueError when ``data`` is not that."""
        if not (isinstance(data, list) and len(data) == 2 and data[0] == cls.KIND):
            raise ValueError("forgotten ring specs are ['ring-forget', [spec, ...]]")
        return cls(tuple(Spec.from_wire(item) for item in _list(data[1])))


@attrs.frozen
class RingLeaving:
    """The sender leaves the cluster: it owns no ring actor any more."""

    KIND: ClassVar[str] = "ring-leaving"

    def to_wire(self) -> list[Any]:
        return ["ring-leaving"]

    @classmethod
    def from_wire(cls, data: object) -> RingLeaving:
        _bare(cls.KIND, data)
        return cls()


@attrs.frozen
class RingSpawn:
    """A call to the ring owner of ``spec.name``: start it; answered :class:`Spawned`,
    :class:`AlreadyRunning` or :class:`NotOwner`."""

    KIND: ClassVar[str] = "ring-spawn"
    spec: Spec
    timeout: float = attrs.field(validator=_timeout)

    def to_wire(self) -> list[Any]:
        return ["ring-spawn", self.spec.to_wire(), self.timeout]

    @classmethod
    def from_wire(cls, data: object) -> RingSpawn:
        """A ring spawn; ValueError when ``data`` is not one."""
        if not (isinstance(data, list) and len(data) == 3 and data[0] == cls.KIND):
            raise ValueError("a ring spawn is ['ring-spawn', spec, timeout]")
        return cls(Spec.from_wire(data[1]), _seconds(data[2]))


@attrs.frozen
class RingAdopt:
    """As :class:`RingSpawn`, for an actor moved here: started with ``resume(state)``."""

    KIND: ClassVar[str] = "ring-adopt"
    spec: Spec
    state: Any
    timeout: float = attrs.field(validator=_timeout)

    def to_wire(self) -> list[Any]:
        return ["ring-adopt", self.spec.to_wire(), self.state, self.timeout]

    @classmethod
    def from_wire(cls, data: object) -> RingAdopt:
        """A ring adoption; ValueError when ``data`` is not one."""
        if not (isinstance(data, list) and len(data) == 4 and data[0] == cls.KIND):
            raise ValueError("a ring adoption is ['ring-adopt', spec, state, timeout]")
        return cls(Spec.from_wire(data[1]), data[2], _seconds(data[3]))


RingRequest = RingSpecs | RingForget | RingLeaving | RingSpawn | RingAdopt
NamesRequest = SpawnRequest | CallRequest | RegisteredRequest | RunningRequest | RingRequest

REGISTERED, RUNNING, RING_LEAVING = RegisteredRequest(), RunningRequest(), RingLeaving()

_NAMES_KINDS: dict[str, Callable[[object], NamesRequest]] = {
    kind.KIND: kind.from_wire
    for kind in (
        SpawnRequest,
        CallRequest,
        RegisteredRequest,
        RunningRequest,
        RingSpecs,
        RingForget,
        RingLeaving,
        RingSpawn,
        RingAdopt,
    )
}
_NAMES_CASTS = frozenset({RingSpecs.KIND, RingForget.KIND, RingLeaving.KIND})


def decode_names_request(body: object) -> NamesRequest:
    """The request a ``$names`` body holds; MalformedMessage if it holds none."""
    kind = body[0] if isinstance(body, list) and body else None
    decode = _NAMES_KINDS.get(kind) if isinstance(kind, str) else None
    if decode is None:
        raise MalformedMessage(f"unknown registry request {_shown(kind)}", expects_answer=True)
    try:
        return decode(body)
    except ValueError as exc:
        raise MalformedMessage(str(exc), expects_answer=kind not in _NAMES_CASTS) from None


# -- $names: answers to spawns ------------------------------------------------------------------


@attrs.frozen
class Spawned:
    """The actor started: ``ref``."""

    ref: ActorRef

    def to_wire(self) -> ActorRef:
        return self.ref


@attrs.frozen
class AlreadyRunning:
    """The name is taken: ``ref`` is the actor running under it (raised by the caller as
    :class:`~pycluster.registry.AlreadyStarted`)."""

    ref: ActorRef

    def to_wire(self) -> dict[str, Any]:
        return {"already_started": self.ref}


@attrs.frozen
class NotOwner:
    """The receiver does not own the name on its ring; ``owner`` does, as it sees it."""

    owner: str | None

    def to_wire(self) -> dict[str, Any]:
        return {"not_owner": self.owner}


SpawnAnswer = Spawned | AlreadyRunning | NotOwner


def decode_spawn_answer(answer: object) -> SpawnAnswer:
    """The answer to a :class:`SpawnRequest`, :class:`RingSpawn` or :class:`RingAdopt`;
    ValueError when ``answer`` is none."""
    if isinstance(answer, ActorRef):
        return Spawned(answer)
    if isinstance(answer, dict) and len(answer) == 1:
        if isinstance(ref := answer.get("already_started"), ActorRef):
            return AlreadyRunning(ref)
        owner = answer.get("not_owner", ...)
        if owner is None or isinstance(owner, str):
            return NotOwner(owner)
    raise ValueError(f"unexpected answer to a spawn: {_shown(answer)}")


# -- checks -------------------------------------------------------------------------------------

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 40


def _shown(value: object) -> str:
    """``value`` for an error message: a short repr, whatever a peer sent (bounded work)."""
    return _repr.repr(value)


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is a string, not {type(value).__name__}")
    return value


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list, not {type(value).__name__}")
    return value


def _lamport(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("a Lamport time is a non-negative integer")
    return value


def _seconds(value: object, what: str = "a timeout") -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{what} is a non-negative number of seconds, not {_shown(value)}")
    return float(value)


def _class_path(value: object) -> str:
    if not (isinstance(value, str) and ":" in value):
        raise ValueError("an actor class is given as 'module:qualname'")
    return value


def _kwargs(value: object) -> dict[str, Any]:
    if not (isinstance(value, dict) and all(isinstance(key, str) for key in value)):
        raise ValueError("keyword arguments are a map with string keys")
    return value


def _bare(kind: str, data: object) -> None:
    if not (isinstance(data, list) and len(data) == 1 and data[0] == kind):
        raise ValueError(f"[{kind!r}] carries nothing more")
