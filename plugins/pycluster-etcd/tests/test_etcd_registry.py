"""The ``etcd`` registry backend against a real etcd: claims, expiry, fencing, outages."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import pytest
from conftest import LEASE_TTL, eventually, make_node, mesh
from etcd_lab import EtcdServer, Gate
from pycluster_etcd.registry import EtcdRegistry

from pycluster import ConfigError, load_config
from pycluster.actors import Actor
from pycluster.node import Node
from pycluster.registry import ActorRef, AlreadyStarted, ClaimFailed
from tests.lab.polling import until


class Named(Actor):
    """Says where it runs."""

    async def handle_call(self, message: Any) -> Any:
        return self.node.name


def backend(node: Node) -> EtcdRegistry:
    registry = node.registry.backend
    assert isinstance(registry, EtcdRegistry)
    return registry


# -- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "registry.options.endpoints: required key is missing"),
        ({"endpoints": ["etcd"]}, "registry.options.endpoints[0]: expected host:port"),
        ({"endpoints": ["10.0.0.1:2379"], "lease_ttl": 1}, "at least 2, got 1"),
        ({"endpoints": ["10.0.0.1:2379"], "lease_ttl": 2.5}, "registry.options.lease_ttl"),
        (
            {"endpoints": ["a.example:2379", "b.example:2379"]},
            "registry.options.endpoints: expected IP addresses, or a single DNS name",
        ),
        (
            {"endpoints": ["10.0.0.1:2379", "[::1]:2379"]},
            "expected IPv4 or IPv6 addresses, not both",
        ),
        (
            {"endpoints": ["10.0.0.1:2379"], "tls": {"cafile": "ca.pem", "certfile": "c.pem"}},
            "registry.options.tls.keyfile: required when the other half",
        ),
        (
            {"endpoints": ["10.0.0.1:2379"], "auth": {"username": "u", "password": 7}},
            "registry.options.auth.password: expected a string, got a value (hidden)",
        ),
        ({"endpoints": ["10.0.0.1:2379"], "lease": 3}, "did you mean 'lease_ttl'?"),
        (
            {"endpoints": ["10.0.0.1:2379"], "lease_ttl": "2500ms"},
            "registry.options.lease_ttl: expected a duration (a whole number of seconds, or "
            "e.g. '30s', '1m'), got '2500ms'",
        ),
        (
            {"endpoints": ["10.0.0.1:2379"], "timeout": "0s"},
            "registry.options.timeout: expected a positive duration, got '0s'",
        ),
    ],
)
def test_options_are_checked_before_anything_starts(options: dict[str, Any], message: str) -> None:
    from conftest import plugins

    with pytest.raises(ConfigError) as info:
        load_config(
            {"node": {"name": "a@127.0.5.2"}, "registry": {"backend": "etcd", "options": options}},
            env={},
            plugins=plugins(),
        )
    assert message in str(info.value)


def test_timeouts_and_ttls_take_durations() -> None:
    from conftest import plugins

    options = {"endpoints": ["10.0.0.1:2379"], "timeout": "1500ms", "lease_ttl": "1m"}
    config = load_config(
        {"node": {"name": "a@127.0.5.2"}, "registry": {"backend": "etcd", "options": options}},
        env={},
        plugins=plugins(),
    )
    assert (config.registry.options.timeout, config.registry.options.lease_ttl) == (1.5, 60)


# -- claims ------------------------------------------------------------------------------


async def test_etcd_arbitrates_claims_even_between_nodes_that_are_not_connected(
    etcd: EtcdServer, prefix: str
) -> None:
    nodes = [make_node(i, [etcd.endpoint], prefix) for i in range(3)]
    async with nodes[0], nodes[1], nodes[2]:
        # No mesh: the nodes never talk to each other, only to etcd.
        for round_ in range(10):
            name = f"only-one-{round_}"
            results = await asyncio.gather(
                *(n.registry.spawn(name, Named) for n in nodes), return_exceptions=True
            )
            winners = [r for r in results if isinstance(r, ActorRef)]
            assert len(winners) == 1, results
            assert all(r.ref == winners[0] for r in results if isinstance(r, AlreadyStarted))
        await eventually(lambda: all(len(n.registry.registered()) == 10 for n in nodes))


async def test_a_restarted_node_clears_the_names_of_its_previous_life(
    etcd: EtcdServer, prefix: str, gates: Any
) -> None:
    gate: Gate = await gates()
    watcher = make_node(0, [etcd.endpoint], prefix, lease_ttl=30)
    first = make_node(1, [gate.endpoint], prefix, lease_ttl=30)
    async with watcher:
        await first.start()
        ref = await first.registry.spawn("old", Named)
        await eventually(lambda: watcher.registry.whereis("old") == ref)
        # A crash: the process is gone without revoking its lease (30 s to live).
        gate.cut()
        await asyncio.wait_for(first.stop(), 10)
        gate.heal()
        again = make_node(1, [etcd.endpoint], prefix, lease_ttl=30)
        async with again:
            # Each node learns of the deletion through its own watch, in no set order.
            await eventually(
                lambda: (
                    watcher.registry.whereis("old") is None
                    and again.registry.whereis("old") is None
                ),
                timeout=5,
            )


# -- a node cut off from etcd ---------------------------------------------------------


async def test_a_node_cut_off_from_etcd_stops_its_actors_before_anyone_else_can_claim_them(
    etcd: EtcdServer, prefix: str, gates: Any
) -> None:
    gate: Gate = await gates()
    cut = make_node(0, [gate.endpoint], prefix)
    other = make_node(1, [etcd.endpoint], prefix)
    async with cut, other:
        await mesh([cut, other])
        refs = [await cut.registry.spawn(f"name-{i}", Named) for i in range(3)]
        member = cut.actors.spawn(Named)
        await cut.registry.join("crew", member)
        await eventually(lambda: len(other.registry.registered()) == 3)
        ended = [asyncio.ensure_future(cut.actors.wait(ref)) for ref in refs]
        stopped: list[float] = []
        for task in ended:
            task.add_done_callback(lambda _: stopped.append(time.monotonic()))
        keeper = backend(cut).lease

        gate.cut()
        cut_at = time.monotonic()
        # The other node keeps trying to take a name over while the cut node holds it.
        taken_at = None
        while taken_at is None:
            try:
                await other.registry.spawn("name-0", Named, timeout=1)
            except AlreadyStarted:
                await asyncio.sleep(0.02)
            else:
                taken_at = time.monotonic()
            assert time.monotonic() - cut_at < 3 * LEASE_TTL, "never taken over"
        # Every actor of the cut node had stopped, for lease loss, before that: less than
        # lease_ttl after the last keepalive etcd acknowledged was sent.
        assert [task.result() for task in ended] == ["lease lost"] * 3
        acked_sent = keeper.fence.acked_sent
        assert acked_sent is not None
        assert len(stopped) == 3
        assert max(stopped) < acked_sent + LEASE_TTL < taken_at
        # The cut node still answers lookups from its last state; claims fail clearly.
        assert cut.registry.whereis("name-1") is None  # its own: stopped, so dropped
        assert other.registry.whereis("name-0") is not None
        with pytest.raises(ClaimFailed, match="etcd is not usable"):
            await cut.registry.spawn("fresh", Named)
        assert cut.status()["registry"]["etcd"] != "ok"

        gate.heal()
        # Back: a new lease, the group membership put back, claims work again.
        await eventually(lambda: backend(cut).lease.alive() is not None)
        await eventually(lambda: other.registry.members("crew") == [member])
        await eventually(lambda: cut.registry.whereis("name-0") == other.registry.whereis("name-0"))
        assert cut.registry.whereis("name-1") is None
        fresh = await cut.registry.spawn("fresh", Named)
        await eventually(lambda: other.registry.whereis("fresh") == fresh)
        assert cut.status()["registry"]["etcd"] == "ok"


async def test_a_dead_nodes_names_expire_after_its_lease(
    etcd: EtcdServer, prefix: str, gates: Any
) -> None:
    gate: Gate = await gates()
    dying = make_node(0, [gate.endpoint], prefix)
    other = make_node(1, [etcd.endpoint], prefix)
    async with other:
        await dying.start()
        ref = await dying.registry.spawn("mortal", Named)
        await dying.registry.join("crew", dying.actors.spawn(Named))
        await eventually(lambda: other.registry.whereis("mortal") == ref)
        gate.cut()  # as good as dead, for etcd: no keepalive gets through
        last = backend(dying).lease.fence.acked_sent
        assert last is not None
        await eventually(lambda: other.registry.whereis("mortal") is None, timeout=LEASE_TTL + 5)
        assert not other.registry.members("crew")
        gone = time.monotonic() - last
        assert LEASE_TTL - 0.5 < gone < LEASE_TTL + 2.5, gone
        await dying.stop()


# -- etcd itself down --------------------------------------------------------------------


async def test_while_etcd_is_down_lookups_answer_claims_fail_and_then_all_resumes(
    own_etcd: EtcdServer, prefix: str
) -> None:
    a = make_node(0, [own_etcd.endpoint], prefix)
    b = make_node(1, [own_etcd.endpoint], prefix)
    async with a, b:
        await mesh([a, b])
        ref = await a.registry.spawn("held", Named)
        await eventually(lambda: b.registry.whereis("held") == ref)
        ended = asyncio.ensure_future(a.actors.wait(ref))

        own_etcd.signal(signal.SIGSTOP)  # etcd hangs: connections open, no answers
        started = time.monotonic()
        with pytest.raises(ClaimFailed):
            await b.registry.spawn("new", Named, timeout=1)
        assert b.registry.whereis("held") == ref  # the last state, from memory
        assert await asyncio.wait_for(ended, LEASE_TTL + 2) == "lease lost"
        assert time.monotonic() - started < LEASE_TTL
        with pytest.raises(ClaimFailed, match="etcd is not usable"):
            await a.registry.spawn("new", Named)
        assert a.ready()
        assert b.ready()

        own_etcd.signal(signal.SIGCONT)
        ref2 = await _spawn_eventually(b, "new")
        await eventually(lambda: a.registry.whereis("new") == ref2)
        await eventually(lambda: b.registry.whereis("held") is None)  # a's old lease revoked
        held = await _spawn_eventually(a, "held")
        await eventually(lambda: b.registry.whereis("held") == held)


async def test_etcd_killed_and_restarted_from_its_data(own_etcd: EtcdServer, prefix: str) -> None:
    a = make_node(0, [own_etcd.endpoint], prefix, lease_ttl=10)
    b = make_node(1, [own_etcd.endpoint], prefix, lease_ttl=10)
    async with a, b:
        ref = await a.registry.spawn("kept", Named)
        await eventually(lambda: b.registry.whereis("kept") == ref)
        own_etcd.kill()
        with pytest.raises(ClaimFailed):
            await b.registry.spawn("other", Named, timeout=1)
        assert b.registry.whereis("kept") == ref
        own_etcd.start()  # same data directory: the lease survives a quick restart
        await own_etcd.until_healthy()
        other = await _spawn_eventually(b, "other")
        await eventually(lambda: a.registry.whereis("other") == other)
        # Not fenced (the outage was shorter than the lease): the actor kept its name.
        assert a.actors.local(ref) is not None
        assert a.registry.whereis("kept") == b.registry.whereis("kept") == ref


async def _spawn_eventually(node: Node, name: str, timeout: float = 15.0) -> ActorRef:
    """Spawn ``name`` on ``node``, retrying while claims fail (etcd coming back)."""
    spawned: list[ActorRef] = []

    async def claimed() -> bool:
        with contextlib.suppress(ClaimFailed):
            spawned.append(await node.registry.spawn(name, Named, timeout=1))
        return bool(spawned)

    await until(claimed, timeout=timeout, interval=0.05, what=f"{name} claimed")
    return spawned[0]
