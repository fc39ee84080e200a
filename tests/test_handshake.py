from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycluster.nodename import parse_node_name
from pycluster.transport import PROTOCOL_VERSION, Handshake, HandshakeError, cookie_key

A, B = "a@127.0.0.2", "b@127.0.0.3"
COOKIE = "correct horse battery staple"
KEY = cookie_key(COOKIE)
OTHER = cookie_key("wrong horse battery staple")


def pair(
    dialer_keys: tuple[bytes, ...] = (KEY,),
    acceptor_keys: tuple[bytes, ...] = (KEY,),
    dialled: str = B,
) -> tuple[Handshake, Handshake]:
    dialer = Handshake(role="dialer", me=A, peer=dialled, keys=dialer_keys, incarnation=b"d" * 16)
    acceptor = Handshake(role="acceptor", me=B, keys=acceptor_keys, incarnation=b"a" * 16)
    return dialer, acceptor


def run(dialer: Handshake, acceptor: Handshake) -> list[dict[str, Any]]:
    """Exchange messages until both are done or one raises; return the wire transcript."""
    wire: list[dict[str, Any]] = []
    to_acceptor = dialer.start()
    while to_acceptor:
        wire += to_acceptor
        to_dialer = [r for m in to_acceptor for r in acceptor.receive(m)]
        if acceptor.done and not to_dialer and not dialer.done:
            to_dialer = [acceptor.welcome()]
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
    assert all(COOKIE.encode() not in repr(m).encode() for m in wire)
    assert all(KEY not in repr(m).encode() for m in wire)


def test_the_acceptor_sends_nothing_derived_from_the_cookie_before_the_dialers_proof() -> None:
    """What a stranger who connects gets: a challenge holding only public fields, the same
    whatever the cookie (so there is nothing to guess a cookie against offline)."""
    hellos = []
    for keys in ((KEY,), (OTHER,)):
        dialer, acceptor = pair(acceptor_keys=keys)
        hello = dialer.start()[0]
        hellos.append(acceptor.receive(hello)[0])
    for challenge in hellos:
        assert set(challenge) == {"t", "v", "name", "inc", "nonce"}
    assert {k: v for k, v in hellos[0].items() if k != "nonce"} == {
        k: v for k, v in hellos[1].items() if k != "nonce"
    }


def test_a_wrong_cookie_is_caught_by_the_acceptor_which_proves_nothing() -> None:
    dialer, acceptor = pair(dialer_keys=(OTHER,))
    challenge = acceptor.receive(dialer.start()[0])[0]
    proof = dialer.receive(challenge)[0]
    with pytest.raises(HandshakeError, match="cookie mismatch") as info:
        acceptor.receive(proof)
    assert info.value.kind == "cookie"
    reject = info.value.reject()
    assert reject == {"t": "reject", "code": "cookie", "reason": "cookie mismatch"}
    with pytest.raises(HandshakeError, match="rejected by the peer: cookie mismatch") as told:
        dialer.receive(reject)
    assert told.value.reject() is None
    assert told.value.peer_code == "cookie"
    with pytest.raises(ValueError, match="only an acceptor that checked"):
        acceptor.welcome()


def test_the_dialer_checks_the_acceptors_proof() -> None:
    dialer, acceptor = pair()
    challenge = acceptor.receive(dialer.start()[0])[0]
    acceptor.receive(dialer.receive(challenge)[0])
    with pytest.raises(HandshakeError, match="cookie mismatch"):
        dialer.receive({"t": "welcome", "proof": b"\x00" * 32})
    assert not dialer.done


def test_an_acceptor_with_several_cookies_accepts_any_and_answers_with_that_one() -> None:
    for dialer_key in (KEY, OTHER):
        dialer, acceptor = pair(dialer_keys=(dialer_key,), acceptor_keys=(OTHER, KEY))
        run(dialer, acceptor)
        assert dialer.done
        assert acceptor.done
    third = cookie_key("a third cookie, never configured")
    dialer, acceptor = pair(dialer_keys=(third, KEY), acceptor_keys=(KEY,))
    with pytest.raises(HandshakeError, match="cookie mismatch"):
        run(dialer, acceptor)  # a dialer proves with its first cookie only


def test_a_recorded_handshake_cannot_be_replayed() -> None:
    dialer, acceptor = pair()
    wire = run(dialer, acceptor)
    hello, proof = wire[0], wire[2]
    # An eavesdropper replays the dialer's messages to a new acceptor (fresh nonce).
    replayed = Handshake(role="acceptor", me=B, keys=[KEY])
    replayed.receive(hello)
    with pytest.raises(HandshakeError, match="cookie mismatch"):
        replayed.receive(proof)


def test_a_proof_cannot_be_reflected_back() -> None:
    dialer, acceptor = pair()
    challenge = acceptor.receive(dialer.start()[0])[0]
    proof = dialer.receive(challenge)[0]
    # The dialer's own proof, sent back as the acceptor's, is refused (role label differs).
    with pytest.raises(HandshakeError, match="cookie mismatch"):
        dialer.receive({"t": "welcome", "proof": proof["proof"]})


def test_the_name_dialled_must_be_the_peers_own_name() -> None:
    dialer, acceptor = pair(dialled="b@127.0.0.3:9101")
    with pytest.raises(
        HandshakeError, match=re.escape("dialled as 'b@127.0.0.3:9101', but this node")
    ):
        acceptor.receive(dialer.start()[0])
    impostor = Handshake(role="acceptor", me="c@127.0.0.4", keys=[KEY])
    hello = dict(dialer.start()[0], to="c@127.0.0.4")
    challenge = impostor.receive(hello)[0]
    with pytest.raises(
        HandshakeError, match=re.escape("dialled 'b@127.0.0.3:9101', but the peer is")
    ):
        dialer.receive(challenge)


def test_names_cross_the_wire_with_their_ports_written_out() -> None:
    dialer, acceptor = pair()
    hello, challenge, *_ = run(dialer, acceptor)
    assert (hello["name"], hello["to"]) == (f"{A}:9100", f"{B}:9100")
    assert challenge["name"] == f"{B}:9100"
    assert (dialer.peer, acceptor.peer) == (B, A)  # canonical: the default port left out


def test_nodes_with_different_default_ports_agree_on_each_others_names() -> None:
    """Each side fills in its own port and compares full forms: a (port 30001) dials
    b@127.0.0.3:30002, and b (port 30002) knows itself as b@127.0.0.3."""
    dialer = Handshake(role="dialer", me=A, peer="b@127.0.0.3:30002", keys=[KEY], port=30001)
    acceptor = Handshake(role="acceptor", me=B, keys=[KEY], port=30002)
    hello, challenge, *_ = run(dialer, acceptor)
    assert dialer.done
    assert acceptor.done  # the proofs, over the names as sent, match on both sides
    assert (hello["name"], hello["to"]) == ("a@127.0.0.2:30001", "b@127.0.0.3:30002")
    assert challenge["name"] == "b@127.0.0.3:30002"
    # Each side knows the other by its canonical name for itself.
    assert dialer.peer == "b@127.0.0.3:30002"
    assert acceptor.peer == "a@127.0.0.2:30001"


@pytest.mark.parametrize(
    ("dialled", "client_port"),
    [
        ("b@127.0.0.3:30002", 9100),  # pycluster status with its default --port
        ("b@127.0.0.3:30002", 30002),
        ("b@127.0.0.3", 30002),
        ("b@127.0.0.3:30002", 40000),
    ],
)
def test_a_client_with_another_default_port_reaches_the_node(
    dialled: str, client_port: int
) -> None:
    client = Handshake(role="dialer", me=A, peer=dialled, keys=[KEY], hidden=True, port=client_port)
    node = Handshake(role="acceptor", me=B, keys=[KEY], port=30002)
    run(client, node)
    assert client.done
    assert node.done


def test_a_name_without_its_port_means_the_dialers_default_port() -> None:
    dialer = Handshake(role="dialer", me=A, peer=B, keys=[KEY], port=9100)
    acceptor = Handshake(role="acceptor", me=B, keys=[KEY], port=30002)
    with pytest.raises(
        HandshakeError,
        match=re.escape("dialled as 'b@127.0.0.3:9100', but this node is 'b@127.0.0.3:30002'"),
    ) as info:
        run(dialer, acceptor)
    assert info.value.kind == "name"


@pytest.mark.parametrize(
    ("me", "dialled"),
    [
        ("b@127.0.0.3", "b@127.0.0.3:9100"),
        ("b@127.0.0.3:9100", "b@127.0.0.3"),
        ("b@node-b.example", "b@Node-B.EXAMPLE"),
        ("b@[::1]", "b@[0:0::1]:9100"),
        ("b@[fd00::5]:9101", "b@[FD00:0:0::0005]:9101"),
    ],
)
def test_every_written_form_of_the_name_dialled_is_the_node(me: str, dialled: str) -> None:
    dialer = Handshake(role="dialer", me=A, peer=dialled, keys=[KEY])
    acceptor = Handshake(role="acceptor", me=me, keys=[KEY])
    run(dialer, acceptor)
    assert dialer.done
    assert acceptor.done
    assert dialer.peer == str(parse_node_name(me).canonical(9100))


def test_the_part_before_the_at_sign_is_case_sensitive() -> None:
    dialer, acceptor = pair(dialled="B@127.0.0.3")
    with pytest.raises(HandshakeError, match=re.escape("dialled as 'B@127.0.0.3:9100'")):
        run(dialer, acceptor)


def test_names_the_peer_sends_are_checked_in_full_form() -> None:
    # A hello naming the acceptor without its port means the acceptor's own default port.
    dialer = Handshake(role="dialer", me=A, peer="b@127.0.0.3:30002", keys=[KEY], port=30001)
    acceptor = Handshake(role="acceptor", me=B, keys=[KEY], port=30002)
    acceptor.receive(dict(dialer.start()[0], to=B))
    # The peer claiming this node's own name, in another written form, is refused.
    acceptor = Handshake(role="acceptor", me=B, keys=[KEY], port=30002)
    with pytest.raises(HandshakeError, match="claims this node's own name"):
        acceptor.receive(dict(dialer.start()[0], name="b@127.0.0.3:30002"))
    acceptor = Handshake(role="acceptor", me=B, keys=[KEY], port=30002)
    with pytest.raises(HandshakeError, match=re.escape("'b@127.1' is not a node name")) as info:
        acceptor.receive(dict(dialer.start()[0], name="b@127.1"))
    assert info.value.kind == "name"


def test_a_name_rewritten_on_the_way_breaks_the_proofs() -> None:
    """The proofs cover the names exactly as sent: a man in the middle who rewrites the
    dialer's name, even into another form of it, is caught."""
    dialer, acceptor = pair()
    hello = dialer.start()[0]
    challenge = acceptor.receive(dict(hello, name=A))[0]
    with pytest.raises(HandshakeError, match="cookie mismatch"):
        acceptor.receive(dialer.receive(challenge)[0])


def test_version_mismatch_is_named_and_the_version_is_2() -> None:
    assert PROTOCOL_VERSION == 2
    dialer, _acceptor = pair()
    hello = dialer.start()[0]
    assert (hello["vmin"], hello["v"]) == (2, 2)
    offers = ((1, 1, "version 1"), (99, 99, "version 99"), (3, 5, "versions 3-5"))
    for low, high, offer in offers:
        refused = rf"protocol {offer} is not supported \(this node speaks version 2\)"
        with pytest.raises(HandshakeError, match=refused) as info:
            pair()[1].receive(dict(hello, vmin=low, v=high))
        assert info.value.kind == "version"
    for bad in ({"v": "2"}, {"v": True}, {"vmin": 3, "v": 2}, {"v": None}):
        with pytest.raises(HandshakeError, match="malformed version offer") as info:
            pair()[1].receive({**hello, **bad})
        assert info.value.kind == "version"


@pytest.mark.parametrize(
    ("dialer_speaks", "acceptor_speaks", "chosen"),
    [((2, 2), (2, 2), 2), ((2, 3), (2, 2), 2), ((2, 2), (2, 3), 2), ((2, 4), (3, 5), 4)],
)
def test_the_highest_version_both_speak_is_chosen(
    dialer_speaks: tuple[int, int], acceptor_speaks: tuple[int, int], chosen: int
) -> None:
    """A later release speaking a newer version alongside this one rolls through a live
    cluster: each connection speaks the highest version its two ends share."""
    dialer = Handshake(role="dialer", me=A, peer=B, keys=[KEY], versions=dialer_speaks)
    acceptor = Handshake(role="acceptor", me=B, keys=[KEY], versions=acceptor_speaks)
    run(dialer, acceptor)
    assert dialer.version == acceptor.version == chosen


def test_a_version_offer_rewritten_on_the_way_breaks_the_proofs() -> None:
    """A man in the middle cannot talk two nodes down to an older version."""
    dialer = Handshake(role="dialer", me=A, peer=B, keys=[KEY], versions=(2, 3))
    acceptor = Handshake(role="acceptor", me=B, keys=[KEY], versions=(2, 3))
    hello = dialer.start()[0]
    challenge = acceptor.receive(dict(hello, v=2))[0]  # the offer cut down to version 2
    assert challenge["v"] == 2
    with pytest.raises(HandshakeError, match="cookie mismatch"):
        acceptor.receive(dialer.receive(challenge)[0])


def test_a_dialer_refuses_a_version_it_does_not_speak() -> None:
    dialer, acceptor = pair()
    challenge = acceptor.receive(dialer.start()[0])[0]
    with pytest.raises(HandshakeError, match="chose protocol version 7") as info:
        dialer.receive(dict(challenge, v=7))
    assert info.value.kind == "version"


def test_hidden_flag_is_authenticated() -> None:
    dialer = Handshake(role="dialer", me=A, peer=B, keys=[KEY], hidden=True)
    acceptor = Handshake(role="acceptor", me=B, keys=[KEY])
    hello = dialer.start()[0]
    # A man in the middle flips the flag: the proofs no longer match.
    challenge = acceptor.receive(dict(hello, hidden=False))[0]
    with pytest.raises(HandshakeError, match="cookie mismatch"):
        acceptor.receive(dialer.receive(challenge)[0])
    dialer, acceptor = (
        Handshake(role="dialer", me=A, peer=B, keys=[KEY], hidden=True),
        Handshake(role="acceptor", me=B, keys=[KEY]),
    )
    run(dialer, acceptor)
    assert acceptor.hidden


def test_cookie_keys_are_derived_slowly_and_deterministically() -> None:
    assert cookie_key(COOKIE) == KEY
    assert len(KEY) == 32
    assert COOKIE.encode() not in KEY
    assert cookie_key(COOKIE + " ") != KEY


junk_values = st.none() | st.integers() | st.text(max_size=8) | st.binary(max_size=40)


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(
                ["t", "v", "name", "to", "inc", "nonce", "hidden", "proof", "reason", "code"]
            ),
            junk_values | st.sampled_from(["hello", "challenge", "proof", "welcome", B, 1, 2]),
            max_size=8,
        ),
        max_size=4,
    )
)
def test_forged_messages_never_authenticate(forged: list[dict[str, Any]]) -> None:
    for role in ("dialer", "acceptor"):
        side = Handshake(role=role, me=B if role == "acceptor" else A, peer=B, keys=[KEY])
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
