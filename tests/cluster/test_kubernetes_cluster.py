"""Three real nodes find each other through the (fake) Kubernetes API, and drop a pod the
API stops listing (issue: the ``kubernetes`` strategy).

Each node is a ``pycluster run`` process whose ``kubernetes`` topology lists and watches the
EndpointSlices of the lab's fake API server (tests/lab/kube_api.py) with the official
client, over ``api_server: http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import time

import yaml

from tests.lab import Lab, LabNode
from tests.lab.kube_api import KubeApi, endpoint_slice, slice_endpoint
from tests.lab.lab import HTTP_PORT, NODE_PORT

NAMESPACE = "lab"
LABELS = {"app": "pycluster"}
SLICE = "app-4kq9z"
STAYS_OUT_FOR = 1.0
"""Seconds the dropped node is watched staying out (its reconnects are refused)."""


def declare(lab: Lab, kube: KubeApi, count: int) -> list[LabNode]:
    """``count`` nodes named ``app@ADDRESS`` whose topology is the ``kubernetes`` strategy."""
    nodes = []
    for _ in range(count):
        address = lab.address()
        name = f"app@{address}"
        stem = f"app-{address.rsplit('.', 1)[1]}"
        config = {
            "node": {"name": name, "net_tick_timeout": 1.0, "http": {"port": HTTP_PORT}},
            "topologies": {
                "k8s": {
                    "strategy": "kubernetes",
                    "config": {
                        "selector": "app=pycluster",
                        "node_basename": "app",
                        "namespace": NAMESPACE,
                        "api_server": kube.url,
                        "polling_interval": 1000,
                    },
                }
            },
        }
        config_path = lab.directory / f"{stem}.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        node = LabNode(
            name=name,
            address=address,
            port=NODE_PORT,
            http_port=HTTP_PORT,
            config_path=config_path,
            log_path=lab.directory / f"{stem}.log",
            cookie=lab.cookie,
        )
        lab.nodes.append(node)
        nodes.append(node)
    return nodes


def publish(kube: KubeApi, nodes: list[LabNode]) -> None:
    """The headless Service's EndpointSlice lists ``nodes`` (not ready yet: they count)."""
    endpoints = [
        slice_endpoint(node.address, pod_name=node.log_path.stem, ready=False) for node in nodes
    ]
    kube.put(endpoint_slice(SLICE, endpoints, namespace=NAMESPACE, labels=LABELS))


async def test_kubernetes_nodes_form_a_mesh_and_drop_an_unlisted_pod(lab: Lab) -> None:
    async with KubeApi.running() as kube:
        nodes = declare(lab, kube, 3)
        publish(kube, nodes)
        await lab.start(nodes)
        await lab.wait_mesh(nodes, timeout=20)

        async def all_watching() -> bool:
            return kube.watch_count() == len(nodes)

        # The mesh can form through the others' dials before a slow node's first list; a
        # node whose discovery never listed a peer leaves it alone (design.md), so the
        # change below must come once every node has listed everyone.
        await lab.until(all_watching, timeout=10, what="every node watching the API")
        kept, dropped = nodes[:2], nodes[2]
        publish(kube, kept)
        await lab.wait_mesh(kept, timeout=10)

        async def dropped_alone() -> bool:
            return await lab.peers(dropped) == []

        await lab.until(dropped_alone, timeout=10, what=f"{dropped.name} connected to no one")
        # It still lists the others and keeps dialling them; they refuse it.
        until = time.monotonic() + STAYS_OUT_FOR
        while time.monotonic() < until:
            views = await lab.views(nodes)
            assert views[0] == [kept[1].name], views
            assert views[1] == [kept[0].name], views
            assert views[2] == [], views
        for node in kept:
            log = node.log_text()
            assert f"disconnected {dropped.name}: discovery no longer lists it" in log
        assert kube.count("list") == 3  # one list each; watches did the rest
        await lab.stop(nodes)
        assert [node.exit_code for node in nodes] == [0, 0, 0]
