"""``epmd``: a static list of nodes, connected and kept connected."""

from __future__ import annotations

import attrs

from pycluster import PollSchedule, Strategy, Topology, checks, poll, setting


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
    (:class:`~pycluster.PollSchedule`).
    """

    name = "epmd"
    Config = EpmdConfig

    async def run(self, topology: Topology) -> None:
        config: EpmdConfig = topology.config

        async def attempt() -> bool:
            plan = await topology.apply(config.hosts)
            return set(plan.listed) <= set(topology.list_nodes())

        await poll(topology, attempt, PollSchedule(config.retry_interval / 1000))
