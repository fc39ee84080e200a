"""Actors: ordering, calls, casts, crashes and restarts, stop and wait; calls from another node."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from pycluster import ActorRef, RemoteError, load_config
from pycluster.actors import Actor, ActorCrashed, ActorRestartPolicy, Actors, NoSuchActor
from pycluster.node import Node
from pycluster.testing import cluster
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
    # A call's timeout counts its wait for room in the mailbox too.
    with pytest.raises(TimeoutError):
        await actors.call(ref, "increment", timeout=0.05)
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


# -- calls from another node: a call to an idle actor runs at once ---------------------------


LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("label", default="unset")


class Waiter(Actor):
    """Handles calls that answer at once, wait on a gate, time out, or crash; records
    what it handled, in order, and which task it ran as."""

    def __init__(self) -> None:
        self.handled: list[Any] = []
        self.gate = asyncio.Event()

    async def handle_call(self, message: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        self.handled.append(message)
        if message == "last":
            self.stop()  # after this message, which goes on waiting
        if message in ("gate", "last"):
            await self.gate.wait()
            return ["opened", task.get_name()]
        if message == "time out":
            try:
                async with asyncio.timeout(0.05):
                    await asyncio.Event().wait()
            except TimeoutError:
                return "timed out"
        if message == "boom":
            raise ValueError("boom")
        if message == "label":
            return LABEL.get()
        if message == "relabel":
            LABEL.set("relabelled")
        if message == "open":
            self.gate.set()
        return [message, task.get_name()]

    async def handle_cast(self, message: Any) -> None:
        self.handled.append(message)


def spawn_waiter(node: Node) -> tuple[ActorRef, Waiter]:
    """A Waiter on ``node``: its ref and its instance."""
    ref = node.actors.spawn(Waiter)
    waiter = node.actors.local(ref)
    assert isinstance(waiter, Waiter)
    return ref, waiter


async def test_a_call_from_another_node_runs_as_the_actors_own_task() -> None:
    async with cluster(2) as c:
        a, b = c.nodes
        ref, waiter = spawn_waiter(b)
        own = f"actor {ref}"
        assert await a.actors.call(ref, "now") == ["now", own]  # answered at once
        gated = asyncio.ensure_future(a.actors.call(ref, "gate"))  # waits on the gate
        await eventually(lambda: waiter.handled == ["now", "gate"])
        assert not gated.done()
        # A local call queues behind the waiting handler.
        local = asyncio.ensure_future(b.actors.call(ref, "open"))
        waiter.gate.set()
        assert await gated == ["opened", own]
        assert await local == ["open", own]
        # A timeout inside a handler that waits cancels the handler, not the delivery.
        assert await a.actors.call(ref, "time out") == "timed out"
        assert await a.actors.call(ref, "after") == ["after", own]


async def test_a_call_from_another_node_runs_in_the_actors_context() -> None:
    async with cluster(2) as c:
        a, b = c.nodes
        token = LABEL.set("the spawner's")
        try:
            ref = b.actors.spawn(Waiter)  # its task's context: a copy of this one
        finally:
            LABEL.reset(token)
        assert await a.actors.call(ref, "label") == "the spawner's"
        await a.actors.call(ref, "relabel")  # set in the actor's context, kept
        assert await a.actors.call(ref, "label") == "relabelled"
        assert await b.actors.call(ref, "label") == "relabelled"  # through the mailbox
        assert LABEL.get() == "unset"


async def test_calls_and_casts_from_another_node_keep_their_order() -> None:
    async with cluster(2) as c:
        a, b = c.nodes
        ref, waiter = spawn_waiter(b)
        queue = b.actors._running[ref.id].queue

        def queued() -> list[Any]:
            return [envelope.message for envelope in queue._queue]  # type: ignore[attr-defined]

        gated = asyncio.ensure_future(a.actors.call(ref, "gate"))
        await eventually(lambda: waiter.handled == ["gate"])
        await a.actors.cast(ref, "cast 1")
        await eventually(lambda: "cast 1" in queued())
        second = asyncio.ensure_future(a.actors.call(ref, "call 2"))
        await eventually(lambda: "call 2" in queued())
        await a.actors.cast(ref, "cast 3")
        await eventually(lambda: "cast 3" in queued())
        assert not second.done()  # queued behind the handler that waits
        waiter.gate.set()
        assert (await gated)[0] == "opened"
        assert (await second)[0] == "call 2"
        await eventually(lambda: waiter.handled == ["gate", "cast 1", "call 2", "cast 3"])


async def test_a_crash_in_a_call_from_another_node_restarts_the_actor() -> None:
    async with cluster(2) as c:
        a, b = c.nodes
        ref = b.actors.spawn(Waiter, policy=ActorRestartPolicy(restart="transient"))
        first = b.actors.local(ref)
        await a.actors.call(ref, "before")
        with pytest.raises(RemoteError) as raised:
            await a.actors.call(ref, "boom")
        assert raised.value.type == "ValueError"
        assert await a.actors.call(ref, "after") == ["after", f"actor {ref}"]
        fresh = b.actors.local(ref)
        assert isinstance(fresh, Waiter)
        assert fresh is not first
        assert fresh.handled == ["after"]


async def test_a_stop_waits_for_the_call_from_another_node_being_handled() -> None:
    async with cluster(2) as c:
        a, b = c.nodes
        ref, waiter = spawn_waiter(b)
        gated = asyncio.ensure_future(a.actors.call(ref, "gate"))
        await eventually(lambda: waiter.handled == ["gate"])
        stopping = asyncio.ensure_future(b.actors.stop(ref, "done here"))
        await eventually(lambda: b.actors._running[ref.id].stop_reason == "done here")
        assert not stopping.done()
        waiter.gate.set()
        assert (await gated)[0] == "opened"
        assert await stopping == "done here"


async def test_an_actor_that_stops_itself_in_a_call_from_another_node_answers_it_first() -> None:
    async with cluster(2) as c:
        a, b = c.nodes
        ref, waiter = spawn_waiter(b)
        last = asyncio.ensure_future(a.actors.call(ref, "last"))
        await eventually(lambda: waiter.handled == ["last"])
        assert b.actors._running[ref.id].stop_reason == "normal"
        waiter.gate.set()
        assert (await last)[0] == "opened"
        assert await b.actors.wait(ref) == "normal"
