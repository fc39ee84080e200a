"""The registry's wire vocabulary: every message of its two mailboxes, one class each.

Each message travels as a list whose first item names its kind. ``$registry`` is the
``crdt`` backend's, between members (``ref`` is an actor ref's plain form ``[node, id]``,
an entry ``[name, node, id, lamport(, meta, supersedes)]``):

==========  ================================  =============================================
kind        fields                            meaning
==========  ================================  =============================================
``claim``   ``name``, ``ref``                 a call to the arbiter of ``name`` (its ring
                                              owner): may ``ref`` take it? Answered None
                                              (granted) or the ``ref`` that holds it
``claims``  ``[[name, ref], ...]``            several claims to one arbiter, made in
                                              one turn of the claimant's loop; answered
                                              a list, one answer per claim, in order
``snap``    ``{lamport, entries, groups}``    the sender's whole slice, first on a new
                                              connection (``groups``: name -> members,
                                              each ``[node, id(, meta)]``)
``op``      ``{op: "reg", e: entry}``         the sender registered a name (or updated
                                              its metadata) ...
            ``{op: "unreg", name, why}``      ... dropped its registration of ``name``
            ``{op: "join", g, r(, m)}``       ... added ``r`` to group ``g`` (meta ``m``)
            ``{op: "leave", g, r, why}``      ... removed ``r`` from group ``g``
``ops``     ``[{op, ...}, ...]``              several changes made in one turn of the
                                              sender's loop, in order
==========  ================================  =============================================

``$names`` is the :class:`~pycluster.registry.Registry`'s, for clients (hidden ones too)
and, for ``ring-*``, between members. A ``spec`` is a ring actor's
:class:`Spec` ``[name, class, args, kwargs, [restart, max_restarts, window], id(, meta)]``; refs in
answers are :class:`~pycluster.actors.ref.ActorRef` values (the codec's extension):

================  ================================  ======================================
kind              fields                            meaning
================  ================================  ======================================
``spawn``         ``name``, ``class``, ``args``,    a call: start ``class`` as ``name``
                  ``kwargs``, ``timeout``           here (or on the ring); answered the
                  [, ``placement`` [, ``meta``]]    ref, or ``{already_started: ref}``
``call``          ``name``, ``message``,            a call: call the actor registered as
                  ``timeout``                       ``name``; answered its reply
``register``      ``name``, ``ref``, ``meta``,      a call to ``ref``'s node: register it
                  ``timeout``                       as its own; answered None or
                                                    ``{already_started: ref}``
``unregister``    ``name``, ``ref``                 a call to the holder's node: drop it
``meta``          ``name``, ``ref``, ``meta``       a call to the holder's node: replace
                                                    the metadata; answered a boolean
``join``          ``group``, ``ref``, ``meta``      a call to ``ref``'s node: join ``group``
``leave``         ``group``, ``ref``                a call to ``ref``'s node: leave it
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
from pycluster.registry.refs import Entry, meta_from_wire

REGISTRY_MAILBOX = "$registry"
"""The ``crdt`` backend's mailbox."""
NAMES_MAILBOX = "$names"
"""The registry's mailbox for clients and ring placement."""

Placement = Literal["here", "ring"]
MAX_REASON = 200
"""Characters of a reason (why a name or membership ended) kept from a peer."""


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
    meta: Any = attrs.field(default=None, eq=False)
    """The metadata of the actor's registration."""

    def to_wire(self) -> list[Any]:
        """The spec as plain msgpack values."""
        p = self.policy
        wire = [
            self.name,
            self.cls,
            self.args,
            self.kwargs,
            [p.restart, p.max_restarts, p.window],
            self.id,
        ]
        if self.meta is not None:
            wire.append(self.meta)
        return wire

    @classmethod
    def from_wire(cls, data: object) -> Spec:
        """A spec from a peer; ValueError when ``data`` is not one."""
        if not (isinstance(data, list) and len(data) in (6, 7)):
            raise ValueError("a ring spec is [name, class, args, kwargs, policy, id(, meta)]")
        name, path, args, kwargs, policy, spec_id = data[:6]
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
            meta_from_wire(data[6]) if len(data) == 7 else None,
        )


# -- $registry: the crdt backend ----------------------------------------------------------------


@attrs.define
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


MAX_BATCH = 1024
"""Claims in one ``claims`` message, and changes in one ``ops`` message, at most."""


@attrs.define
class Claims:
    """Several :class:`Claim` calls to one arbiter, answered a list of :class:`ClaimAnswer`
    in the same order. A claimant sends the claims of one loop turn together."""

    KIND: ClassVar[str] = "claims"
    claims: tuple[Claim, ...]

    def to_wire(self) -> list[Any]:
        return [self.KIND, [[claim.name, claim.ref.to_wire()] for claim in self.claims]]

    @classmethod
    def from_wire(cls, data: object) -> Claims:
        """Claims; ValueError when ``data`` is not such a message."""
        if not (isinstance(data, list) and len(data) == 2 and isinstance(data[1], list)):
            raise ValueError("claims are ['claims', [[name, ref], ...]]")
        if not 0 < len(data[1]) <= MAX_BATCH:
            raise ValueError(f"claims come 1 to {MAX_BATCH} at a time")
        claims = []
        for item in data[1]:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                raise ValueError("a claim of a batch is [name, ref]")
            claims.append(Claim(item[0], ActorRef.from_wire(item[1])))
        return cls(tuple(claims))


@attrs.define
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


@attrs.define
class Snapshot:
    """A node's whole slice, sent first on each new connection; it replaces what the
    receiver held of the sender. ``entries`` name each name at most once; ``groups`` map
    each group to its members and their metadata."""

    KIND: ClassVar[str] = "snap"
    lamport: int
    entries: tuple[Entry, ...]
    groups: Mapping[str, Mapping[ActorRef, Any]]

    def to_wire(self) -> list[Any]:
        return [
            "snap",
            {
                "lamport": self.lamport,
                "entries": [entry.to_wire() for entry in self.entries],
                "groups": {
                    group: [_member_to_wire(ref, refs[ref]) for ref in sorted(refs)]
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
            _string(group, "a group name"): dict(map(_member_from_wire, _list(refs)))
            for group, refs in groups.items()
        }
        return cls(_lamport(fields.get("lamport")), decoded, members)


def _member_to_wire(ref: ActorRef, meta: Any) -> list[Any]:
    return [ref.node, ref.id] if meta is None else [ref.node, ref.id, meta]


def _member_from_wire(data: object) -> tuple[ActorRef, Any]:
    if isinstance(data, list) and len(data) == 3:
        return ActorRef.from_wire(data[:2]), meta_from_wire(data[2])
    return ActorRef.from_wire(data), None


@attrs.define
class RegOp:
    """The sender registered ``entry.name`` (replacing its own earlier entry for it: a
    metadata update is a new entry with the same identity)."""

    OP: ClassVar[str] = "reg"
    entry: Entry

    def to_wire(self) -> list[Any]:
        return ["op", {"op": "reg", "e": self.entry.to_wire()}]

    @classmethod
    def from_op(cls, op: dict[Any, Any]) -> RegOp:
        return cls(Entry.from_wire(op.get("e")))


@attrs.define
class UnregOp:
    """The sender dropped its registration of ``name``, for ``reason``."""

    OP: ClassVar[str] = "unreg"
    name: str
    reason: str = "unregistered"

    def to_wire(self) -> list[Any]:
        return ["op", {"op": "unreg", "name": self.name, "why": self.reason}]

    @classmethod
    def from_op(cls, op: dict[Any, Any]) -> UnregOp:
        return cls(
            _string(op.get("name"), "an unregistered name"), _reason(op.get("why"), "unregistered")
        )


@attrs.define
class JoinOp:
    """The sender added ``ref`` to process group ``group`` (or changed its metadata)."""

    OP: ClassVar[str] = "join"
    group: str
    ref: ActorRef
    meta: Any = None

    def to_wire(self) -> list[Any]:
        op = {"op": "join", "g": self.group, "r": self.ref.to_wire()}
        if self.meta is not None:
            op["m"] = self.meta
        return ["op", op]

    @classmethod
    def from_op(cls, op: dict[Any, Any]) -> JoinOp:
        return cls(
            _string(op.get("g"), "a group name"),
            ActorRef.from_wire(op.get("r")),
            meta_from_wire(op.get("m")),
        )


@attrs.define
class LeaveOp:
    """The sender removed ``ref`` from process group ``group``, for ``reason``."""

    OP: ClassVar[str] = "leave"
    group: str
    ref: ActorRef
    reason: str = "left"

    def to_wire(self) -> list[Any]:
        return ["op", {"op": "leave", "g": self.group, "r": self.ref.to_wire(), "why": self.reason}]

    @classmethod
    def from_op(cls, op: dict[Any, Any]) -> LeaveOp:
        return cls(
            _string(op.get("g"), "a group name"),
            ActorRef.from_wire(op.get("r")),
            _reason(op.get("why"), "left"),
        )


Change = RegOp | UnregOp | JoinOp | LeaveOp
"""One change a node made to its own slice, sent to every peer in order."""


@attrs.define
class Changes:
    """Several changes, made in one turn of the sender's loop, to apply in order."""

    KIND: ClassVar[str] = "ops"
    changes: tuple[Change, ...]

    def to_wire(self) -> list[Any]:
        return [self.KIND, [change.to_wire()[1] for change in self.changes]]

    @classmethod
    def from_wire(cls, data: object) -> Changes:
        """Changes; ValueError when ``data`` is not such a message."""
        if not (isinstance(data, list) and len(data) == 2 and isinstance(data[1], list)):
            raise ValueError("changes are ['ops', [{op, ...}, ...]]")
        if not 0 < len(data[1]) <= MAX_BATCH:
            raise ValueError(f"changes come 1 to {MAX_BATCH} at a time")
        return cls(tuple(_decode_op(op) for op in data[1]))


RegistryMessage = Claim | Claims | Snapshot | Change | Changes

_CHANGES: dict[object, Callable[[dict[Any, Any]], Change]] = {
    change.OP: change.from_op for change in (RegOp, UnregOp, JoinOp, LeaveOp)
}


def decode_change(data: object) -> Change:
    """A change; ValueError when ``data`` is not one."""
    if not (isinstance(data, list) and len(data) == 2 and data[0] == "op"):
        raise ValueError("a change is ['op', {op, ...}]")
    return _decode_op(data[1])


def _decode_op(op: object) -> Change:
    if type(op) is dict and op.get("op") == "reg":  # most changes, without a look-up
        return RegOp(Entry.from_wire(op.get("e")))
    if not isinstance(op, dict):
        raise ValueError("a change is a map")
    kind = op.get("op")
    decode = _CHANGES.get(kind) if isinstance(kind, str) else None
    if decode is None:
        raise ValueError(f"unknown registry operation {_shown(kind)}")
    return decode(op)


_REGISTRY_KINDS: dict[str, Callable[[object], RegistryMessage]] = {
    Claim.KIND: Claim.from_wire,
    Claims.KIND: Claims.from_wire,
    Snapshot.KIND: Snapshot.from_wire,
    "op": decode_change,
    Changes.KIND: Changes.from_wire,
}


_CALLS = frozenset({Claim.KIND, Claims.KIND})
"""The kinds of ``$registry`` message that are calls (their sender awaits an answer)."""


def decode_registry_message(body: object) -> RegistryMessage:
    """The message a ``$registry`` body holds; MalformedMessage if it holds none."""
    kind = body[0] if isinstance(body, list) and body else None
    decode = _REGISTRY_KINDS.get(kind) if isinstance(kind, str) else None
    if decode is None:
        raise MalformedMessage(f"unknown registry message {_shown(kind)}", expects_answer=False)
    try:
        return decode(body)
    except ValueError as exc:
        raise MalformedMessage(str(exc), expects_answer=kind in _CALLS) from None


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
    meta: Any = None

    def to_wire(self) -> list[Any]:
        body = ["spawn", self.name, self.cls, list(self.args), self.kwargs, self.timeout]
        if self.placement != "here" or self.meta is not None:
            body.append(self.placement)
        if self.meta is not None:
            body.append(self.meta)
        return body

    @classmethod
    def from_wire(cls, data: object) -> SpawnRequest:
        """A spawn request; ValueError when ``data`` is not one."""
        if not (isinstance(data, list) and len(data) in (6, 7, 8) and data[0] == cls.KIND):
            raise ValueError(
                "a spawn request is "
                "['spawn', name, class, args, kwargs, timeout(, placement(, meta))]"
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
            meta_from_wire(rest[1]) if len(rest) == 2 else None,
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


@attrs.frozen
class RegisterRequest:
    """A call to the node of actor ``ref``: register it as ``name`` (with ``meta``), as
    that node's own registration, so it ends with the actor; answered None, or
    :class:`AlreadyRunning` with the holder."""

    KIND: ClassVar[str] = "register"
    name: str
    ref: ActorRef
    meta: Any
    timeout: float = attrs.field(validator=_timeout)

    def to_wire(self) -> list[Any]:
        return ["register", self.name, self.ref.to_wire(), self.meta, self.timeout]

    @classmethod
    def from_wire(cls, data: object) -> RegisterRequest:
        """A register request; ValueError when ``data`` is not one."""
        if not (isinstance(data, list) and len(data) == 5 and data[0] == cls.KIND):
            raise ValueError("a register request is ['register', name, ref, meta, timeout]")
        return cls(
            _string(data[1], "a registered name"),
            ActorRef.from_wire(data[2]),
            meta_from_wire(data[3]),
            _seconds(data[4]),
        )


@attrs.frozen
class UnregisterRequest:
    """A call to the node holding ``name`` for ``ref``: drop that registration."""

    KIND: ClassVar[str] = "unregister"
    name: str
    ref: ActorRef

    def to_wire(self) -> list[Any]:
        return ["unregister", self.name, self.ref.to_wire()]

    @classmethod
    def from_wire(cls, data: object) -> UnregisterRequest:
        """An unregister request; ValueError when ``data`` is not one."""
        if not (isinstance(data, list) and len(data) == 3 and data[0] == cls.KIND):
            raise ValueError("an unregister request is ['unregister', name, ref]")
        return cls(_string(data[1], "an unregistered name"), ActorRef.from_wire(data[2]))


@attrs.frozen
class MetaRequest:
    """A call to the node holding ``name`` for ``ref``: replace its metadata; answered
    whether it still held it."""

    KIND: ClassVar[str] = "meta"
    name: str
    ref: ActorRef
    meta: Any

    def to_wire(self) -> list[Any]:
        return ["meta", self.name, self.ref.to_wire(), self.meta]

    @classmethod
    def from_wire(cls, data: object) -> MetaRequest:
        """A metadata update; ValueError when ``data`` is not one."""
        if not (isinstance(data, list) and len(data) == 4 and data[0] == cls.KIND):
            raise ValueError("a metadata update is ['meta', name, ref, meta]")
        return cls(
            _string(data[1], "a registered name"),
            ActorRef.from_wire(data[2]),
            meta_from_wire(data[3]),
        )


@attrs.frozen
class JoinRequest:
    """A call to the node of actor ``ref``: add it to ``group`` (with ``meta``)."""

    KIND: ClassVar[str] = "join"
    group: str
    ref: ActorRef
    meta: Any

    def to_wire(self) -> list[Any]:
        return ["join", self.group, self.ref.to_wire(), self.meta]

    @classmethod
    def from_wire(cls, data: object) -> JoinRequest:
        """A join request; ValueError when ``data`` is not one."""
        if not (isinstance(data, list) and len(data) == 4 and data[0] == cls.KIND):
            raise ValueError("a join request is ['join', group, ref, meta]")
        return cls(
            _string(data[1], "a group name"),
            ActorRef.from_wire(data[2]),
            meta_from_wire(data[3]),
        )


@attrs.frozen
class LeaveRequest:
    """A call to the node of actor ``ref``: remove it from ``group``."""

    KIND: ClassVar[str] = "leave"
    group: str
    ref: ActorRef

    def to_wire(self) -> list[Any]:
        return ["leave", self.group, self.ref.to_wire()]

    @classmethod
    def from_wire(cls, data: object) -> LeaveRequest:
        """A leave request; ValueError when ``data`` is not one."""
        if not (isinstance(data, list) and len(data) == 3 and data[0] == cls.KIND):
            raise ValueError("a leave request is ['leave', group, ref]")
        return cls(_string(data[1], "a group name"), ActorRef.from_wire(data[2]))


NamesRequest = (
    SpawnRequest
    | CallRequest
    | RegisterRequest
    | UnregisterRequest
    | MetaRequest
    | JoinRequest
    | LeaveRequest
    | RegisteredRequest
    | RunningRequest
    | RingRequest
)

REGISTERED, RUNNING, RING_LEAVING = RegisteredRequest(), RunningRequest(), RingLeaving()

_NAMES_KINDS: dict[str, Callable[[object], NamesRequest]] = {
    kind.KIND: kind.from_wire
    for kind in (
        SpawnRequest,
        CallRequest,
        RegisterRequest,
        UnregisterRequest,
        MetaRequest,
        JoinRequest,
        LeaveRequest,
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


def _reason(value: object, default: str) -> str:
    if value is None:
        return default
    return _string(value, "a reason")[:MAX_REASON]


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list, not {type(value).__name__}")
    return value


def _lamport(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("a Lamport time is a non-negative integer")
    return value


def _seconds(value: object, what: str = "a timeout") -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
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
