"""Join soak: everyone starts at once, over and over, and the registry never wedges.

swarm's tracker wedged in its ``syncing`` state in 7 of 69 three-node, 8 of 20 five-node
and 8 of 10 eight-node simultaneous starts on this kind of machine, and even when it
worked became ready a fixed 5 s after the mesh formed. This benchmark repeats the
scenario many times per size: N ``pycluster run`` processes spawned at the same instant
(``epmd`` listing all of them), a name claimed on each node as soon as it listens (while
the mesh is still forming), then every process killed with SIGKILL, as when every pod of
a Deployment is restarted together; the next trial is their next life.

Per trial it records, from the moment the last node listened:

- ``mesh``: until every node's ``/status`` lists all the others (the baseline: the
  registry cannot be ready before the nodes are connected);
- ``registry``: until every node says its registry is synced and every node holds the
  same names, all N of them (asked through each node's ``$names`` mailbox by a hidden
  client node).

A trial whose registry is not ready within ``--wedge-after`` seconds counts as wedged (it
is then abandoned; the run goes on). Goal: no wedge in any trial, and registry ready
within 5 s of the last node listening (swarm's fixed delay alone is 5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import attrs
import lab

from pycluster import load_config
from pycluster.errors import NotConnected, RemoteError
from pycluster.node import Node

START_TIMEOUT = 60.0
POLL_INTERVAL = 0.02
GOAL_SECONDS = 5.0


@attrs.frozen
class Trial:
    """One simultaneous start: seconds after the last node listened."""

    mesh: float | None
    registry: float | None

    @property
    def wedged(self) -> bool:
        return self.registry is None


async def _view(client: Node, name: str) -> tuple[bool, list[str], dict[str, Any]] | None:
    try:
        if not await client.connect(name):
            return None
        status = await client.call(name, "$status", None, timeout=2)
        names = await client.call(name, "$names", ["registered"], timeout=2)
    except (NotConnected, RemoteError, TimeoutError, ConnectionError):
        return None
    return bool(status["registry"]["synced"]), list(status["nodes"]), dict(names)


async def _claim(client: Node, node: lab.LabNode, name: str) -> None:
    """Claim ``name`` on ``node`` as soon as it listens, retrying while it cannot."""
    request = ["spawn", name, "pycluster.demo:Counter", [], {}, 5.0]

    async def claimed() -> bool:
        try:
            if await client.connect(node.name):
                await client.call(node.name, "$names", request, timeout=6)
                return True
        except (NotConnected, TimeoutError, ConnectionError):
            pass
        except RemoteError as exc:
            # ClaimFailed while the arbiter's connection is still forming: claim again.
            if exc.type != "ClaimFailed":
                raise
        return False

    try:
        await lab.until(claimed, timeout=START_TIMEOUT, interval=POLL_INTERVAL, what=name)
    except lab.NotWithin:
        raise RuntimeError(f"{node.name}: could not claim {name!r}") from None


async def trial_once(
    client: Node, size: int, first_index: int, trial: int, wedge_after: float
) -> Trial:
    """Start ``size`` nodes at once, claim a name on each, wait until ready, kill all."""
    planned = lab.plan_nodes(size, first_index, f"soak{trial}-")
    names = [node.name for node in planned]
    claims = {f"claim-{i}" for i in range(size)}
    async with lab.node_lab(cookie=COOKIE) as node_lab:
        nodes = [
            lab.add_node(
                node_lab,
                node,
                lab.node_config(node, names, retry_interval_ms=500, net_tick_timeout=2.0),
            )
            for node in planned
        ]
        for node in nodes:
            node.spawn()
        claiming = asyncio.gather(
            *(_claim(client, node, f"claim-{i}") for i, node in enumerate(nodes))
        )
        try:
            await lab.wait_listening(nodes, START_TIMEOUT)
        except BaseException:
            claiming.cancel()
            await asyncio.gather(claiming, return_exceptions=True)
            raise
        listened = time.monotonic()
        mesh: float | None = None
        registry: float | None = None
        while time.monotonic() - listened < wedge_after:
            views = await asyncio.gather(*(_view(client, name) for name in names))
            now = time.monotonic() - listened
            if all(v is not None for v in views):
                full = all(len(v[1]) == size - 1 for v in views if v is not None)
                if full and mesh is None:
                    mesh = now
                first = views[0][2] if views[0] is not None else None
                if (
                    full
                    and first is not None
                    and set(first) == claims
                    and all(v is not None and v[0] and v[2] == first for v in views)
                ):
                    registry = now
                    break
            await asyncio.sleep(POLL_INTERVAL)
        if registry is not None:
            await claiming
        else:
            claiming.cancel()
        for node in nodes:  # every pod killed at once
            node.send_signal(signal.SIGKILL)
        await asyncio.gather(*(node_lab.wait_exit(node) for node in nodes))
    return Trial(mesh, registry)


COOKIE = "join-soak-bench-cookie"


async def main(sizes: Sequence[int], trials: int, first_index: int, wedge_after: float) -> None:
    """Run every size ``trials`` times, print the table and the goal."""
    print(f"join soak: {trials} simultaneous starts per size, SIGKILL of all after each")
    print(f"machine: {lab.machine()}")
    load = lab.OtherLoad()
    config = load_config({"node": {"name": "soak-client@127.0.0.1"}}, env={})
    results: dict[int, list[Trial]] = {}
    async with Node(config, cookie=COOKIE, hidden=True, handshake_timeout=2.0) as client:
        for size in sizes:
            results[size] = []
            for trial in range(trials):
                for attempt in range(3):
                    try:
                        result = await trial_once(client, size, first_index, trial, wedge_after)
                        break
                    except RuntimeError as exc:
                        # A port found free while planning was taken before the node bound
                        # it (an ephemeral port of another connection): plan again.
                        if "Address already in use" not in str(exc) or attempt == 2:
                            raise
                        print(
                            f"  {size} nodes, trial {trial + 1}: port taken, again", file=sys.stderr
                        )
                results[size].append(result)
                print(
                    f"  {size} nodes, trial {trial + 1}: mesh "
                    f"{'-' if result.mesh is None else lab.ms(result.mesh)}, registry "
                    f"{'WEDGED' if result.registry is None else lab.ms(result.registry)}",
                    file=sys.stderr,
                )
    rows = []
    worst = 0.0
    wedged = 0
    for size, measured in results.items():
        ready = [t.registry for t in measured if t.registry is not None]
        meshes = [t.mesh for t in measured if t.mesh is not None]
        wedged += sum(t.wedged for t in measured)
        worst = max([worst, *ready])
        rows.append(
            [
                size,
                len(measured),
                sum(t.wedged for t in measured),
                lab.ms(lab.median(meshes)) if meshes else "-",
                lab.ms(lab.median(ready)) if ready else "-",
                lab.ms(lab.percentile(ready, 0.99)) if ready else "-",
                lab.ms(max(ready)) if ready else "-",
                f"{lab.median(ready) / lab.median(meshes):.2f}" if ready and meshes else "-",
            ]
        )
    print()
    print(
        lab.table(
            [
                "nodes",
                "trials",
                "wedged",
                "mesh median (baseline)",
                "registry ready median",
                "registry p99",
                "registry max",
                "ready / mesh",
            ],
            rows,
        )
    )
    print()
    print("times from the last node's 'listening' log line; registry ready = every node")
    print("synced and holding the same N names (one claimed on each node at start-up)")
    print(lab.goal(f"no wedged trial ({wedged} wedged)", wedged == 0))
    print(
        lab.goal(
            f"registry ready within {GOAL_SECONDS:.0f} s of the last node listening, "
            f"every trial (worst: {lab.ms(worst)})",
            wedged == 0 and worst < GOAL_SECONDS,
        )
    )
    print(load.note())


def _arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 5, 8])
    parser.add_argument("--trials", type=int, default=50, help="per size (default 50)")
    parser.add_argument(
        "--first-index",
        type=int,
        default=161,
        help="nodes use 127.0.0.<first-index> and up (default 161)",
    )
    parser.add_argument(
        "--wedge-after",
        type=float,
        default=30.0,
        help="seconds after which a trial counts as wedged (default 30)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = _arguments()
    lab.run(main(arguments.sizes, arguments.trials, arguments.first_index, arguments.wedge_after))
