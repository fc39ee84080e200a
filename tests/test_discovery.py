from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pycluster.discovery import plan
from tests.hyp import small_node_sets

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
