"""The wire vocabulary after the handshake: every message two nodes exchange, one class each.

A connection carries these, each framed as one msgpack map whose ``t`` names its kind (the
handshake's own messages are in ``pycluster.transport.handshake``):

=========  =========================  ==============================================
kind       fields                     meaning
=========  =========================  ==============================================
``msg``    ``to``, ``body``           a message to a mailbox; no reply
``call``   ``id``, ``to``, ``body``   a request to a mailbox; the reply carries ``id``
``reply``  ``id``, ``ok``, ``body``   the handler's return value (``ok`` true) ...
           or ``error``               ... or ``[type, message]`` of what it raised
``tick``                              "I am alive" after a quiet spell; answered by
``tock``                              ... a tock
``leave``                             the sender leaves the cluster (not a failure)
=========  =========================  ==============================================

``to_wire()`` gives a message's one encoding, :func:`decode` the message of a decoded
frame; a frame that is none of these is a :class:`WireError`, never a guess. Decisions are
taken on these types and their fields, never on text meant for people.

A ``msg``, ``call`` or ``reply`` whose frame held a value this node cannot decode (see
``UndecodableFrame``) is decoded as an
:class:`Undecodable`, which is never sent: only that message fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from pycluster.codec import Problem
from pycluster.transport.frames import Frame, UndecodableFrame

MAX_ERROR_TYPE = 200
"""Characters of a remote exception's type name kept from a reply."""
MAX_ERROR_TEXT = 2000
"""Characters of a remote exception's message kept from a reply."""


class WireError(ValueError):
    """A decoded frame that is no message of this vocabulary."""


@attrs.define(slots=True)
class Msg:
    """A message to mailbox ``to``; no reply."""

    to: str
    body: Any

    def to_wire(self) -> dict[str, Any]:
        return {"t": "msg", "to": self.to, "body": self.body}


@attrs.define(slots=True)
class Call:
    """A request to mailbox ``to``; the :class:`Reply` carries the same ``id``."""

    id: int
    to: str
    body: Any

    def to_wire(self) -> dict[str, Any]:
        return {"t": "call", "id": self.id, "to": self.to, "body": self.body}


@attrs.define(slots=True)
class Reply:
    """The answer to call ``id``: ``body`` if ``error`` is None, else ``(type, message)``
    of what the handler raised."""

    id: int
    body: Any = None
    error: tuple[str, str] | None = None

    def to_wire(self) -> dict[str, Any]:
        if self.error is None:
            return {"t": "reply", "id": self.id, "ok": True, "body": self.body}
        return {"t": "reply", "id": self.id, "ok": False, "error": list(self.error)}


@attrs.define(slots=True)
class Tick:
    """Sent after a quiet spell so the peer knows this node is alive."""

    WIRE: ClassVar[dict[str, Any]] = {"t": "tick"}

    def to_wire(self) -> dict[str, Any]:
        return self.WIRE


@attrs.define(slots=True)
class Tock:
    """The answer to a :class:`Tick`."""

    WIRE: ClassVar[dict[str, Any]] = {"t": "tock"}

    def to_wire(self) -> dict[str, Any]:
        return self.WIRE


@attrs.define(slots=True)
class Leave:
    """The sender leaves the cluster: a graceful goodbye, not a failure."""

    WIRE: ClassVar[dict[str, Any]] = {"t": "leave"}

    def to_wire(self) -> dict[str, Any]:
        return self.WIRE


@attrs.define(slots=True)
class Undecodable:
    """A ``msg`` (``kind``) to mailbox ``to``, a ``call`` (``id``) to ``to``, or a ``reply``
    to call ``id``, that arrived whole but held a value this node cannot decode, and why
    (``problem``). Received only, never sent: a call is answered with an error, a reply
    fails its call, a msg is dropped."""

    kind: str
    id: int | None
    to: str | None
    problem: Problem


Message = Msg | Call | Reply | Tick | Tock | Leave
Received = Message | Undecodable
"""What :func:`decode` gives: a message of the vocabulary, or one that failed to decode."""
TICK, TOCK, LEAVE = Tick(), Tock(), Leave()


def decode(frame: Frame) -> Received:
    """The message a decoded frame holds; WireError if it holds none."""
    if not isinstance(frame, dict):
        return _undecodable(frame)
    kind = frame.get("t")
    # The busy kinds first, without a further call.
    if kind == "msg":
        to = frame.get("to")
        if type(to) is str:
            return Msg(to, frame.get("body"))
    elif kind == "call":
        to, call_id = frame.get("to"), frame.get("id")
        if type(to) is str and type(call_id) is int:
            return Call(call_id, to, frame.get("body"))
    elif kind == "reply" and frame.get("ok") is True and type(call_id := frame.get("id")) is int:
        return Reply(call_id, frame.get("body"))
    else:
        decoder = _DECODERS.get(kind)  # type: ignore[arg-type]
        message = None if decoder is None else decoder(frame)
        if message is not None:
            return message
    raise WireError(f"malformed or unknown {str(kind)[:40]!r} message")


def _undecodable(undecodable: UndecodableFrame) -> Received:
    """A msg, call or reply with sound fields around what could not be decoded is
    :class:`Undecodable`; another kind is decoded as usual (it reads no other field)."""
    frame, problem = undecodable.frame, undecodable.problem
    kind, to, call_id = frame.get("t"), frame.get("to"), frame.get("id")
    if kind == "msg" and type(to) is str:
        return Undecodable("msg", None, to, problem)
    if kind == "call" and type(to) is str and type(call_id) is int:
        return Undecodable("call", call_id, to, problem)
    if kind == "reply" and type(call_id) is int:
        return Undecodable("reply", call_id, None, problem)
    if kind in ("msg", "call", "reply"):
        raise WireError(f"malformed {kind!r} message")
    return decode(frame)


def _msg(frame: dict[str, Any]) -> Msg | None:
    to = frame.get("to")
    return Msg(to, frame.get("body")) if type(to) is str else None


def _call(frame: dict[str, Any]) -> Call | None:
    to, call_id = frame.get("to"), frame.get("id")
    if type(to) is str and type(call_id) is int:
        return Call(call_id, to, frame.get("body"))
    return None


def _reply(frame: dict[str, Any]) -> Reply | None:
    call_id = frame.get("id")
    if type(call_id) is not int:
        return None
    if frame.get("ok") is True:
        return Reply(call_id, frame.get("body"))
    error = frame.get("error")
    if isinstance(error, list) and len(error) == 2:
        return Reply(
            call_id, error=(str(error[0])[:MAX_ERROR_TYPE], str(error[1])[:MAX_ERROR_TEXT])
        )
    return Reply(call_id, error=("Error", "malformed error reply"))


_DECODERS: dict[str, Callable[[dict[str, Any]], Message | None]] = {
    "msg": _msg,
    "call": _call,
    "reply": _reply,
    "tick": lambda frame: TICK,
    "tock": lambda frame: TOCK,
    "leave": lambda frame: LEAVE,
}
"""The decoder of each kind: the message, or None if the frame's fields are wrong."""
