"""A node's Prometheus metrics, in a registry of its own (several nodes may share a process).

Counters are counted where things happen. What follows from the node's state (registry
sizes, actors, mailbox depth) is read when ``/metrics`` is scraped, by a collector
(:meth:`NodeMetrics.observe_state`), so an idle node spends nothing on it.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence

import attrs
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LAG_PROBE_INTERVAL = 2.0
"""Seconds between two probes of the event loop's lag (a timer's lateness)."""
CALL_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Bounds of the call latency histogram, in seconds: a call within a host takes about
0.1 ms, one across a network a few, a slow actor's up to its timeout."""


@attrs.frozen
class StateCounts:
    """What a node holds right now, read at scrape time (:meth:`NodeMetrics.observe_state`)."""

    names: int
    """Names registered, cluster-wide as this node's registry knows them (every scope)."""
    groups: int
    """Process groups with at least one member."""
    members: int
    """Group memberships, summed over the groups."""
    actors: int
    """Actors running on this node."""
    queued: int
    """Messages waiting in the mailboxes of this node's actors, in all."""
    deepest: int
    """Messages waiting in the fullest mailbox."""


class ScrapedHistogram(Collector):
    """A histogram with one label, counted in plain Python numbers and turned into
    Prometheus samples when scraped.

    prometheus_client's Histogram takes a lock and walks its buckets in Python on every
    observation: 3 % of the instructions of a remote call, which observes one. A node
    observes from its event loop only, so no lock is needed, and a bisection finds the
    bucket. ``labels(value).observe(seconds)`` as with prometheus_client.
    """

    def __init__(self, name: str, documentation: str, label: str, bounds: Sequence[float]) -> None:
        self._name = name
        self._documentation = documentation
        self._label = label
        self._bounds = tuple(bounds)
        self._les = [repr(float(bound)) for bound in self._bounds] + ["+Inf"]
        """The ``le`` label of each bucket."""
        self._series: dict[str, _Series] = {}

    def labels(self, value: str) -> _Series:
        """The series of label ``value`` (exported from now on, zeros included)."""
        series = self._series.get(value)
        if series is None:
            series = self._series[value] = _Series(self._bounds)
        return series

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=[self._label])]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, series in self._series.items():
            cumulative = itertools.accumulate(series.counts)
            buckets = [(le, float(count)) for le, count in zip(self._les, cumulative, strict=True)]
            family.add_metric([value], buckets, series.sum)
        return [family]


class _Series:
    """One label value's observations: a count per bucket (the last one above every
    bound) and their sum."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation (in the first bucket whose bound is at least it)."""
        self.counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self.sum += seconds


class _StateCollector(Collector):
    """Gauges of a :class:`StateCounts`, computed when scraped."""

    def __init__(self, counts: Callable[[], StateCounts]) -> None:
        self._counts = counts

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._counts())

    @staticmethod
    def _families(counts: StateCounts | None) -> Iterator[Metric]:
        for name, documentation, field in STATE_GAUGES:
            family = GaugeMetricFamily(name, documentation)
            if counts is not None:
                family.add_metric([], getattr(counts, field))
            yield family


STATE_GAUGES = (
    (
        "pycluster_registry_names",
        "Names registered, as this node's registry knows them (every scope).",
        "names",
    ),
    ("pycluster_registry_groups", "Process groups with at least one member.", "groups"),
    ("pycluster_registry_members", "Group memberships, summed over the groups.", "members"),
    ("pycluster_actors", "Actors running on this node.", "actors"),
    (
        "pycluster_mailbox_depth",
        "Messages waiting in the mailboxes of this node's actors, in all.",
        "queued",
    ),
    (
        "pycluster_mailbox_depth_max",
        "Messages waiting in the fullest mailbox of this node's actors.",
        "deepest",
    ),
)
"""Metric name, help text and :class:`StateCounts` field of each state gauge."""


class NodeMetrics:
    """Counters and gauges a node exports at ``/metrics``."""

    def __init__(self, version: str | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # The process's own metrics, in this registry too (the default one is not served).
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        if version is not None:
            Info(
                "pycluster_build", "The pycluster release this node runs.", registry=self.registry
            ).info({"version": version})
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
        self.connect_failures = Counter(
            "pycluster_topology_connect_failures",
            "Failed connection attempts of a topology, by reason (unresolved, refused, "
            "unreachable, timeout, tls, cookie, refused_by_peer, name, version, http, "
            "malformed, closed, left, other).",
            ["topology", "reason"],
            registry=self.registry,
        )
        self.call_duration = ScrapedHistogram(
            "pycluster_call_duration_seconds",
            "Calls this node made to actors, from the call to the reply (or failure), by "
            "where the actor runs (local, remote).",
            "where",
            CALL_BUCKETS,
        )
        self.registry.register(self.call_duration)
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
        self.tick_patience = Gauge(
            "pycluster_tick_patience_seconds",
            "Seconds of silence this node allows a peer beyond net_tick_timeout: twice the "
            "longest delay of its own ticker in the last 30 s (about 0 while it keeps up).",
            registry=self.registry,
        )

    def connect_result(self, topology: str, reason: str | None) -> None:
        """Count one connection of ``topology`` (``reason`` None), or one failed attempt
        and why it failed."""
        if reason is None:
            self.connects.labels(topology, "ok").inc()
        else:
            self.connects.labels(topology, "failed").inc()
            self.connect_failures.labels(topology, reason).inc()

    def observe_state(self, counts: Callable[[], StateCounts]) -> None:
        """Serve the state gauges (registry sizes, actors, mailbox depth) from
        ``counts()``, called on each scrape."""
        self.registry.register(_StateCollector(counts))

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
