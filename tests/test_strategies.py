"""The built-in epmd and hosts_file strategies, run by a Supervisor on the in-memory network;
and the node names strategies make of what discovery hands them (a file, the Kubernetes API)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from pycluster import (
    InMemoryNetwork,
    Plugins,
    Topology,
    TopologyConnect,
    TopologyDisconnect,
    TopologyRestartPolicy,
    hookimpl,
    load_config,
)
from pycluster.metrics import NodeMetrics
from pycluster.strategies.hosts_file import parse_hosts
from pycluster.strategies.kubernetes import Naming, node_names
from pycluster.strategies.kubernetes_api import Address, endpoints_addresses, slice_addresses
from pycluster.supervisor import Supervisor
from tests.conftest import eventually, logged, supervisor_for
from tests.lab import kube_api
from tests.lab.kube_api import KubeApi

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


async def test_epmd_rests_while_all_are_connected_and_wakes_when_one_is_lost(
    network: InMemoryNetwork, plugins: Plugins
) -> None:
    epmd = {"strategy": "epmd", "config": {"hosts": NAMES[:3], "retry_interval": 100}}
    supervisors = [supervisor_for(n, epmd, network, plugins) for n in NAMES[:3]]
    applied: list[str] = []
    for name, supervisor in zip(NAMES, supervisors, strict=False):
        topology = supervisor.topologies["t"]
        apply = topology.apply

        async def counted(answer: Any, apply: Any = apply, name: str = name) -> Any:
            applied.append(name)
            return await apply(answer)

        topology.apply = counted  # type: ignore[method-assign]
        await supervisor.start()
    try:
        await eventually(lambda: all(len(network.links(n)) == 2 for n in NAMES[:3]))
        await eventually(lambda: len(applied) >= 3)  # each has looked once, all connected
        before = len(applied)
        await asyncio.sleep(1.0)  # the duration under test: 10 retry intervals
        assert len(applied) - before <= 3  # at most the look that found all connected
        settled = len(applied)
        # One is cut off and comes back: a lost peer wakes the others at once.
        network.set_reachable(NAMES[2], False)
        network.set_reachable(NAMES[2], True)
        await eventually(lambda: NAMES[2] in network.links(NAMES[0]), timeout=2)
        assert len(applied) > settled
    finally:
        for supervisor in supervisors:
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
        await eventually(
            lambda: bool(logged(caplog, event="discovery_problem", reason="unreadable"))
        )
        write_atomically(hosts, f"# cluster\n{NAMES[1]}\n'{NAMES[2]}'.\n\n")
        await eventually(lambda: network.links(NAMES[0]) == NAMES[1:3])
        # A node the topology never listed is not its business.
        await network.join("outsider@127.0.0.9").connect(NAMES[0])
        # An empty file (being rewritten) changes nothing.
        write_atomically(hosts, "")
        await eventually(lambda: bool(logged(caplog, event="discovery_problem", reason="empty")))
        assert network.links(NAMES[0]) == [*NAMES[1:3], "outsider@127.0.0.9"]
        # A real answer that leaves n2 out disconnects it, and only it.
        write_atomically(hosts, f"{NAMES[1]}\n{NAMES[3]}\nnot a node\n")
        await eventually(
            lambda: network.links(NAMES[0]) == [NAMES[1], NAMES[3], "outsider@127.0.0.9"]
        )
        assert disconnected == [TopologyDisconnect(NAMES[0], "t", NAMES[2])]
        assert me.refuses(NAMES[2])
        assert not me.refuses("outsider@127.0.0.9")
        (bad,) = logged(caplog, event="discovery_problem", reason="bad_lines")
        assert "'not a node'" in bad.problem
    assert len(logged(caplog, reason="unreadable", levelno=logging.WARNING)) == 1


def write_atomically(path: Path, text: str) -> None:
    """Replace a file at once, as an operator's tooling should (no half-written reads)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_parse_hosts() -> None:
    names, problems = parse_hosts("a@127.0.0.2  # first\n\n'b@[::1]:9101'.\nbogus\n")
    assert names == ["a@127.0.0.2", "b@[::1]:9101"]
    assert problems == ["line 4: 'bogus' is not a node name (no '@' between name and host)"]


def test_parse_hosts_skips_lines_that_only_look_like_node_names() -> None:
    names, problems = parse_hosts(
        "x@h:\u00b2\na@127.0.0.2\nb@h:\u0669\u0661\u0660\u0660\nc@127.1\nd@0x7f.1\n"
    )
    assert names == ["a@127.0.0.2"]
    assert [p.split(":")[0] for p in problems] == ["line 1", "line 3", "line 4", "line 5"]
    assert problems[0] == (
        "line 1: 'x@h:\u00b2' is not a node name (port '\u00b2' is not a number from 1 to 65535)"
    )


def counting_supervisor(
    name: str, topology: dict[str, Any], network: InMemoryNetwork, plugins: Plugins
) -> tuple[Supervisor, NodeMetrics]:
    """supervisor_for, with the node's metrics (where dropped discovery input is counted)."""
    config = load_config(
        {"node": {"name": name}, "topologies": {"t": topology}}, env={}, plugins=plugins
    )
    metrics = NodeMetrics()
    supervisor = Supervisor(
        config.topologies,
        membership=network.join(name),
        plugins=plugins,
        policy=TopologyRestartPolicy(initial_delay=0.01),
        metrics=metrics,
    )
    return supervisor, metrics


def dropped(metrics: NodeMetrics, reason: str, topology: str = "t") -> float:
    """``pycluster_discovery_dropped_total`` of ``topology`` for ``reason``."""
    labels = {"topology": topology, "reason": reason}
    return metrics.registry.get_sample_value("pycluster_discovery_dropped_total", labels) or 0.0


async def test_hosts_file_skips_and_counts_bad_lines_and_connects_the_others(
    tmp_path: Path, network: InMemoryNetwork, plugins: Plugins, caplog: pytest.LogCaptureFixture
) -> None:
    for name in NAMES[1:]:
        network.join(name)
    hosts = tmp_path / "hosts"
    write_atomically(
        hosts,
        f"x@h:\u00b2\n{NAMES[1]}\nb@h:\u0669\u0661\u0660\u0660\n{NAMES[2]}\na@127.1\n{NAMES[3]}\n",
    )
    topology = {"strategy": "hosts_file", "config": {"path": str(hosts), "polling_interval": 10}}
    me, metrics = counting_supervisor(NAMES[0], topology, network, plugins)
    async with me:
        await eventually(lambda: network.links(NAMES[0]) == NAMES[1:])
        # Three bad lines at each read of the file, counted together.
        await eventually(lambda: dropped(metrics, "bad_line") >= 6)
        assert dropped(metrics, "bad_line") % 3 == 0
        status = me.status()["t"]
        assert (status.state, status.crashes) == ("running", 0)
        (bad, *_) = logged(caplog, event="discovery_problem", reason="bad_lines")
        assert "'x@h:\u00b2'" in bad.problem


async def test_an_unreadable_hosts_file_is_a_problem_in_status_until_it_reads(
    tmp_path: Path, network: InMemoryNetwork, plugins: Plugins
) -> None:
    network.join(NAMES[1])
    hosts = tmp_path / "hosts"  # not there yet
    topology = {"strategy": "hosts_file", "config": {"path": str(hosts), "polling_interval": 10}}
    me, metrics = counting_supervisor(NAMES[0], topology, network, plugins)

    def problem_gauge() -> float | None:
        return metrics.registry.get_sample_value("pycluster_topology_problem", {"topology": "t"})

    async with me:
        await eventually(lambda: me.status()["t"].to_json()["failed_attempts"] >= 3)
        status = me.status()["t"]
        assert status.problem is not None
        assert (status.state, status.problem.reason) == ("running", "unreadable")
        assert str(hosts) in status.problem.message
        assert problem_gauge() == 1
        write_atomically(hosts, f"{NAMES[1]}\n")
        await eventually(lambda: me.status()["t"].problem is None)
        assert problem_gauge() == 0
        await eventually(lambda: network.links(NAMES[0]) == [NAMES[1]])
        assert me.status()["t"].to_json()["failed_attempts"] == 0


def test_a_problem_lasts_while_its_text_repeats_and_new_text_is_a_new_problem() -> None:
    metrics = NodeMetrics()
    topology = Topology(
        "t",
        "epmd",
        None,
        InMemoryNetwork().join(NAMES[0]),
        Plugins.load(),
        asyncio.Event(),
        metrics,
    )

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"topology": "t"})

    assert topology.current_problem is None
    assert (
        sample("pycluster_topology_problem"),
        sample("pycluster_topology_failed_attempts_total"),
    ) == (0, 0)
    for _ in range(3):
        topology.problem("lookup failed", reason="failed")
    lasting = topology.current_problem
    assert lasting is not None
    assert (lasting.message, lasting.reason, lasting.failed_attempts) == (
        "lookup failed",
        "failed",
        3,
    )
    topology.problem("lookup refused", reason="refused")
    changed = topology.current_problem
    assert changed is not None
    assert (changed.message, changed.reason, changed.failed_attempts) == (
        "lookup refused",
        "refused",
        1,
    )
    assert changed.since >= lasting.since
    assert sample("pycluster_topology_problem") == 1
    topology.problem(None)
    assert topology.current_problem is None
    assert sample("pycluster_topology_problem") == 0
    # Every failed attempt counted, whatever its text; recovery is not one.
    assert sample("pycluster_topology_failed_attempts_total") == 4


def test_a_repeating_problem_is_logged_once_then_summarised(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pycluster import strategy

    topology = Topology(
        "t", "epmd", None, InMemoryNetwork().join(NAMES[0]), Plugins.load(), asyncio.Event()
    )
    caplog.set_level(logging.INFO, logger="pycluster.topology")
    for _ in range(5):
        topology.problem("lookup failed", reason="failed")
    (first,) = caplog.records
    assert (first.levelno, first.event, first.topology) == (
        logging.WARNING,
        "discovery_problem",
        "t",
    )
    assert (first.problem, first.reason) == ("lookup failed", "failed")
    monkeypatch.setattr(strategy, "PROBLEM_SUMMARY_INTERVAL", 0.0)
    topology.problem("lookup failed", reason="failed")
    topology.problem(None)
    summary, recovered = caplog.records[1:]
    assert (summary.levelno, summary.event) == (logging.WARNING, "discovery_still_failing")
    assert (summary.problem, summary.reason, summary.failed_attempts) == (
        "lookup failed",
        "failed",
        6,
    )
    assert (recovered.levelno, recovered.event) == (logging.INFO, "discovery_recovered")
    assert (recovered.problem, recovered.reason, recovered.failed_attempts) == (
        "lookup failed",
        "failed",
        6,
    )


# -- kubernetes: addresses from the API's JSON, as they come ---------------------------------


@pytest.mark.parametrize("mode", ["ip", "dns"])
def test_kubernetes_addresses_that_are_not_ips_make_no_name(mode: str) -> None:
    naming = Naming("app", mode)  # type: ignore[arg-type]
    for ip in [5, None, ["10.0.0.1"], "evil.example", "10.0.0.1:9100", "127.1", "fe80::1%eth0"]:
        assert naming.name(Address(ip, "prod")) is None, ip  # type: ignore[arg-type]
    assert naming.name(Address("10.0.0.1", 5)) is None  # type: ignore[arg-type]
    assert naming.name(Address("10.0.0.1", "prod")) is not None


def test_kubernetes_hostnames_that_make_no_host_make_no_name() -> None:
    naming = Naming("app", "hostname", "svc")
    for hostname in [5, {"a": 1}, "p:9100", "p@q", "p\u00b2", "p q"]:
        assert naming.name(Address("10.0.0.1", "prod", hostname)) is None, hostname  # type: ignore[arg-type]
    assert naming.name(Address("10.0.0.1", "prod", "p-0")) == "app@p-0.svc.prod.svc.cluster.local"


def test_kubernetes_objects_with_odd_fields_are_named_or_skipped() -> None:
    """JSON a broken or hostile API server could send: never an exception, only skips."""
    objects = {
        "slice": slice_addresses(
            {
                "addressType": "IPv4",
                "metadata": {"namespace": "prod"},
                "endpoints": [{"addresses": [5]}, {"addresses": ["10.0.0.2"]}],
            }
        ),
        "endpoints": endpoints_addresses(
            {
                "metadata": {"namespace": "prod"},
                "subsets": [{"addresses": [{"ip": ["10.0.0.3"]}, {"ip": "10.0.0.4"}]}],
            }
        ),
    }
    found = [address for addresses in objects.values() for address in addresses]
    names, unnamed = node_names(found, Naming("app"))
    assert names == {"app@10.0.0.2", "app@10.0.0.4"}
    assert len(unnamed) == 2


async def test_kubernetes_skips_and_counts_addresses_that_make_no_name(
    network: InMemoryNetwork, plugins: Plugins, caplog: pytest.LogCaptureFixture
) -> None:
    me, peer = "app@127.0.0.2", "app@127.0.0.3"
    labels = {"app": "pycluster"}
    network.join(peer)
    async with KubeApi.running() as kube:
        odd = kube_api.slice_endpoint("127.0.0.4", pod_name="odd")
        odd["addresses"] = [5]  # not even text
        endpoints = [
            kube_api.slice_endpoint("127.0.0.2", pod_name="me"),
            kube_api.slice_endpoint("127.0.0.3", pod_name="peer"),
            kube_api.slice_endpoint("evil.example", pod_name="named"),
            kube_api.slice_endpoint("127.1", pod_name="short"),
            odd,
        ]
        kube.put(kube_api.endpoint_slice("app-a", endpoints, labels=labels))
        config = {
            "selector": "app=pycluster",
            "node_basename": "app",
            "namespace": "lab",
            "api_server": kube.url,
        }
        supervisor, metrics = counting_supervisor(
            me, {"strategy": "kubernetes", "config": config}, network, plugins
        )
        async with supervisor:
            await eventually(lambda: network.links(me) == [peer])
            await eventually(lambda: dropped(metrics, "bad_address") == 3)
            # Counted as they arrive: a watch event brings one more, the others stay counted.
            bad = [kube_api.slice_endpoint("0x7f.1", pod_name="hex")]
            kube.put(kube_api.endpoint_slice("app-b", bad, labels=labels))
            await eventually(lambda: dropped(metrics, "bad_address") == 4)
            status = supervisor.status()["t"]
            assert (status.state, status.crashes) == ("running", 0)
            assert logged(caplog, event="discovery_problem", reason="bad_addresses")
        assert network.links(me) == [peer]


async def test_a_topology_knows_each_node_by_its_canonical_name(
    plugins: Plugins, caplog: pytest.LogCaptureFixture
) -> None:
    """Every written form of a node is that node: listed, connected, left out and refused
    as one (here node.port is 19100); what is not a node name is skipped and counted."""
    events: list[object] = []

    class Spy:
        @hookimpl
        def pycluster_topology_connect(self, event: TopologyConnect) -> None:
            events.append(event)

        @hookimpl
        def pycluster_topology_disconnect(self, event: TopologyDisconnect) -> None:
            events.append(event)

    plugins.manager.register(Spy())
    network = InMemoryNetwork(plugins, port=19100)
    me, b, c = "a@127.0.0.2", "b@127.0.0.3", "c@node-c.example"
    network.join("b@127.0.0.3:19100")
    network.join("c@Node-C.Example")
    metrics = NodeMetrics()
    topology = Topology(
        "t", "epmd", None, network.join(f"{me}:19100"), plugins, asyncio.Event(), metrics
    )
    assert topology.self_name == me
    assert topology.full_name == f"{me}:19100"  # what strategies advertise
    assert topology.canonical("a@127.0.0.2:19100") == topology.canonical(me) == me
    first = await topology.apply(
        [f"{me}:19100", "b@127.0.0.3:19100", "c@NODE-C.example", "not a name", "x@127.1"]
    )
    assert (first.listed, first.connect) == ({b, c}, {b, c})
    assert network.links(me) == [b, c]
    assert dropped(metrics, "bad_name") == 2
    assert logged(caplog, event="bad_name", input="not a name")
    # The same nodes written otherwise: nothing to do.
    again = await topology.apply([b, "c@node-c.example:19100", me])
    assert (again.connect, again.disconnect, again.listed) == (frozenset(), frozenset(), {b, c})
    assert await topology.connect(["b@127.0.0.3:19100", f"{me}:19100"]) == [b]
    # Left out in one form, refused in every form.
    left_out = await topology.apply(["b@127.0.0.3:19100"])
    assert left_out.disconnect == {c}
    assert network.links(me) == [b]
    assert topology.excluded == {c}
    assert topology.refuses("c@NODE-C.EXAMPLE:19100")
    assert not topology.refuses("c@node-c.example:9100")  # another port: another node
    assert not topology.refuses("not a name")
    assert await topology.disconnect(["b@127.0.0.3:19100", "still not a name"]) == [b]
    assert dropped(metrics, "bad_name") == 3
    assert events == [
        TopologyConnect(me, "t", b),
        TopologyConnect(me, "t", c),
        TopologyDisconnect(me, "t", c),
        TopologyDisconnect(me, "t", b),
    ]
