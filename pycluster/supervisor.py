"""The Supervisor: one supervised task per topology.

A strategy that raises is logged and restarted, fresh, after an exponential backoff with
jitter; more than ``max_restarts`` crashes within ``window`` seconds mark that topology
failed (kept in :meth:`Supervisor.status`) while the other topologies keep running.
Shutdown wakes every strategy's sleep, waits a grace period, cancels what is left and
never waits longer than its timeout.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Literal, get_args

import attrs

from pycluster.config import TopologyConfig
from pycluster.events import NodeDown, NodeUp, StrategyCrashed
from pycluster.logs import current_topology
from pycluster.membership import Membership
from pycluster.metrics import NodeMetrics
from pycluster.plugins import Plugins
from pycluster.strategy import DiscoveryProblem, Strategy, Topology

log = logging.getLogger("pycluster.supervisor")

State = Literal["starting", "running", "restarting", "failed", "stopped", "abandoned"]


@attrs.frozen(kw_only=True)
class TopologyRestartPolicy:
    """How crashed strategies are restarted (OTP-style intensity: max_restarts per window)."""

    initial_delay: float = 0.5
    """Seconds before the first restart; each further restart doubles it."""
    max_delay: float = 30.0
    """Ceiling of the backoff, in seconds."""
    jitter: float = 0.2
    """Each delay is cut by a random fraction up to this, so pods don't retry in step."""
    max_restarts: int = 5
    """More crashes than this within ``window`` mark the topology failed."""
    window: float = 60.0
    """Seconds over which crashes are counted; a run this long resets the backoff."""

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Backoff before restart number ``attempt`` (0-based); never above ``max_delay``."""
        base = min(self.max_delay, self.initial_delay * 2.0**attempt)
        return base * (1.0 - rng.uniform(0.0, self.jitter))


@attrs.frozen
class TopologyStatus:
    """A topology as status reports it."""

    strategy: str
    state: State
    crashes: int
    """Crashes since the node started (the last one may have marked the topology failed)."""
    last_error: str | None
    problem: DiscoveryProblem | None = None
    """The problem its strategy reports, until it reports recovery
    (:meth:`Topology.problem <pycluster.Topology.problem>`)."""

    def to_json(self) -> dict[str, object]:
        """The ``topologies.NAME`` object of ``/status``: ``strategy``, ``state``,
        ``crashes``, ``last_error``, and the current ``problem`` (its text, or null),
        ``problem_since`` (ISO 8601, UTC, as JSON log records' ``timestamp``; null without
        a problem) and ``failed_attempts`` (0 without a problem)."""
        problem = self.problem
        return {
            "strategy": self.strategy,
            "state": self.state,
            "crashes": self.crashes,
            "last_error": self.last_error,
            "problem": None if problem is None else problem.message,
            "problem_since": None
            if problem is None
            else datetime.datetime.fromtimestamp(problem.since, datetime.UTC).isoformat(),
            "failed_attempts": 0 if problem is None else problem.failed_attempts,
        }


class _Supervised:
    def __init__(
        self, topology: Topology, strategy: type[Strategy], metrics: NodeMetrics | None
    ) -> None:
        self.topology = topology
        self.strategy = strategy
        self._metrics = metrics
        self.state = "starting"
        self.crashes = 0
        self.last_error: str | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        self._state = state
        if self._metrics is not None:
            self._metrics.set_topology_state(self.topology.name, state, get_args(State))


class Supervisor:
    """Runs and restarts the strategies of a node's topologies."""

    def __init__(
        self,
        topologies: Mapping[str, TopologyConfig],
        *,
        membership: Membership,
        plugins: Plugins,
        policy: TopologyRestartPolicy | None = None,
        rng: random.Random | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self._plugins = plugins
        self._membership = membership
        self._policy = policy or TopologyRestartPolicy()
        self._rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        strategies = plugins.strategies()
        self._runs = {
            name: _Supervised(
                Topology(
                    name,
                    topology.strategy,
                    topology.config,
                    membership,
                    plugins,
                    self._stopping,
                    metrics,
                ),
                strategies[topology.strategy],
                metrics,
            )
            for name, topology in topologies.items()
        }

    @property
    def topologies(self) -> dict[str, Topology]:
        """The running topologies by name."""
        return {name: run.topology for name, run in self._runs.items()}

    def status(self) -> dict[str, TopologyStatus]:
        """Each topology's strategy, state, crash count, last error and current problem."""
        return {
            name: TopologyStatus(
                run.strategy.name,
                run.state,
                run.crashes,
                run.last_error,
                run.topology.current_problem,
            )
            for name, run in self._runs.items()
        }

    def _on_node_event(self, event: NodeUp | NodeDown) -> None:
        """A lost peer wakes the topologies sleeping until one is lost."""
        if isinstance(event, NodeDown):
            for run in self._runs.values():
                run.topology.node_lost()

    def refuses(self, node: str) -> bool:
        """Whether any topology keeps ``node`` out (the transport refuses its reconnects)."""
        return any(run.topology.refuses(node) for run in self._runs.values())

    async def start(self) -> None:
        """Start every topology's strategy."""
        if self._unsubscribe is None:
            self._unsubscribe = self._membership.subscribe(self._on_node_event)
        for name, run in self._runs.items():
            run.task = asyncio.create_task(self._supervise(run), name=f"pycluster:{name}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop every strategy: wake their sleeps, then cancel; bounded by ``timeout``."""
        self._stopping.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        if not tasks:
            return
        deadline = time.monotonic() + timeout
        # A strategy sleeping through topology.sleep returns on its own; give it a moment.
        _, pending = await asyncio.wait(tasks, timeout=min(0.1, timeout / 2))
        for task in pending:
            task.cancel()
        if pending:
            _, pending = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        for name, run in self._runs.items():
            if run.task in pending:
                run.state = "abandoned"
                log.error(
                    "strategy task %s ignored cancellation; abandoned",
                    run.task.get_name(),
                    extra={
                        "event": "strategy_abandoned",
                        "topology": name,
                        "strategy": run.strategy.name,
                    },
                )
            elif run.state != "failed":
                run.state = "stopped"

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _supervise(self, run: _Supervised) -> None:
        topology, policy = run.topology, self._policy
        # This task's records, and those of the tasks its strategy starts, name the topology.
        current_topology.set(topology.name)
        crashes: collections.deque[float] = collections.deque()
        attempt = 0
        while not self._stopping.is_set():
            run.state = "running"
            started = time.monotonic()
            try:
                await run.strategy().run(topology)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                now = time.monotonic()
                if now - started >= policy.window:
                    attempt = 0
                crashes.append(now)
                while crashes and now - crashes[0] > policy.window:
                    crashes.popleft()
                run.crashes += 1
                run.last_error = f"{type(exc).__name__}: {exc}"
                failed = len(crashes) > policy.max_restarts
                delay = None if failed else policy.delay(attempt, self._rng)
                self._plugins.notify(
                    "pycluster_strategy_crashed",
                    StrategyCrashed(
                        topology.self_name,
                        topology.name,
                        run.strategy.name,
                        exc,
                        len(crashes),
                        delay,
                    ),
                )
                fields = {
                    "strategy": run.strategy.name,
                    "error": run.last_error,
                    "crashes": run.crashes,
                }
                if delay is None:
                    run.state = "failed"
                    topology.log.error(
                        "strategy %s crashed %d times in %.0fs; topology marked failed: %s",
                        run.strategy.name,
                        len(crashes),
                        policy.window,
                        run.last_error,
                        exc_info=exc,
                        extra={"event": "strategy_failed", **fields},
                    )
                    return
                run.state = "restarting"
                topology.log.warning(
                    "strategy %s crashed (%s); restart %d in %.2fs",
                    run.strategy.name,
                    run.last_error,
                    run.crashes,
                    delay,
                    exc_info=exc if attempt == 0 else None,
                    extra={"event": "strategy_crashed", **fields, "restart_in": delay},
                )
                attempt += 1
                if not await topology.sleep(delay):
                    break
            else:
                if not self._stopping.is_set():
                    topology.log.info(
                        "strategy %s finished",
                        run.strategy.name,
                        extra={"event": "strategy_finished", "strategy": run.strategy.name},
                    )
                break
        if run.state != "failed":
            run.state = "stopped"
