"""The DNS strategies: answers -> names (pure), config errors, and each strategy against a
real dnsmasq on a loopback port, run by a Supervisor on the in-memory network."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.message
import dns.resolver
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycluster import (
    ConfigError,
    InMemoryNetwork,
    Plugins,
    TopologyConnect,
    TopologyDisconnect,
    TopologyRestartPolicy,
    hookimpl,
    load_config,
    parse_node_name,
)
from pycluster.metrics import NodeMetrics
from pycluster.strategies.dns import failure_reason
from pycluster.strategies.dns_answers import (
    Failed,
    Lookup,
    NoDomain,
    NoRecords,
    Outcome,
    Records,
    address_node_names,
    cluster_domain,
    interpret,
    merge_addresses,
    srv_node_names,
    srv_query_name,
)
from pycluster.supervisor import Supervisor
from tests.conftest import crashes, eventually, logged, supervisor_for
from tests.hyp import base_names, ipv4_hosts, ipv6_hosts
from tests.lab.dnsmasq import Dnsmasq

SERVICE = "app.lab.test"
APP = [f"app@127.0.0.{i}" for i in range(2, 7)]
OUTSIDER = "outsider@127.0.0.9"
POLL_MS = 50
TIMEOUT_MS = 2000
"""Long enough that a loaded CI machine never times a live dnsmasq out: the tests count
warnings, and a spurious timeout would add one."""

# -- answers -> names -------------------------------------------------------------------------

lookups = st.one_of(
    st.builds(Records, st.lists(ipv4_hosts | ipv6_hosts, max_size=4).map(tuple)),
    st.just(NoRecords()),
    st.just(NoDomain()),
    st.builds(Failed, st.sampled_from(["no answer within 5 s", "answered SERVFAIL"])),
)


@pytest.mark.parametrize(
    ("a", "aaaa", "merged"),
    [
        (Records(("10.0.0.1",)), NoRecords(), Records(("10.0.0.1",))),
        (NoRecords(), Records(("fd00::1",)), Records(("fd00::1",))),
        (Records(("10.0.0.1",)), Records(("fd00::1",)), Records(("10.0.0.1", "fd00::1"))),
        (NoRecords(), NoRecords(), NoRecords()),
        (NoDomain(), NoDomain(), NoDomain()),
        (NoDomain(), NoRecords(), NoRecords()),
        (Records(("10.0.0.1",)), Failed("timed out"), Failed("timed out")),
        (Failed("x"), Failed("x"), Failed("x")),
        (Failed("x"), Failed("y"), Failed("x; y")),
    ],
)
def test_merge_addresses(a: Lookup, aaaa: Lookup, merged: Lookup) -> None:
    assert merge_addresses(a, aaaa) == merged


@given(lookups, lookups)
def test_half_an_answer_is_never_an_answer(a: Lookup, aaaa: Lookup) -> None:
    merged = merge_addresses(a, aaaa)
    if isinstance(a, Failed) or isinstance(aaaa, Failed):
        assert isinstance(merged, Failed)
    elif isinstance(merged, Records):
        found = [v for x in (a, aaaa) if isinstance(x, Records) for v in x.values]
        assert merged.values == tuple(found)
    else:
        assert not any(isinstance(x, Records) and x.values for x in (a, aaaa))


@given(base_names, st.lists(ipv4_hosts | ipv6_hosts, max_size=6))
def test_every_address_makes_a_node_name_that_parses_back(
    basename: str, addresses: list[str]
) -> None:
    names, problems = address_node_names(basename, addresses)
    assert problems == []
    assert names == sorted(set(names))
    assert len(names) == len({ipaddress.ip_address(a) for a in addresses})
    for name in names:
        parsed = parse_node_name(name)
        assert str(parsed) == name
        assert (parsed.name, parsed.port) == (basename, None)
        assert ipaddress.ip_address(parsed.host) in {ipaddress.ip_address(a) for a in addresses}


def test_address_node_names_write_ipv6_short_and_in_brackets() -> None:
    names, problems = address_node_names(
        "app", ["10.0.0.2", "FD00:0:0::5", "fd00::5", "10.0.0.2", "bogus"]
    )
    assert names == ["app@10.0.0.2", "app@[fd00::5]"]
    assert problems == ["'bogus' is not an IP address"]


def test_srv_node_names() -> None:
    names, problems = srv_node_names(
        "app",
        [
            "app-1.app.prod.svc.cluster.local.",
            "app-0.app.prod.svc.cluster.local.",
            "app-0.app.prod.svc.cluster.local",
            ".",
            "bad_host.example.",
        ],
    )
    assert names == ["app@app-0.app.prod.svc.cluster.local", "app@app-1.app.prod.svc.cluster.local"]
    assert problems == [
        "target 'bad_host.example.' makes no node name "
        "('bad_host.example' is not a valid host name or IPv4 address)"
    ]


def test_cluster_domain_and_srv_query_name() -> None:
    assert cluster_domain(None, {}) == "cluster.local"
    assert cluster_domain(None, {"CLUSTER_DOMAIN": "corp.example."}) == "corp.example"
    assert cluster_domain(None, {"CLUSTER_DOMAIN": " "}) == "cluster.local"
    assert cluster_domain("k8s.local", {"CLUSTER_DOMAIN": "corp.example"}) == "k8s.local"
    assert srv_query_name("app", "prod", "cluster.local") == "app.prod.svc.cluster.local."


def test_interpret() -> None:
    def names(values: Any) -> tuple[list[str], list[str]]:
        return address_node_names("app", values)

    def outcome(lookup: Lookup) -> Outcome:
        return interpret("app.example", "A or AAAA", lookup, names)

    assert outcome(Records(("10.0.0.2",))) == Outcome(["app@10.0.0.2"], None)
    for lookup, answer, reason in [
        (Failed("no answer within 5 s"), None, "failed"),
        (NoDomain(), None, "nxdomain"),
        (NoRecords(), None, "no_records"),
        (Records(("x",)), None, "no_usable_records"),
        (Records(("x", "10.0.0.2")), ["app@10.0.0.2"], "bad_records"),
    ]:
        result = outcome(lookup)
        assert (result.answer, result.reason) == (answer, reason), lookup
        # The problem names the query and, for an operator, what came back.
        assert result.problem is not None
        assert "app.example" in result.problem, result
    assert "no answer within 5 s" in str(outcome(Failed("no answer within 5 s")).problem)
    assert "'x'" in str(outcome(Records(("x", "10.0.0.2"))).problem)
    assert outcome(Records(("x", "10.0.0.2"))).skipped == 1


def test_failure_reasons_are_short_and_stable() -> None:
    # No timings or counters: the topology logs a problem again only when its text changes.
    query = dns.message.make_query("app.example.", "A")
    errors = [
        ("Do53:10.0.0.2@53", False, 53, "SERVFAIL", None),
        (
            "Do53:10.0.0.3@5353",
            False,
            5353,
            ConnectionRefusedError(111, "Connection refused"),
            None,
        ),
        ("Do53:10.0.0.2@53", False, 53, "SERVFAIL", None),
    ]
    no_server = dns.resolver.NoNameservers(request=query, errors=errors)
    assert failure_reason(no_server, 5.0) == (
        "10.0.0.2@53 answered SERVFAIL; 10.0.0.3@5353 Connection refused"
    )
    timeout = dns.resolver.LifetimeTimeout(timeout=1.2345, errors=[])
    assert failure_reason(timeout, 0.3) == "no answer within 0.3 s"
    unconfigured = dns.resolver.NoResolverConfiguration("no nameservers")
    assert failure_reason(unconfigured, 5.0) == "no nameservers configured"


# -- config -----------------------------------------------------------------------------------


def config_errors(topology: dict[str, Any], plugins: Plugins) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(
            {"node": {"name": APP[0]}, "topologies": {"k8s": topology}}, env={}, plugins=plugins
        )
    return [str(issue) for issue in info.value.issues]


def test_config_errors_name_their_key(plugins: Plugins) -> None:
    path = "topologies.k8s.config"
    assert config_errors({"strategy": "kubernetes.dns", "config": {}}, plugins) == [
        f"{path}.service: required key is missing",
        f"{path}.application_name: required key is missing",
    ]
    bad = {
        "service": "app..example",
        "application_name": "app@x",
        "polling_interval": "fast",
        "nameservers": ["127.0.0.1", "dns.example"],
        "port": 70000,
        "timeout": 0,
    }
    assert config_errors({"strategy": "kubernetes.dns", "config": bad}, plugins) == [
        f"{path}.service: expected a DNS name (labels of letters, digits, '-' and '_', "
        "separated by '.'), got 'app..example'",
        f"{path}.application_name: expected letters, digits, '_', '-' or '.', starting with "
        "a letter, digit or '_', got 'app@x'",
        f"{path}.polling_interval: expected a duration (a number of ms, or e.g. '500ms', "
        "'5s', '1m'), got 'fast'",
        f"{path}.nameservers[1]: expected an IP address, got 'dns.example'",
        f"{path}.port: expected a port number from 1 to 65535, got 70000",
        f"{path}.timeout: expected a positive duration, got 0",
    ]
    srv = {"service": "App", "application_name": "app", "namespace": "", "nameservers": []}
    assert config_errors({"strategy": "kubernetes.dnssrv", "config": srv}, plugins) == [
        f"{path}.service: expected a Kubernetes name (at most 63 lowercase letters, digits "
        "and '-', starting and ending with a letter or digit), got 'App'",
        f"{path}.namespace: expected a Kubernetes name (at most 63 lowercase letters, digits "
        "and '-', starting and ending with a letter or digit), got ''",
        f"{path}.nameservers: expected at least one entry, got a list",
    ]
    poll = {"query": "app.example", "node_basename": "app", "service": "x"}
    assert config_errors({"strategy": "dns_poll", "config": poll}, plugins) == [
        f"{path}.service: unknown key 'service'; known keys: query, node_basename, "
        "polling_interval, nameservers, port, timeout",
    ]


def test_config_defaults(plugins: Plugins) -> None:
    config = load_config(
        {
            "node": {"name": APP[0]},
            "topologies": {
                "srv": {
                    "strategy": "kubernetes.dnssrv",
                    "config": {"service": "app", "application_name": "app"},
                }
            },
        },
        env={},
        plugins=plugins,
    )
    srv = config.topologies["srv"].config
    assert (srv.namespace, srv.cluster_domain, srv.polling_interval) == ("default", None, 5000)
    assert (srv.nameservers, srv.port, srv.timeout) == (None, None, 5000)


# -- against dnsmasq --------------------------------------------------------------------------


@pytest.fixture
async def dnsmasq(tmp_path: Path) -> AsyncIterator[Dnsmasq]:
    async with Dnsmasq.open(tmp_path / "dnsmasq") as server:
        yield server


class Spy:
    """Records the topology connect/disconnect events."""

    def __init__(self) -> None:
        self.connected: list[TopologyConnect] = []
        self.disconnected: list[TopologyDisconnect] = []

    @hookimpl
    def pycluster_topology_connect(self, event: TopologyConnect) -> None:
        self.connected.append(event)

    @hookimpl
    def pycluster_topology_disconnect(self, event: TopologyDisconnect) -> None:
        self.disconnected.append(event)


@pytest.fixture
def spy(plugins: Plugins) -> Spy:
    spy = Spy()
    plugins.manager.register(spy)
    return spy


def resolver_keys(dnsmasq: Dnsmasq, polling_interval: int = POLL_MS) -> dict[str, Any]:
    return {
        "nameservers": [dnsmasq.address],
        "port": dnsmasq.port,
        "polling_interval": polling_interval,
        "timeout": TIMEOUT_MS,
    }


def kubernetes_dns(dnsmasq: Dnsmasq, **keys: Any) -> dict[str, Any]:
    config = {"service": SERVICE, "application_name": "app", **resolver_keys(dnsmasq), **keys}
    return {"strategy": "kubernetes.dns", "config": config}


def ips(*hosts: int) -> list[str]:
    return [f"127.0.0.{host}" for host in hosts]


async def test_kubernetes_dns_follows_the_service(
    dnsmasq: Dnsmasq,
    network: InMemoryNetwork,
    plugins: Plugins,
    spy: Spy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    me = APP[0]
    for name in APP[1:]:
        network.join(name)
    # The Service lists this node too: it is never connected to itself.
    await dnsmasq.set_hosts({SERVICE: ips(2, 3, 4)})
    supervisor = supervisor_for(me, kubernetes_dns(dnsmasq), network, plugins)
    async with supervisor:
        await eventually(lambda: network.links(me) == APP[1:3])
        # A node this topology never listed is not its business.
        await network.join(OUTSIDER).connect(me)
        # A pod comes.
        await dnsmasq.set_hosts({SERVICE: ips(2, 3, 4, 5)})
        await eventually(lambda: network.links(me) == [*APP[1:4], OUTSIDER])
        # A pod goes: disconnected, and refused while the Service leaves it out.
        await dnsmasq.set_hosts({SERVICE: ips(2, 4, 5)})
        await eventually(lambda: network.links(me) == [*APP[2:4], OUTSIDER])
        assert spy.disconnected == [TopologyDisconnect(me, "t", APP[1])]
        assert supervisor.refuses(APP[1])
        polled = dnsmasq.queries(SERVICE)
        await eventually(lambda: dnsmasq.queries(SERVICE) >= polled + 3)
        assert supervisor.refuses(APP[1])
        assert network.links(me) == [*APP[2:4], OUTSIDER]
        assert not supervisor.refuses(OUTSIDER)
        # Listed again: no longer refused, and reconnected.
        await dnsmasq.set_hosts({SERVICE: ips(2, 3, 4, 5)})
        await eventually(lambda: network.links(me) == [*APP[1:4], OUTSIDER])
        assert not supervisor.refuses(APP[1])
    assert me not in [event.peer for event in spy.connected]
    assert logged(caplog, event="connect_failed") == []  # not even to itself
    assert crashes(caplog) == []
    assert spy.disconnected == [TopologyDisconnect(me, "t", APP[1])]


async def test_failed_empty_and_missing_answers_keep_the_nodes(
    dnsmasq: Dnsmasq,
    network: InMemoryNetwork,
    plugins: Plugins,
    spy: Spy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    me = APP[0]
    for name in APP[1:3]:
        network.join(name)
    await dnsmasq.set_hosts({SERVICE: ips(2, 3, 4)})
    supervisor = supervisor_for(me, kubernetes_dns(dnsmasq), network, plugins)

    def warnings(reason: str) -> int:
        return len(
            logged(caplog, event="discovery_problem", reason=reason, levelno=logging.WARNING)
        )

    def recoveries() -> int:
        return len(logged(caplog, event="discovery_recovered"))

    async def polled_a_few_times() -> None:
        before = dnsmasq.queries(SERVICE)
        await eventually(lambda: dnsmasq.queries(SERVICE) >= before + 3)

    async with supervisor:
        await eventually(lambda: network.links(me) == APP[1:3])
        # NXDOMAIN: the name is gone.
        await dnsmasq.set_hosts({})
        await eventually(lambda: warnings("nxdomain") > 0)
        await polled_a_few_times()
        # The name exists but has no address records.
        await dnsmasq.set_hosts({SERVICE: []})
        await eventually(lambda: warnings("no_records") > 0)
        await polled_a_few_times()
        await dnsmasq.set_hosts({SERVICE: ips(2, 3, 4)})
        await eventually(lambda: recoveries() == 1)
        assert network.links(me) == APP[1:3]
        # The nameserver is dead: every lookup times out.
        await dnsmasq.stop()
        await eventually(lambda: warnings("failed") > 0, timeout=15)
        assert network.links(me) == APP[1:3]
        await dnsmasq.start()
        await eventually(lambda: recoveries() == 2, timeout=15)
        await polled_a_few_times()
        assert network.links(me) == APP[1:3]
    assert spy.disconnected == []
    # Each problem was logged once, however many lookups repeated it.
    assert (warnings("nxdomain"), warnings("no_records"), warnings("failed")) == (1, 1, 1)
    (dead,) = logged(caplog, event="discovery_problem", reason="failed")
    assert f"no answer within {TIMEOUT_MS / 1000:g} s" in dead.problem  # the lookup's outcome
    assert recoveries() == 2
    # The strategy never crashed and was restarted along the way.
    assert crashes(caplog) == []


async def test_a_dead_nameserver_is_a_problem_in_status_and_metrics_until_it_answers(
    dnsmasq: Dnsmasq, network: InMemoryNetwork, plugins: Plugins
) -> None:
    me = APP[0]
    network.join(APP[1])
    await dnsmasq.set_hosts({SERVICE: ips(2, 3)})
    # A short timeout: each failed lookup takes that long, and the test waits for three.
    keys = {**resolver_keys(dnsmasq), "timeout": 500}
    topology = {
        "strategy": "dns_poll",
        "config": {"query": SERVICE, "node_basename": "app", **keys},
    }
    config = load_config(
        {"node": {"name": me}, "topologies": {"t": topology}}, env={}, plugins=plugins
    )
    metrics = NodeMetrics()
    supervisor = Supervisor(
        config.topologies,
        membership=network.join(me),
        plugins=plugins,
        policy=TopologyRestartPolicy(initial_delay=0.01),
        metrics=metrics,
    )

    def health() -> dict[str, object]:
        return supervisor.status()["t"].to_json()

    def problem_gauge() -> float | None:
        return metrics.registry.get_sample_value("pycluster_topology_problem", {"topology": "t"})

    async with supervisor:
        await eventually(lambda: network.links(me) == [APP[1]])
        assert (health()["problem"], health()["failed_attempts"], problem_gauge()) == (None, 0, 0)
        await dnsmasq.stop()
        await eventually(lambda: health()["problem"] is not None, timeout=15)
        first = health()
        assert f"no answer within {keys['timeout'] / 1000:g} s" in str(first["problem"])
        assert problem_gauge() == 1
        await eventually(lambda: health()["failed_attempts"] == 3, timeout=15)
        assert health()["problem_since"] == first["problem_since"]
        assert health()["state"] == "running"
        await dnsmasq.start()
        await eventually(lambda: health()["problem"] is None, timeout=15)
        assert (health()["problem_since"], health()["failed_attempts"], problem_gauge()) == (
            None,
            0,
            0,
        )
        assert network.links(me) == [APP[1]]
    failed = metrics.registry.get_sample_value(
        "pycluster_topology_failed_attempts_total", {"topology": "t"}
    )
    assert failed is not None
    assert failed >= 3


async def test_a_refusing_nameserver_is_a_failed_lookup(
    dnsmasq: Dnsmasq,
    network: InMemoryNetwork,
    plugins: Plugins,
    spy: Spy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # dnsmasq refuses names outside its local domains (it forwards nothing here).
    topology = {
        "strategy": "dns_poll",
        "config": {"query": "app.example", "node_basename": "app", **resolver_keys(dnsmasq)},
    }
    supervisor = supervisor_for(APP[0], topology, network, plugins)
    network.join(APP[1])
    async with supervisor:
        await eventually(lambda: dnsmasq.log_text().count(" query[A] app.example ") >= 3)
        assert supervisor.status()["t"].state == "running"
    (failed,) = logged(caplog, event="discovery_problem", reason="failed", topology="t")
    assert f"{dnsmasq.address}@{dnsmasq.port} answered REFUSED" in failed.problem
    assert spy.connected == []
    assert network.links(APP[0]) == []


async def test_dns_poll_connects_ipv6_nodes(
    dnsmasq: Dnsmasq, network: InMemoryNetwork, plugins: Plugins, spy: Spy
) -> None:
    query = "nodes.lab.test"
    v6 = "worker@[::1]"
    v4 = "worker@127.0.0.3"
    me = "worker@127.0.0.2"
    network.join(v6)
    network.join(v4)
    # Only AAAA records: the A lookup's empty answer is normal, not a problem.
    await dnsmasq.set_hosts({query: ["::1"]})
    topology = {
        "strategy": "dns_poll",
        "config": {"query": query, "node_basename": "worker", **resolver_keys(dnsmasq)},
    }
    supervisor = supervisor_for(me, topology, network, plugins)
    async with supervisor:
        await eventually(lambda: network.links(me) == [v6])
        await dnsmasq.set_hosts({query: ["127.0.0.2", "127.0.0.3", "0:0::1"]})
        await eventually(lambda: network.links(me) == [v4, v6])
        await dnsmasq.set_hosts({query: ["127.0.0.3"]})
        await eventually(lambda: network.links(me) == [v4])
        assert supervisor.refuses(v6)
    assert spy.disconnected == [TopologyDisconnect(me, "t", v6)]


async def test_kubernetes_dnssrv_follows_the_statefulset(
    dnsmasq: Dnsmasq,
    network: InMemoryNetwork,
    plugins: Plugins,
    spy: Spy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cluster domain comes from $CLUSTER_DOMAIN when the config does not give one.
    monkeypatch.setenv("CLUSTER_DOMAIN", "lab.test")
    srv_name = "app.prod.svc.lab.test"
    pods = [f"app-{i}.app.prod.svc.lab.test" for i in range(3)]
    names = [f"app@{pod}" for pod in pods]
    for name in names[1:]:
        network.join(name)
    await dnsmasq.set_srv({srv_name: pods[:2]})
    topology = {
        "strategy": "kubernetes.dnssrv",
        "config": {
            "service": "app",
            "namespace": "prod",
            "application_name": "app",
            **resolver_keys(dnsmasq),
        },
    }
    supervisor = supervisor_for(names[0], topology, network, plugins)
    async with supervisor:
        await eventually(lambda: network.links(names[0]) == [names[1]])
        await dnsmasq.set_srv({srv_name: pods})
        await eventually(lambda: network.links(names[0]) == names[1:])
        await dnsmasq.set_srv({srv_name: [pods[0], pods[2]]})
        await eventually(lambda: network.links(names[0]) == [names[2]])
        assert supervisor.refuses(names[1])
    assert spy.disconnected == [TopologyDisconnect(names[0], "t", names[1])]
    assert names[0] not in [event.peer for event in spy.connected]


async def test_kubernetes_dnssrv_configured_domain_and_empty_answer(
    dnsmasq: Dnsmasq,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
) -> None:
    srv_name = "app.default.svc.cluster.local"
    pod = "app@app-1.app.default.svc.cluster.local"
    network.join(pod)
    await dnsmasq.set_srv({srv_name: ["app-1.app.default.svc.cluster.local"]})
    topology = {
        "strategy": "kubernetes.dnssrv",
        "config": {
            "service": "app",
            "application_name": "app",
            "cluster_domain": "cluster.local.",
            **resolver_keys(dnsmasq),
        },
    }
    supervisor = supervisor_for(
        "app@app-0.app.default.svc.cluster.local", topology, network, plugins
    )
    async with supervisor:
        await eventually(lambda: len(network.links(pod)) == 1)
        # The name keeps only address records: an empty SRV answer keeps the pod.
        await dnsmasq.set_srv({})
        await dnsmasq.set_hosts({srv_name: ["127.0.0.2"]})
        await eventually(
            lambda: bool(logged(caplog, event="discovery_problem", reason="no_records"))
        )
        assert len(network.links(pod)) == 1


async def test_lookups_without_nodes_are_retried_sooner_than_the_polling_interval(
    dnsmasq: Dnsmasq,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
) -> None:
    network.join(APP[1])
    # A minute between polls once settled; the Service is not there at the start.
    topology = kubernetes_dns(dnsmasq, polling_interval=60_000)
    supervisor = supervisor_for(APP[0], topology, network, plugins)
    async with supervisor:
        await eventually(lambda: bool(logged(caplog, event="discovery_problem", reason="nxdomain")))
        await dnsmasq.set_hosts({SERVICE: ips(2, 3)})
        await eventually(lambda: network.links(APP[0]) == [APP[1]], timeout=10)


# -- records that make no node name are skipped and counted -----------------------------------


def test_srv_targets_are_host_names_only() -> None:
    names, problems = srv_node_names(
        "app",
        [
            "app-0.app.prod.svc.cluster.local.",
            "app-1.123.",  # a DNS name's last label is never all digits
            "h:9100.",  # a DNS label may hold ':', a host name may not
            "[::1].",
            "0x7f.1.",
        ],
    )
    assert names == ["app@app-0.app.prod.svc.cluster.local"]
    assert problems == [
        "target 'app-1.123.' makes no node name "
        "('app-1.123' is not a host name: its last label is all digits)",
        "target 'h:9100.' makes no node name (not a host name)",
        "target '[::1].' makes no node name (not a host name)",
        "target '0x7f.1.' makes no node name "
        "('0x7f.1' looks like an IPv4 address but is not one: write four numbers from 0 to "
        "255 without leading zeros, e.g. 10.0.0.5)",
    ]


def test_interpret_counts_the_records_it_skips() -> None:
    def names(values: Any) -> tuple[list[str], list[str]]:
        return srv_node_names("app", values)

    assert interpret("q", "SRV", Records(("a.example.", "b.1.", "c:1.")), names).skipped == 2
    assert interpret("q", "SRV", Records(("b.1.",)), names).skipped == 1
    assert interpret("q", "SRV", Records(("a.example.",)), names).skipped == 0
    assert interpret("q", "SRV", Failed("timed out"), names).skipped == 0


async def test_kubernetes_dnssrv_skips_and_counts_targets_that_make_no_name(
    dnsmasq: Dnsmasq,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.test_strategies import counting_supervisor, dropped

    srv_name = "app.prod.svc.lab.test"
    good = ["app-0.app.prod.svc.lab.test", "app-1.app.prod.svc.lab.test"]
    me, peer = (f"app@{pod}" for pod in good)
    network.join(peer)
    await dnsmasq.set_srv({srv_name: [*good, "app-2.123"]})
    topology = {
        "strategy": "kubernetes.dnssrv",
        "config": {
            "service": "app",
            "namespace": "prod",
            "application_name": "app",
            "cluster_domain": "lab.test",
            **resolver_keys(dnsmasq),
        },
    }
    supervisor, metrics = counting_supervisor(me, topology, network, plugins)
    async with supervisor:
        await eventually(lambda: network.links(me) == [peer])
        await eventually(lambda: dropped(metrics, "bad_record") >= 2)  # one at each lookup
        assert supervisor.status()["t"].crashes == 0
    assert network.links(me) == [peer]
    (skipped,) = logged(caplog, event="discovery_problem", reason="bad_records")
    assert "'app-2.123.'" in skipped.problem
