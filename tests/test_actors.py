"""Actors on one node: ordering, calls, casts, crashes and restarts, stop and wait."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pycluster import load_config
from pycluster.actors import Actor, ActorCrashed, ActorRestartPolicy, Actors, NoSuchActor
from pycluster.node import Node
from pycluster.transport.memory import MemoryNetwork
from tests.conftest import eventually


class Counter(Actor):
    """The walk-through's Counter: an Agent holding a number."""

    instances = 0

    def __init__(self, value: int = 0) -> None:
        self.value = value
        Counter.instances += 1

    async def handle_call(self, message: Any) -> Any:
        if message == "value":
            return self.value
        if message == "increment":
            self.value += 1
            return self.value
        if message == "boom":
            raise ValueError("boom")
        if message == "slow":
            await asyncio.sleep(0.5)
            return "done"
        raise KeyError(message)

    async def handle_cast(self, message: Any) -> None:
        if message == "increment":
            self.value += 1
        elif message == "quit":
            self.stop()


@pytest.fixture
def actors() -> Actors:
    config = load_config({"node": {"name": "a@127.0.1.40"}}, env={})
    node = Node(config, cookie="actors-test-cookie", network=MemoryNetwork())
    node.unregister_mailbox("$actor")  # replaced by a runtime with a small mailbox
    return Actors(node.transport, host=node, mailbox_size=10)


async def test_messages_are_handled_one_at_a_time_in_order(actors: Actors) -> None:
    ref = actors.spawn(Counter, 5)
    for _ in range(100):
        await actors.cast(ref, "increment")
    assert await actors.call(ref, "value") == 105
    results = await asyncio.gather(*(actors.call(ref, "increment") for _ in range(50)))
    assert sorted(results) == list(range(106, 156))


async def test_a_crash_reaches_the_caller_and_a_temporary_actor_ends(actors: Actors) -> None:
    ref = actors.spawn(Counter)
    with pytest.raises(ValueError, match="boom"):
        await actors.call(ref, "boom")
    assert await actors.wait(ref) == "crashed"
    with pytest.raises(NoSuchActor):
        await actors.call(ref, "value")


async def test_a_permanent_actor_restarts_with_fresh_state_until_the_limit(actors: Actors) -> None:
    policy = ActorRestartPolicy(restart="permanent", max_restarts=2, window=60)
    ref = actors.spawn(Counter, 1, policy=policy)
    await actors.call(ref, "increment")
    before = Counter.instances
    with pytest.raises(ValueError, match="boom"):
        await actors.call(ref, "boom")
    assert await actors.call(ref, "value") == 1  # a new instance, same ref
    assert Counter.instances == before + 1
    with pytest.raises(ValueError, match="boom"):
        await actors.call(ref, "boom")
    with pytest.raises(ValueError, match="boom"):
        await actors.call(ref, "boom")
    assert await actors.wait(ref) == "crashed"  # third crash in the window: stays down


async def test_transient_restarts_only_after_a_crash(actors: Actors) -> None:
    ref = actors.spawn(Counter, policy=ActorRestartPolicy(restart="transient"))
    await actors.cast(ref, "quit")
    assert await actors.wait(ref) == "normal"
    permanent = actors.spawn(Counter, policy=ActorRestartPolicy(restart="permanent"))
    await actors.cast(permanent, "quit")
    await eventually(lambda: permanent in actors.refs())
    assert await actors.call(permanent, "value") == 0


async def test_stop_ends_the_actor_with_its_reason(actors: Actors) -> None:
    stopped: list[str] = []

    class Tidy(Counter):
        async def stopped(self, reason: str) -> None:
            stopped.append(reason)

    ref = actors.spawn(Tidy)
    waiter = asyncio.ensure_future(actors.wait(ref))
    assert await actors.stop(ref, "name conflict") == "name conflict"
    assert await waiter == "name conflict"
    assert stopped == ["name conflict"]
    assert ref not in actors.refs()


async def test_timeouts_and_a_bounded_mailbox(actors: Actors) -> None:
    ref = actors.spawn(Counter)
    with pytest.raises(TimeoutError):
        await actors.call(ref, "slow", timeout=0.05)
    # The actor is busy with "slow": its 10-message mailbox fills, then senders wait.
    for _ in range(10):
        await actors.cast(ref, "increment")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(actors.cast(ref, "increment"), 0.05)
    assert await actors.stop(ref, timeout=5) == "normal"


async def test_messages_queued_behind_a_stop_fail_instead_of_hanging(actors: Actors) -> None:
    ref = actors.spawn(Counter)
    slow = asyncio.ensure_future(actors.call(ref, "slow"))
    await eventually(lambda: actors._running[ref.id].queue.empty())  # "slow" is running
    queued = asyncio.ensure_future(actors.call(ref, "value"))
    await eventually(lambda: not actors._running[ref.id].queue.empty())
    assert await actors.stop(ref) == "normal"
    assert await slow == "done"  # the message being handled is finished
    with pytest.raises(ActorCrashed, match=r"ended \(normal\)"):
        await queued


async def test_init_errors_reach_the_spawner(actors: Actors) -> None:
    class Broken(Actor):
        def __init__(self) -> None:
            raise RuntimeError("bad config")

    with pytest.raises(RuntimeError, match="bad config"):
        actors.spawn(Broken)
