"""Bad discovery input against real node processes: counted, skipped, never a traceback.

Names that only look like node names were found by black-box attacks: ``x@h:²`` (``'²'``
passes ``str.isdigit()`` but ``int()`` refuses it), ``x@h:٩١٠٠`` (``int()`` reads it as
9100), and hosts the C library reads as addresses (``127.1``, ``0x7f.1``). A flood of gossip
heartbeats announcing them used to cost a traceback per datagram; a hosts file listing one
made the strategy crash at every read, so its valid lines were never connected.

Gossip runs in a network namespace of the test's own, where multicast works on loopback
(tests.lab.multicast); the stranger sends from a lab address of its own.
"""

from __future__ import annotations

import re
import socket
import time
from typing import Any

import yaml

from pycluster.strategies.gossip_packet import HeartbeatCodec
from tests.cluster.test_gossip_cluster import declare as declare_gossip
from tests.hyp import BAD_NODE_NAMES
from tests.lab import Lab, LabNode

GROUP, PORT = "233.252.1.32", 45892
"""The gossip strategy's default group and port, which the lab's gossip nodes use."""
BATCH = 100
"""Datagrams sent before waiting for the node to count them: well within a socket's
receive buffer, so none is lost and the count is exact."""
BATCHES = 20
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def dropped(metrics: dict[str, float], topology: str, reason: str) -> float:
    """``pycluster_discovery_dropped_total`` of ``topology`` for ``reason`` (0 if unset)."""
    wanted = {("topology", topology), ("reason", reason)}
    for series, value in metrics.items():
        name, _, labels = series.partition("{")
        if name == "pycluster_discovery_dropped_total" and set(_LABEL.findall(labels)) == wanted:
            return value
    return 0.0


async def wait_dropped(lab: Lab, node: LabNode, topology: str, reason: str, at_least: int) -> float:
    """Wait until ``node`` counted ``at_least`` drops of ``reason``; return its count then."""
    seen: list[float] = []

    async def counted() -> bool:
        seen[:] = [dropped(await lab.metrics(node), topology, reason)]
        return seen[0] >= at_least

    await lab.until(
        counted, timeout=10, what=f"{node.name} counts {at_least} drops ({reason}) in /metrics"
    )
    return seen[0]


async def test_a_flood_of_bad_names_is_counted_and_a_valid_heartbeat_still_connects(
    gossip_lab: Lab,
) -> None:
    lab = gossip_lab
    a, b = declare_gossip(lab, 2, secret=None)
    await lab.start([a])
    source = lab.address()
    codec = HeartbeatCodec("lab", None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
        stranger.bind((source, 0))
        for batch in range(1, BATCHES + 1):
            for i in range(BATCH):
                packet = codec.encode(BAD_NODE_NAMES[i % len(BAD_NODE_NAMES)], time.time())
                stranger.sendto(packet, (GROUP, PORT))
            await wait_dropped(lab, a, "lan", "bad_name", batch * BATCH)
    assert dropped(await lab.metrics(a), "lan", "bad_name") == BATCHES * BATCH
    assert a.running
    assert await lab.peers(a) == []
    assert "Traceback" not in a.log_text()
    # One record for the flood (a source is logged once a minute), naming the first name.
    records = a.records(event="gossip_dropped", source=source)
    assert len(records) == 1, records
    assert records[0]["reason"] == "bad_name"
    assert "'x@h:\u00b2'" in records[0]["detail"]
    # Still listening: a node that starts now is heard, and connected.
    await lab.start([b])
    await lab.wait_mesh([a, b], timeout=30)
    assert "Traceback" not in a.log_text()


def use_topology(node: LabNode, topology: dict[str, Any]) -> None:
    """Make ``topology`` the only topology of ``node`` (declared, not started)."""
    config: dict[str, Any] = yaml.safe_load(node.config_path.read_text())
    config["topologies"] = {"lab": topology}
    node.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


async def test_a_hosts_file_with_bad_lines_connects_the_valid_nodes(lab: Lab) -> None:
    nodes = lab.declare(3)
    bad = ["x@h:\u00b2", "y@127.1", "z@h:\u0669\u0661\u0660\u0660"]
    lines = [bad[0], nodes[0].name, bad[1], nodes[1].name, nodes[2].name, bad[2]]
    hosts = lab.directory / "hosts"
    hosts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for node in nodes:
        use_topology(
            node,
            {"strategy": "hosts_file", "config": {"path": str(hosts), "polling_interval": 200}},
        )
    await lab.start(nodes)
    await lab.wait_mesh(nodes, timeout=30)
    for node in nodes:
        # The three bad lines are counted together, at each read of the file.
        count = await wait_dropped(lab, node, "lab", "bad_line", len(bad))
        assert count % len(bad) == 0, count
        topology = (await lab.status(node))["topologies"]["lab"]
        assert (topology["state"], topology["crashes"]) == ("running", 0), topology
        assert "Traceback" not in node.log_text()
        (first, *_) = node.records(event="discovery_problem", reason="bad_lines")
        assert "'x@h:\u00b2'" in first["problem"]
