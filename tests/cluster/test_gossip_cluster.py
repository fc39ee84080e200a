"""Gossip on the lab: node processes whose only topology is ``gossip`` find each other.

The lab runs in a network namespace of its own where multicast works on loopback
(tests.lab.multicast); each node sends and joins the group from its own 127.0.S.x address
(``multicast_if``), as a node on a LAN does from its interface.

How formation time is measured: every node logs a ``first_heartbeat`` record and one for
each node up, with timestamps from the same clock. The mesh formed when the last of the 20
node up records (each of the 10 pairs, seen from both ends) was logged; it must be within
two heartbeat intervals of the last node's first heartbeat. Both instants are what the
nodes themselves logged, not when the test noticed, so polling adds nothing.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml

from tests.lab import Lab, LabNode
from tests.lab.node import timestamp

pytestmark = pytest.mark.usefixtures("require_multicast")

INTERVAL = 1.0
"""Heartbeat interval of the lab's nodes, in seconds."""
SECRET = "lab secret: long, random enough for a test"
WATCH = 3 * INTERVAL
"""Seconds the views are watched for a node that must not join."""


@pytest.fixture
def lab(gossip_lab: Lab) -> Lab:
    """Every test here runs in the lab of its own network namespace."""
    return gossip_lab


def declare(
    lab: Lab, count: int, *, secret: str | None = SECRET, cluster: str = "lab"
) -> list[LabNode]:
    """Declare ``count`` nodes whose only topology is ``gossip``."""
    nodes = lab.declare(count, net_tick_timeout=3.0)
    for node in nodes:
        config: dict[str, Any] = yaml.safe_load(node.config_path.read_text())
        gossip = {
            "multicast_if": node.address,
            "heartbeat_interval": int(INTERVAL * 1000),
            "cluster_name": cluster,
            "secret": secret,
        }
        config["topologies"] = {"lan": {"strategy": "gossip", "config": gossip}}
        node.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return nodes


def logged_at(node: LabNode, **fields: Any) -> list[float]:
    """Wall-clock times of ``node``'s records with ``fields``."""
    return [timestamp(record) for record in node.records(**fields)]


async def watch_apart(lab: Lab, groups: list[list[LabNode]], what: str) -> None:
    """For WATCH seconds, every node sees exactly the others of its group."""
    nodes = [node for group in groups for node in group]
    expected = {
        node.name: sorted(peer.name for peer in group if peer is not node)
        for group in groups
        for node in group
    }
    until = time.monotonic() + WATCH
    while time.monotonic() < until:
        views = await lab.views(nodes)
        for node, view in zip(nodes, views, strict=True):
            assert view is not None, f"{node.name} stopped answering"
            assert sorted(view) == expected[node.name], f"{what}: {node.name} sees {view}"


async def test_five_nodes_form_a_mesh_within_two_heartbeats(lab: Lab) -> None:
    nodes = declare(lab, 5)
    await lab.start(nodes)
    await lab.wait_mesh(nodes, timeout=30)
    first = {node.name: logged_at(node, event="first_heartbeat") for node in nodes}
    assert all(len(times) == 1 for times in first.values()), first
    ups = [e.at for node in nodes for e in node.events() if e.kind == "up"]
    assert len(ups) == 5 * 4
    last_first_heartbeat = max(times[0] for times in first.values())
    formed = max(ups) - last_first_heartbeat
    print(f"mesh formed {formed:.3f}s after the last node's first heartbeat")
    assert formed <= 2 * INTERVAL
    for node in nodes:
        assert [e for e in node.events() if e.kind == "down"] == [], node.name
        assert "Traceback" not in node.log_text(), node.name


async def test_a_node_with_another_secret_never_joins(lab: Lab) -> None:
    members = declare(lab, 3)
    (intruder,) = declare(lab, 1, secret="not the lab's secret, as long though")
    await lab.start([*members, intruder])
    await lab.wait_mesh(members, timeout=30)
    # Each side hears the other's heartbeats, and rejects them.
    for member in members:
        for node, source in ((member, intruder), (intruder, member)):
            await lab.wait_for_record(
                node, event="gossip_dropped", source=source.address, reason="forged"
            )
    await watch_apart(lab, [members, [intruder]], "intruder")


async def test_clusters_sharing_a_group_stay_apart(lab: Lab) -> None:
    blue = declare(lab, 2, cluster="blue")
    green = declare(lab, 2, cluster="green", secret=None)
    await lab.start([*blue, *green])
    await lab.wait_mesh(blue, timeout=30)
    await lab.wait_mesh(green, timeout=30)
    for node in blue:
        await lab.wait_for_record(node, event="gossip_dropped", reason="other_cluster")
    await watch_apart(lab, [blue, green], "clusters")
