"""``epmd``: a static list of nodes, connected and kept connected."""

from __future__ import annotations

import attrs

from pycluster import PollSchedule, Strategy, Topology, checks, setting

IDLE_RECHECK = 30.0
"""Seconds between two looks at the list while every listed node is connected (a lost
node wakes the strategy at once)."""


@attrs.frozen(kw_only=True)
class EpmdConfig:
    """Config of the ``epmd`` strategy."""

    hosts: tuple[str, ...] = setting(
        doc="Node names to connect, e.g. ``[app@10.0.0.1, app@10.0.0.2]``.",
        check=checks.non_empty,
        each=checks.node_name,
    )
    retry_interval: float = setting(
        default=5000,
        doc="Longest wait between attempts to reach listed nodes that are not "
        "connected; the first retries come sooner.",
        unit="ms",
        check=checks.positive_duration,
    )


class Epmd(Strategy):
    """Connects a fixed list of nodes and reconnects them when they come back.

    Unreachable nodes are retried with a backoff that starts at 0.2 s (so nodes started
    together find each other quickly) and doubles up to ``retry_interval``
    (:class:`~pycluster.PollSchedule`). While every listed node is connected it does
    nothing until this node loses one (``topology.sleep(..., until_node_lost=True)``).
    """

    name = "epmd"
    Config = EpmdConfig

    async def run(self, topology: Topology) -> None:
        config: EpmdConfig = topology.config

        schedule = PollSchedule(config.retry_interval / 1000)
        while True:
            plan = await topology.apply(config.hosts)
            if set(plan.listed) <= set(topology.list_nodes()):
                # Every listed node is connected: nothing to do until one is lost (a node
                # that comes back dials us itself), but look again once in a while.
                schedule.reset()
                awake = await topology.sleep(IDLE_RECHECK, until_node_lost=True)
            else:
                awake = await topology.sleep(schedule.failed())
            if not awake:
                return
