"""``epmd``: a static list of nodes, connected and kept connected."""

from __future__ import annotations

import attrs

from pycluster.config import checks, setting
from pycluster.strategy import Strategy, Topology

FIRST_RETRY = 0.2


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
        doc="Longest wait, in ms, between attempts to reach listed nodes that are not "
        "connected; the first retries come sooner.",
        expect="a positive number of ms",
        check=checks.positive,
    )


class Epmd(Strategy):
    """Connects a fixed list of nodes and reconnects them when they come back.

    Unreachable nodes are retried with a backoff that starts at 0.2 s (so nodes started
    together find each other quickly) and doubles up to ``retry_interval``.
    """

    name = "epmd"
    Config = EpmdConfig

    async def run(self, topology: Topology) -> None:
        config: EpmdConfig = topology.config
        longest = config.retry_interval / 1000
        delay = min(FIRST_RETRY, longest)
        while True:
            plan = await topology.apply(config.hosts)
            missing = set(plan.listed) - set(topology.list_nodes())
            delay = min(delay * 2, longest) if missing else longest
            if not await topology.sleep(delay):
                return
