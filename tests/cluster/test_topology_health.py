"""Discovery trouble, seen from outside a real node: ``/status`` and ``/metrics``.

One ``pycluster run`` process polls a name on a lab dnsmasq with ``dns_poll``. The
nameserver is stopped before the node starts, so every lookup fails: the topology keeps
running, and its ``/status`` shows the problem, when it started and how many lookups in a
row have failed, while ``pycluster_topology_problem`` is 1. dnsmasq starts again: the
problem clears (null, 0 attempts) and the gauge goes back to 0.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from tests.lab import Lab, LabNode
from tests.lab.dnsmasq import Dnsmasq
from tests.lab.hosts import declare_node
from tests.lab.lab import HTTP_PORT

SERVICE = "app.lab.test"
TOPOLOGY = "dns"
POLLING_INTERVAL_MS = 200
LOOKUP_TIMEOUT_MS = 300
"""Short: a dead nameserver costs one timeout per attempt, and the test waits for three."""
WITHIN = 15.0
PROBLEM = f'pycluster_topology_problem{{topology="{TOPOLOGY}"}}'
FAILED_ATTEMPTS = f'pycluster_topology_failed_attempts_total{{topology="{TOPOLOGY}"}}'
RUNNING = f'pycluster_topology_state{{state="running",topology="{TOPOLOGY}"}}'


def declare_dns_node(lab: Lab, dns: Dnsmasq) -> LabNode:
    address = lab.address()
    config = {
        "node": {"name": f"app@{address}", "http": {"port": HTTP_PORT}},
        "topologies": {
            TOPOLOGY: {
                "strategy": "dns_poll",
                "config": {
                    "query": SERVICE,
                    "node_basename": "app",
                    "polling_interval": POLLING_INTERVAL_MS,
                    "nameservers": [dns.address],
                    "port": dns.port,
                    "timeout": LOOKUP_TIMEOUT_MS,
                },
            }
        },
    }
    return declare_node(lab, config, address=address)


async def test_a_dead_nameserver_shows_in_status_and_metrics_until_it_answers(
    lab: Lab, tmp_path: Path
) -> None:
    async with Dnsmasq.open(tmp_path / "dnsmasq") as dns:
        node = declare_dns_node(lab, dns)
        await dns.set_hosts({SERVICE: [node.address]})
        await dns.stop()
        await lab.start([node])

        async def topology() -> dict[str, Any]:
            status = await lab.status(node)
            health: dict[str, Any] = status["topologies"][TOPOLOGY]
            return health

        seen: list[dict[str, Any]] = []

        async def failing(attempts: int) -> bool:
            seen.append(await topology())
            return seen[-1]["problem"] is not None and seen[-1]["failed_attempts"] >= attempts

        await lab.until(lambda: failing(1), timeout=WITHIN, what="the problem in /status")
        first = seen[-1]
        await lab.until(lambda: failing(3), timeout=WITHIN, what="three failed lookups")
        later = seen[-1]
        printed = await lab.cli("status", "--node", node.name)
        assert printed.returncode == 0
        assert f"topology {TOPOLOGY}: dns_poll running" in printed.stdout
        assert f"  problem since {later['problem_since']}, " in printed.stdout
        # One problem that lasts: the same text and start, more attempts.
        assert later["problem"] == first["problem"]
        assert later["problem_since"] == first["problem_since"]
        assert later["failed_attempts"] > first["failed_attempts"]
        since = datetime.datetime.fromisoformat(later["problem_since"])
        assert since.tzinfo is not None
        assert (later["state"], later["crashes"], later["last_error"]) == ("running", 0, None)
        # Attempts counted one by one, never jumping back while the problem lasts.
        counts = [entry["failed_attempts"] for entry in seen]
        assert counts == sorted(counts)
        metrics = await lab.metrics(node)
        assert metrics[PROBLEM] == 1
        assert metrics[FAILED_ATTEMPTS] >= later["failed_attempts"]
        assert metrics[RUNNING] == 1

        await dns.start()

        async def recovered() -> bool:
            return (await topology())["problem"] is None

        await lab.until(recovered, timeout=WITHIN, what="the problem cleared in /status")
        health = await topology()
        assert (health["problem"], health["problem_since"], health["failed_attempts"]) == (
            None,
            None,
            0,
        )
        assert health["state"] == "running"
        metrics = await lab.metrics(node)
        assert metrics[PROBLEM] == 0
        assert metrics[RUNNING] == 1
        await lab.stop([node])
        assert node.exit_code == 0
