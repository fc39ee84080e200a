"""The tie-break, simulated over every interleaving of two simultaneous dials."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pycluster.transport.mesh import admit

A, B = "a@127.0.0.2", "b@127.0.0.3"
INC = {A: b"A" * 16, B: b"B" * 16}


def simulate(order: list[str]) -> dict[str, set[str]]:
    """Both nodes dial each other; events are applied in ``order``.

    Events: "X:start" (X starts dialling), "X:admit" (the peer of X decides about X's
    dial, once X has started), "X:done" (X learns the peer's decision). Returns, per node,
    which dials (named by their dialler) it holds as established connections.
    """
    other = {A: B, B: A}
    dialling = {A: False, B: False}
    held: dict[str, dict[str, bytes]] = {A: {}, B: {}}  # node -> dialler -> incarnation
    verdict: dict[str, str] = {}
    for event in order:
        node, what = event.split(":")
        peer = other[node]
        if what == "start":
            dialling[node] = not held[node]
        elif what == "admit" and dialling[node]:
            # `peer` accepts (or not) the dial made by `node`.
            connected = next(iter(held[peer].values()), None)
            verdict[node] = admit(
                me=peer,
                peer=node,
                dialling=dialling[peer],
                connected_incarnation=connected,
                incarnation=INC[node],
            )
            if verdict[node] == "replace":
                held[peer] = {}
            if verdict[node] in ("accept", "replace"):
                held[peer][node] = INC[node]
        elif what == "done" and node in verdict:
            if verdict[node] in ("accept", "replace"):
                held[node][node] = INC[peer]
            dialling[node] = False
    return {n: set(held[n]) for n in (A, B)}


@st.composite
def interleavings(draw: st.DrawFn) -> list[str]:
    """Each node's three events in their own order, interleaved arbitrarily."""
    mine = [f"{A}:start", f"{A}:admit", f"{A}:done"]
    theirs = [f"{B}:start", f"{B}:admit", f"{B}:done"]
    order = []
    while mine or theirs:
        pick = draw(st.sampled_from([q for q in (mine, theirs) if q]))
        order.append(pick.pop(0))
    return order


@given(interleavings())
def test_simultaneous_dials_end_with_one_connection_on_both_sides(order: list[str]) -> None:
    held = simulate(order)
    assert held[A] == held[B]
    assert len(held[A]) == 1


def test_a_restarted_peer_replaces_the_old_connection() -> None:
    verdict = admit(
        me=A, peer=B, dialling=False, connected_incarnation=b"old" * 5 + b"!", incarnation=b"n" * 16
    )
    assert verdict == "replace"


def test_a_duplicate_of_a_live_connection_is_refused() -> None:
    assert admit(
        me=B, peer=A, dialling=False, connected_incarnation=INC[A], incarnation=INC[A]
    ) == ("duplicate")
