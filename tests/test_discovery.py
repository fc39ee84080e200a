from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pycluster.discovery import plan
from pycluster.nodename import parse_node_name
from tests.hyp import node_names, ports, small_node_sets, written_forms

ME = "n0@127.0.0.2"


@given(
    answer=st.none() | small_node_sets,
    listed=small_node_sets,
    excluded=small_node_sets,
    connected=small_node_sets,
)
def test_the_discovery_rule(
    answer: frozenset[str] | None,
    listed: frozenset[str],
    excluded: frozenset[str],
    connected: frozenset[str],
) -> None:
    # A topology's memory never holds this node (plan never puts it there).
    listed, excluded, connected = listed - {ME}, excluded - {ME}, connected - {ME}
    decision = plan(answer, me=ME, listed=listed, excluded=excluded, connected=connected)
    assert ME not in decision.connect | decision.disconnect | decision.listed
    assert decision.connect.isdisjoint(connected)
    assert decision.disconnect <= connected
    # Nodes the topology never listed are not its business.
    assert decision.disconnect <= listed
    if not answer or answer <= {ME}:
        # A failure or an empty answer (or only this node) changes nothing, but listed
        # nodes that are not connected are still retried.
        assert not decision.disconnect
        assert (decision.listed, decision.excluded) == (listed, excluded)
        assert decision.connect == listed - connected
        assert not decision.changed
    else:
        assert decision.listed == answer - {ME}
        assert decision.connect == (answer - {ME}) - connected
        assert decision.disconnect == (listed - answer) & connected
        # Left out by a successful answer: excluded until listed again.
        assert decision.excluded.isdisjoint(answer | {ME})
        assert (listed - answer) - {ME} <= decision.excluded


def test_excluded_node_is_let_back_in_when_listed_again() -> None:
    a, b = "a@127.0.0.3", "b@127.0.0.4"
    first = plan([a, b], me=ME, listed=frozenset(), excluded=frozenset(), connected=[])
    second = plan([a], me=ME, listed=first.listed, excluded=first.excluded, connected=[a, b])
    assert second.disconnect == {b}
    assert second.excluded == {b}
    still_out = plan([a], me=ME, listed=second.listed, excluded=second.excluded, connected=[a])
    assert still_out.excluded == {b}
    assert not still_out.connect
    back = plan([a, b], me=ME, listed=still_out.listed, excluded=still_out.excluded, connected=[a])
    assert back.connect == {b}
    assert not back.excluded


@given(
    data=st.data(),
    port=ports,
    names=st.lists(node_names(), min_size=1, max_size=6),
)
def test_plan_on_canonical_names_is_the_same_for_every_written_form(
    data: st.DataObject, port: int, names: list[str]
) -> None:
    """What a topology hands plan(): discovery's names, each in whatever written form,
    put in canonical form (default port ``port``, the node's ``node.port``)."""

    def canonical(text: str) -> str:
        return str(parse_node_name(text).canonical(port))

    pool = sorted({canonical(name) for name in names})
    me = pool[0]
    some = st.frozensets(st.sampled_from(pool)).map(lambda nodes: nodes - {me})
    answer = data.draw(st.none() | st.frozensets(st.sampled_from(pool)))
    listed, excluded, connected = data.draw(some), data.draw(some), data.draw(some)
    expected = plan(answer, me=me, listed=listed, excluded=excluded, connected=connected)
    for _ in range(2):
        written = None if answer is None else [data.draw(written_forms(n, port)) for n in answer]
        decision = plan(
            None if written is None else {canonical(name) for name in written},
            me=canonical(data.draw(written_forms(me, port))),
            listed=listed,
            excluded=excluded,
            connected=connected,
        )
        assert decision == expected
