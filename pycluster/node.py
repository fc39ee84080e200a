"""The Node: a named member of the cluster, and the composition root of its parts.

A node builds its parts and runs their lifecycle; the parts do the work:

- the transport (:class:`~pycluster.transport.mesh.TcpMesh`, or an in-memory network's end
  in tests): connections to every peer, mailboxes, calls, node up/down events, behind the
  :class:`~pycluster.transport.waist.Transport` waist;
- the topologies, under a :class:`~pycluster.supervisor.Supervisor`, which connect and
  disconnect peers through the transport (and decide which peers it refuses);
- the actors and the registry, which see the cluster only through the waist;
- the HTTP endpoints, when ``node.http`` is configured.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from pycluster.actors import Actors
from pycluster.actors.ref import register_ref
from pycluster.codec import Codec
from pycluster.config import Config, checks
from pycluster.events import NodeDown, NodeUp
from pycluster.metrics import NodeMetrics, StateCounts
from pycluster.plugins import Plugins
from pycluster.registry import Registry
from pycluster.registry.events import (
    Joined,
    Left,
    NameConflict,
    Registered,
    RegistryEvent,
    Unregistered,
)
from pycluster.registry.refs import Entry, first_claim_wins
from pycluster.supervisor import Supervisor, TopologyRestartPolicy
from pycluster.transport.handshake import cookie_key
from pycluster.transport.memory import MemoryNetwork, MemoryTransport
from pycluster.transport.mesh import (
    MAX_UNAUTHENTICATED,
    MAX_UNAUTHENTICATED_PER_SOURCE,
    TcpMesh,
)
from pycluster.transport.waist import Mailbox, NodeEvent
from pycluster.view import SELF_MAILBOX, VIEW_MAILBOX, ClusterView

if TYPE_CHECKING:
    from pycluster.http import HttpEndpoints

REGISTRY_HOOKS: dict[type[RegistryEvent], str] = {
    Registered: "pycluster_name_registered",
    Unregistered: "pycluster_name_unregistered",
    Joined: "pycluster_group_joined",
    Left: "pycluster_group_left",
    NameConflict: "pycluster_name_conflict",
}
"""The plugin hook told of each kind of registry event."""

log = logging.getLogger("pycluster.node")

STATUS_MAILBOX = "$status"
EVENT_QUEUE_SIZE = 1024

__all__ = ["Mailbox", "Node", "Subscription"]


class Subscription:
    """Node up/down events as an async iterator; ends when the node stops or on close()."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._queue: asyncio.Queue[NodeUp | NodeDown | None] = asyncio.Queue(EVENT_QUEUE_SIZE)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> NodeUp | NodeDown:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        """Stop receiving events."""
        self._node._subscriptions.discard(self)
        self._put(None)

    def _put(self, event: NodeUp | NodeDown | None) -> None:
        if self._queue.full():
            # A subscriber that does not keep up loses its oldest events, not our memory.
            self._queue.get_nowait()
            log.warning("a node event subscriber is not keeping up; dropped an event")
        self._queue.put_nowait(event)


class Node:
    """A pycluster node. Use as ``async with Node(config) as node: ...``.

    ``cookie`` overrides ``config.node.cookie``; one of them is required, of at least 16
    characters (a list rotates cookies: the first dials, any is accepted). ``hidden``
    makes a client node (as ``pycluster status`` uses): it listens nowhere, runs no
    topologies, and the nodes it connects to do not count it as a member. Before a
    connection is authenticated, at most ``max_unauthenticated`` of them are open (and
    ``max_unauthenticated_per_source`` from one address); more are closed at once.
    ``network``: connect over this in-memory network instead of TCP (tests; see
    :func:`pycluster.testing.cluster`).
    """

    def __init__(
        self,
        config: Config,
        *,
        cookie: str | Sequence[str] | None = None,
        plugins: Plugins | None = None,
        policy: TopologyRestartPolicy | None = None,
        hidden: bool = False,
        handshake_timeout: float = 5.0,
        max_unauthenticated: int = MAX_UNAUTHENTICATED,
        max_unauthenticated_per_source: int = MAX_UNAUTHENTICATED_PER_SOURCE,
        network: MemoryNetwork | None = None,
    ) -> None:
        secret = cookie if cookie is not None else config.node.cookie
        if not secret:
            raise ValueError(
                "a node needs a cookie: node.cookie, --cookie-file or PYCLUSTER_COOKIE"
            )
        keys = tuple(cookie_key(c) for c in checks.cookies(secret))
        self.config = config
        self.hidden = hidden
        self.plugins = plugins if plugins is not None else Plugins.load()
        self.metrics = NodeMetrics(version=_version())
        self.incarnation = secrets.token_bytes(16)
        self.codec = Codec()
        register_ref(self.codec)
        self.transport: TcpMesh | MemoryTransport
        """This node's end of the cluster's connections (the waist the other parts use)."""
        if network is None:
            self.transport = TcpMesh(
                config,
                keys=keys,
                incarnation=self.incarnation,
                codec=self.codec,
                metrics=self.metrics,
                refuses=self._refuses,
                hidden=hidden,
                handshake_timeout=handshake_timeout,
                max_unauthenticated=max_unauthenticated,
                max_unauthenticated_per_source=max_unauthenticated_per_source,
            )
        else:
            self.transport = MemoryTransport(
                network,
                config,
                keys=keys,
                incarnation=self.incarnation,
                codec=self.codec,
                metrics=self.metrics,
                refuses=self._refuses,
                hidden=hidden,
            )
        self.name: str = self.transport.name
        self.full_name = self.transport.full_name
        """This node's name with its port written out: what its strategies advertise."""
        self.supervisor = Supervisor(
            {} if hidden else config.topologies,
            membership=self.transport,
            plugins=self.plugins,
            policy=policy,
            metrics=self.metrics,
        )
        self.actors = Actors(self.transport, host=self)
        """The actors running on this node."""
        backend_class = self.plugins.registry_backends()[config.registry.backend]
        backend = backend_class(self.transport, config.registry.options, self._resolve_conflict)
        self.registry = Registry(self.transport, self.actors, backend)
        """Cluster-unique names and process groups (``spawn``, ``whereis``, ...)."""
        self.registry.listeners.append(self._registry_events)
        self.metrics.observe_state(self._state_counts)
        self._subscriptions: set[Subscription] = set()
        self.transport.subscribe(self._publish)
        self.transport.register_mailbox(STATUS_MAILBOX, lambda sender, body: self.status())
        self.view = ClusterView(
            self.transport,
            self.registry,
            topologies=lambda: {
                name: status.to_json() for name, status in self.supervisor.status().items()
            },
            lag=lambda: self.metrics.registry.get_sample_value("pycluster_event_loop_lag_seconds"),
            tick_timeout=config.node.net_tick_timeout,
            actors=lambda: (len(self.actors.refs()), self.actors.busiest()),
            silence=self.transport.silence,
        )
        """The cluster as this node sees it: what the live page and ``pycluster top`` show."""
        if not hidden:
            self.transport.register_mailbox(SELF_MAILBOX, lambda sender, body: self.view.facts())
            self.transport.register_mailbox(VIEW_MAILBOX, lambda sender, body: self.view.snapshot())
        self._http: HttpEndpoints | None = None
        self._lag_probe: asyncio.Task[None] | None = None
        self.started = False
        self._min_peers = config.node.ready.min_peers
        self._first_ready = False
        self._readiness_checks: dict[str, tuple[Callable[[], object], float]] = {}

    def _state_counts(self) -> StateCounts:
        """What the state gauges of ``/metrics`` show (read on each scrape)."""
        backend = self.registry.backend
        groups = backend.groups()
        actors, queued, deepest = self.actors.mailbox_depths()
        return StateCounts(
            names=len(backend.registered()),
            groups=len(groups),
            members=sum(len(backend.memberships(group)) for group in groups),
            actors=actors,
            queued=queued,
            deepest=deepest,
        )

    def _refuses(self, peer: str) -> bool:
        return self.supervisor.refuses(peer)

    def _resolve_conflict(self, a: Entry, b: Entry) -> Entry:
        chosen = self.plugins.manager.hook.pycluster_resolve_name_conflict(name=a.name, a=a, b=b)
        return chosen if chosen in (a, b) else first_claim_wins(a, b)

    def _registry_events(self, events: Sequence[tuple[str, RegistryEvent]]) -> None:
        # The registry calls this at the end of the loop turn, with the turn's changes:
        # plugins hear them off the registry's path. Which hooks any plugin observes is
        # looked up once per batch: with none (most nodes), a snapshot of 100,000 names
        # costs nothing here.
        observed = [hook for hook in REGISTRY_HOOKS.values() if self.plugins.observed(hook)]
        if not observed:
            return
        self.plugins.notify_each(
            [
                (hook, event, {"scope": scope})
                for scope, event in events
                if (hook := REGISTRY_HOOKS[type(event)]) in observed
            ]
        )

    def _publish(self, event: NodeEvent) -> None:
        for subscription in list(self._subscriptions):
            subscription._put(event)
        hook = "pycluster_node_up" if isinstance(event, NodeUp) else "pycluster_node_down"
        self.plugins.notify(hook, event)

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen, serve HTTP if configured, and start the registry and the topologies."""
        transport = self.transport
        if isinstance(transport, TcpMesh):
            await transport.bind()
        http = self.config.node.http
        if http is not None and not self.hidden:
            host = transport.listen_host if isinstance(transport, TcpMesh) else None
            # Imported here, not above: aiohttp takes about 0.1 s to import, which a node
            # without node.http, and every `pycluster status` or `check`, need not pay.
            from pycluster.http import HttpEndpoints

            self._http = HttpEndpoints(self, host, http.port, view=self.view, token=http.token)
            await self._http.start()
        if not self.hidden:
            self._lag_probe = asyncio.create_task(self.metrics.probe_loop_lag())
            self.view.start()
        self.started = True
        await transport.start()
        await self.registry.start()
        await self.supervisor.start()
        if self.hidden:
            log.debug("hidden client %s started (it does not listen)", self.name)
        elif isinstance(transport, TcpMesh):
            host, port = transport.listen_host or "*", transport.listen_port
            log.info(
                "node %s listening on %s:%s",
                self.name,
                host,
                port,
                extra={"event": "listening", "host": host, "port": port},
            )
        else:
            log.info("node %s is on an in-memory network", self.name)

    async def stop(self, timeout: float = 5.0) -> None:
        """Leave the cluster: stop the topologies, tell every peer, close everything."""
        if not self.started:
            return
        self.started = False
        await self.supervisor.stop(timeout=timeout / 2)
        await self.registry.drain(timeout / 2)
        await self.actors.stop_all("normal")
        await self.registry.stop()
        await self.transport.stop()
        if self._http is not None:
            await self._http.stop()
        if self._lag_probe is not None:
            self._lag_probe.cancel()
            await asyncio.gather(self._lag_probe, return_exceptions=True)
        self.view.close()
        for subscription in list(self._subscriptions):
            subscription.close()

    # -- the cluster, as users see it from the node -----------------------------------------

    @property
    def listen_host(self) -> str | None:
        """The address this node listens on (None: every interface, or not TCP)."""
        return self.transport.listen_host if isinstance(self.transport, TcpMesh) else None

    @property
    def listen_port(self) -> int | None:
        """The port this node listens on (None when not over TCP)."""
        return self.transport.listen_port if isinstance(self.transport, TcpMesh) else None

    def canonical(self, name: str) -> str:
        """``name`` as this node compares it: its canonical form with ``node.port`` as the
        default port. Raises NodeNameError (a ValueError) if it is not a node name."""
        return self.transport.canonical(name)

    def nodes(self) -> list[str]:
        """Connected peers (hidden clients excluded), sorted."""
        return self.transport.nodes()

    def events(self) -> Subscription:
        """Subscribe to node up/down events: ``async for event in node.events(): ...``."""
        subscription = Subscription(self)
        self._subscriptions.add(subscription)
        return subscription

    def add_listener(self, listener: Callable[[NodeEvent], None]) -> None:
        """Call ``listener`` synchronously on each node up/down, before any message of the
        new connection is handled."""
        self.transport.subscribe(listener)

    async def connect(self, name: str) -> bool:
        """Connect to ``name`` (a no-op when connected); False if it cannot be reached."""
        return await self.transport.connect(name)

    async def disconnect(self, name: str) -> bool:
        """Close the connection to ``name``; True if there was one."""
        return await self.transport.disconnect(name)

    def left(self, name: str) -> bool:
        """Whether ``name`` left the cluster gracefully in the last few seconds."""
        return self.transport.left(name)

    def register_mailbox(self, name: str, handler: Mailbox) -> None:
        """Deliver messages sent to ``name`` on this node to ``handler(sender, body)``."""
        self.transport.register_mailbox(name, handler)

    def unregister_mailbox(self, name: str) -> None:
        """Stop delivering to ``name``; later messages to it are dropped (calls fail)."""
        self.transport.unregister_mailbox(name)

    # send and call hand back the transport's coroutine rather than await it in one of
    # their own: a coroutine frame less on the busiest path.
    def send(self, node: str, mailbox: str, message: Any) -> Coroutine[Any, Any, None]:
        """Send ``message`` to ``mailbox`` on ``node``, in order with other sends to it;
        waits only while the peer is congested. NotConnected without a connection."""
        return self.transport.send(node, mailbox, message)

    def send_nowait(self, node: str, mailbox: str, message: Any) -> None:
        """Like :meth:`send`, without waiting for a slow peer (for small control messages)."""
        self.transport.send_nowait(node, mailbox, message)

    def call(
        self, node: str, mailbox: str, message: Any, timeout: float = 5.0
    ) -> Coroutine[Any, Any, Any]:
        """Send ``message`` and wait for the handler's reply: RemoteError if it raised,
        TimeoutError after ``timeout`` seconds, NotConnected if the connection is lost."""
        return self.transport.call(node, mailbox, message, timeout)

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """This node's view, as ``/status`` and ``pycluster status --json`` show it."""
        return {
            "node": self.name,
            "nodes": self.nodes(),
            "topologies": {
                name: status.to_json() for name, status in self.supervisor.status().items()
            },
            "registry": self.registry.status(),
        }

    def ready(self) -> bool:
        """Ready once listening and the registry has merged with every connected peer, and,
        the first time, once ``node.ready.min_peers`` peers are connected (losing peers
        later does not unready the node). ``/readyz`` also runs the application's checks
        (:meth:`add_readiness_check`)."""
        if not (self.started and self.registry.ready()):
            return False
        if not self._first_ready:
            if len(self.nodes()) < self._min_peers:
                return False
            self._first_ready = True
        return True

    def add_readiness_check(
        self, name: str, check: Callable[[], object], *, timeout: float = 1.0
    ) -> None:
        """Make ``/readyz`` answer 503 while ``check()`` (a function or a coroutine
        function) returns a false value, raises, or takes longer than ``timeout`` seconds.
        A check of the same name replaces the previous one."""
        if not timeout > 0:
            raise ValueError(f"a readiness check's timeout is above 0, not {timeout!r}")
        self._readiness_checks[name] = (check, timeout)

    async def readiness(self) -> dict[str, Any]:
        """What ``/readyz`` answers: ``{"ready": bool, "checks": {name: "ok" or why}}``,
        the node's own conditions (``node``, ``peers``, ``registry``) and the
        application's checks."""
        own_ready = self.ready()  # first: it may pass the first-readiness gate
        checks: dict[str, str] = {"node": "ok" if self.started else "not running"}
        if not self._first_ready:
            peers = len(self.nodes())
            checks["peers"] = (
                "ok"
                if peers >= self._min_peers
                else f"{peers} of the {self._min_peers} peers node.ready.min_peers asks for"
            )
        checks["registry"] = (
            "ok" if self.registry.ready() else "not yet merged with every connected peer"
        )
        for name, (check, timeout) in list(self._readiness_checks.items()):
            checks[name] = await _run_check(check, timeout)
        ready = own_ready and all(result == "ok" for result in checks.values())
        return {"ready": ready, "checks": checks}


def _version() -> str:
    # The package is imported whole before any node is made; importing it at the top
    # would be a cycle (it exports Node).
    from pycluster import __version__

    return __version__


async def _run_check(check: Callable[[], object], timeout: float) -> str:
    """``"ok"``, or why a readiness check did not pass."""
    try:
        async with asyncio.timeout(timeout):
            result = check()
            if inspect.isawaitable(result):
                result = await result
    except TimeoutError:
        return f"no answer within {timeout} s"
    except Exception as exc:
        return f"raised {type(exc).__name__}: {exc}"[:300]
    return "ok" if result else "failed"
