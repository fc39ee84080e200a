from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycluster.transport import Handshake, HandshakeError

A, B = "a@127.0.0.2", "b@127.0.0.3"
COOKIE = b"correct horse"


def pair(
    dialer_cookie: bytes = COOKIE, acceptor_cookie: bytes = COOKIE, dialled: str = B
) -> tuple[Handshake, Handshake]:
    dialer = Handshake(
        role="dialer", me=A, peer=dialled, cookie=dialer_cookie, incarnation=b"d" * 16
    )
    acceptor = Handshake(role="acceptor", me=B, cookie=acceptor_cookie, incarnation=b"a" * 16)
    return dialer, acceptor


def run(dialer: Handshake, acceptor: Handshake) -> list[dict[str, Any]]:
    """Exchange messages until both are done or one raises; return the wire transcript."""
    wire: list[dict[str, Any]] = []
    to_acceptor = dialer.start()
    while to_acceptor:
        wire += to_acceptor
        to_dialer = [r for m in to_acceptor for r in acceptor.receive(m)]
        if acceptor.done and not to_dialer and not dialer.done:
            to_dialer = [Handshake.welcome()]
        wire += to_dialer
        to_acceptor = [r for m in to_dialer for r in dialer.receive(m)]
    return wire


def test_both_sides_authenticate_each_other() -> None:
    dialer, acceptor = pair()
    wire = run(dialer, acceptor)
    assert dialer.done
    assert acceptor.done
    assert (dialer.peer, acceptor.peer) == (B, A)
    assert dialer.peer_incarnation == acceptor.incarnation
    assert [m["t"] for m in wire] == ["hello", "challenge", "proof", "welcome"]
    assert all(COOKIE not in repr(m).encode() for m in wire)


def test_a_wrong_cookie_fails_on_both_sides_with_a_reject() -> None:
    dialer, acceptor = pair(dialer_cookie=b"wrong")
    hello = dialer.start()[0]
    challenge = acceptor.receive(hello)[0]
    with pytest.raises(HandshakeError, match="cookie mismatch") as info:
        dialer.receive(challenge)
    reject = info.value.reject()
    assert reject == {"t": "reject", "reason": "cookie mismatch"}
    with pytest.raises(HandshakeError, match="rejected by the peer: cookie mismatch") as told:
        acceptor.receive(reject)
    assert told.value.reject() is None


def test_the_acceptor_rejects_a_wrong_dialers_proof() -> None:
    # A dialer that skips checking the challenge still cannot prove a cookie it lacks.
    dialer, acceptor = pair()
    challenge = acceptor.receive(dialer.start()[0])[0]
    dialer.receive(challenge)
    with pytest.raises(HandshakeError, match="cookie mismatch"):
        acceptor.receive({"t": "proof", "proof": b"\x00" * 32})


def test_a_recorded_handshake_cannot_be_replayed() -> None:
    dialer, acceptor = pair()
    wire = run(dialer, acceptor)
    hello, proof = wire[0], wire[2]
    # An eavesdropper replays the dialer's messages to a new acceptor (fresh nonce).
    replayed = Handshake(role="acceptor", me=B, cookie=COOKIE)
    replayed.receive(hello)
    with pytest.raises(HandshakeError, match="cookie mismatch"):
        replayed.receive(proof)


def test_a_proof_cannot_be_reflected_back() -> None:
    dialer, acceptor = pair()
    challenge = acceptor.receive(dialer.start()[0])[0]
    # The acceptor's own proof, sent back as the dialer's, is refused (role label differs).
    with pytest.raises(HandshakeError, match="cookie mismatch"):
        acceptor.receive({"t": "proof", "proof": challenge["proof"]})


def test_the_name_dialled_must_be_the_peers_own_name() -> None:
    dialer, acceptor = pair(dialled="b@127.0.0.3:9101")
    with pytest.raises(
        HandshakeError, match=re.escape("dialled as 'b@127.0.0.3:9101', but this node")
    ):
        acceptor.receive(dialer.start()[0])
    impostor = Handshake(role="acceptor", me="c@127.0.0.4", cookie=COOKIE)
    hello = dict(dialer.start()[0], to="c@127.0.0.4")
    challenge = impostor.receive(hello)[0]
    with pytest.raises(
        HandshakeError, match=re.escape("dialled 'b@127.0.0.3:9101', but the peer is")
    ):
        dialer.receive(challenge)


def test_the_names_are_compared_in_canonical_form() -> None:
    def without_default_port(name: str) -> str:
        return name.removesuffix(":9100")

    dialer = Handshake(role="dialer", me=A, peer=B, cookie=COOKIE, canonical=without_default_port)
    acceptor = Handshake(role="acceptor", me=B, cookie=COOKIE, canonical=without_default_port)
    hello = dict(dialer.start()[0], to=f"{B}:9100")
    acceptor.receive(hello)
    assert acceptor.peer == A


def test_version_mismatch_is_named() -> None:
    dialer, acceptor = pair()
    hello = dict(dialer.start()[0], v=99)
    with pytest.raises(HandshakeError, match="protocol version 99 is not supported"):
        acceptor.receive(hello)


def test_hidden_flag_is_authenticated() -> None:
    dialer = Handshake(role="dialer", me=A, peer=B, cookie=COOKIE, hidden=True)
    acceptor = Handshake(role="acceptor", me=B, cookie=COOKIE)
    hello = dialer.start()[0]
    # A man in the middle flips the flag: the proofs no longer match.
    challenge = acceptor.receive(dict(hello, hidden=False))[0]
    with pytest.raises(HandshakeError, match="cookie mismatch"):
        dialer.receive(challenge)
    dialer, acceptor = (
        Handshake(role="dialer", me=A, peer=B, cookie=COOKIE, hidden=True),
        Handshake(role="acceptor", me=B, cookie=COOKIE),
    )
    run(dialer, acceptor)
    assert acceptor.hidden


junk_values = st.none() | st.integers() | st.text(max_size=8) | st.binary(max_size=40)


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["t", "v", "name", "to", "inc", "nonce", "hidden", "proof", "reason"]),
            junk_values | st.sampled_from(["hello", "challenge", "proof", "welcome", B, 1]),
            max_size=8,
        ),
        max_size=4,
    )
)
def test_forged_messages_never_authenticate(forged: list[dict[str, Any]]) -> None:
    for role in ("dialer", "acceptor"):
        side = Handshake(role=role, me=B if role == "acceptor" else A, peer=B, cookie=COOKIE)
        side.start()
        try:
            for message in forged:
                side.receive(message)
        except HandshakeError:
            continue
        assert not side.done


def test_every_nonce_is_fresh() -> None:
    nonces = [pair()[0].start()[0]["nonce"] for _ in range(50)]
    assert len(set(nonces)) == 50
    assert all(len(n) == 32 for n in nonces)
