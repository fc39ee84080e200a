"""Why a connection failed, and connections counted once whoever dialled, seen in the
``/metrics`` of real node processes (issue 14).

Node ``watcher`` lists, in an ``epmd`` topology: a host name that does not resolve (it
runs with a resolver of its own, on a lab address where nothing answers, so nothing
outside the machine is asked), a node with another cookie, that node's HTTP port, an
address where nothing listens, a node whose ``hosts_file`` discovery first lists the
watcher and then leaves it out, and a node that starts later and lists the watcher too.
Each failed attempt is counted under its reason; each connection once in
``result="ok"``, whichever side dialled it, however many polls see it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.lab import Lab, LabNode
from tests.lab.lab import HTTP_PORT

WITHIN = 20.0
POLLS = 3
"""Polls of the watcher's topology that must see a connection without counting it again."""


def failures(reason: str) -> str:
    return f'pycluster_topology_connect_failures_total{{reason="{reason}",topology="lab"}}'


CONNECTED = 'pycluster_topology_connects_total{result="ok",topology="lab"}'


def use_topology(node: LabNode, topology: dict[str, Any]) -> None:
    """Make ``topology`` the only topology of ``node`` (declared, not started)."""
    config: dict[str, Any] = yaml.safe_load(node.config_path.read_text())
    config["topologies"] = {"lab": topology}
    node.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def private_resolver(directory: Path, nameserver: str) -> tuple[str, ...]:
    """A command prefix: run the rest with a resolv.conf naming only ``nameserver``, in a
    mount namespace of its own (nothing changes outside it; it ends with the process)."""
    resolv = directory / "resolv.conf"
    resolv.write_text(f"nameserver {nameserver}\noptions timeout:1 attempts:1\n")
    mount_and_exec = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
    return (
        *("unshare", "--mount", "--propagation", "private"),
        *("sh", "-c", mount_and_exec, "lab-resolver", str(resolv.resolve())),
    )


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path``'s content at once (a poll never reads half of it)."""
    staging = path.with_suffix(".new")
    staging.write_text(text)
    staging.replace(path)


async def test_failed_connects_are_counted_by_reason_and_connections_once(lab: Lab) -> None:
    (watcher,) = lab.declare(1)
    (stranger,) = lab.declare(1, cookie="another-cookie-entirely-0123")
    (excluder,) = lab.declare(1)
    (latecomer,) = lab.declare(1, hosts=[watcher.name])
    nobody = lab.address()  # nothing is started here
    hosts_file = lab.directory / "excluder-hosts"
    write_atomically(hosts_file, f"{excluder.name}\n{watcher.name}\n")
    use_topology(
        excluder,
        {"strategy": "hosts_file", "config": {"path": str(hosts_file), "polling_interval": 200}},
    )
    listed = {
        "unresolved": "ghost@nosuch.invalid",
        "cookie": stranger.name,
        "http": f"web@{stranger.address}:{HTTP_PORT}",
        "refused": f"nobody@{nobody}",
    }
    use_topology(
        watcher,
        {
            "strategy": "epmd",
            "config": {
                "hosts": [*listed.values(), excluder.name, latecomer.name],
                "retry_interval": 500,
            },
        },
    )
    watcher.command_prefix = private_resolver(lab.directory, nameserver=nobody)
    await lab.start([watcher, stranger, excluder])

    async def connected(node: LabNode, peer: LabNode) -> bool:
        return peer.name in (await lab.status(node))["nodes"]

    await lab.until(
        lambda: connected(watcher, excluder), timeout=WITHIN, what="watcher meets excluder"
    )
    for reason in listed:
        await lab.wait_for_metric(watcher, failures(reason), timeout=WITHIN)
    # Counted on both sides: by the one that dialled, and by the other at its next poll.
    for node in (watcher, excluder):
        await lab.wait_for_metric(node, CONNECTED, timeout=WITHIN)

    # The excluder's discovery now leaves the watcher out (a positive, non-empty answer):
    # it disconnects the watcher and refuses its dials.
    write_atomically(hosts_file, f"{excluder.name}\nother@{nobody}\n")
    await lab.wait_for_metric(watcher, failures("refused_by_peer"), timeout=WITHIN)
    assert not await connected(watcher, excluder)

    await lab.start([latecomer])
    await lab.until(
        lambda: connected(watcher, latecomer), timeout=WITHIN, what="watcher meets latecomer"
    )
    # More polls of the watcher's topology: each sees the latecomer, none counts it again.
    refused = (await lab.metrics(watcher))[failures("refused")]
    await lab.wait_for_metric(watcher, failures("refused"), at_least=refused + POLLS)
    metrics = await lab.metrics(watcher)
    assert metrics[CONNECTED] == 2  # the excluder, then the latecomer: once each
    assert (await lab.metrics(latecomer))[CONNECTED] == 1
    assert (await lab.metrics(excluder))[CONNECTED] == 1
    # Every failed attempt has its reason, and these are all there were.
    by_reason = {
        series: value
        for series, value in metrics.items()
        if series.startswith("pycluster_topology_connect_failures_total{")
    }
    failed = metrics['pycluster_topology_connects_total{result="failed",topology="lab"}']
    assert sum(by_reason.values()) == failed
    assert {series for series, value in by_reason.items() if value} == {
        failures(reason) for reason in (*listed, "refused_by_peer")
    }
    # The records of the failed attempts carry the same reasons (a peer may also have been
    # refused before it listened: the nodes start together).
    logged = {(r["peer"], r["reason"]) for r in watcher.records(event="connect_failed")}
    assert {
        *((peer, reason) for reason, peer in listed.items()),
        (excluder.name, "refused_by_peer"),
        (latecomer.name, "refused"),
    } <= logged
    # The watcher told the HTTP port apart from a malformed frame.
    assert metrics.get('pycluster_handshake_failures_total{kind="http"}', 0) >= 1
    assert metrics.get('pycluster_handshake_failures_total{kind="malformed"}', 0) == 0
    await lab.stop([watcher, stranger, excluder, latecomer])
    assert [node.exit_code for node in (watcher, stranger, excluder, latecomer)] == [0] * 4
