"""``pycluster leave --node NAME``: a node run by ``pycluster run`` leaves the cluster
gracefully when asked (its ring actors handed off first) and exits 0; its peers see it
gone, and the ring actor it held runs on another node, its state kept."""

from __future__ import annotations

from pycluster.ring import owner
from tests.cluster.registry_client import RegistryClient
from tests.lab import Lab

WITHIN = 15.0


async def test_a_node_asked_to_leave_hands_off_and_exits_0(lab: Lab) -> None:
    nodes = lab.declare(2)
    await lab.start(nodes)
    await lab.wait_mesh(nodes, timeout=WITHIN)
    leaving, staying = nodes
    async with RegistryClient.open(lab) as client:
        names = [n.name for n in nodes]
        name = next(f"c{i}" for i in range(1000) if owner(f"c{i}", names) == leaving.name)
        started, ref = await client.spawn(staying, name, placement="ring")
        assert started
        assert ref.node == leaving.name
        for _ in range(3):
            await client.call(staying, name, "increment")

        result = await lab.cli("leave", "--node", leaving.name)
        assert result.returncode == 0, result.stderr
        assert f"{leaving.name} left the cluster" in result.stdout
        assert await lab.wait_exit(leaving, timeout=WITHIN) == 0

        async def alone() -> bool:
            return await lab.peers(staying) == []

        await lab.until(alone, timeout=WITHIN, what="the peer gone")
        # Handed off, not restarted: the counter kept its state on the node that stays.
        assert await client.call(staying, name, "value") == 3


async def test_leave_exits_1_when_the_node_cannot_be_reached(lab: Lab) -> None:
    result = await lab.cli("leave", "--node", f"nobody@{lab.address()}", "--timeout", "2")
    assert result.returncode == 1
    assert result.stdout == ""
