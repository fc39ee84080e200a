"""A frozen node's names taken over, and names claimed on both sides of a partition, with
real processes (issue 13); each scenario run 5 times. The scenarios themselves are
``tests/lab/takeover.py``, shared with the soak, ``bench/takeover.py``.

Frozen node: three nodes (tick timeout 1 s); the first holds a counter and is frozen
(``SIGSTOP``) until the others report it down; they take the counter over (spawned
again, or, placed on the ring, restarted by its heir) and acknowledge 5 increments; the
node is thawed (``SIGCONT``). Once settled, its claim has lost: every node routes the
name to the takeover's counter, which shows all 5 increments, and the frozen node's
actor has stopped. A name only the frozen node held comes back with it, as it was.

Partition: ``{a} | {b, c}``; each side spawns the same new name; names held since before
the split are written to on their own side; heal. Once settled, one actor holds the name,
the same on every node, the other stopped ("name conflict"), and the older names are
with their holders, every acknowledged write kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.cluster.registry_client import RegistryClient
from tests.lab import Lab, LabNode
from tests.lab.takeover import (
    CONTESTED,
    KEPT,
    LEFT,
    RIGHT,
    SPLIT,
    WRITES,
    Fate,
    Placement,
    frozen_takeover,
    split_claims,
)

TICK_TIMEOUT = 1.0
TRIALS = 5
CONFLICT = "name conflict"


@pytest.fixture
async def client(lab: Lab) -> AsyncIterator[RegistryClient]:
    async with RegistryClient.open(lab) as opened:
        yield opened


@pytest.fixture
async def three(lab: Lab) -> list[LabNode]:
    nodes = lab.declare(3, net_tick_timeout=TICK_TIMEOUT, retry_interval=0.5)
    await lab.start(nodes)
    await lab.wait_mesh(nodes, timeout=15)
    return nodes


@pytest.mark.parametrize("placement", ["here", "ring"])
@pytest.mark.parametrize("trial", range(TRIALS))
async def test_a_thawed_nodes_claim_loses_to_the_takeover(
    lab: Lab, client: RegistryClient, three: list[LabNode], placement: Placement, trial: int
) -> None:
    frozen, taker, _ = three
    outcome = await frozen_takeover(lab, client, three, placement=placement)
    print(
        f"trial {trial}: frozen {outcome.frozen_for:.2f}s; settled after the thaw in "
        f"{outcome.settled_after}s; {outcome.lost} acknowledged writes lost"
    )
    assert outcome.acknowledged == tuple(range(1, WRITES + 1))
    assert outcome.settled_after is not None, outcome
    everywhere = len(three)
    if placement == "ring":
        # Back on its ring owner, the thawed node, with the takeover's state.
        assert outcome.successor.node != frozen.name
        holder = outcome.fates[CONTESTED].holder
        assert holder is not None, outcome
        assert outcome.fates[CONTESTED] == Fate(
            holders=(holder,) * everywhere, running=(frozen.name,), values=(WRITES,) * everywhere
        )
        assert holder != outcome.original, outcome
    else:
        assert outcome.successor.node == taker.name
        assert outcome.fates[CONTESTED] == Fate(
            holders=(outcome.successor,) * everywhere,
            running=(taker.name,),
            values=(WRITES,) * everywhere,
        )
        assert outcome.successor_end is None
    assert outcome.original_end == CONFLICT
    # A name nobody claimed meanwhile comes back with its node, writes and all.
    assert outcome.fates[KEPT] == Fate(
        holders=(outcome.kept,) * everywhere,
        running=(frozen.name,),
        values=(len(outcome.kept_acknowledged),) * everywhere,
    )
    assert outcome.lost == 0
    assert outcome.held_twice == 0


@pytest.mark.usefixtures("require_firewall")
@pytest.mark.parametrize("trial", range(TRIALS))
async def test_names_claimed_on_both_sides_of_a_partition_keep_one_holder(
    lab: Lab, client: RegistryClient, three: list[LabNode], trial: int
) -> None:
    a, _, c = three
    outcome = await split_claims(lab, client, three)
    print(
        f"trial {trial}: settled after the heal in {outcome.settled_after}s; "
        f"{outcome.lost} acknowledged writes lost"
    )
    assert outcome.settled_after is not None, outcome
    everywhere = len(three)
    survivor = outcome.fates[SPLIT].holder
    assert survivor in outcome.claims, outcome
    assert outcome.fates[SPLIT] == Fate(
        holders=(survivor,) * everywhere, running=(survivor.node,), values=(0,) * everywhere
    )
    ends = dict(zip(outcome.claims, outcome.ends, strict=True))
    (loser,) = set(outcome.claims) - {survivor}
    assert ends == {survivor: None, loser: CONFLICT}
    for name, node in ((LEFT, a), (RIGHT, c)):
        assert outcome.acknowledged[name] == tuple(range(1, WRITES + 1))
        assert outcome.fates[name] == Fate(
            holders=(outcome.before[name],) * everywhere,
            running=(node.name,),
            values=(WRITES,) * everywhere,
        )
    assert outcome.lost == 0
    assert outcome.held_twice == 0
