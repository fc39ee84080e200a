from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pycluster.ring import owner

nodes = st.lists(
    st.from_regex(r"n[0-9]{1,3}@127\.0\.0\.[0-9]{1,2}", fullmatch=True),
    min_size=1,
    max_size=12,
    unique=True,
)


@given(nodes, st.text(max_size=20))
def test_the_owner_is_a_member_whatever_the_order(members: list[str], name: str) -> None:
    chosen = owner(name, members)
    assert chosen in members
    assert owner(name, reversed(members)) == chosen


@given(nodes, st.lists(st.text(max_size=10), max_size=30), st.data())
def test_a_leaving_node_only_moves_its_own_names(
    members: list[str], names: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(members))
    rest = [m for m in members if m != gone]
    for name in names:
        before = owner(name, members)
        if before != gone and rest:
            assert owner(name, rest) == before


def test_names_spread_over_the_members() -> None:
    members = [f"n{i}@127.0.0.{i + 2}" for i in range(5)]
    counts = {m: 0 for m in members}
    for i in range(5000):
        counts[owner(f"counter-{i}", members)] += 1
    assert all(800 <= count <= 1200 for count in counts.values()), counts
