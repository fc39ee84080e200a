"""The strategy contract, and the topology a strategy works through.

A :class:`Strategy` discovers node names; it never touches sockets. It runs inside a
:class:`Topology`, which hands it its validated config, connects and disconnects nodes
through the node's :class:`~pycluster.membership.Membership`, applies design.md's rule for
discovery answers (:meth:`Topology.apply`), logs with the ``[pycluster:NAME]`` prefix, and
offers a sleep that shutdown interrupts. The Supervisor creates a fresh strategy instance
for every (re)start.

A topology takes node names in any written form and works with their canonical forms only
(``Membership.canonical``): each written form of a node is that one node, listed,
connected, left out or refused as one. A name that is not a node name is skipped and
counted (``bad_name``).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Collection, Iterable, MutableMapping
from typing import Any, ClassVar

import attrs

from pycluster.discovery import Plan, plan
from pycluster.events import Notifier, TopologyConnect, TopologyDisconnect
from pycluster.membership import ConnectFailure, Membership
from pycluster.metrics import NodeMetrics
from pycluster.throttle import Throttle

FAILURES_MEMORY = 1024
"""How many unreachable nodes a topology counts failed attempts for."""
PROBLEM_SUMMARY_INTERVAL = 60.0
"""Seconds between summaries of a discovery problem that keeps repeating."""


class Strategy(abc.ABC):
    """Base class of discovery strategies.

    Subclasses set ``name`` (the ``strategy:`` value in YAML) and ``Config`` (an attrs
    config class declared with :func:`pycluster.config.setting`), and implement :meth:`run`.
    """

    name: ClassVar[str]
    """The ``strategy:`` value in YAML, e.g. ``kubernetes.dns``."""

    Config: ClassVar[type[Any]]
    """attrs class validating ``topologies.NAME.config``."""

    @abc.abstractmethod
    async def run(self, topology: Topology) -> None:
        """Discover nodes until ``topology.sleep`` returns False (shutdown) or cancelled.

        Raising is a crash: the Supervisor logs it and restarts a fresh instance with
        backoff. Returning ends this topology's discovery for good.
        """


@attrs.frozen
class DiscoveryProblem:
    """A problem a topology's strategy reports (:meth:`pycluster.Topology.problem`) and
    has not yet reported gone: what ``/status`` shows of it."""

    message: str
    """The problem as the strategy wrote it."""
    reason: str | None
    """The short, fixed word the strategy gave for its kind (``failed``, ``unreadable``...)."""
    since: float
    """When it was first reported (Unix time, seconds)."""
    failed_attempts: int
    """Attempts that reported it, one after the other (the first included)."""


class TopologyLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line with ``[pycluster:TOPOLOGY]``, as libcluster does, and gives
    every record a ``topology`` field, besides the event fields of the call's ``extra``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        assert self.extra is not None
        kwargs["extra"] = {**self.extra, **(kwargs.get("extra") or {})}
        return f"[pycluster:{self.extra['topology']}] {msg}", kwargs


class Topology:
    """What a strategy gets: config, connect/disconnect/list_nodes, a logger and sleep."""

    def __init__(
        self,
        name: str,
        strategy: str,
        config: Any,
        membership: Membership,
        plugins: Notifier,
        stopping: asyncio.Event,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.name = name
        self.strategy = strategy
        self.config = config
        self.log = TopologyLog(logging.getLogger("pycluster.topology"), {"topology": name})
        self._membership = membership
        self._plugins = plugins
        self._stopping = stopping
        self._lost = asyncio.Event()
        self._metrics = metrics
        self._failures: dict[str, int] = {}
        self._counted: set[str] = set()
        """Connected nodes whose connection ``pycluster_topology_connects_total`` counted."""
        self._problem: str | None = None
        self._reason: str | None = None
        self._repeats = 0
        self._since = self._summarised = self._since_wall = 0.0
        self._bad_names = Throttle(PROBLEM_SUMMARY_INTERVAL)
        self.listed: frozenset[str] = frozenset()
        """Nodes the last used discovery answer listed (canonical names)."""
        self.excluded: frozenset[str] = frozenset()
        """Nodes a successful answer left out (canonical names); their reconnects are
        refused."""
        if metrics is not None:
            # Series at 0 from the start, so "no problem" is a sample, not an absence.
            metrics.topology_problem.labels(name).set(0)
            metrics.topology_failed_attempts.labels(name)

    @property
    def current_problem(self) -> DiscoveryProblem | None:
        """The problem the strategy last reported, until it reports None (recovery)."""
        if self._problem is None:
            return None
        return DiscoveryProblem(self._problem, self._reason, self._since_wall, self._repeats)

    @property
    def self_name(self) -> str:
        """This node's name, canonical (never connected to itself)."""
        return self._membership.self_name

    @property
    def full_name(self) -> str:
        """This node's name with its port written out: what a strategy advertises (in a
        heartbeat, a registration, an entry file) for other nodes to dial.

        A peer reads a name without a port as its own ``node.port``, which need not be
        this node's; compare what is heard or read with this node (or with
        :meth:`list_nodes`) in canonical form (:meth:`canonical`), not with this.
        """
        return self._membership.full_name

    def canonical(self, node: str) -> str:
        """``node`` in canonical form, as :attr:`self_name` and :meth:`list_nodes` name
        nodes; raises NodeNameError (a ValueError) for what is not a node name."""
        return self._membership.canonical(node)

    def _canonical(self, nodes: Iterable[str]) -> set[str]:
        """The canonical forms of ``nodes``; what is not a node name is skipped and
        counted (``bad_name``), with a warning at most once a minute."""
        names = set()
        for node in nodes:
            try:
                names.add(self._membership.canonical(node))
            except ValueError as exc:
                self.dropped("bad_name")
                repeats = self._bad_names.admit("bad_name")
                if repeats is not None:
                    more = f" ({repeats} more since the last report)" if repeats else ""
                    self.log.warning(
                        "skipped %.200r: not a node name (%.200s)%s",
                        node,
                        exc,
                        more,
                        extra={"event": "bad_name", "input": node[:200], "repeats": repeats},
                    )
        return names

    def list_nodes(self) -> list[str]:
        """The node's connected peers, sorted (all topologies' alike)."""
        return self._membership.nodes()

    def refuses(self, node: str) -> bool:
        """Whether this topology keeps ``node`` out (discovery positively left it out)."""
        try:
            return self._membership.canonical(node) in self.excluded
        except ValueError:
            return False

    def dropped(self, reason: str) -> None:
        """Count one discovery input skipped as bad (a datagram, a file line, a name), in
        ``pycluster_discovery_dropped_total{topology, reason}``; ``reason`` is a short,
        fixed word (never text from the input: label values must stay few)."""
        if self._metrics is not None:
            self._metrics.discovery_dropped.labels(self.name, reason).inc()

    def problem(self, message: str | None, *, reason: str | None = None) -> None:
        """Report discovery's current problem (None: none), on every attempt.

        Call it after each attempt (a lookup, a file read, a poll): with the problem's
        text when the attempt failed or its input was bad, with None when it went well,
        which is how recovery is seen. Write the text without timings or counters: the same
        text on consecutive attempts is one problem that lasts, new text a new problem.

        A problem is logged when it first appears or changes; while it repeats, a summary
        at most every ``PROBLEM_SUMMARY_INTERVAL`` seconds; recovery once, with the count.
        ``reason`` is a short, fixed word naming the kind of problem (``unreadable``,
        ``nxdomain``...), the ``reason`` field of those records (never text from the input).
        Until recovery, the problem is in :attr:`current_problem` (``/status``) and
        ``pycluster_topology_problem`` is 1; each failed attempt counts in
        ``pycluster_topology_failed_attempts_total``.
        """
        now = time.monotonic()
        if self._metrics is not None:
            self._metrics.topology_problem.labels(self.name).set(0 if message is None else 1)
            if message is not None:
                self._metrics.topology_failed_attempts.labels(self.name).inc()
        if message == self._problem:
            if message is not None:
                self._repeats += 1
                if now - self._summarised >= PROBLEM_SUMMARY_INTERVAL:
                    self.log.warning(
                        "still failing: %s (%d times over %.0f s)",
                        message,
                        self._repeats,
                        now - self._since,
                        extra={
                            "event": "discovery_still_failing",
                            "problem": message,
                            "reason": self._reason,
                            "failed_attempts": self._repeats,
                        },
                    )
                    self._summarised = now
            return
        if message is None:
            self.log.info(
                "discovery recovered after %d failed attempts over %.1f s (was: %s)",
                self._repeats,
                now - self._since,
                self._problem,
                extra={
                    "event": "discovery_recovered",
                    "problem": self._problem,
                    "reason": self._reason,
                    "failed_attempts": self._repeats,
                },
            )
        else:
            self.log.warning(
                "%s",
                message,
                extra={"event": "discovery_problem", "problem": message, "reason": reason},
            )
        self._problem, self._reason = message, reason
        self._repeats, self._since, self._summarised = 1, now, now
        self._since_wall = time.time()

    async def sleep(self, seconds: float, *, until_node_lost: bool = False) -> bool:
        """Sleep; return False at once when the node is shutting down, else True.

        With ``until_node_lost``, return early (True) when this node loses a peer (or has
        lost one since the last such sleep returned): for a strategy with nothing to do
        while every node it wants is connected, such as a fixed list.
        """
        if self._stopping.is_set():
            return False
        if until_node_lost and self._lost.is_set():
            self._lost.clear()
            return True
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if until_node_lost:
            waits.append(asyncio.ensure_future(self._lost.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if self._stopping.is_set():
            return False
        self._lost.clear()
        return True

    def node_lost(self) -> None:
        """This node lost a peer (the supervisor tells every topology): wakes a
        :meth:`sleep` ``until_node_lost``."""
        self._lost.set()

    async def connect(self, nodes: Iterable[str]) -> list[str]:
        """Connect to ``nodes`` in parallel; return those connected now, sorted.

        A failed attempt is logged with its reason (a warning the first time, then at
        debug level until the node is reached) and counted in
        ``pycluster_topology_connect_failures_total{reason}``.
        """
        wanted = sorted(self._canonical(nodes) - {self.self_name})
        already = set(self._membership.nodes())
        self._counted.intersection_update(already)  # ended connections: the next counts
        results = await asyncio.gather(*(self._connect_one(node) for node in wanted))
        for node, ok in zip(wanted, results, strict=True):
            if ok and node not in already:
                self._plugins.notify(
                    "pycluster_topology_connect", TopologyConnect(self.self_name, self.name, node)
                )
        return [node for node, ok in zip(wanted, results, strict=True) if ok]

    async def _connect_one(self, node: str) -> bool:
        try:
            failure = await self._membership.dial(node)
        except Exception as exc:
            failure = ConnectFailure("other", f"{type(exc).__name__}: {exc}")
        failures = self._failures.get(node, 0)
        if failure is None:
            self._count_connection(node)
            if failures:
                self.log.info(
                    "connected to %s after %d failed attempts",
                    node,
                    failures,
                    extra={"event": "connected", "peer": node, "failed_attempts": failures},
                )
            self._failures.pop(node, None)
            return True
        if self._metrics is not None:
            self._metrics.connect_result(self.name, failure.reason)
        if failure.reason == "left" or self._membership.left(node):
            self.log.debug("not reconnecting %s: it left the cluster", node)
            return False
        if not failures and len(self._failures) >= FAILURES_MEMORY:
            # Bounded: a stranger announcing endless names (gossip without a secret)
            # must not grow it; forgetting only means one more warning per name.
            self._failures.clear()
        self._failures[node] = failures + 1
        level = logging.WARNING if failures == 0 else logging.DEBUG
        self.log.log(
            level,
            "cannot connect to %s: %s; will retry",
            node,
            failure,
            extra={
                "event": "connect_failed",
                "peer": node,
                "reason": failure.reason,
                "error": failure.detail or str(failure),
            },
        )
        return False

    def _count_connection(self, node: str) -> None:
        """Count the connection to ``node`` in ``pycluster_topology_connects_total{result=
        "ok"}``, once per connection whichever side dialled it."""
        if node in self._counted:
            return
        self._counted.add(node)
        if self._metrics is not None:
            self._metrics.connect_result(self.name, None)

    async def disconnect(self, nodes: Iterable[str]) -> list[str]:
        """Disconnect ``nodes``; return those that were connected, sorted."""
        dropped = []
        for node in sorted(self._canonical(nodes) - {self.self_name}):
            if await self._membership.disconnect(node):
                dropped.append(node)
                if self._metrics is not None:
                    self._metrics.disconnects.labels(self.name).inc()
                self.log.info(
                    "disconnected %s: discovery no longer lists it",
                    node,
                    extra={"event": "disconnected", "peer": node},
                )
                self._plugins.notify(
                    "pycluster_topology_disconnect",
                    TopologyDisconnect(self.self_name, self.name, node),
                )
        return dropped

    async def apply(self, answer: Collection[str] | None) -> Plan:
        """Act on one discovery answer (None: the lookup failed), in canonical names.

        Connects listed nodes that are not connected. A failed or empty answer disconnects
        nothing; a successful non-empty answer disconnects the nodes this topology listed
        before and now leaves out, and keeps them out (:meth:`refuses`) until listed again.
        The decision itself is ``pycluster.discovery.plan``, a pure function.
        """
        connected = self._membership.nodes()
        # A connection counts once: forget those that ended, so the next one counts again.
        self._counted.intersection_update(connected)
        for node in self._failures.keys() & set(connected):
            # Reached meanwhile (the peer dialled us): its next failure is news again.
            failures = self._failures[node]
            self.log.info(
                "connected to %s after %d failed attempts",
                node,
                failures,
                extra={"event": "connected", "peer": node, "failed_attempts": failures},
            )
            del self._failures[node]
        decision = plan(
            None if answer is None else self._canonical(answer),
            me=self.self_name,
            listed=self.listed,
            excluded=self.excluded,
            connected=connected,
        )
        self.listed, self.excluded = decision.listed, decision.excluded
        for node in decision.listed.intersection(connected):
            self._count_connection(node)  # the peer dialled us, or another topology did
        if decision.disconnect:
            await self.disconnect(decision.disconnect)
        if decision.connect:
            await self.connect(decision.connect)
        return decision
