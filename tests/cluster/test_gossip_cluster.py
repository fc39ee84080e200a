"""Gossip on the lab: node processes whose only topology is ``gossip`` find each other.

The lab runs in a network namespace of its own where multicast works on loopback
(tests.lab.multicast); each node sends and joins the group from its own 127.0.S.x address
(``multicast_if``), as a node on a LAN does from its interface.

How formation time is measured: every node logs ``sent the first heartbeat`` and each
``node up``, with millisecond timestamps from the same clock. The mesh formed when the last
of the 20 ``node up`` lines (each of the 10 pairs, seen from both ends) was logged; it must
be within two heartbeat intervals of the last node's first heartbeat. Both instants are
what the nodes themselves logged, not when the test noticed, so polling adds nothing.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import pytest
import yaml

from tests.lab import Lab, LabNode

pytestmark = pytest.mark.usefixtures("require_multicast")

INTERVAL = 1.0
"""Heartbeat interval of the lab's nodes, in seconds."""
SECRET = "lab secret: long, random enough for a test"
WATCH = 3 * INTERVAL
"""Seconds the views are watched for a node that must not join."""
_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "


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


def logged_at(node: LabNode, pattern: str) -> list[float]:
    """Wall-clock times of the lines of ``node``'s log matching ``pattern``."""
    times = []
    for line in node.log_text().splitlines():
        match = re.match(_STAMP, line)
        if match is not None and re.search(pattern, line):
            stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f")
            times.append(stamp.timestamp())
    return times


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
    first = {node.name: logged_at(node, r"sent the first heartbeat") for node in nodes}
    assert all(len(times) == 1 for times in first.values()), first
    ups = [t for node in nodes for t in logged_at(node, r"pycluster\.node \S+: node up ")]
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
    rejected = "dropped a gossip packet from {}: failed authentication"
    for member in members:
        await lab.wait_for_log(member, rejected.format(re.escape(intruder.address)))
        await lab.wait_for_log(intruder, rejected.format(re.escape(member.address)))
    await watch_apart(lab, [members, [intruder]], "intruder")


async def test_clusters_sharing_a_group_stay_apart(lab: Lab) -> None:
    blue = declare(lab, 2, cluster="blue")
    green = declare(lab, 2, cluster="green", secret=None)
    await lab.start([*blue, *green])
    await lab.wait_mesh(blue, timeout=30)
    await lab.wait_mesh(green, timeout=30)
    for node in blue:
        await lab.wait_for_log(node, r"dropped a gossip packet from .*: a heartbeat of another")
    await watch_apart(lab, [blue, green], "clusters")
