"""The built-in epmd and hosts_file strategies, run by a Supervisor on the in-memory network."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from pycluster import (
    InMemoryNetwork,
    Plugins,
    TopologyConnect,
    TopologyDisconnect,
    hookimpl,
)
from pycluster.strategies.hosts_file import parse_hosts
from tests.conftest import eventually, supervisor_for

NAMES = [f"n{i}@127.0.0.{i + 2}" for i in range(4)]


async def test_epmd_forms_a_full_mesh_and_retries_late_nodes(
    network: InMemoryNetwork, plugins: Plugins
) -> None:
    epmd = {"strategy": "epmd", "config": {"hosts": NAMES, "retry_interval": 100}}
    first = supervisor_for(NAMES[0], epmd, network, plugins)
    async with first:
        # The others are not up yet: n0 keeps retrying them.
        await eventually(lambda: first.status()["t"].state == "running")
        assert network.links(NAMES[0]) == []
        late = [supervisor_for(n, epmd, network, plugins) for n in NAMES[1:]]
        for supervisor in late:
            await supervisor.start()
        try:
            await eventually(lambda: all(len(network.links(n)) == len(NAMES) - 1 for n in NAMES))
            # A node that went away and came back is reconnected.
            network.set_reachable(NAMES[3], False)
            assert NAMES[3] not in network.links(NAMES[0])
            network.set_reachable(NAMES[3], True)
            await eventually(lambda: NAMES[3] in network.links(NAMES[0]), timeout=2)
        finally:
            for supervisor in late:
                await supervisor.stop()


async def test_epmd_never_connects_to_itself(network: InMemoryNetwork, plugins: Plugins) -> None:
    events: list[object] = []

    class Spy:
        @hookimpl
        def pycluster_topology_connect(self, event: TopologyConnect) -> None:
            events.append(event)

    plugins.manager.register(Spy())
    network.join(NAMES[1])
    me = supervisor_for(
        NAMES[0], {"strategy": "epmd", "config": {"hosts": NAMES[:2]}}, network, plugins
    )
    async with me:
        await eventually(lambda: network.links(NAMES[0]) == [NAMES[1]])
    assert events == [TopologyConnect(NAMES[0], "t", NAMES[1])]


async def test_hosts_file_follows_the_file(
    tmp_path: Path,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    disconnected: list[TopologyDisconnect] = []

    class Spy:
        @hookimpl
        def pycluster_topology_disconnect(self, event: TopologyDisconnect) -> None:
            disconnected.append(event)

    plugins.manager.register(Spy())
    for name in NAMES[1:]:
        network.join(name)
    hosts = tmp_path / "hosts"
    topology = {"strategy": "hosts_file", "config": {"path": str(hosts), "polling_interval": 10}}
    me = supervisor_for(NAMES[0], topology, network, plugins)
    async with me:
        # Missing file: logged once, nothing happens, the strategy keeps polling.
        await eventually(lambda: any("cannot read" in m for m in caplog.messages))
        write_atomically(hosts, f"# cluster\n{NAMES[1]}\n'{NAMES[2]}'.\n\n")
        await eventually(lambda: network.links(NAMES[0]) == NAMES[1:3])
        # A node the topology never listed is not its business.
        await network.join("outsider@127.0.0.9").connect(NAMES[0])
        # An empty file (being rewritten) changes nothing.
        write_atomically(hosts, "")
        await eventually(lambda: any("lists no nodes" in m for m in caplog.messages))
        assert network.links(NAMES[0]) == [*NAMES[1:3], "outsider@127.0.0.9"]
        # A real answer that leaves n2 out disconnects it, and only it.
        write_atomically(hosts, f"{NAMES[1]}\n{NAMES[3]}\nnot a node\n")
        await eventually(
            lambda: network.links(NAMES[0]) == [NAMES[1], NAMES[3], "outsider@127.0.0.9"]
        )
        assert disconnected == [TopologyDisconnect(NAMES[0], "t", NAMES[2])]
        assert me.refuses(NAMES[2])
        assert not me.refuses("outsider@127.0.0.9")
        assert any("line 3: 'not a node' is not a node name" in m for m in caplog.messages)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("cannot read" in m for m in warnings) == 1


def write_atomically(path: Path, text: str) -> None:
    """Replace a file at once, as an operator's tooling should (no half-written reads)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_parse_hosts() -> None:
    names, problems = parse_hosts("a@127.0.0.2  # first\n\n'b@[::1]:9101'.\nbogus\n")
    assert names == ["a@127.0.0.2", "b@[::1]:9101"]
    assert problems == ["line 4: 'bogus' is not a node name (no '@' between name and host)"]


def test_a_repeating_problem_is_logged_once_then_summarised(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from pycluster import Topology, strategy

    topology = Topology(
        "t", "epmd", None, InMemoryNetwork().join(NAMES[0]), Plugins.load(), asyncio.Event()
    )
    caplog.set_level(logging.INFO, logger="pycluster.topology")
    for _ in range(5):
        topology.problem("lookup failed")
    assert [r.getMessage() for r in caplog.records] == ["[pycluster:t] lookup failed"]
    monkeypatch.setattr(strategy, "PROBLEM_SUMMARY_INTERVAL", 0.0)
    topology.problem("lookup failed")
    topology.problem(None)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[1].startswith("[pycluster:t] still failing: lookup failed (6 times over")
    assert messages[2].startswith("[pycluster:t] discovery recovered after 6 failed attempts")
    assert len(messages) == 3
