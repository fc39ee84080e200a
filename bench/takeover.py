"""Takeover soak: a frozen node's names taken over, and partitions claimed on both sides.

The scenarios are the test lab's (``tests/lab/takeover.py``), which
``tests/cluster/test_takeover.py`` runs 5 times per CI run; here each runs ``--trials``
times (100 by default), every trial on a fresh cluster of 3 ``pycluster run`` processes
(``127.0.0.181`` and up, ``net_tick_timeout`` 1 s, ``epmd`` retrying every 500 ms),
driven by a hidden client node in this process through the nodes' ``$names`` mailbox:

- ``frozen``: the first node holds a Counter and is frozen (``SIGSTOP``) until the others
  report it down; the second spawns the name again and 5 increments are acknowledged;
  the node is thawed (``SIGCONT``). A name only the frozen node held (2 increments
  acknowledged before the freeze) must come back with it.
- ``frozen-ring``: the same with a ring-placed Counter the frozen node owns: its heir
  restarts it and takes the 5 increments; once thawed, the node owns it again.
- ``partition``: ``{a} | {b, c}`` cut with iptables (root); each side spawns the same new
  name; names held since before the split (one on each side) get 5 acknowledged
  increments through their own side; healed.

Per trial, once the cluster *settled* (every node lists the other two and is synced,
routes every watched name to the same actor, and exactly one actor runs under each,
on its holder; a ring actor on its ring owner; read from the nodes, never guessed):

- acknowledged writes lost: increments acknowledged during the fault that the surviving
  Counter no longer shows, through the node that shows the fewest;
- names held twice: a watched name with two actors running, or routed to two actors;
- time from the thaw or the heal until settled (polled every 10 ms: an upper bound).

A trial that does not settle within 20 s counts as not settled (its names are judged as
they were then); one whose set-up fails (say, the takeover's spawn refused) as aborted,
and the run goes on. Goal: in every trial, nothing lost and nothing held twice.

Run: ``.venv/bin/python bench/takeover.py [--trials 100] [--scenarios ...]`` as root
(``partition`` needs iptables; without it that scenario is skipped, saying why).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys
from collections.abc import Sequence

import attrs
import lab

from pycluster import load_config
from pycluster.errors import NotConnected, RemoteError
from pycluster.node import Node
from tests.cluster.registry_client import RegistryClient
from tests.lab import firewall_available
from tests.lab.takeover import (
    SPLIT,
    Frozen,
    Placement,
    Precondition,
    Split,
    frozen_takeover,
    split_claims,
)

NODES = 3
TICK_TIMEOUT = 1.0
RETRY_MS = 500
START_TIMEOUT = 30.0
MESH_TIMEOUT = 15.0
COOKIE = "takeover-soak-bench-cookie"
SCENARIOS = ("frozen", "frozen-ring", "partition")


@attrs.frozen
class Trial:
    """One trial: its outcome, or why it was abandoned."""

    outcome: Frozen | Split | None
    aborted: str | None = None


async def _cluster(node_lab: lab.Lab, first_index: int, prefix: str) -> list[lab.LabNode]:
    """Three fresh node processes, listening and meshed."""
    planned = lab.plan_nodes(NODES, first_index, prefix)
    names = [node.name for node in planned]
    nodes = [
        lab.add_node(
            node_lab,
            node,
            lab.node_config(node, names, retry_interval_ms=RETRY_MS, net_tick_timeout=TICK_TIMEOUT),
        )
        for node in planned
    ]
    for node in nodes:
        node.spawn()
    await lab.wait_listening(nodes, START_TIMEOUT)
    await node_lab.wait_mesh(nodes, timeout=MESH_TIMEOUT)
    return nodes


async def trial_once(client: RegistryClient, scenario: str, trial: int, first_index: int) -> Trial:
    """One trial of ``scenario`` on a fresh cluster, killed afterwards."""
    async with lab.node_lab(cookie=COOKIE) as node_lab:
        for attempt in range(3):
            try:
                nodes = await _cluster(node_lab, first_index, f"tk{trial}-{attempt}-")
                break
            except lab.NotWithin as exc:
                return Trial(None, f"the cluster did not form: {exc}")
            except RuntimeError as exc:
                # A port found free while planning was taken before the node bound it
                # (an ephemeral port of another connection): plan again.
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
                for node in node_lab.nodes:
                    node.send_signal(signal.SIGKILL)
                await asyncio.gather(*(node_lab.wait_exit(n) for n in node_lab.nodes))
                node_lab.retire(node_lab.nodes)
        try:
            outcome: Frozen | Split
            if scenario == "partition":
                outcome = await split_claims(node_lab, client, nodes)
            else:
                placement: Placement = "ring" if scenario == "frozen-ring" else "here"
                outcome = await frozen_takeover(node_lab, client, nodes, placement=placement)
        except (Precondition, RemoteError, NotConnected, TimeoutError, ConnectionError) as exc:
            return Trial(None, f"{type(exc).__name__}: {exc}")
        finally:
            for node in nodes:  # SIGKILL ends a stopped process too
                node.send_signal(signal.SIGKILL)
            await asyncio.gather(*(node_lab.wait_exit(node) for node in nodes))
    return Trial(outcome)


def _progress(scenario: str, trial: int, result: Trial) -> str:
    head = f"  {scenario}, trial {trial + 1}: "
    if result.outcome is None:
        return head + f"ABORTED ({result.aborted})"
    outcome = result.outcome
    settled = outcome.settled_after
    line = head + ("NOT SETTLED" if settled is None else f"settled in {lab.ms(settled)}")
    line += f", {outcome.lost} writes lost, {outcome.held_twice} names held twice"
    if isinstance(outcome, Split):
        survivor = outcome.fates[SPLIT].holder
        side = "{a}" if survivor == outcome.claims[0] else "{b, c}"
        line += f", the claim on {side} survived"
    return line


def _row(scenario: str, trials: Sequence[Trial]) -> list[object]:
    outcomes = [t.outcome for t in trials if t.outcome is not None]
    settle = [o.settled_after for o in outcomes if o.settled_after is not None]
    return [
        scenario,
        len(trials),
        sum(t.outcome is None for t in trials),
        sum(o.settled_after is None for o in outcomes),
        sum(o.lost for o in outcomes),
        sum(o.lost > 0 for o in outcomes),
        sum(o.held_twice for o in outcomes),
        lab.ms(lab.median(settle)) if settle else "-",
        lab.ms(lab.percentile(settle, 0.99)) if settle else "-",
        lab.ms(max(settle)) if settle else "-",
    ]


async def main(scenarios: Sequence[str], trials: int, first_index: int) -> None:
    """Run each scenario ``trials`` times; print the table and the goals."""
    cannot_cut = firewall_available()
    if cannot_cut is not None and "partition" in scenarios:
        print(f"partition scenario skipped: {cannot_cut}", file=sys.stderr)
        scenarios = [s for s in scenarios if s != "partition"]
    print(f"takeover soak: {trials} trials per scenario, {NODES} fresh nodes per trial")
    print(f"machine: {lab.machine()}")
    load = lab.OtherLoad()
    config = load_config({"node": {"name": "takeover-client@127.0.0.1"}}, env={})
    results: dict[str, list[Trial]] = collections.defaultdict(list)
    async with Node(config, cookie=COOKIE, hidden=True, handshake_timeout=2.0) as node:
        client = RegistryClient(node)
        for scenario in scenarios:
            for trial in range(trials):
                result = await trial_once(client, scenario, trial, first_index)
                results[scenario].append(result)
                print(_progress(scenario, trial, result), file=sys.stderr)
    headers = [
        "scenario",
        "trials",
        "aborted",
        "not settled",
        "acknowledged writes lost",
        "trials losing writes",
        "names held twice after settle",
        "settle median",
        "settle p99",
        "settle max",
    ]
    print()
    print(lab.table(headers, [_row(s, results[s]) for s in scenarios]))
    print()
    print("settle: from SIGCONT (frozen) or the heal (partition) until every node agrees on")
    print("one running actor per watched name; 5 increments acknowledged during each fault")
    everything = [t for s in scenarios for t in results[s]]
    outcomes = [t.outcome for t in everything if t.outcome is not None]
    lost = sum(o.lost for o in outcomes)
    twice = sum(o.held_twice for o in outcomes)
    unsettled = sum(o.settled_after is None for o in outcomes)
    aborted = len(everything) - len(outcomes)
    print(lab.goal(f"zero acknowledged writes lost ({lost} lost)", lost == 0 and not aborted))
    print(lab.goal(f"zero names held twice after settle ({twice})", twice == 0 and not aborted))
    print(
        lab.goal(
            f"every trial settled ({unsettled} not settled, {aborted} aborted)",
            unsettled == 0 and aborted == 0,
        )
    )
    print(load.note())


def _arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100, help="per scenario (default 100)")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=SCENARIOS,
        default=list(SCENARIOS),
        help="which scenarios to run (default: all)",
    )
    parser.add_argument(
        "--first-index",
        type=int,
        default=181,
        help="nodes use 127.0.0.<first-index> and up (default 181)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = _arguments()
    lab.run(main(arguments.scenarios, arguments.trials, arguments.first_index))
