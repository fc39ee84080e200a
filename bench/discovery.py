"""Discovery latency: from a change in discovery until every node is connected.

The same 4 ``pycluster run`` processes (each on its own loopback address, named
``app@ADDRESS``) find each other three ways, all with one ``polling_interval`` (1000 ms
unless ``--polling-interval`` says otherwise):

- ``kubernetes.dns``: the A records of a headless Service's name, served by a real dnsmasq
  on a loopback port (``tests/lab/dnsmasq.py``), looked up every interval;
- ``kubernetes`` with ``watch: true``: the Service's EndpointSlice in the lab's fake API
  server (``tests/lab/kube_api.py``, the API's real JSON to the official client), listed
  once and then watched;
- ``kubernetes`` with ``watch: false``: the same EndpointSlice, listed every interval.

Each change takes one node X (a different one each time) out of discovery and puts it
back. Out: its A record or endpoint is removed, until no node lists X in ``/status``; the
others now refuse X's reconnects (X still runs and keeps dialling them), so only
discovery can let it back. Back: the record or endpoint is added again. Measured: from
just before the addition (dnsmasq is signalled to reload, or the fake API stores the
slice and writes the watch events) until every node's ``/status`` lists all the others
(polled every 20 ms over kept-alive connections), and the same instant as the nodes' own
"node up" log lines put it (exact to 1 ms, no polling delay). The removal is timed too,
until no node lists X. Before each removal and each addition the benchmark pauses a
random 0..interval, so the changes do not fall in step with the nodes' polls: a polling
node then sees a change after half an interval on average, the last of 4 later still.

p99 is the nearest rank: with 12 changes per variant it is their maximum.

Run: ``.venv/bin/python bench/discovery.py [--changes 12] [--polling-interval 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import attrs
import lab

# (importing lab made the repository root importable)
from tests.lab.dnsmasq import Dnsmasq
from tests.lab.kube_api import KubeApi, endpoint_slice, slice_endpoint

POLL_INTERVAL = 0.02
START_TIMEOUT = 60.0
FORM_TIMEOUT = 30.0
LOG_TIMEOUT = 5.0
GOAL_SECONDS = 1.0
SERVICE = "app.bench.test"
NAMESPACE = "bench"
LABELS = {"app": "pycluster-bench"}
SLICE = "app-bench"


@attrs.frozen
class Change:
    """One node out of discovery and back, in seconds."""

    removed: float
    """From the removal until no node lists it."""
    added: float
    """From the addition until every node lists all the others (``/status``)."""
    added_by_logs: float
    """The same, by the nodes' "node up" log lines."""


class Discovery(Protocol):
    """Where a variant's nodes are listed, and how its topology reads them."""

    label: str

    def topology(self, interval_ms: float) -> dict[str, Any]:
        """The ``topologies.NAME`` entry of each node's config."""

    async def publish(self, hosts: Sequence[str]) -> None:
        """List exactly ``hosts`` (returns once the change is live)."""

    async def settled(self, nodes: Sequence[lab.LabNode], interval: float) -> None:
        """Return once every node's discovery has answered since the mesh formed (a node
        must have listed X before it drops X when X is removed)."""


class DnsRecords:
    """``kubernetes.dns``: the Service name's A records in a real dnsmasq."""

    label = "`kubernetes.dns`, polling"

    def __init__(self, dns: Dnsmasq) -> None:
        self.dns = dns

    def topology(self, interval_ms: float) -> dict[str, Any]:
        config = {
            "service": SERVICE,
            "application_name": "app",
            "polling_interval": interval_ms,
            "nameservers": [self.dns.address],
            "port": self.dns.port,
            "timeout": 2000,
        }
        return {"strategy": "kubernetes.dns", "config": config}

    async def publish(self, hosts: Sequence[str]) -> None:
        await self.dns.set_hosts({SERVICE: hosts})

    async def settled(self, nodes: Sequence[lab.LabNode], interval: float) -> None:
        # Lookups carry no sign of who asked: two intervals cover every node's next one.
        await asyncio.sleep(2 * interval)


class ApiEndpoints:
    """``kubernetes``: the Service's EndpointSlice in the fake API, watched or polled."""

    def __init__(self, kube: KubeApi, *, watch: bool) -> None:
        self.kube = kube
        self.watch = watch
        self.label = "`kubernetes` (EndpointSlices), " + ("watch" if watch else "polling")

    def topology(self, interval_ms: float) -> dict[str, Any]:
        config = {
            "selector": "app=pycluster-bench",
            "node_basename": "app",
            "namespace": NAMESPACE,
            "api_server": self.kube.url,
            "polling_interval": interval_ms,
            "watch": self.watch,
        }
        return {"strategy": "kubernetes", "config": config}

    async def publish(self, hosts: Sequence[str]) -> None:
        endpoints = [
            slice_endpoint(host, pod_name=f"app-{host.rsplit('.', 1)[1]}", ready=False)
            for host in hosts
        ]
        self.kube.put(endpoint_slice(SLICE, endpoints, namespace=NAMESPACE, labels=LABELS))

    async def settled(self, nodes: Sequence[lab.LabNode], interval: float) -> None:
        if not self.watch:
            await asyncio.sleep(2 * interval)  # as for DNS: lists do not say who asked
            return
        try:  # each watches from its own list
            await lab.until(
                lambda: self.kube.watch_count() >= len(nodes),
                timeout=FORM_TIMEOUT,
                interval=POLL_INTERVAL,
                what="every node watching",
            )
        except lab.NotWithin:
            raise RuntimeError("the nodes do not all watch the API") from None


def _http_port(host: str, node_port: int) -> int:
    """A port free on ``host`` for the node's HTTP server, other than ``node_port``."""
    while (port := lab.free_port(host)) == node_port:
        pass
    return port


async def measure(
    discovery: Discovery, hosts: Sequence[str], changes: int, interval_ms: float, seed: int
) -> list[Change]:
    """Start the nodes on ``discovery``, form the cluster, make ``changes`` changes."""
    interval = interval_ms / 1000
    rng = random.Random(seed)
    # The cluster's node.port, free on every host (names carry no port).
    port = lab.free_port(hosts[0], also=hosts[1:])
    planned = [lab.Planned(f"app@{host}", host, port, _http_port(host, port)) for host in hosts]
    names = {node.name for node in planned}
    full = {node.name: names - {node.name} for node in planned}
    results = []
    async with lab.node_lab() as node_lab, lab.StatusPoller() as poller:
        await discovery.publish(hosts)
        nodes = []
        for index, plan in enumerate(planned):
            config = {
                "node": {"name": plan.name, "port": port, "http": {"port": plan.http_port}},
                "topologies": {"bench": discovery.topology(interval_ms)},
            }
            # Every name is app@ADDRESS: each node's files get a name of their own.
            nodes.append(lab.add_node(node_lab, plan, config, stem=f"app-{index + 1}"))
        for node in nodes:
            node.spawn()
        await lab.wait_listening(nodes, START_TIMEOUT)
        await poller.until(
            nodes,
            lambda node, peers: peers == full[node.name],
            interval=POLL_INTERVAL,
            timeout=FORM_TIMEOUT,
        )
        await discovery.settled(nodes, interval)
        timeout = 10 * interval + FORM_TIMEOUT
        for index in range(changes):
            out = nodes[index % len(nodes)]
            await asyncio.sleep(rng.uniform(0, interval))
            removing = time.time()
            await discovery.publish([host for host in hosts if host != out.address])
            gone = await poller.until(nodes, _without(out), interval=POLL_INTERVAL, timeout=timeout)
            removed = max(gone.values())
            await asyncio.sleep(rng.uniform(0, interval))
            adding = time.time()
            await discovery.publish(hosts)
            seen = await poller.until(
                nodes,
                lambda node, peers: peers == full[node.name],
                interval=POLL_INTERVAL,
                timeout=timeout,
            )
            by_logs = await _connected_by_logs(nodes, out, since=removed)
            results.append(
                Change(removed - removing, max(seen.values()) - adding, by_logs - adding)
            )
            print(
                f"  {discovery.label}, change {index + 1} ({out.name}): out after "
                f"{lab.ms(results[-1].removed)}, back after {lab.ms(results[-1].added)} "
                f"({lab.ms(results[-1].added_by_logs)} by the node logs)",
                file=sys.stderr,
            )
    return results


def _without(out: lab.LabNode) -> Callable[[lab.LabNode, set[str]], bool]:
    """Whether a node's peers leave ``out`` out (``out`` itself: connected to none)."""

    def done(node: lab.LabNode, peers: set[str]) -> bool:
        return peers == set() if node is out else out.name not in peers

    return done


async def _connected_by_logs(nodes: Sequence[lab.LabNode], out: lab.LabNode, since: float) -> float:
    """When (node clocks) the last node up record joining ``out`` to the others was
    logged, after ``since`` (by then it was connected to none)."""
    times: list[float | None] = []

    def logged() -> bool:
        times.clear()
        for node in nodes:
            peers = {n.name for n in nodes if n is not node} if node is out else {out.name}
            ups = {
                e.peer: e.at
                for e in reversed(node.events())
                if e.kind == "up" and e.peer in peers and e.at >= since
            }
            times.append(max(ups.values()) if len(ups) == len(peers) else None)
        return all(t is not None for t in times)

    try:
        await lab.until(logged, timeout=LOG_TIMEOUT, interval=0.05, what="node up records")
    except lab.NotWithin:
        raise RuntimeError("/status showed the node back that the node logs do not") from None
    return max(t for t in times if t is not None)


@asynccontextmanager
async def variants(directory: Path) -> AsyncIterator[list[Discovery]]:
    """The three variants, their dnsmasq and fake API server running."""
    async with (
        KubeApi.running() as kube,
        Dnsmasq.open(directory / "dnsmasq", domains=("bench.test",)) as dns,
    ):
        yield [ApiEndpoints(kube, watch=True), ApiEndpoints(kube, watch=False), DnsRecords(dns)]


async def main(nodes: int, changes: int, interval_ms: float, first_index: int, seed: int) -> None:
    """Measure every variant, print the table and the goal."""
    hosts = [lab.loopback(first_index + i) for i in range(nodes)]
    print(
        f"discovery latency: {nodes} nodes, {changes} changes per variant, "
        f"polling_interval {interval_ms:.0f} ms"
    )
    print(f"machine: {lab.machine()}")
    load = lab.OtherLoad()
    results: dict[str, list[Change]] = {}
    with tempfile.TemporaryDirectory(prefix="pycluster-bench-dns-") as directory:
        async with variants(Path(directory)) as found:
            for discovery in found:
                results[discovery.label] = await measure(
                    discovery, hosts, changes, interval_ms, seed
                )
    interval = interval_ms / 1000
    watched = results[found[0].label]  # the first variant watches: the baseline
    watch = lab.median([c.added for c in watched])
    rows = []
    for label, measured in results.items():
        added = [c.added for c in measured]
        rows.append(
            [
                label,
                len(measured),
                lab.ms(lab.median(added)),
                lab.ms(lab.percentile(added, 0.99)),
                lab.ms(max(added)),
                lab.ms(lab.median([c.added_by_logs for c in measured])),
                f"{lab.median(added) / watch:.1f}",
                f"{lab.median(added) / interval:.2f}",
                lab.ms(lab.median([c.removed for c in measured])),
            ]
        )
    print()
    print(
        lab.table(
            [
                "discovery",
                "changes",
                "connected: median",
                "p99",
                "max",
                "by node logs: median",
                "median / watch",
                "median / polling interval",
                "disconnected: median",
            ],
            rows,
        )
    )
    print()
    print("connected: a node's address added back -> every node's /status lists all the others")
    print("disconnected: its address removed -> no node lists it (the others refuse it)")
    worst = max(c.added for c in watched)
    print(
        lab.goal(
            f"with watch, every change connected within {GOAL_SECONDS:.0f} s "
            f"(worst: {lab.ms(worst)})",
            worst < GOAL_SECONDS,
        )
    )
    print(load.note())


def _arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--nodes", type=int, default=4, help="node processes (default 4, at least 3)"
    )
    parser.add_argument("--changes", type=int, default=12, help="changes per variant")
    parser.add_argument(
        "--polling-interval",
        type=float,
        default=1000,
        help="polling_interval of every variant, in ms (default 1000)",
    )
    parser.add_argument(
        "--first-address",
        type=int,
        default=201,
        metavar="X",
        help="nodes use 127.0.0.X, 127.0.0.X+1, ... (default 201, away from the test lab)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the random pauses")
    args = parser.parse_args(argv)
    if args.nodes < 3:
        # Taking one of 2 nodes out leaves an answer that names only the other node, which
        # by design disconnects nothing (docs/dns.md, docs/kubernetes.md): no removal to time.
        parser.error("--nodes must be at least 3")
    return args


if __name__ == "__main__":
    args = _arguments()
    lab.run(main(args.nodes, args.changes, args.polling_interval, args.first_address, args.seed))
