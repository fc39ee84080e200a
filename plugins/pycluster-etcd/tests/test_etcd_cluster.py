"""A 3-member etcd cluster losing one member: claims, leases and watches carry on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import eventually, make_node, mesh
from etcd3aio.maintenance import MaintenanceService
from etcd_lab import EtcdServer, start_cluster
from pycluster_etcd.client import EtcdClient
from pycluster_etcd.options import EtcdConnection

from pycluster.actors import Actor

LEASE_TTL = 5
"""Above a leader election's few seconds, with default etcd timings."""


class Named(Actor):
    async def handle_call(self, message: Any) -> Any:
        return self.node.name


@pytest.fixture
async def members(tmp_path: Path) -> AsyncIterator[list[EtcdServer]]:
    cluster = await start_cluster(tmp_path, 3)
    try:
        yield cluster
    finally:
        for member in cluster:
            member.stop()


async def leader(members: list[EtcdServer]) -> EtcdServer:
    """The member that leads the cluster now."""
    for member in members:
        client = EtcdClient(EtcdConnection(endpoints=(member.endpoint,)))
        await client.open()
        try:
            status = await MaintenanceService(client.channel).status(timeout=5)
        finally:
            await client.close()
        if status.leader == status.header.member_id:
            return member
    raise AssertionError("no leader")


async def test_claims_go_on_with_two_members_of_three(
    members: list[EtcdServer], prefix: str
) -> None:
    endpoints = [member.endpoint for member in members]
    a = make_node(0, endpoints, prefix, lease_ttl=LEASE_TTL)
    b = make_node(1, endpoints, prefix, lease_ttl=LEASE_TTL)
    async with a, b:
        await mesh([a, b])
        before = await a.registry.spawn("before", Named)
        ended = asyncio.ensure_future(a.actors.wait(before))
        await eventually(lambda: b.registry.whereis("before") == before)

        (await leader(members)).kill()  # the worst one to lose: an election follows

        # A claim sent during the election waits for it (its attempts are retried)...
        first = await b.registry.spawn("during-election", Named, timeout=10)
        # ...and from then on claims go through as usual, from every node.
        refs = {"during-election": first}
        for i in range(10):
            refs[f"after-{i}"] = await (a, b)[i % 2].registry.spawn(f"after-{i}", Named)
        await eventually(
            lambda: all(n.registry.registered() == {**refs, "before": before} for n in (a, b))
        )
        # No lease was lost on the way: the name claimed before is still held.
        assert not ended.done()
        assert b.registry.whereis("before") == before
        # (A keepalive sent during the election may have timed out: the next one works.)
        await eventually(lambda: all(n.status()["registry"]["etcd"] == "ok" for n in (a, b)))
