from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Iterable
from typing import ClassVar

import attrs
import pytest

from pycluster import (
    InMemoryNetwork,
    Node,
    Plugins,
    Strategy,
    StrategyCrashed,
    Topology,
    TopologyRestartPolicy,
    hookimpl,
    load_config,
)
from pycluster.metrics import NodeMetrics
from pycluster.supervisor import Supervisor
from pycluster.transport.memory import MemoryNetwork
from tests.conftest import eventually, logged


@attrs.frozen
class NoConfig:
    pass


class Crasher(Strategy):
    name = "test.crasher"
    Config = NoConfig
    starts: ClassVar[list[float]] = []

    async def run(self, topology: Topology) -> None:
        Crasher.starts.append(time.monotonic())
        raise RuntimeError("discovery exploded")


class Ticker(Strategy):
    name = "test.ticker"
    Config = NoConfig
    ticks: ClassVar[int] = 0
    cleaned_up: ClassVar[bool] = False

    async def run(self, topology: Topology) -> None:
        while await topology.sleep(0.005):
            Ticker.ticks += 1
        Ticker.cleaned_up = True


class Sleeper(Strategy):
    name = "test.sleeper"
    Config = NoConfig
    woke: ClassVar[bool] = False

    async def run(self, topology: Topology) -> None:
        Sleeper.woke = not await topology.sleep(3600)


class Stubborn(Strategy):
    """Swallows its first cancellation and carries on for a while (a badly written plugin)."""

    name = "test.stubborn"
    Config = NoConfig
    done: ClassVar[asyncio.Event | None] = None

    async def run(self, topology: Topology) -> None:
        Stubborn.done = asyncio.Event()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(2)
        Stubborn.done.set()


class Once(Strategy):
    name = "test.once"
    Config = NoConfig
    runs: ClassVar[int] = 0

    async def run(self, topology: Topology) -> None:
        Once.runs += 1


class Troubled(Strategy):
    """Looks up every 5 ms; each lookup fails while ``broken`` is set."""

    name = "test.troubled"
    Config = NoConfig
    broken: ClassVar[bool] = True
    attempts: ClassVar[int] = 0

    async def run(self, topology: Topology) -> None:
        while True:
            Troubled.attempts += 1
            topology.problem("lookup failed" if Troubled.broken else None, reason="failed")
            if not await topology.sleep(0.005):
                return


class Recorder:
    def __init__(self) -> None:
        self.crashes: list[StrategyCrashed] = []

    @hookimpl
    def pycluster_register_strategies(self) -> Iterable[type[Strategy]]:
        return [Crasher, Ticker, Sleeper, Stubborn, Once, Troubled]

    @hookimpl
    def pycluster_strategy_crashed(self, event: StrategyCrashed) -> None:
        self.crashes.append(event)


class BrokenObserver:
    @hookimpl
    def pycluster_strategy_crashed(self, event: StrategyCrashed) -> None:
        raise ValueError("observer bug")


@pytest.fixture(autouse=True)
def reset_counters() -> None:
    Crasher.starts = []
    Ticker.ticks = 0
    Ticker.cleaned_up = False
    Sleeper.woke = False
    Once.runs = 0
    Troubled.broken = True
    Troubled.attempts = 0


def make_supervisor(
    strategies: dict[str, str],
    policy: TopologyRestartPolicy,
    *extra: object,
    metrics: NodeMetrics | None = None,
) -> tuple[Supervisor, Recorder]:
    recorder = Recorder()
    plugins = Plugins.load(entry_points=False, extra=[recorder, *extra])
    config = load_config(
        {
            "node": {"name": "me@127.0.0.2"},
            "topologies": {name: {"strategy": s} for name, s in strategies.items()},
        },
        env={},
        plugins=plugins,
    )
    membership = InMemoryNetwork(plugins).join(config.node.name)
    supervisor = Supervisor(
        config.topologies,
        membership=membership,
        plugins=plugins,
        policy=policy,
        rng=random.Random(7),
        metrics=metrics,
    )
    return supervisor, recorder


def sample(metrics: NodeMetrics, name: str, **labels: str) -> float | None:
    """The value of series ``name`` with ``labels``, None if it does not exist."""
    return metrics.registry.get_sample_value(name, labels)


def states(metrics: NodeMetrics, topology: str) -> dict[str, float | None]:
    """``pycluster_topology_state`` of ``topology``, by state."""
    every = ("starting", "running", "restarting", "failed", "stopped", "abandoned")
    return {
        state: sample(metrics, "pycluster_topology_state", topology=topology, state=state)
        for state in every
    }


def only(state: str) -> dict[str, float]:
    """The state series of a topology in ``state``."""
    every = ("starting", "running", "restarting", "failed", "stopped", "abandoned")
    return {each: 1.0 if each == state else 0.0 for each in every}


async def test_a_lasting_problem_shows_in_status_and_metrics_until_recovery() -> None:
    metrics = NodeMetrics()
    supervisor, _ = make_supervisor(
        {"dns": "test.troubled", "quiet": "test.ticker"}, TopologyRestartPolicy(), metrics=metrics
    )
    before = datetime.datetime.now(datetime.UTC)
    # Series exist at 0 before any attempt: "no problem" is a sample, not an absence.
    assert sample(metrics, "pycluster_topology_problem", topology="quiet") == 0
    assert sample(metrics, "pycluster_topology_failed_attempts_total", topology="quiet") == 0
    async with supervisor:
        await eventually(lambda: supervisor.status()["dns"].to_json()["failed_attempts"] == 3)
        first = supervisor.status()["dns"].to_json()
        await eventually(lambda: supervisor.status()["dns"].to_json()["failed_attempts"] >= 6)
        later = supervisor.status()["dns"].to_json()
        assert first["problem"] == later["problem"] == "lookup failed"
        assert (later["state"], later["crashes"], later["last_error"]) == ("running", 0, None)
        # The problem started once: its start does not move while it lasts.
        assert first["problem_since"] == later["problem_since"]
        assert isinstance(later["problem_since"], str)
        since = datetime.datetime.fromisoformat(later["problem_since"])
        assert before <= since <= datetime.datetime.now(datetime.UTC)
        assert sample(metrics, "pycluster_topology_problem", topology="dns") == 1
        counted = sample(metrics, "pycluster_topology_failed_attempts_total", topology="dns")
        assert counted is not None
        assert counted >= 6
        assert states(metrics, "dns") == only("running")
        # A topology with no problem shows none.
        quiet = supervisor.status()["quiet"].to_json()
        assert (quiet["problem"], quiet["problem_since"], quiet["failed_attempts"]) == (
            None,
            None,
            0,
        )
        assert sample(metrics, "pycluster_topology_problem", topology="quiet") == 0

        Troubled.broken = False
        await eventually(lambda: supervisor.status()["dns"].problem is None)
        recovered = supervisor.status()["dns"].to_json()
        assert (recovered["problem"], recovered["problem_since"]) == (None, None)
        assert recovered["failed_attempts"] == 0
        assert sample(metrics, "pycluster_topology_problem", topology="dns") == 0
        # Recovered attempts are not failures: the counter stays where the problem left it.
        total = sample(metrics, "pycluster_topology_failed_attempts_total", topology="dns")
        attempts = Troubled.attempts
        await eventually(lambda: Troubled.attempts >= attempts + 3)
        assert sample(metrics, "pycluster_topology_failed_attempts_total", topology="dns") == total

        # It comes back: a new problem, counted from 1 with a new start.
        Troubled.broken = True
        await eventually(lambda: supervisor.status()["dns"].problem is not None)
        again = supervisor.status()["dns"].to_json()
        assert again["problem"] == "lookup failed"
        assert isinstance(again["problem_since"], str)
        assert datetime.datetime.fromisoformat(again["problem_since"]) > since
        assert sample(metrics, "pycluster_topology_problem", topology="dns") == 1
    assert states(metrics, "dns") == only("stopped")


async def test_topology_state_is_a_gauge_per_state() -> None:
    metrics = NodeMetrics()
    policy = TopologyRestartPolicy(initial_delay=0.01, max_delay=0.01, max_restarts=2, window=30)
    supervisor, _ = make_supervisor(
        {"bad": "test.crasher", "good": "test.ticker"}, policy, metrics=metrics
    )
    # Before start, every topology is starting.
    assert states(metrics, "bad") == only("starting")
    async with supervisor:
        await eventually(lambda: supervisor.status()["bad"].state == "failed")
        assert states(metrics, "bad") == only("failed")
        assert states(metrics, "good") == only("running")
    assert states(metrics, "bad") == only("failed")
    assert states(metrics, "good") == only("stopped")


async def test_a_failed_topology_leaves_the_node_ready_and_shows_in_status_and_metrics() -> None:
    plugins = Plugins.load(entry_points=False, extra=[Recorder()])
    config = load_config(
        {
            "node": {"name": "node1@memory"},
            "topologies": {
                "bad": {"strategy": "test.crasher"},
                "good": {"strategy": "test.ticker"},
            },
        },
        env={},
        plugins=plugins,
    )
    node = Node(
        config,
        cookie="a-cookie-long-enough-for-the-checks",
        plugins=plugins,
        policy=TopologyRestartPolicy(initial_delay=0.01, max_delay=0.01, max_restarts=1),
        network=MemoryNetwork(),
    )
    async with node:
        await eventually(lambda: node.status()["topologies"]["bad"]["state"] == "failed")
        assert node.ready()
        bad = node.status()["topologies"]["bad"]
        assert (bad["crashes"], bad["last_error"]) == (2, "RuntimeError: discovery exploded")
        assert node.status()["topologies"]["good"]["state"] == "running"
        assert states(node.metrics, "bad") == only("failed")
        assert states(node.metrics, "good") == only("running")


async def test_crashing_strategy_backs_off_then_fails_while_another_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = TopologyRestartPolicy(initial_delay=0.02, max_delay=5, max_restarts=3, window=30)
    supervisor, recorder = make_supervisor(
        {"bad": "test.crasher", "good": "test.ticker"}, policy, BrokenObserver()
    )
    async with supervisor:
        await eventually(lambda: supervisor.status()["bad"].state == "failed")
        # Restarted with growing delays, then marked failed (max_restarts + 1 crashes).
        delays = [event.delay for event in recorder.crashes]
        assert len(delays) == 4
        assert delays[-1] is None
        growing = [d for d in delays if d is not None]
        # 20 % jitter cannot undo a doubling: each delay exceeds the one before.
        assert growing == sorted(growing)
        assert growing[0] < growing[1] < growing[2]
        gaps = [b - a for a, b in zip(Crasher.starts, Crasher.starts[1:], strict=False)]
        assert len(Crasher.starts) == 4
        assert all(gap >= delay for gap, delay in zip(gaps, growing, strict=True))
        assert [event.restarts for event in recorder.crashes] == [1, 2, 3, 4]
        status = supervisor.status()["bad"]
        assert (status.state, status.crashes) == ("failed", 4)
        assert status.last_error == "RuntimeError: discovery exploded"
        # The other topology keeps running after the failure.
        ticks = Ticker.ticks
        await eventually(lambda: Ticker.ticks > ticks + 3)
        assert supervisor.status()["good"].state == "running"
    assert supervisor.status()["good"].state == "stopped"
    assert supervisor.status()["bad"].state == "failed"
    crashed = logged(caplog, event="strategy_crashed", topology="bad", strategy="test.crasher")
    assert [r.crashes for r in crashed] == [1, 2, 3]
    assert all(r.error == "RuntimeError: discovery exploded" for r in crashed)
    assert [r.restart_in for r in crashed] == growing
    (failed,) = logged(caplog, event="strategy_failed", topology="bad")
    assert (failed.levelno, failed.crashes) == (logging.ERROR, 4)
    # The broken observer was logged, not allowed to disturb the supervisor.
    broken = [r for r in caplog.records if r.name == "pycluster.plugins"]
    assert broken
    assert "pycluster_strategy_crashed" in broken[0].getMessage()  # the hook, named
    assert broken[0].exc_info is not None
    assert "observer bug" in str(broken[0].exc_info[1])


async def test_crashes_spread_beyond_the_window_never_fail_the_topology() -> None:
    policy = TopologyRestartPolicy(initial_delay=0.03, max_delay=0.03, max_restarts=1, window=0.02)
    supervisor, recorder = make_supervisor({"flaky": "test.crasher"}, policy)
    async with supervisor:
        await eventually(lambda: len(Crasher.starts) >= 5)
        assert supervisor.status()["flaky"].state in ("running", "restarting")
    assert all(event.delay is not None for event in recorder.crashes)


async def test_stop_wakes_a_sleeping_strategy_at_once() -> None:
    supervisor, _ = make_supervisor({"s": "test.sleeper"}, TopologyRestartPolicy())
    await supervisor.start()
    await eventually(lambda: supervisor.status()["s"].state == "running")
    started = time.monotonic()
    await supervisor.stop(timeout=5)
    assert time.monotonic() - started < 1
    assert Sleeper.woke
    assert supervisor.status()["s"].state == "stopped"


async def test_stop_is_bounded_when_a_strategy_ignores_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor, _ = make_supervisor(
        {"s": "test.stubborn", "t": "test.ticker"}, TopologyRestartPolicy()
    )
    await supervisor.start()
    await eventually(lambda: Stubborn.done is not None and Ticker.ticks > 0)
    started = time.monotonic()
    await supervisor.stop(timeout=0.2)
    # Bounded by the timeout, not by the 2 s the stubborn strategy takes to give up.
    assert time.monotonic() - started < 1.2
    assert Ticker.cleaned_up
    assert supervisor.status()["s"].state == "abandoned"
    assert supervisor.status()["t"].state == "stopped"
    (abandoned,) = logged(caplog, event="strategy_abandoned")
    assert (abandoned.levelno, abandoned.topology, abandoned.strategy) == (
        logging.ERROR,
        "s",
        "test.stubborn",
    )
    assert Stubborn.done is not None
    await asyncio.wait_for(Stubborn.done.wait(), 5)


async def test_a_strategy_that_returns_is_not_restarted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    supervisor, _ = make_supervisor({"o": "test.once"}, TopologyRestartPolicy(initial_delay=0.001))
    async with supervisor:
        await eventually(lambda: supervisor.status()["o"].state == "stopped")
        assert Once.runs == 1
    (finished,) = logged(caplog, event="strategy_finished")
    assert (finished.topology, finished.strategy) == ("o", "test.once")


def test_backoff_grows_to_its_ceiling_with_bounded_jitter() -> None:
    policy = TopologyRestartPolicy(initial_delay=0.5, max_delay=8, jitter=0.2)
    rng = random.Random(1)
    delays = [policy.delay(attempt, rng) for attempt in range(10)]
    for attempt, delay in enumerate(delays):
        base = min(8, 0.5 * 2**attempt)
        assert base * 0.8 <= delay <= base
