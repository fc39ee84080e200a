"""The polling schedule (pure: delays from outcomes) and the loop around it."""

from __future__ import annotations

import asyncio
import random
import re
import types
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pycluster
from pycluster import InMemoryNetwork, Plugins, PollSchedule, hookimpl, load_config
from pycluster.supervisor import Supervisor
from tests.conftest import eventually

seconds = st.floats(min_value=0.001, max_value=600)
jitters = st.floats(min_value=0, max_value=0.99)
outcomes = st.lists(st.booleans(), max_size=40)


@given(seconds, seconds, seconds, jitters, outcomes, st.integers())
def test_delays_stay_between_the_floor_and_the_cap(
    interval: float,
    first: float,
    longest: float,
    jitter: float,
    results: list[bool],
    seed: int,
) -> None:
    schedule = PollSchedule(
        interval, first=first, longest=longest, jitter=jitter, rng=random.Random(seed)
    )
    floor = (1 - jitter) * min(first, longest)
    for succeeded in results:
        delay = schedule.succeeded() if succeeded else schedule.failed()
        if succeeded:
            assert (1 - jitter) * interval <= delay <= interval
        else:
            assert floor <= delay <= longest


@given(seconds, seconds, outcomes)
def test_failures_double_from_first_up_to_longest(
    first: float, longest: float, before: list[bool]
) -> None:
    schedule = PollSchedule(1.0, first=first, longest=longest, jitter=0)
    for succeeded in before:
        schedule.succeeded() if succeeded else schedule.failed()
    schedule.reset()
    expected = min(first, longest)
    for _ in range(12):
        assert schedule.failed() == expected
        expected = min(expected * 2, longest)


@given(seconds, outcomes)
def test_a_success_resets_the_backoff(interval: float, before: list[bool]) -> None:
    schedule = PollSchedule(interval, jitter=0)
    for succeeded in before:
        schedule.succeeded() if succeeded else schedule.failed()
    assert schedule.succeeded() == interval
    assert schedule.failed() == min(0.2, interval)


def test_a_new_schedule_retries_quickly_while_a_cluster_forms() -> None:
    schedule = PollSchedule(5.0, jitter=0)
    assert [schedule.failed() for _ in range(6)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    assert schedule.failed() == 5.0


@given(jitters, st.integers())
def test_jitter_only_cuts_delays_by_up_to_its_fraction(jitter: float, seed: int) -> None:
    schedule = PollSchedule(10.0, jitter=jitter, rng=random.Random(seed))
    for _ in range(20):
        assert 10.0 * (1 - jitter) <= schedule.succeeded() <= 10.0


def test_jitter_spreads_delays_and_defaults_to_a_fifth() -> None:
    schedule = PollSchedule(10.0, rng=random.Random(7))
    delays = [schedule.succeeded() for _ in range(500)]
    assert 8.0 <= min(delays) < 8.2
    assert 9.8 < max(delays) <= 10.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"interval": 0}, "must be positive"),
        ({"interval": 1, "first": -1}, "must be positive"),
        ({"interval": 1, "longest": 0}, "must be positive"),
        ({"interval": 1, "jitter": 1}, "jitter must be"),
        ({"interval": 1, "jitter": -0.1}, "jitter must be"),
    ],
)
def test_nonsense_is_refused(arguments: dict[str, float], message: str) -> None:
    interval = arguments.pop("interval")
    with pytest.raises(ValueError, match=message):
        PollSchedule(interval, **arguments)


class Recorder:
    """A topology's sleep that records the delays, and stops after ``rounds`` of them."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.delays: list[float] = []

    async def sleep(self, seconds: float) -> bool:
        self.delays.append(seconds)
        return len(self.delays) < self.rounds


async def test_poll_waits_as_the_schedule_says_and_stops_on_shutdown() -> None:
    results = iter([False, False, True, False, True])
    attempts = 0

    async def attempt() -> bool:
        nonlocal attempts
        attempts += 1
        return next(results)

    recorder = Recorder(rounds=5)
    await pycluster.poll(recorder, attempt, PollSchedule(5.0, jitter=0))
    assert recorder.delays == [0.2, 0.4, 5.0, 0.2, 5.0]
    assert attempts == 5


async def test_poll_lets_a_crash_through() -> None:
    async def attempt() -> bool:
        raise RuntimeError("lookup exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        await pycluster.poll(Recorder(rounds=5), attempt, PollSchedule(1.0))


async def test_poll_returns_as_soon_as_the_topology_stops() -> None:
    stopping = asyncio.Event()
    topology = pycluster.Topology(
        "t", "static", None, InMemoryNetwork().join("a@127.0.0.2"), Plugins.load(), stopping
    )
    attempts = 0

    async def attempt() -> bool:
        nonlocal attempts
        attempts += 1
        return True

    task = asyncio.create_task(pycluster.poll(topology, attempt, PollSchedule(3600.0)))
    await eventually(lambda: attempts == 1)
    stopping.set()
    await asyncio.wait_for(task, timeout=5)
    assert attempts == 1


# -- the example of docs/plugins.md ---------------------------------------------------------

DOCS = Path(__file__).parent.parent / "docs" / "plugins.md"


def docs_example() -> types.ModuleType:
    """The example strategy of the "Polling with backoff" section, as a plugin module."""
    section = DOCS.read_text().split("### Polling with backoff\n", 1)[1].split("\n### ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None
    module = types.ModuleType("static_example")
    exec(compile(found.group(1), str(DOCS), "exec"), module.__dict__)

    @hookimpl
    def pycluster_register_strategies() -> list[type[pycluster.Strategy]]:
        return [module.Static]

    module.pycluster_register_strategies = pycluster_register_strategies  # type: ignore[attr-defined]
    return module


async def test_the_documented_example_finds_a_late_node_quickly_and_stops() -> None:
    plugins = Plugins.load(entry_points=False, extra=[docs_example()])
    network = InMemoryNetwork(plugins)
    topology = {"strategy": "static", "config": {"nodes": ["a@127.0.0.2", "b@127.0.0.3"]}}
    config = load_config(
        {"node": {"name": "a@127.0.0.2"}, "topologies": {"t": topology}},
        env={},
        plugins=plugins,
    )
    assert config.topologies["t"].config.retry_interval == 5000
    timed = {**topology, "config": {**topology["config"], "retry_interval": "1.5s"}}
    reloaded = load_config(
        {"node": {"name": "a@127.0.0.2"}, "topologies": {"t": timed}}, env={}, plugins=plugins
    )
    assert reloaded.topologies["t"].config.retry_interval == 1500
    supervisor = Supervisor(
        config.topologies, membership=network.join("a@127.0.0.2"), plugins=plugins
    )
    async with supervisor:
        await eventually(lambda: supervisor.status()["t"].state == "running")
        network.join("b@127.0.0.3")
        # Retried within the quick first attempts, long before retry_interval (5 s).
        await eventually(lambda: network.links("a@127.0.0.2") == ["b@127.0.0.3"], timeout=2)
