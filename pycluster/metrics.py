"""A node's Prometheus metrics, in a registry of its own (several nodes may share a process)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

LAG_PROBE_INTERVAL = 0.25


class NodeMetrics:
    """Counters and gauges a node exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.nodes = Gauge(
            "pycluster_connected_nodes", "Peers connected to this node.", registry=self.registry
        )
        self.connects = Counter(
            "pycluster_topology_connects",
            "Connection attempts made by a topology, by result.",
            ["topology", "result"],
            registry=self.registry,
        )
        self.disconnects = Counter(
            "pycluster_topology_disconnects",
            "Nodes a topology disconnected because discovery left them out.",
            ["topology"],
            registry=self.registry,
        )
        self.topology_state = Gauge(
            "pycluster_topology_state",
            "1 for the state a topology is in (starting, running, restarting, failed, "
            "stopped, abandoned), 0 for the others.",
            ["topology", "state"],
            registry=self.registry,
        )
        self.topology_problem = Gauge(
            "pycluster_topology_problem",
            "1 while a topology's discovery reports a problem (its lookups keep failing, "
            "its input is bad...), 0 once it recovers.",
            ["topology"],
            registry=self.registry,
        )
        self.topology_failed_attempts = Counter(
            "pycluster_topology_failed_attempts",
            "Discovery attempts of a topology that reported a problem.",
            ["topology"],
            registry=self.registry,
        )
        self.nodedowns = Counter(
            "pycluster_nodedown",
            "Peers lost, by reason (tick timeout, left, closed, ...).",
            ["reason"],
            registry=self.registry,
        )
        self.handshake_failures = Counter(
            "pycluster_handshake_failures",
            "Handshakes that failed, by kind (cookie, name, version, malformed, ...).",
            ["kind"],
            registry=self.registry,
        )
        self.frames_in = Counter(
            "pycluster_frames_in", "Frames received from peers.", registry=self.registry
        )
        self.frames_out = Counter(
            "pycluster_frames_out", "Frames sent to peers.", registry=self.registry
        )
        self.connections_refused = Counter(
            "pycluster_connections_refused",
            "Cluster connections closed at once, before any byte was read, because too many "
            "unauthenticated connections were open (per_source, total).",
            ["reason"],
            registry=self.registry,
        )
        self.tls_failures = Counter(
            "pycluster_tls_failures",
            "TLS handshakes that failed or timed out, by side (accept, dial).",
            ["side"],
            registry=self.registry,
        )
        self.http_refused = Counter(
            "pycluster_http_connections_refused",
            "HTTP connections closed at once over a cap (per_source, total).",
            ["reason"],
            registry=self.registry,
        )
        self.http_closed = Counter(
            "pycluster_http_connections_timed_out",
            "HTTP connections closed for being slow or idle (header, idle).",
            ["reason"],
            registry=self.registry,
        )
        self.discovery_dropped = Counter(
            "pycluster_discovery_dropped",
            "Discovery inputs skipped (gossip datagrams, file lines, node names), by topology "
            "and reason.",
            ["topology", "reason"],
            registry=self.registry,
        )
        self.registry_rejected = Counter(
            "pycluster_registry_rejected",
            "Registry messages refused from a peer (the connection is then closed), by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.messages_ignored = Counter(
            "pycluster_messages_ignored",
            "Messages from an authenticated peer that are no message of the wire vocabulary "
            "(dropped; the connection stays up).",
            registry=self.registry,
        )
        self.messages_undecodable = Counter(
            "pycluster_messages_undecodable",
            "Messages from an authenticated peer that arrived whole but held a value this node "
            "cannot decode, by kind (msg, call, reply) and reason (unknown_extension, "
            "extension_failed, timestamp, map_key). Only that message fails: a msg is "
            "dropped, a call answered with an error, a reply fails its call; the connection "
            "stays up.",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.loop_lag = Gauge(
            "pycluster_event_loop_lag_seconds",
            "How late the event loop ran a timer, last probe. A blocked loop stops ticks: "
            "peers then see this node as dead.",
            registry=self.registry,
        )

    def connect_result(self, topology: str, ok: bool) -> None:
        """Count one connection attempt of ``topology``."""
        self.connects.labels(topology, "ok" if ok else "failed").inc()

    def set_topology_state(self, topology: str, state: str, states: Iterable[str]) -> None:
        """Show ``topology`` in ``state``: its series of ``state`` at 1, those of the other
        ``states`` at 0 (every state has a series, so an alert can match on 1)."""
        for each in states:
            self.topology_state.labels(topology, each).set(1 if each == state else 0)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        data: bytes = generate_latest(self.registry)
        return data

    async def probe_loop_lag(self) -> None:
        """Measure, forever, how late a short sleep wakes up (the loop's lag)."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_PROBE_INTERVAL)
            self.loop_lag.set(max(0.0, loop.time() - started - LAG_PROBE_INTERVAL))
