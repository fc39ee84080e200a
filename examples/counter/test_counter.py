"""Testing cluster code without sockets: the Counter across a partition.

Three nodes run in this process over an in-memory network (``pycluster.testing.cluster``).
A Counter registered as "counter" lives on the first node; a partition cuts that node off;
the majority side, having seen it down, starts its own Counter under the same name; once
the partition heals, the two registrations of "counter" meet and exactly one survives, the
same on every node. Run it with pytest (pytest-asyncio):

    pytest examples/counter/test_counter.py
"""

from __future__ import annotations

from typing import Any

import pytest

from pycluster import Actor, AlreadyStarted
from pycluster.testing import cluster, until


class Counter(Actor):
    """An Agent holding a number: ``increment`` adds one, ``value`` reads it."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    async def handle_call(self, message: Any) -> Any:
        if message == "increment":
            self.value += 1
        return self.value


@pytest.mark.asyncio
async def test_one_counter_survives_a_healed_partition() -> None:
    async with cluster(3) as c:
        a, b, d = c.nodes
        ref = await a.registry.spawn("counter", Counter)
        await until(lambda: all(n.registry.whereis("counter") == ref for n in c.nodes), 5, "seen")
        with pytest.raises(AlreadyStarted):
            await b.registry.spawn("counter", Counter)  # one per cluster

        await c.partition([a], [b, d])
        # b and d saw a go down, and its names with it: they may start their own.
        await until(lambda: b.registry.whereis("counter") is None, 5, "a's names gone on b")
        other = await b.registry.spawn("counter", Counter)
        await until(lambda: d.registry.whereis("counter") == other, 5, "b's counter seen on d")
        assert await d.registry.call("counter", "increment") == 1
        assert a.registry.whereis("counter") == ref  # a, alone, still has its own

        await c.heal()
        # Two registrations of one name met: one survives, the same on every node.
        await until(
            lambda: (
                len({n.registry.whereis("counter") for n in c.nodes}) == 1
                and a.registry.whereis("counter") in (ref, other)
            ),
            5,
            "one counter everywhere",
        )
        survivor = a.registry.whereis("counter")
        loser = other if survivor == ref else ref
        await until(lambda: loser not in a.actors.refs() + b.actors.refs(), 5, "the other stopped")
        for node in c.nodes:
            assert await node.registry.call("counter", "value") >= 0
