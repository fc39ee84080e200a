"""Scale on one machine: N node processes in a full mesh, 100,000 names, 5 killed at once.

Each node is ``python -m pycluster run`` on its own loopback address (``127.0.0.101`` and
up) with the ``epmd`` strategy listing all N nodes (``retry_interval`` 500 ms),
``node.http.port`` set, pycluster's default ``net_tick_timeout`` (3 s; ``--net-tick-timeout``
changes it) and ``bench/scale_app.py`` as its app. Per run, on one wall clock:

- start-up (the baseline): from spawning the first process until the last node's
  "listening" log record; all N are spawned at once, as in ``formation.py``.
- formation: from that last "listening" record until every node's ``/status`` lists all
  N - 1 others (polled every 20 ms, only the nodes not yet complete); "by node logs" dates
  the same moment by the nodes' own "node up" records (no polling delay).
- RSS per node: ``VmRSS`` of each node process (``/proc/PID/status``) once meshed, and
  again after the names.
- names: a hidden client in this process (not a member; its own ``net_tick_timeout`` is
  60 s, so that it waits for busy nodes instead of dropping them) calls every node's
  ``scale_register`` mailbox at once (``--paced``: one node after the other); each node
  starts its share of ``--names`` actors and registers them (``register_many``, 1,000
  names per call), as an application would. Calls answered: until the last call was
  answered or failed; converged: until, in one polling round (every 100 ms), every node's
  ``/status`` reports exactly ``--names`` names. The "node down" records logged meanwhile
  are counted (a node busy longer than ``net_tick_timeout`` is dropped by its peers, and
  drops them); if calls failed, the names every node agrees on are shown instead.
  The mesh must then be whole again (else the rest of the run is skipped).
- idle CPU per node: ``utime + stime`` of each node (``/proc/PID/stat``) over ``--idle``
  seconds with the names held and nothing asked of the nodes, as a share of one CPU.
- kill -9: ``--victims`` nodes (spread over the cluster) get ``SIGKILL`` in one loop;
  detected when every survivor's ``/status`` no longer lists any of them (20 ms polls),
  and by the survivors' own "node down" records; then (if the names had converged) until
  every survivor reports the names of the dead gone.

- storm (``--storm N``; none by default): after the kill, ``N`` of the remaining nodes
  (the first ones) get ``SIGSTOP`` for ``--storm-hold`` seconds (5), past the tick
  timeout, then ``SIGCONT``: their peers dropped them, they dropped their peers, and all
  reconnect at once, each connection with its snapshots. Healed: from ``SIGCONT`` until
  every remaining node's ``/status`` lists all the others (polled every 0.5 s, lightly,
  as the machine is busy then), within ``--heal-wait`` seconds (240); and the "node down"
  records logged meanwhile.

At the end of each run the remaining nodes are killed (``SIGKILL``): a graceful leave of
all of them at once is not measured here. Progress goes to stderr; the tables (each cell:
median and range over the runs) and the goals to stdout. Run:

    .venv/bin/python bench/scale.py [--sizes 50] [--runs 5] [--names 100000]   # ~8 min
    .venv/bin/python bench/scale.py --sizes 10 25 50 75 100 --runs 2 --names 0
    .venv/bin/python bench/scale.py --paced --idle 0 --victims 0 --storm 15   # ~4 min a run
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import lab
from idle import cpu_seconds
from scale_app import MAILBOX

from pycluster import load_config
from pycluster.node import Node

HERE = Path(__file__).resolve().parent
POLL_INTERVAL = 0.02
NAMES_POLL_INTERVAL = 0.1
HEAL_POLL_INTERVAL = 0.5
FORM_TIMEOUT = 60.0
NAMES_TIMEOUT = 300.0
DETECT_TIMEOUT = 30.0
BATCH = 1000
GOAL_NODES = 50
GOAL_SECONDS = 1.0
MIB = 2**20
CLIENT_TICKS = 60.0
"""The hidden client's net_tick_timeout: it waits for busy nodes rather than drop them."""


@attrs.frozen
class Registration:
    """Seconds from the registration calls until the last was answered, and until every
    node reported every name (None: not within the timeout); calls left unanswered."""

    registered: float
    converged: float | None
    lost_calls: int
    held: int | None
    """The names every node reported once they agreed (None: they did not agree)."""


@attrs.frozen
class Trial:
    """One run at one size; seconds, bytes and CPU shares (None: not measured)."""

    startup: float
    formed: float | None
    """None: no full mesh within FORM_TIMEOUT (the rest of the run is then skipped)."""
    formed_by_logs: float | None
    rss_meshed: tuple[int, ...]
    rss_names: tuple[int, ...] | None
    registration: Registration | None
    downs_during_names: int | None
    """"node down" records the nodes logged while the names were registered and spread
    (none expected: every node is alive)."""
    idle_cpu: tuple[float, ...] | None
    detected: float | None
    detected_by_logs: float | None
    names_dropped: float | None
    healed: float | None = None
    """Seconds from SIGCONT until the mesh was whole again (None: not within the wait)."""
    storm_downs: int | None = None
    """"node down" records logged from the SIGSTOP on (None: no storm in this run)."""


async def trial(count: int, args: argparse.Namespace) -> Trial:
    """Start ``count`` nodes, measure everything, stop them."""
    planned = lab.plan_nodes(count, args.first_address, "s")
    names = [node.name for node in planned]
    everyone = set(names)
    async with lab.node_lab() as node_lab, lab.StatusPoller() as poller:
        nodes = []
        for plan in planned:
            config = lab.node_config(
                plan,
                names,
                retry_interval_ms=args.retry_interval,
                net_tick_timeout=args.net_tick_timeout,
            )
            node = lab.add_node(node_lab, plan, config)
            node.extra_args = ("--app", "scale_app:serve", "--app-dir", str(HERE))
            nodes.append(node)
        try:
            spawned = time.time()
            for node in nodes:
                node.spawn()
            last_listening = await lab.wait_listening(nodes, 30.0 + count)
            startup = last_listening - spawned
            try:
                seen = await poller.until(
                    nodes,
                    lambda node, peers: peers == everyone - {node.name},
                    interval=POLL_INTERVAL,
                    timeout=FORM_TIMEOUT,
                )
            except lab.NotWithin as exc:
                print(f"  no full mesh in {FORM_TIMEOUT:g} s: {exc}", file=sys.stderr)
                await _why_not_meshed(poller, nodes, everyone)
                rss = tuple(node.rss_bytes() for node in nodes)
                return Trial(startup, None, None, rss, None, None, None, None, None, None, None)
            formed = max(seen.values())
            by_logs = await lab.formed_by_logs(nodes, {n: everyone - {n} for n in names}, 10.0)
            rss_meshed = tuple(node.rss_bytes() for node in nodes)
            registration = None
            rss_names = None
            downs = None
            if args.names:
                mark = time.time()
                registration = await _register(node_lab, poller, nodes, args)
                rss_names = tuple(node.rss_bytes() for node in nodes)
                downs = _downs_since(nodes, mark)
                # Nodes that dropped each other meanwhile must have met again.
                try:
                    await poller.until(
                        nodes,
                        lambda node, peers: peers == everyone - {node.name},
                        interval=POLL_INTERVAL,
                        timeout=FORM_TIMEOUT,
                    )
                    healed = True
                except lab.NotWithin as exc:
                    print(f"  the mesh did not heal after the names: {exc}", file=sys.stderr)
                    await _why_not_meshed(poller, nodes, everyone)
                    healed = False
            else:
                healed = True
            idle_cpu = await _idle_cpu(nodes, args.idle) if args.idle > 0 and healed else None
            detected = detected_by_logs = dropped = None
            alive = list(nodes)
            if args.victims and healed:
                converged = registration is not None and registration.converged is not None
                detected, detected_by_logs, dropped = await _kill(poller, nodes, args, converged)
                alive = [node for node in nodes if node.running]
            storm: tuple[float | None, int] | None = None
            if args.storm and healed:
                storm = await _storm(poller, alive, args)
            return Trial(
                startup=startup,
                formed=formed - last_listening,
                formed_by_logs=by_logs - last_listening,
                rss_meshed=rss_meshed,
                rss_names=rss_names,
                registration=registration,
                downs_during_names=downs,
                idle_cpu=idle_cpu,
                detected=detected,
                detected_by_logs=detected_by_logs,
                names_dropped=dropped,
                healed=None if storm is None else storm[0],
                storm_downs=None if storm is None else storm[1],
            )
        finally:
            await _kill_all(node_lab, nodes)


async def _storm(
    poller: lab.StatusPoller, nodes: Sequence[lab.LabNode], args: argparse.Namespace
) -> tuple[float | None, int]:
    """SIGSTOP of ``args.storm`` nodes for ``args.storm_hold`` s, then SIGCONT: seconds until
    the mesh is whole again (None: not within ``args.heal_wait``), and the node downs."""
    everyone = {node.name for node in nodes}
    mark = time.time()
    stopped = nodes[: args.storm]
    for node in stopped:
        os.kill(node.pid, signal.SIGSTOP)
    await asyncio.sleep(args.storm_hold)
    for node in stopped:
        os.kill(node.pid, signal.SIGCONT)
    resumed = time.time()
    try:
        await poller.until(
            nodes,
            lambda node, peers: peers == everyone - {node.name},
            interval=HEAL_POLL_INTERVAL,
            timeout=args.heal_wait,
        )
        healed: float | None = time.time() - resumed
    except lab.NotWithin as exc:
        print(f"  the mesh did not heal after the storm: {exc}", file=sys.stderr)
        await _why_not_meshed(poller, nodes, everyone)
        healed = None
    return healed, _downs_since(nodes, mark, "after the SIGSTOP")


async def _why_not_meshed(
    poller: lab.StatusPoller, nodes: Sequence[lab.LabNode], everyone: set[str]
) -> None:
    """Print what each incomplete node lists and what its log says of its peers."""
    answers = await asyncio.gather(*(poller.peers(node) for node in nodes))
    for node, peers in zip(nodes, answers, strict=True):
        if peers is None:
            print(f"    {node.name}: no answer", file=sys.stderr)
        elif peers != everyone - {node.name}:
            missing = sorted(everyone - {node.name} - peers)
            downs = [e for e in node.events() if e.kind == "down"]
            print(
                f"    {node.name}: {len(peers)} peers, missing {missing[:3]}"
                f"{' ...' if len(missing) > 3 else ''}; {len(downs)} node downs logged, "
                f"last: {downs[-1].reason if downs else '-'}",
                file=sys.stderr,
            )


async def _kill_all(node_lab: lab.Lab, nodes: Sequence[lab.LabNode]) -> None:
    """kill -9 every node still running: a graceful leave of all of them at once, busy
    with their names, can outlast the lab's patience, and it is not what is measured."""
    for node in nodes:
        node.send_signal(signal.SIGKILL)
    for node in nodes:
        if node.process is not None:
            await node_lab.wait_exit(node)


def _downs_since(nodes: Sequence[lab.LabNode], mark: float, when: str = "while registering") -> int:
    """The "node down" records all ``nodes`` logged since ``mark``, printing their reasons."""
    downs = [
        (node.name, event)
        for node in nodes
        for event in node.events()
        if event.kind == "down" and event.at >= mark
    ]
    reasons = collections.Counter((event.reason or "").split(" (")[0] for _, event in downs)
    if downs:
        print(f"  {len(downs)} node downs {when}: {dict(reasons)}", file=sys.stderr)
    return len(downs)


def shares(total: int, count: int) -> list[tuple[int, int]]:
    """``total`` names split over ``count`` nodes: (first index, how many) for each."""
    base, extra = divmod(total, count)
    result = []
    first = 0
    for i in range(count):
        size = base + (1 if i < extra else 0)
        result.append((first, size))
        first += size
    return result


def _names(status: dict[str, Any] | None) -> int | None:
    return None if status is None else int(status["registry"]["names"])


async def _register(
    node_lab: lab.Lab,
    poller: lab.StatusPoller,
    nodes: Sequence[lab.LabNode],
    args: argparse.Namespace,
) -> Registration:
    """Have every node register its share of the names, all at once; then wait until
    every node reports them all in the same polling round."""
    config = load_config(
        {"node": {"name": f"scale-{os.getpid()}@localhost", "net_tick_timeout": CLIENT_TICKS}},
        env={},
    )
    async with Node(config, cookie=node_lab.cookie, hidden=True) as client:
        for node in nodes:
            failure = await client.transport.dial(node.name)
            if failure is not None:
                raise RuntimeError(f"the hidden client could not reach {node.name}: {failure}")
        calls = [
            client.call(node.name, MAILBOX, [first, size, args.batch], timeout=NAMES_TIMEOUT)
            for node, (first, size) in zip(nodes, shares(args.names, len(nodes)), strict=True)
        ]
        started = time.time()
        answers: list[int | BaseException] = []
        if args.paced:
            for call in calls:
                try:
                    answers.append(await call)
                except Exception as exc:
                    answers.append(exc)
        else:
            answers = await asyncio.gather(*calls, return_exceptions=True)
        registered = time.time() - started
    lost = [answer for answer in answers if isinstance(answer, BaseException)]
    for answer in lost:
        if not isinstance(answer, Exception):
            raise answer  # a cancellation
    if lost:
        print(f"  {len(lost)} registration calls got no answer: {lost[0]!r}", file=sys.stderr)
    taken = sum(answer for answer in answers if isinstance(answer, int))
    if taken:
        raise RuntimeError(f"{taken} names were already taken")
    if lost:  # fewer names than asked for: wait only for the nodes to agree on them
        agreed = await _agree(poller, nodes, NAMES_TIMEOUT)
        print(f"  the nodes agree on {agreed} names", file=sys.stderr)
        return Registration(registered, None, len(lost), agreed)
    converged = await _all_report(poller, nodes, args.names, started, NAMES_TIMEOUT)
    return Registration(
        registered, converged, len(lost), args.names if converged is not None else None
    )


async def _agree(
    poller: lab.StatusPoller, nodes: Sequence[lab.LabNode], timeout: float
) -> int | None:
    """The name count every node reports in two polling rounds running (None: none
    within ``timeout``)."""
    rounds: list[set[int | None]] = []

    async def agreed() -> bool:
        answers = await asyncio.gather(*(poller.status(node) for node in nodes))
        rounds.append({_names(status) for status in answers})
        return len(rounds) >= 2 and len(rounds[-1]) == 1 and rounds[-1] == rounds[-2]

    try:
        await lab.until(agreed, timeout=timeout, interval=1.0, what="the nodes agree")
    except lab.NotWithin:
        return None
    return next(iter(rounds[-1]))


async def _all_report(
    poller: lab.StatusPoller,
    nodes: Sequence[lab.LabNode],
    count: int,
    since: float,
    timeout: float,
    interval: float = NAMES_POLL_INTERVAL,
) -> float | None:
    """Seconds from ``since`` until, in one polling round, every node's ``/status``
    reports exactly ``count`` names; None (and the counts printed) if not in ``timeout``."""
    counts: list[int | None] = []
    at = 0.0

    async def reported() -> bool:
        nonlocal at
        answers = await asyncio.gather(*(poller.status(node) for node in nodes))
        at = time.time()
        counts[:] = [_names(status) for status in answers]
        return all(found == count for found in counts)

    try:
        await lab.until(reported, timeout=timeout, interval=interval, what=f"{count} names")
    except lab.NotWithin:
        print(f"  not every node reports {count} names: {counts}", file=sys.stderr)
        return None
    return at - since


async def _idle_cpu(nodes: Sequence[lab.LabNode], window: float) -> tuple[float, ...]:
    """Each node's CPU over ``window`` seconds left alone, as a share of one CPU."""
    before = [cpu_seconds(node.pid) for node in nodes]
    started = time.monotonic()
    await asyncio.sleep(window)  # the measurement window itself, not a wait for anything
    elapsed = time.monotonic() - started
    after = [cpu_seconds(node.pid) for node in nodes]
    return tuple((b - a) / elapsed for a, b in zip(before, after, strict=True))


async def _kill(
    poller: lab.StatusPoller,
    nodes: Sequence[lab.LabNode],
    args: argparse.Namespace,
    converged: bool,
) -> tuple[float, float, float | None]:
    """kill -9 of ``args.victims`` nodes at once: seconds until every survivor's /status
    dropped them all, until its logs did, and (if every node held all the names) until it
    reports their names gone."""
    step = len(nodes) // args.victims
    victims = [nodes[1 + i * step] for i in range(args.victims)]
    survivors = [node for node in nodes if node not in victims]
    alive = {node.name for node in survivors}
    killed = time.time()
    for victim in victims:
        os.kill(victim.pid, signal.SIGKILL)
    seen = await poller.until(
        survivors,
        lambda node, peers: peers == alive - {node.name},
        interval=POLL_INTERVAL,
        timeout=DETECT_TIMEOUT,
    )
    downs: list[tuple[float, str] | None] = []

    def logged() -> bool:
        downs[:] = [
            lab.down_at(node, victim.name, killed - 0.002)
            for node in survivors
            for victim in victims
        ]
        return all(down is not None for down in downs)

    try:
        await lab.until(logged, timeout=10.0, interval=0.05, what="every survivor logs its downs")
    except lab.NotWithin:
        raise RuntimeError("/status dropped the victims but a log has no node down") from None
    by_logs = max(down[0] for down in downs if down is not None) - killed
    dropped = None
    if converged:
        dead_names = sum(
            size
            for node, (_, size) in zip(nodes, shares(args.names, len(nodes)), strict=True)
            if node in victims
        )
        dropped = await _all_report(
            poller, survivors, args.names - dead_names, killed, DETECT_TIMEOUT, POLL_INTERVAL
        )
    return max(seen.values()) - killed, by_logs, dropped


# -- printing -----------------------------------------------------------------------------


def seconds(value: float) -> str:
    return f"{value:.2f} s"


def mib(value: float) -> str:
    return f"{value / MIB:.0f} MiB"


def percent(value: float) -> str:
    return f"{value:.1%}"


def _failed(values: Sequence[float | None]) -> str:
    """``, N runs never`` when some of ``values`` are None."""
    missing = sum(value is None for value in values)
    return f", {missing} runs never" if missing else ""


def _present(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _rss(trials: Sequence[Trial], field: str) -> tuple[list[float], list[float]]:
    """Per run: the median and the largest RSS of a node."""
    medians: list[float] = []
    largest: list[float] = []
    for result in trials:
        rss: tuple[int, ...] | None = getattr(result, field)
        if rss is not None:
            medians.append(lab.median(rss))
            largest.append(max(rss))
    return medians, largest


def report(results: dict[int, list[Trial]], args: argparse.Namespace) -> None:
    """The tables and the goals."""
    formation_rows = []
    names_rows = []
    for count, trials in results.items():
        meshed_median, meshed_max = _rss(trials, "rss_meshed")
        names_median, names_max = _rss(trials, "rss_names")
        cpu_median = [lab.median(t.idle_cpu) for t in trials if t.idle_cpu]
        cpu_max = [max(t.idle_cpu) for t in trials if t.idle_cpu]
        formation_rows.append(
            [
                count,
                count - 1,
                lab.spread([t.startup for t in trials], lab.ms),
                lab.spread(_present([t.formed for t in trials]), lab.ms)
                + _failed([t.formed for t in trials]),
                lab.spread(_present([t.formed_by_logs for t in trials]), lab.ms),
                lab.spread(meshed_median, mib) + ", max " + mib(max(meshed_max)),
                lab.spread(cpu_median, percent)
                + (", max " + percent(max(cpu_max)) if cpu_max else ""),
            ]
        )
        regs = [t.registration for t in trials if t.registration is not None]
        names_rows.append(
            [
                count,
                lab.spread([r.registered for r in regs], seconds),
                lab.spread(_present([r.converged for r in regs]), seconds),
                f"{sum(r.converged is not None for r in regs)}/{len(regs)}",
                lab.spread([r.lost_calls for r in regs], "{:g}".format),
                lab.spread(_present([r.held for r in regs]), "{:,.0f}".format),
                lab.spread(_present([t.downs_during_names for t in trials]), "{:g}".format),
                lab.spread(names_median, mib)
                + (", max " + mib(max(names_max)) if names_max else ""),
                lab.spread(_present([t.detected for t in trials]), lab.ms),
                lab.spread(_present([t.detected_by_logs for t in trials]), lab.ms),
                lab.spread(_present([t.names_dropped for t in trials]), lab.ms),
            ]
        )
    print()
    print(
        lab.table(
            [
                "nodes",
                "connections per node",
                "start-up (baseline)",
                "formation",
                "formation by node logs",
                "RSS per node, meshed (median)",
                f"idle CPU per node ({args.idle:g} s, share of a CPU)",
            ],
            formation_rows,
        )
    )
    headers = [
        "nodes",
        f"{args.names:,} names: calls answered",
        "converged on every node",
        "runs converged",
        "calls unanswered",
        "names every node holds",
        "node downs meanwhile",
        "RSS per node with the names (median)",
        f"kill -9 of {args.victims}: detected by all",
        "by node logs",
        "their names dropped",
    ]
    print()
    print(
        lab.table(
            headers if args.names else [headers[0], *headers[-3:-1]],
            names_rows if args.names else [[row[0], *row[-3:-1]] for row in names_rows],
        )
    )
    print()
    print("each cell: median (min-max) over the runs; RSS: per run, the median node (and the")
    print("largest node of any run); idle CPU: per run, the median node (and the busiest)")
    print("start-up: spawn of the first process -> the last node's 'listening' log line")
    print("formation: that line -> every node's /status lists all others (20 ms polls)")
    print("calls answered / converged: the registration calls -> the last was answered (or")
    print("  failed) / every node's /status reports all the names (100 ms polls); names every")
    print("  node holds: what the nodes agreed on when calls failed")
    print(f"kill -9: SIGKILL of {args.victims} nodes -> no survivor lists any in /status")
    print("  (20 ms polls); by node logs: the survivors' 'node down' records;")
    print("  names dropped: every survivor reports the names of the dead gone")
    if args.storm:
        for count, trials in results.items():
            storms = [t for t in trials if t.storm_downs is not None]
            if storms:
                healed = _present([t.healed for t in storms])
                print(
                    f"storm at {count} nodes ({args.storm} stopped for {args.storm_hold:g} s): "
                    f"healed in {len(healed)} of {len(storms)} runs"
                    + (f", {lab.spread(healed, seconds)} after SIGCONT" if healed else "")
                    + f" (wait {args.heal_wait:g} s); node downs "
                    + lab.spread([float(t.storm_downs or 0) for t in storms], "{:,.0f}".format)
                )
    at_goal = results.get(GOAL_NODES)
    if at_goal:
        formed = _present([t.formed for t in at_goal])
        worst_formed = lab.ms(max(formed)) if formed else "never"
        print(
            lab.goal(
                f"{GOAL_NODES} nodes fully meshed within {GOAL_SECONDS:.0f} s of the last one "
                f"listening, in every run of {len(at_goal)} (worst: {worst_formed})",
                len(formed) == len(at_goal) and max(formed) < GOAL_SECONDS,
            )
        )
        if args.names:
            converged = _present(
                [t.registration.converged for t in at_goal if t.registration is not None]
            )
            worst_names = seconds(max(converged)) if converged else "never"
            print(
                lab.goal(
                    f"a registry of {args.names:,} names converges on all {GOAL_NODES}, in "
                    f"every run (worst: {worst_names})",
                    len(converged) == len(at_goal),
                )
            )
        if args.victims:
            detected = _present([t.detected for t in at_goal])
            print(
                lab.goal(
                    f"kill -9 of {args.victims} nodes at once seen by all within "
                    f"{GOAL_SECONDS:.0f} s, in every run (worst: "
                    f"{lab.ms(max(detected)) if detected else 'never'})",
                    len(detected) == len(at_goal) and max(detected) < GOAL_SECONDS,
                )
            )
        for field, when in (("rss_meshed", "meshed"), ("rss_names", f"with {args.names:,} names")):
            medians, largest = _rss(at_goal, field)
            if medians:
                print(
                    f"RSS per node at {GOAL_NODES} nodes, {when}: median "
                    f"{mib(lab.median(medians))}, largest {mib(max(largest))}"
                )


async def main(args: argparse.Namespace) -> None:
    """Measure every size, print the tables and the goals."""
    print(
        f"scale: {args.runs} runs per size; epmd retry_interval {args.retry_interval:.0f} ms; "
        f"{args.names:,} names; kill -9 of {args.victims}"
    )
    print(f"machine: {lab.machine()}")
    load = lab.OtherLoad()
    results: dict[int, list[Trial]] = {}
    for count in args.sizes:
        results[count] = []
        for run in range(args.runs):
            result = await trial(count, args)
            results[count].append(result)
            print(_progress(count, run, result), file=sys.stderr)
    report(results, args)
    print(load.note())


def _ms(value: float | None) -> str:
    return "never" if value is None else lab.ms(value)


def _progress(count: int, run: int, result: Trial) -> str:
    parts = [
        f"  {count} nodes, run {run + 1}: start-up {lab.ms(result.startup)}, "
        f"formed {_ms(result.formed)} ({_ms(result.formed_by_logs)} by logs), "
        f"RSS {mib(lab.median(result.rss_meshed))}"
    ]
    registration = result.registration
    if registration is not None:
        converged = "never" if registration.converged is None else seconds(registration.converged)
        rss = "" if result.rss_names is None else f", RSS {mib(lab.median(result.rss_names))}"
        parts.append(
            f"names registered {seconds(registration.registered)}, converged {converged}{rss}, "
            f"{registration.lost_calls} calls unanswered, "
            f"{result.downs_during_names} node downs meanwhile"
        )
    if result.idle_cpu is not None:
        parts.append(f"idle CPU {percent(lab.median(result.idle_cpu))}")
    if result.detected is not None and result.detected_by_logs is not None:
        dropped = "-" if result.names_dropped is None else lab.ms(result.names_dropped)
        parts.append(
            f"kill -9 detected {lab.ms(result.detected)} "
            f"({lab.ms(result.detected_by_logs)} by logs), names dropped {dropped}"
        )
    if result.storm_downs is not None:
        healed = "not healed" if result.healed is None else f"healed {seconds(result.healed)}"
        parts.append(f"storm: {healed}, {result.storm_downs} node downs")
    return "; ".join(parts)


def _arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50], help="node counts")
    parser.add_argument("--runs", type=int, default=5, help="runs per node count")
    parser.add_argument(
        "--names", type=int, default=100_000, help="names registered in all (0: none)"
    )
    parser.add_argument("--batch", type=int, default=BATCH, help="names per register_many")
    parser.add_argument("--victims", type=int, default=5, help="nodes killed at once (0: none)")
    parser.add_argument(
        "--idle", type=float, default=10.0, help="idle CPU window, in seconds (0: none)"
    )
    parser.add_argument(
        "--first-address",
        type=int,
        default=101,
        metavar="X",
        help="nodes use 127.0.0.X, 127.0.0.X+1, ... (default 101: up to 154 nodes)",
    )
    parser.add_argument(
        "--retry-interval", type=float, default=500, help="epmd retry_interval, in ms"
    )
    parser.add_argument(
        "--storm", type=int, default=0, metavar="N", help="nodes stopped at once (0: no storm)"
    )
    parser.add_argument(
        "--storm-hold", type=float, default=5.0, help="seconds the storm's nodes stay stopped"
    )
    parser.add_argument(
        "--heal-wait", type=float, default=240.0, help="seconds the mesh has to heal"
    )
    parser.add_argument(
        "--paced",
        action="store_true",
        help="register one node's share at a time (default: all nodes at once)",
    )
    parser.add_argument(
        "--net-tick-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the nodes' net_tick_timeout (default: pycluster's, 3 s)",
    )
    args = parser.parse_args(argv)
    for count in args.sizes:
        lab.loopback(args.first_address + count - 1)  # every address exists
        if args.victims and count < 2 * args.victims:
            parser.error(f"{count} nodes are too few to kill {args.victims}")
        if args.storm and args.storm >= count - args.victims:
            parser.error(f"{count} nodes are too few to stop {args.storm} after the kill")
    return args


if __name__ == "__main__":
    lab.run(main(_arguments()))
