"""The ``etcd`` strategy: nodes register under a prefix with their lease; all watch it.

Each node puts ``PREFIX + its name`` (value: its name, the address peers dial) attached to
its own lease, and watches the prefix. The name is its full one (``Topology.full_name``,
port written out), so peers with another ``node.port`` dial the right port. A node appears
on every peer as soon as its key is written, and is disconnected when its key goes: deleted
when it stops gracefully (its lease is revoked), or expired ``lease_ttl`` seconds after it
stopped keeping its lease alive (dead, or cut off from etcd). While etcd is unreachable,
discovery keeps the current nodes (design.md's rule: a failed lookup disconnects nobody),
and once it answers again, a node missing from it is given one ``lease_ttl`` to register
again before it is dropped: after a long etcd outage every entry may have expired, and all
come back within that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time

from pycluster import NodeNameError, Strategy, Topology, parse_node_name
from pycluster_etcd.client import FAILURES, EtcdClient, describe
from pycluster_etcd.lease import LeaseKeeper
from pycluster_etcd.mirror import Change, Mirror
from pycluster_etcd.options import EtcdStrategyConfig

RECHECK = 1.0
"""Seconds between looks at etcd's health (changes themselves wake the strategy at once)."""
STOP_TIMEOUT = 2.0


def listed_nodes(items: dict[bytes, bytes]) -> tuple[list[str], list[str]]:
    """The node names registered in ``items`` (keys under the prefix), and the bad values."""
    nodes, bad = [], []
    for value in items.values():
        text = value.decode(errors="replace")
        try:
            nodes.append(str(parse_node_name(text)))
        except NodeNameError:
            bad.append(text[:80])
    return sorted(set(nodes)), bad


class EtcdStrategy(Strategy):
    """Registers this node in etcd and connects every node registered there."""

    name = "etcd"
    Config = EtcdStrategyConfig

    async def run(self, topology: Topology) -> None:
        config: EtcdStrategyConfig = topology.config
        # The full name: a node with another node.port reads a bare one as its own port.
        me = topology.full_name
        key = config.prefix.encode() + me.encode()
        what = f"[pycluster:{topology.name}] {me}"
        changed = asyncio.Event()

        def wake(changes: list[Change] | str) -> None:
            changed.set()

        client = EtcdClient(config)
        await client.open()
        # No fencing: a discovery entry guards nothing exclusive, so it is kept through an
        # outage, and replaced only once etcd says it expired.
        lease = LeaseKeeper(client, config.lease_ttl, what=what, on_lost=wake, fencing=False)
        mirror = Mirror(client, config.prefix.encode(), what=what, on_change=wake)
        tasks = [asyncio.create_task(lease.run()), asyncio.create_task(mirror.run())]
        registered: int | None = None
        settle_until = 0.0
        troubled = False
        try:
            while True:
                current = lease.alive()
                if current is not None and current != registered:
                    try:
                        await client.request(
                            functools.partial(
                                client.kv.put, key, me.encode(), current, timeout=config.timeout
                            )
                        )
                    except FAILURES as exc:
                        topology.problem(f"cannot register {me} in etcd ({describe(exc)})")
                    else:
                        registered = current
                problem = lease.problem or mirror.problem
                answer: list[str] | None = None
                if not mirror.loaded.is_set() or problem is not None:
                    troubled = True
                    topology.problem(
                        f"etcd not usable ({problem or 'not listed yet'}); keeping current nodes"
                    )
                else:
                    if troubled:
                        # After an outage, peers' entries may have expired meanwhile: give
                        # them one lease_ttl to register again before dropping them.
                        troubled = False
                        settle_until = time.monotonic() + config.lease_ttl + RECHECK
                    answer, bad = listed_nodes(mirror.items)
                    if time.monotonic() < settle_until:
                        answer = sorted(set(answer) | topology.listed)
                    if bad:
                        for _ in bad:
                            topology.dropped("bad_name")
                        topology.problem(f"skipped values that are not node names: {bad}")
                    elif registered is not None:
                        topology.problem(None)
                await topology.apply(answer)
                changed.clear()
                if not await _wait(changed, topology):
                    return
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Graceful leave: revoking the lease deletes our key, so peers drop us at once.
            await lease.revoke(STOP_TIMEOUT)
            await client.close()


async def _wait(changed: asyncio.Event, topology: Topology) -> bool:
    """Until etcd reports a change or RECHECK passes: False when the node shuts down."""
    waiter = asyncio.ensure_future(changed.wait())
    sleeper = asyncio.ensure_future(topology.sleep(RECHECK))
    try:
        done, _ = await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, sleeper):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return not (sleeper in done and sleeper.result() is False)
