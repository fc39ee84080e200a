"""Nodes named after host names, not IPs, form a mesh end to end.

The ``kubernetes`` strategy's ``mode: dns`` (``app@A-B-C-D.NS.pod.cluster.local``) and
``mode: hostname`` (``app@HOST.SERVICE.NS.svc.cluster.local``), and ``kubernetes.dnssrv``
(``app@TARGET``), name nodes by host names that peers dial through the system resolver.
Here they are real ``pycluster run`` processes, each bound (``node.bind``) to its own
loopback address, each in a private mount namespace whose /etc/hosts (tests.lab.hosts)
maps the lab's host names to those addresses: a mesh forms only if every node dials every
other by the name discovery gave it, and each answers to exactly that name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.lab import Lab, LabNode
from tests.lab.dnsmasq import Dnsmasq
from tests.lab.hosts import SYSTEM_HOSTS, declare_node, private_hosts, write_hosts
from tests.lab.kube_api import KubeApi, endpoint_slice, pod, slice_endpoint
from tests.lab.lab import HTTP_PORT, NODE_PORT

NAMESPACE = "lab"
SERVICE = "app"
DOMAIN = "cluster.local"
LABELS = {"app": "pycluster"}
POLLING_INTERVAL_MS = 500
FORM_WITHIN = 20.0


@pytest.fixture(autouse=True)
def machine_untouched() -> Iterator[None]:
    """The machine's /etc/hosts and mounts are the same after the test as before."""

    def state() -> tuple[str, list[str]]:
        mounts = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
        return SYSTEM_HOSTS.read_text(encoding="utf-8"), [m for m in mounts if "hosts" in m]

    before = state()
    yield
    assert state() == before


def declare_named(lab: Lab, hosts: Mapping[str, str], topology: dict[str, Any]) -> list[LabNode]:
    """A node ``app@HOST`` per ``HOST -> address`` (bound to that address), whose only
    topology is ``topology``, run with ``hosts`` in its /etc/hosts."""
    prefix = private_hosts(write_hosts(lab.directory / "hosts", hosts))
    nodes = []
    for host, address in hosts.items():
        config = {
            "node": {
                "name": f"app@{host}",
                "bind": address,
                "net_tick_timeout": 1.0,
                "http": {"port": HTTP_PORT},
            },
            "topologies": {"k8s": topology},
        }
        nodes.append(declare_node(lab, config, address=address, command_prefix=prefix))
    return nodes


async def form_mesh(lab: Lab, nodes: list[LabNode]) -> None:
    """Start ``nodes``; each must listen on its own address only and list all the others
    by name (``/status``); then they leave gracefully."""
    await lab.start(nodes)
    for node in nodes:
        listening = node.listening()
        assert listening is not None, node.name
        assert (listening.host, listening.port) == (node.address, NODE_PORT), node.name
    await lab.wait_mesh(nodes, timeout=FORM_WITHIN)
    await lab.stop(nodes)
    assert [node.exit_code for node in nodes] == [0] * len(nodes)


def kubernetes_topology(kube: KubeApi, **config: Any) -> dict[str, Any]:
    return {
        "strategy": "kubernetes",
        "config": {
            "selector": "app=pycluster",
            "node_basename": "app",
            "namespace": NAMESPACE,
            "api_server": kube.url,
            "polling_interval": POLLING_INTERVAL_MS,
            **config,
        },
    }


async def test_kubernetes_dns_mode_names_pods_by_their_dashed_ip(lab: Lab) -> None:
    addresses = [lab.address() for _ in range(3)]
    hosts = {f"{a.replace('.', '-')}.{NAMESPACE}.pod.{DOMAIN}": a for a in addresses}
    async with KubeApi.running() as kube:
        endpoints = [
            slice_endpoint(address, pod_name=f"app-{i}") for i, address in enumerate(addresses)
        ]
        kube.put(endpoint_slice("app-x7c2p", endpoints, namespace=NAMESPACE, labels=LABELS))
        nodes = declare_named(lab, hosts, kubernetes_topology(kube, mode="dns"))
        assert nodes[0].name == f"app@{addresses[0].replace('.', '-')}.lab.pod.cluster.local"
        await form_mesh(lab, nodes)


async def test_kubernetes_hostname_mode_names_pods_by_their_hostname(lab: Lab) -> None:
    addresses = [lab.address() for _ in range(3)]
    hosts = {
        f"app-{i}.{SERVICE}.{NAMESPACE}.svc.{DOMAIN}": address
        for i, address in enumerate(addresses)
    }
    async with KubeApi.running() as kube:
        for i, address in enumerate(addresses):
            kube.put(
                pod(
                    f"app-{i}",
                    address,
                    namespace=NAMESPACE,
                    labels=LABELS,
                    hostname=f"app-{i}",
                    subdomain=SERVICE,
                )
            )
        topology = kubernetes_topology(
            kube, mode="hostname", service=SERVICE, ip_lookup_mode="pods"
        )
        nodes = declare_named(lab, hosts, topology)
        assert nodes[0].name == "app@app-0.app.lab.svc.cluster.local"
        await form_mesh(lab, nodes)


async def test_dnssrv_names_pods_by_their_srv_target(lab: Lab, tmp_path: Path) -> None:
    addresses = [lab.address() for _ in range(3)]
    hosts = {
        f"app-{i}.{SERVICE}.{NAMESPACE}.svc.{DOMAIN}": address
        for i, address in enumerate(addresses)
    }
    async with Dnsmasq.open(tmp_path / "dnsmasq") as dns:
        await dns.set_srv({f"{SERVICE}.{NAMESPACE}.svc.{DOMAIN}": list(hosts)})
        topology = {
            "strategy": "kubernetes.dnssrv",
            "config": {
                "service": SERVICE,
                "namespace": NAMESPACE,
                "application_name": "app",
                "cluster_domain": DOMAIN,
                "polling_interval": POLLING_INTERVAL_MS,
                "nameservers": [dns.address],
                "port": dns.port,
            },
        }
        nodes = declare_named(lab, hosts, topology)
        await form_mesh(lab, nodes)
