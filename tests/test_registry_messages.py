"""The registry's wire vocabulary: one encoding per message, the same bytes as before it
had classes, and nothing but a message or a MalformedMessage out of any body."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycluster.actors import ActorRestartPolicy
from pycluster.actors.ref import ActorRef, register_ref
from pycluster.codec import Codec
from pycluster.registry.messages import (
    MAX_BATCH,
    REGISTERED,
    RING_LEAVING,
    RUNNING,
    AlreadyRunning,
    CallRequest,
    Changes,
    Claim,
    ClaimAnswer,
    Claims,
    JoinOp,
    LeaveOp,
    MalformedMessage,
    NotOwner,
    RegOp,
    RingAdopt,
    RingForget,
    RingSpawn,
    RingSpecs,
    Snapshot,
    Spawned,
    SpawnRequest,
    Spec,
    UnregOp,
    decode_names_request,
    decode_registry_message,
    decode_spawn_answer,
)
from pycluster.registry.refs import Entry

A, B = "a@127.0.0.2", "b@127.0.0.3"
REF = ActorRef(A, "7")
ENTRY = Entry("counter", REF, 3)
SPEC = Spec("c", "pycluster.demo:Counter", [1], {"step": 2}, ActorRestartPolicy(), "id1")
SPEC_WIRE = ["c", "pycluster.demo:Counter", [1], {"step": 2}, ["temporary", 3, 5.0], "id1"]

# Each message and its wire form (tests/cluster sends these forms).
REGISTRY_FORMS: list[tuple[Any, Any]] = [
    (Claim("counter", REF), ["claim", "counter", [A, "7"]]),
    (
        Snapshot(3, (ENTRY,), {"g": {REF: None, ActorRef(B, "1"): {"zone": 2}}}),
        [
            "snap",
            {
                "lamport": 3,
                "entries": [["counter", A, "7", 3]],
                "groups": {"g": [[A, "7"], [B, "1", {"zone": 2}]]},
            },
        ],
    ),
    (RegOp(ENTRY), ["op", {"op": "reg", "e": ["counter", A, "7", 3]}]),
    (
        RegOp(Entry("counter", REF, 4, {"v": 1}, (ActorRef(B, "1"),))),
        ["op", {"op": "reg", "e": ["counter", A, "7", 4, {"v": 1}, [[B, "1"]]]}],
    ),
    (UnregOp("counter"), ["op", {"op": "unreg", "name": "counter", "why": "unregistered"}]),
    (
        UnregOp("counter", "normal"),
        ["op", {"op": "unreg", "name": "counter", "why": "normal"}],
    ),
    (JoinOp("g", REF), ["op", {"op": "join", "g": "g", "r": [A, "7"]}]),
    (JoinOp("g", REF, [1, 2]), ["op", {"op": "join", "g": "g", "r": [A, "7"], "m": [1, 2]}]),
    (LeaveOp("g", REF), ["op", {"op": "leave", "g": "g", "r": [A, "7"], "why": "left"}]),
    (
        Claims((Claim("counter", REF), Claim("other", ActorRef(B, "1")))),
        ["claims", [["counter", [A, "7"]], ["other", [B, "1"]]]],
    ),
    (
        Changes((RegOp(ENTRY), UnregOp("old"))),
        [
            "ops",
            [
                {"op": "reg", "e": ["counter", A, "7", 3]},
                {"op": "unreg", "name": "old", "why": "unregistered"},
            ],
        ],
    ),
]
NAMES_FORMS: list[tuple[Any, Any]] = [
    (
        SpawnRequest("x", "pycluster.demo:Counter", (1,), {"k": 2}, 5.0),
        ["spawn", "x", "pycluster.demo:Counter", [1], {"k": 2}, 5.0],
    ),
    (
        SpawnRequest("x", "pycluster.demo:Counter", (), {}, 5.0, "ring"),
        ["spawn", "x", "pycluster.demo:Counter", [], {}, 5.0, "ring"],
    ),
    (CallRequest("x", ["any", 1], 2.0), ["call", "x", ["any", 1], 2.0]),
    (REGISTERED, ["registered"]),
    (RUNNING, ["running"]),
    (RingSpecs(((SPEC, A), (SPEC, None))), ["ring-specs", [[SPEC_WIRE, A], [SPEC_WIRE, None]]]),
    (RingForget((SPEC,)), ["ring-forget", [SPEC_WIRE]]),
    (RING_LEAVING, ["ring-leaving"]),
    (RingSpawn(SPEC, 1.5), ["ring-spawn", SPEC_WIRE, 1.5]),
    (RingAdopt(SPEC, {"count": 4}, 1.5), ["ring-adopt", SPEC_WIRE, {"count": 4}, 1.5]),
]
ANSWER_FORMS: list[tuple[Any, Any]] = [
    (Spawned(REF), REF),
    (AlreadyRunning(REF), {"already_started": REF}),
    (NotOwner(B), {"not_owner": B}),
    (NotOwner(None), {"not_owner": None}),
]


def codec() -> Codec:
    value = Codec()
    register_ref(value)
    return value


def through(value: Any) -> Any:
    """``value`` as a peer receives it."""
    wire = codec()
    return wire.unpack(wire.pack(value))


@pytest.mark.parametrize(("message", "form"), REGISTRY_FORMS)
def test_registry_messages_keep_their_wire_form_and_come_back(message: Any, form: Any) -> None:
    assert message.to_wire() == form
    assert decode_registry_message(through(message.to_wire())) == message


@pytest.mark.parametrize(("message", "form"), NAMES_FORMS)
def test_names_requests_keep_their_wire_form_and_come_back(message: Any, form: Any) -> None:
    assert message.to_wire() == form
    assert decode_names_request(through(message.to_wire())) == message


@pytest.mark.parametrize(("answer", "form"), ANSWER_FORMS)
def test_spawn_answers_keep_their_wire_form_and_come_back(answer: Any, form: Any) -> None:
    assert answer.to_wire() == form
    assert decode_spawn_answer(through(answer.to_wire())) == answer


def test_a_claim_answer_is_none_or_a_plain_ref() -> None:
    for answer, form in ((ClaimAnswer(None), None), (ClaimAnswer(REF), [A, "7"])):
        assert answer.to_wire() == form
        assert ClaimAnswer.from_wire(through(form)) == answer
    with pytest.raises(ValueError, match="actor ref"):
        ClaimAnswer.from_wire({"already_started": REF})


JUNK_REGISTRY = {
    "a snapshot naming a name twice": [
        "snap",
        {"lamport": 1, "entries": [["x", A, "1", 1], ["x", A, "2", 2]], "groups": {}},
    ],
    "a change of junk": ["op", "junk"],
    "a group of junk": ["op", {"op": "join", "g": ["g"], "r": [A, "1"]}],
    "a kind that is a map": [{"claim": 1}],
    "a claim with extras": ["claim", "x", [A, "1"], "more"],
    "no claims": ["claims", []],
    "a claim of a batch that is no pair": ["claims", [["x", [A, "1"], 1]]],
    "a batch of claims too long": ["claims", [["x", [A, "1"]]] * (MAX_BATCH + 1)],
    "no changes": ["ops", []],
    "a change of a batch of junk": ["ops", [{"op": "reg", "e": "junk"}]],
    "a batch of changes too long": ["ops", [{"op": "unreg", "name": "x"}] * (MAX_BATCH + 1)],
}


@pytest.mark.parametrize("body", JUNK_REGISTRY.values(), ids=JUNK_REGISTRY.keys())
def test_junk_on_the_registry_mailbox_is_malformed(body: Any) -> None:
    with pytest.raises(MalformedMessage) as refused:
        decode_registry_message(body)
    assert refused.value.expects_answer == (body[0] in ("claim", "claims"))


JUNK_NAMES = {
    "a spawn of no class path": ["spawn", "x", "Counter", [], {}, 1.0],
    "a spawn with a NaN timeout": ["spawn", "x", "m:C", [], {}, math.nan],
    "a spawn with a negative timeout": ["spawn", "x", "m:C", [], {}, -1],
    "a spawn with a text timeout": ["spawn", "x", "m:C", [], {}, "5"],
    "a spawn placed nowhere": ["spawn", "x", "m:C", [], {}, 1.0, "moon"],
    "a spawn with bytes keywords": ["spawn", "x", "m:C", [], {b"k": 1}, 1.0],
    "a spawn of args in a map": ["spawn", "x", "m:C", {}, {}, 1.0],
    "a call of a number": ["call", 7, None, 1.0],
    "a bare request with extras": ["registered", 1],
    "a ring spawn of junk": ["ring-spawn", ["junk"], 1.0],
    "a ring spec with a NaN window": [
        "ring-adopt",
        [*SPEC_WIRE[:4], ["permanent", 3, math.nan], "id1"],
        None,
        1.0,
    ],
}


@pytest.mark.parametrize("body", JUNK_NAMES.values(), ids=JUNK_NAMES.keys())
def test_junk_requests_are_malformed_and_their_callers_told(body: Any) -> None:
    with pytest.raises(MalformedMessage) as refused:
        decode_names_request(body)
    assert refused.value.expects_answer


@pytest.mark.parametrize(
    "body", [["ring-specs", [[SPEC_WIRE, 7]]], ["ring-forget", "x"], ["ring-leaving", 1]]
)
def test_junk_ring_casts_are_malformed_and_answered_by_nobody(body: Any) -> None:
    with pytest.raises(MalformedMessage) as refused:
        decode_names_request(body)
    assert not refused.value.expects_answer


@pytest.mark.parametrize("timeout", [-1, math.nan, "5", None])
def test_a_request_its_receiver_would_refuse_is_refused_where_it_is_made(timeout: Any) -> None:
    with pytest.raises(ValueError, match="timeout is a non-negative number of seconds"):
        SpawnRequest("x", "m:C", (), {}, timeout)
    with pytest.raises(ValueError, match="timeout is a non-negative number of seconds"):
        CallRequest("x", None, timeout)


@pytest.mark.parametrize(
    "answer", [None, [A, "7"], {"already_started": [A, "7"]}, {"not_owner": 1}, {}, "ok"]
)
def test_an_answer_that_is_no_spawn_answer_is_refused(answer: Any) -> None:
    with pytest.raises(ValueError, match="unexpected answer"):
        decode_spawn_answer(answer)


# -- any body at all: a message, or MalformedMessage ------------------------------------------

wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=4)
    | st.builds(ActorRef, st.sampled_from([A, B]), st.text(max_size=3)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=20,
)


def kinded(forms: list[tuple[Any, Any]]) -> st.SearchStrategy[list[Any]]:
    """A known kind followed by any values."""
    kinds = sorted({form[0] for _, form in forms if isinstance(form, list)})
    return st.builds(
        lambda kind, rest: [kind, *rest], st.sampled_from(kinds), st.lists(wire_values, max_size=4)
    )


@st.composite
def mutated(draw: st.DrawFn, forms: list[tuple[Any, Any]]) -> Any:
    """A valid wire form with one of its parts replaced by any value."""
    form = through(draw(st.sampled_from(forms))[1])
    paths: list[list[Any]] = []

    def walk(value: Any, path: list[Any]) -> None:
        paths.append(path)
        if isinstance(value, dict | list):
            for key, item in value.items() if isinstance(value, dict) else enumerate(value):
                walk(item, [*path, key])

    walk(form, [])
    path = draw(st.sampled_from(paths))
    if not path:
        return draw(wire_values)
    target = form
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = draw(wire_values)
    return form


def decodes_or_is_malformed(decode: Any, body: Any) -> None:
    try:
        message = decode(body)
    except MalformedMessage:
        return
    # What was accepted has its one encoding, which decodes to the same kind of message.
    assert type(decode(through(message.to_wire()))) is type(message)


@given(wire_values | kinded(REGISTRY_FORMS) | mutated(REGISTRY_FORMS))
def test_any_registry_body_is_a_message_or_malformed(body: Any) -> None:
    decodes_or_is_malformed(decode_registry_message, body)


@given(wire_values | kinded(NAMES_FORMS) | mutated(NAMES_FORMS))
def test_any_names_body_is_a_request_or_malformed(body: Any) -> None:
    decodes_or_is_malformed(decode_names_request, body)


@given(wire_values | mutated(ANSWER_FORMS))
def test_any_answer_is_a_spawn_answer_or_refused(body: Any) -> None:
    with contextlib.suppress(ValueError):
        decode_spawn_answer(body)
