"""A rolling restart moves ring actors with their state and loses no acknowledged increment
(issue 4): 5 node processes, 100 ring-placed Counters, clients incrementing throughout
while each node in turn leaves gracefully (SIGTERM) and comes back as a new process."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import signal
import time

from pycluster import ring
from pycluster.errors import NotConnected, RemoteError
from tests.cluster.registry_client import RegistryClient
from tests.lab import Lab, LabNode

COUNTERS = [f"counter-{i}" for i in range(100)]
WORKERS = 8


def restarted(node: LabNode) -> LabNode:
    """The same node (name, address, config) as a new process: a new incarnation."""
    return dataclasses.replace(node, process=None, spawned_at=None, listening_at=None)


async def test_a_rolling_restart_loses_no_acknowledged_increment(lab: Lab) -> None:
    nodes = lab.declare(5, net_tick_timeout=2.0, retry_interval=0.5)
    await lab.start(nodes)
    await lab.wait_mesh(nodes, timeout=15)
    async with RegistryClient.open(lab) as client:
        for i, name in enumerate(COUNTERS):
            won, _ = await client.spawn(nodes[i % 5], name, placement="ring")
            assert won

        async def settled() -> bool:
            members = {node.name for node in live}
            views = await client.views(live)
            return all(
                v is not None
                and set(v) == set(COUNTERS)
                and all(v[c].node == ring.owner(c, members) for c in COUNTERS)
                for v in views
            )

        live = list(nodes)
        await lab.until(settled, timeout=10, what="every counter on its ring owner")

        # Each acknowledged increment returned the counter's new value: they must all be
        # different (a counter that lost its state would hand out old values again).
        acknowledged: dict[str, list[int]] = collections.defaultdict(list)
        failed = 0
        running = True

        async def worker(seed: int) -> None:
            nonlocal failed
            rng = random.Random(seed)
            while running:
                name, via = rng.choice(COUNTERS), rng.choice(live)
                try:
                    acknowledged[name].append(await client.call(via, name, "increment"))
                except (NotConnected, RemoteError, TimeoutError, ConnectionError):
                    failed += 1  # moving, or its node restarting: not acknowledged
                    await asyncio.sleep(0.01)

        workers = [asyncio.ensure_future(worker(seed)) for seed in range(WORKERS)]
        try:
            for index, node in enumerate(list(live)):
                before = sum(map(len, acknowledged.values()))
                left = lab.send_signal(node, signal.SIGTERM)
                assert await lab.wait_exit(node) == 0
                lab.retire([node])
                live.remove(node)
                await lab.until(settled, timeout=10, what=f"counters moved off {node.name}")
                reborn = restarted(node)
                lab.nodes.append(reborn)
                await lab.start([reborn])
                live.insert(index, reborn)
                await lab.wait_mesh(live, timeout=15)
                await lab.until(settled, timeout=10, what=f"counters back on {node.name}")
                during = sum(map(len, acknowledged.values())) - before
                print(
                    f"{node.name}: left and back in {time.monotonic() - left:.2f}s, {during} acks"
                )
                assert during > 0, "the clients made progress during the restart"
        finally:
            running = False
            await asyncio.gather(*workers)

        # Each counter exists exactly once: registered once, and running once, cluster-wide.
        started = [name for node in live for name in await client.running(node)]
        assert sorted(started) == sorted(COUNTERS)
        total = 0
        for name in COUNTERS:
            values = acknowledged[name]
            assert len(values) == len(set(values)), f"{name} handed out a value twice: state lost"
            final = await client.call(live[0], name, "value")
            assert final >= len(values), f"{name}: {final} < {len(values)} acknowledged"
            total += len(values)
        print(f"{total} acknowledged increments, {failed} refused while moving")
