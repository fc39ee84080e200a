"""Real nodes that find each other through ``kubernetes.dns`` against a real dnsmasq.

Three ``pycluster run`` processes, each on its own loopback address, poll the A records of
one name (the headless Service) on a dnsmasq of the lab, and form a full mesh. When one
address is removed from DNS, as when a pod is deleted, the other two disconnect that node
and keep it out: it still runs, its own discovery still lists them, and its reconnects are
refused for as long as DNS leaves it out.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import yaml

from tests.lab import Lab, LabNode
from tests.lab.dnsmasq import Dnsmasq
from tests.lab.lab import HTTP_PORT, NODE_PORT

SERVICE = "app.lab.test"
POLLING_INTERVAL_MS = 200
FORM_WITHIN = 15.0
DROP_WITHIN = 10.0
OUT_FOR_POLLS = 10
"""Lookups (by all nodes together) during which the removed node must stay out."""


def declare_dns_nodes(lab: Lab, dns: Dnsmasq, count: int) -> list[LabNode]:
    """Nodes named ``app@ADDRESS`` whose only topology is ``kubernetes.dns`` on ``dns``."""
    nodes = []
    for index in range(1, count + 1):
        address = lab.address()
        name = f"app@{address}"
        config = {
            "node": {"name": name, "net_tick_timeout": 3.0, "http": {"port": HTTP_PORT}},
            "topologies": {
                "k8s": {
                    "strategy": "kubernetes.dns",
                    "config": {
                        "service": SERVICE,
                        "application_name": "app",
                        "polling_interval": POLLING_INTERVAL_MS,
                        "nameservers": [dns.address],
                        "port": dns.port,
                        "timeout": 2000,
                    },
                }
            },
        }
        config_path = lab.directory / f"app-{index}.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        node = LabNode(
            name=name,
            address=address,
            port=NODE_PORT,
            http_port=HTTP_PORT,
            config_path=config_path,
            log_path=lab.directory / f"app-{index}.log",
            cookie=lab.cookie,
        )
        lab.nodes.append(node)  # the lab stops it, and shows its log if the test fails
        nodes.append(node)
    return nodes


async def test_dns_discovered_nodes_mesh_and_drop_a_pod_removed_from_dns(
    lab: Lab, tmp_path: Path
) -> None:
    async with Dnsmasq.open(tmp_path / "dnsmasq") as dns:
        nodes = declare_dns_nodes(lab, dns, 3)
        await dns.set_hosts({SERVICE: [node.address for node in nodes]})
        await lab.start(nodes)
        await lab.wait_mesh(nodes, timeout=FORM_WITHIN)

        stay, gone = nodes[:2], nodes[2]
        await dns.set_hosts({SERVICE: [node.address for node in stay]})
        await lab.wait_mesh(stay, timeout=DROP_WITHIN)
        for node in stay:
            line = await lab.wait_for_log(
                node, rf"disconnected {re.escape(gone.name)}: discovery no longer lists it"
            )
            assert "[pycluster:k8s]" in line

        # It keeps dialling (its own discovery still lists the others); they refuse it.
        refused = rf"refused a connection from {re.escape(gone.name)}: discovery on this node"
        for node in stay:
            await lab.wait_for_log(node, refused, timeout=DROP_WITHIN)
        lookups = dns.queries(SERVICE)
        deadline = time.monotonic() + DROP_WITHIN
        while dns.queries(SERVICE) < lookups + OUT_FOR_POLLS:
            assert time.monotonic() < deadline, "the nodes stopped looking the Service up"
            views = await lab.views(nodes)
            for node, view in zip(stay, views, strict=False):
                assert view is not None, f"{node.name} stopped answering"
                assert gone.name not in view, f"{node.name} let {gone.name} back in: {view}"
            assert views[2] == [], f"{gone.name} is connected to {views[2]}"
            assert gone.running
            await asyncio.sleep(0.02)
        await lab.stop(nodes)
        assert [node.exit_code for node in nodes] == [0, 0, 0]
