"""The ``kubernetes`` strategy: its pure rules, its config, and the official client against
the lab's fake API server (tests/lab/kube_api.py), on the in-memory network."""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, Literal

import aiohttp
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from pycluster import ConfigError, InMemoryNetwork, Plugins, TopologyRestartPolicy, load_config
from pycluster.nodename import NodeName, parse_node_name
from pycluster.strategies import kubernetes as strategy
from pycluster.strategies import kubernetes_api
from pycluster.strategies.kubernetes import Naming, fold, node_names, read_namespace
from pycluster.strategies.kubernetes_api import (
    Address,
    SetupError,
    WatchEvent,
    endpoints_addresses,
    pod_addresses,
    slice_addresses,
)
from pycluster.supervisor import Supervisor
from tests import hyp
from tests.certs import CertificateAuthority, make_ca
from tests.conftest import eventually, logged
from tests.lab import kube_api
from tests.lab.kube_api import KubeApi

NS = "lab"
LABELS = {"app": "pycluster"}
ME = "app@127.0.0.2"
PEERS = [f"app@127.0.0.{i}" for i in range(3, 7)]
LookupMode = Literal["endpointslices", "endpoints", "pods"]
State = Literal["ready", "not-ready", "terminating"]


def ip(name: str) -> str:
    return parse_node_name(name).host


# -- objects -> addresses -------------------------------------------------------------------


def test_endpoint_slice_addresses() -> None:
    found = slice_addresses(kube_api.fixture("endpointslice.json"))
    assert found == (
        Address("10.244.1.17", "prod", "app-0", ready=True, terminating=False),
        Address("10.244.2.9", "prod", "app-1", ready=False, terminating=False),
        Address("10.244.3.4", "prod", "app-2", ready=False, terminating=True),
        # No targetRef, no hostname, no conditions: the slice's namespace; ready (nil is true).
        Address("10.244.1.30", "prod", None, ready=True, terminating=False),
    )


def test_endpoint_slices_without_endpoints_or_ips() -> None:
    assert slice_addresses(kube_api.endpoint_slice("s", None)) == ()
    assert slice_addresses(kube_api.endpoint_slice("s", [])) == ()
    fqdn = kube_api.endpoint_slice("s", [kube_api.slice_endpoint("a.example")], address_type="FQDN")
    assert slice_addresses(fqdn) == ()
    v6 = kube_api.endpoint_slice("s", [kube_api.slice_endpoint("fd00::5")], address_type="IPv6")
    assert slice_addresses(v6) == (Address("fd00::5", "lab"),)


def test_endpoints_addresses_include_not_ready() -> None:
    found = endpoints_addresses(kube_api.fixture("endpoints.json"))
    assert found == (
        Address("10.244.1.17", "prod", "app-0", ready=True),
        Address("10.244.1.30", "prod", None, ready=True),
        Address("10.244.2.9", "prod", "app-1", ready=False),
    )
    assert endpoints_addresses(kube_api.endpoints("app", [])) == ()


def test_pod_addresses() -> None:
    assert pod_addresses(kube_api.fixture("pod.json")) == (
        Address("10.244.1.17", "prod", "app-0", ready=True, terminating=False),
    )
    assert pod_addresses(kube_api.pod("p", None)) == ()  # no podIP yet
    assert pod_addresses(kube_api.pod("p", "10.0.0.1", ready=False)) == (
        Address("10.0.0.1", "lab", ready=False),
    )
    for gone in (
        kube_api.pod("p", "10.0.0.1", deleting=True),
        kube_api.pod("p", "10.0.0.1", phase="Succeeded"),
        kube_api.pod("p", "10.0.0.1", phase="Failed"),
    ):
        assert [a.terminating for a in pod_addresses(gone)] == [True]


@pytest.mark.parametrize(
    "obj",
    [
        kube_api.fixture("endpointslice.json"),
        kube_api.fixture("endpoints.json"),
        kube_api.fixture("pod.json"),
        kube_api.pod("p", "10.0.0.1", deleting=True, hostname="p", subdomain="app"),
        kube_api.pod("p", None, phase="Pending", ready=False),
        kube_api.endpoint_slice(
            "s",
            [
                kube_api.slice_endpoint("10.0.0.1", pod_name="p", hostname="p"),
                kube_api.slice_endpoint("10.0.0.2", terminating=True),
            ],
        ),
        kube_api.endpoint_slice("s", None),
        kube_api.endpoints(
            "app",
            [kube_api.endpoint_address("10.0.0.1", pod_name="p", hostname="p")],
            [kube_api.endpoint_address("10.0.0.2")],
        ),
    ],
    ids=lambda obj: f"{obj['kind']}-{obj['metadata']['name']}",
)
def test_lab_objects_follow_the_api_schema(obj: dict[str, Any]) -> None:
    # Strict: a misspelt field (podIp, terminated) fails, so the lab cannot drift.
    kubernetes_validate.validate(obj, "1.37", strict=True)


# -- addresses -> node names ----------------------------------------------------------------


def test_names_in_each_mode() -> None:
    address = Address("10.244.1.17", "prod", "app-0")
    assert Naming("app").name(address) == "app@10.244.1.17"
    assert Naming("app", "dns").name(address) == "app@10-244-1-17.prod.pod.cluster.local"
    assert (
        Naming("app", "hostname", "app-svc", "k8s.example").name(address)
        == "app@app-0.app-svc.prod.svc.k8s.example"
    )
    assert Naming("app").name(Address("fd00::5", "prod")) == "app@[fd00::5]"
    assert (
        Naming("app", "dns").name(Address("fd00::5", "prod"))
        == "app@fd00--5.prod.pod.cluster.local"
    )
    # Not nameable: no hostname in hostname mode; a dashed IPv6 that starts with "-".
    assert Naming("app", "hostname", "svc").name(Address("10.0.0.1", "prod")) is None
    assert Naming("app", "dns").name(Address("::1", "prod")) is None


def test_cluster_domain_from_config_then_env_then_default() -> None:
    config = load_kubernetes_config({"mode": "dns"})
    assert Naming.from_config(config, {}).domain == "cluster.local"
    assert Naming.from_config(config, {"CLUSTER_DOMAIN": "corp.local."}).domain == "corp.local"
    config = load_kubernetes_config({"mode": "dns", "cluster_domain": "k8s.example"})
    assert Naming.from_config(config, {"CLUSTER_DOMAIN": "corp.local"}).domain == "k8s.example"


@given(base=hyp.base_names, host=hyp.ipv4_hosts | hyp.ipv6_hosts, namespace=hyp.dns_hosts)
def test_ip_and_dns_names_are_valid_node_names(base: str, host: str, namespace: str) -> None:
    address = Address(host, namespace.split(".")[0])
    assert parse_node_name(Naming(base).name(address) or "") == NodeName(base, host)
    dns = Naming(base, "dns").name(address)
    if ipaddress.ip_address(host).version == 4:
        dashed = host.replace(".", "-")
        assert dns == f"{base}@{dashed}.{address.namespace}.pod.cluster.local"
    if dns is not None:
        assert parse_node_name(dns).name == base


addresses = st.builds(
    Address,
    ip=st.sampled_from([f"10.0.0.{i}" for i in range(1, 6)]),
    namespace=st.just("prod"),
    ready=st.booleans(),
    terminating=st.booleans(),
)


@given(st.lists(addresses, max_size=8))
def test_terminating_addresses_never_count_not_ready_ones_do(found: list[Address]) -> None:
    names, unnamed = node_names(found, Naming("app"))
    assert unnamed == []
    assert names == {f"app@{a.ip}" for a in found if not a.terminating}


events = st.builds(
    WatchEvent,
    type=st.sampled_from(["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]),
    name=st.sampled_from(["a", "b", "c"]),
    addresses=st.lists(addresses, max_size=2).map(tuple),
    resource_version=st.integers(1, 10**6).map(str),
)


@given(st.lists(events, max_size=20))
def test_watch_events_fold_into_the_current_objects(stream: list[WatchEvent]) -> None:
    objects: dict[str, tuple[Address, ...]] = {}
    model: dict[str, tuple[Address, ...]] = {}
    for event in stream:
        objects = fold(objects, event)
        assert event.name is not None
        if event.type in ("ADDED", "MODIFIED"):
            model[event.name] = event.addresses
        elif event.type == "DELETED":
            model.pop(event.name, None)
    assert objects == model


def test_read_namespace(tmp_path: Path) -> None:
    path = tmp_path / "namespace"
    path.write_text("prod\n")
    assert read_namespace(path) == "prod"
    path.write_text("")
    with pytest.raises(SetupError, match="is empty"):
        read_namespace(path)
    with pytest.raises(SetupError, match="set namespace when not running in a pod"):
        read_namespace(tmp_path / "missing")


# -- config ---------------------------------------------------------------------------------


def load_kubernetes_config(config: dict[str, Any]) -> strategy.KubernetesConfig:
    base = {"selector": "app=pycluster", "node_basename": "app", **config}
    topology = {"strategy": "kubernetes", "config": base}
    loaded = load_config(
        {"node": {"name": ME}, "topologies": {"k": topology}}, env={}, plugins=builtin()
    )
    parsed: strategy.KubernetesConfig = loaded.topologies["k"].config
    return parsed


def builtin() -> Plugins:
    return Plugins.load(entry_points=False)


def test_config_defaults() -> None:
    config = load_kubernetes_config({})
    assert (config.ip_lookup_mode, config.mode, config.watch) == ("endpointslices", "ip", True)
    assert (config.namespace, config.api_server, config.polling_interval) == (None, None, 5000)


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (
            {"selector": "a=b"},
            "topologies.k.config.node_basename: required key is missing",
        ),
        ({"node_basename": "app"}, "topologies.k.config.selector: required key is missing"),
        (
            {"selector": "", "node_basename": "app"},
            "topologies.k.config.selector: expected a non-empty string, got ''",
        ),
        (
            {"selector": "a=b", "node_basename": "a@b"},
            "topologies.k.config.node_basename: expected letters, digits",
        ),
        (
            {"selector": "a=b", "node_basename": "app", "mode": "hostname"},
            "topologies.k.config.service: required when mode is 'hostname'",
        ),
        (
            {"selector": "a=b", "node_basename": "app", "ip_lookup_mode": "services"},
            "topologies.k.config.ip_lookup_mode: expected one of 'endpointslices', "
            "'endpoints', 'pods', got 'services'",
        ),
        (
            {"selector": "a=b", "node_basename": "app", "mode": "fqdn"},
            "topologies.k.config.mode: expected one of 'ip', 'dns', 'hostname', got 'fqdn'",
        ),
        (
            {"selector": "a=b", "node_basename": "app", "polling_interval": "fast"},
            "topologies.k.config.polling_interval: expected a duration (a number of ms, or "
            "e.g. '500ms', '5s', '1m'), got 'fast'",
        ),
        (
            {"selector": "a=b", "node_basename": "app", "api_server": "127.0.0.1:8001"},
            "topologies.k.config.api_server: expected an http:// or https:// URL, "
            "got '127.0.0.1:8001'",
        ),
        (
            {"selector": "a=b", "node_basename": "app", "watch": "yes"},
            "topologies.k.config.watch: expected true or false, got 'yes'",
        ),
    ],
)
def test_config_errors_name_their_key(config: dict[str, Any], problem: str) -> None:
    topology = {"strategy": "kubernetes", "config": config}
    with pytest.raises(ConfigError) as raised:
        load_config(
            {"node": {"name": ME}, "topologies": {"k": topology}}, env={}, plugins=builtin()
        )
    assert any(str(issue).startswith(problem) for issue in raised.value.issues), raised.value


def test_hostname_mode_with_a_service_is_valid() -> None:
    config = load_kubernetes_config({"mode": "hostname", "service": "app"})
    assert (config.mode, config.service) == ("hostname", "app")


def test_registering_and_validating_do_not_import_the_client() -> None:
    code = """
import sys
import pycluster.strategies
from pycluster import load_config
load_config({"node": {"name": "app@10.0.0.1"}, "topologies": {"k": {
    "strategy": "kubernetes", "config": {
    "selector": "app=x", "node_basename": "app", "ip_lookup_mode": "pods"}}}}, env={})
print(sorted(m for m in sys.modules if m.split(".")[0] == "kubernetes"))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


# -- against the fake API server ------------------------------------------------------------


@pytest.fixture
async def kube() -> AsyncIterator[KubeApi]:
    async with KubeApi.running() as api:
        yield api


class Pods:
    """The lab's "pods", written to the fake API as one ip_lookup_mode reads them."""

    def __init__(self, kube: KubeApi, lookup: LookupMode) -> None:
        self.kube = kube
        self.lookup = lookup
        self.written: set[str] = set()

    def set(self, pods: dict[str, State]) -> None:
        """Make the API list exactly ``pods`` (node name -> state)."""
        by_pod = {name.split("@")[1].replace(".", "-"): (ip(name), s) for name, s in pods.items()}
        if self.lookup == "pods":
            for pod_name in self.written - set(by_pod):
                self.kube.delete("pods", pod_name, NS)
            for pod_name, (address, state) in by_pod.items():
                self.kube.put(
                    kube_api.pod(
                        pod_name,
                        address,
                        labels=LABELS,
                        ready=state == "ready",
                        deleting=state == "terminating",
                    )
                )
            self.written = set(by_pod)
        elif self.lookup == "endpointslices":
            slice_endpoints = [
                kube_api.slice_endpoint(
                    address,
                    pod_name=pod_name,
                    ready=state == "ready",
                    terminating=state == "terminating",
                )
                for pod_name, (address, state) in by_pod.items()
            ]
            self.kube.put(kube_api.endpoint_slice("app-x7k2p", slice_endpoints, labels=LABELS))
        else:
            assert "terminating" not in pods.values(), "Endpoints cannot say so"
            ready = [
                kube_api.endpoint_address(address, pod_name=pod_name)
                for pod_name, (address, state) in by_pod.items()
                if state == "ready"
            ]
            not_ready = [
                kube_api.endpoint_address(address, pod_name=pod_name)
                for pod_name, (address, state) in by_pod.items()
                if state == "not-ready"
            ]
            self.kube.put(kube_api.endpoints("app", ready, not_ready, labels=LABELS))


def kubernetes_supervisor(
    network: InMemoryNetwork, plugins: Plugins, kube: KubeApi, **config: Any
) -> Supervisor:
    settings = {
        "selector": "app=pycluster",
        "node_basename": "app",
        "namespace": NS,
        "api_server": kube.url,
        "polling_interval": 200,
        **config,
    }
    topology = {"strategy": "kubernetes", "config": settings}
    loaded = load_config(
        {"node": {"name": ME}, "topologies": {"k": topology}}, env={}, plugins=plugins
    )
    return Supervisor(
        loaded.topologies,
        membership=network.join(ME),
        plugins=plugins,
        policy=TopologyRestartPolicy(initial_delay=0.01),
    )


def join(network: InMemoryNetwork, names: Iterable[str] = PEERS) -> None:
    for name in names:
        network.join(name)


def problems(caplog: pytest.LogCaptureFixture, reason: str) -> list[str]:
    """The problems logged (as warnings) of ``reason``: what each said."""
    records = logged(caplog, event="discovery_problem", reason=reason, levelno=logging.WARNING)
    return [record.problem for record in records]


@pytest.mark.parametrize("watch", [True, False], ids=["watch", "poll"])
@pytest.mark.parametrize("lookup", ["endpointslices", "endpoints", "pods"])
async def test_follows_the_api(
    lookup: LookupMode,
    watch: bool,
    kube: KubeApi,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pods = Pods(kube, lookup)
    join(network)
    # Not-ready pods count: pods must find each other before they are ready.
    pods.set({ME: "ready", PEERS[0]: "ready", PEERS[1]: "not-ready"})
    kube.put(kube_api.pod("other", "127.0.0.9", labels={"app": "other"}))
    me = kubernetes_supervisor(network, plugins, kube, ip_lookup_mode=lookup, watch=watch)
    async with me:
        await eventually(lambda: network.links(ME) == PEERS[:2])
        pods.set({ME: "ready", PEERS[0]: "ready", PEERS[1]: "ready", PEERS[2]: "not-ready"})
        await eventually(lambda: network.links(ME) == PEERS[:3])
        # Left out by a successful answer: disconnected, and refused while left out.
        gone: State = "ready" if lookup == "endpoints" else "terminating"
        departing = {PEERS[0]: gone} if lookup != "endpoints" else {}
        pods.set({ME: "ready", **departing, PEERS[1]: "ready", PEERS[2]: "ready"})
        await eventually(lambda: network.links(ME) == PEERS[1:3])
        assert me.refuses(PEERS[0])
        pods.set({ME: "ready", PEERS[0]: "ready", PEERS[1]: "ready", PEERS[2]: "ready"})
        await eventually(lambda: network.links(ME) == PEERS[:3])
        assert not me.refuses(PEERS[0])
        assert me.status()["k"].state == "running"
    assert ME not in network.links(ME)
    requests = [r for r in kube.requests if r.resource == lookup]
    assert requests
    assert all(r.query["labelSelector"] == "app=pycluster" for r in requests)
    if watch:
        assert kube.count("list") == 1
        watches = [r for r in requests if r.verb == "watch"]
        assert watches
        assert all(r.query["allowWatchBookmarks"] == "true" for r in watches)
    else:
        assert kube.count("watch") == 0
        assert kube.count("list") >= 4
    assert len(logged(caplog, event="api_plain_http", levelno=logging.WARNING)) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("as_http", [False, True], ids=["error-event", "http-status"])
async def test_410_gone_lists_again(
    as_http: bool,
    kube: KubeApi,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    kube.gone_as_http = as_http
    pods = Pods(kube, "endpointslices")
    join(network)
    pods.set({ME: "ready", PEERS[0]: "ready"})
    async with kubernetes_supervisor(network, plugins, kube):
        await eventually(lambda: network.links(ME) == PEERS[:1] and kube.watch_count() == 1)
        # The history the watch would resume from is compacted away while it is cut, and
        # a change lands meanwhile: only a new list can bring it.
        kube.cut_watches()
        pods.set({ME: "ready", PEERS[0]: "ready", PEERS[1]: "ready"})
        kube.compact()
        await eventually(lambda: network.links(ME) == PEERS[:2])
        assert kube.count("list") == 2
        assert logged(caplog, event="watch_expired", resource="endpointslices")
        # And it watches on from the new list.
        await eventually(lambda: kube.watch_count() == 1)
        pods.set({ME: "ready", PEERS[1]: "ready"})
        await eventually(lambda: network.links(ME) == PEERS[1:2])
        assert kube.count("list") == 2


async def test_bookmarks_move_the_resource_version_on(
    kube: KubeApi, network: InMemoryNetwork, plugins: Plugins
) -> None:
    pods = Pods(kube, "endpointslices")
    join(network)
    pods.set({ME: "ready", PEERS[0]: "ready"})
    async with kubernetes_supervisor(network, plugins, kube):
        await eventually(lambda: network.links(ME) == PEERS[:1] and kube.watch_count() == 1)
        # Changes the watch does not see move the version on; a bookmark tells the client.
        kube.touch_unrelated()
        kube.touch_unrelated()
        bookmarked = kube.resource_version
        assert kube.bookmark() == 1
        kube.compact()
        kube.cut_watches()
        await eventually(lambda: kube.count("watch") == 2)
        resumed = [r for r in kube.requests if r.verb == "watch"][-1]
        # Resumed from the bookmark, so the compaction did not force a new list.
        assert resumed.query["resourceVersion"] == bookmarked
        assert kube.count("list") == 1
        assert network.links(ME) == PEERS[:1]


async def test_forbidden_is_one_clear_message_and_keeps_nodes(
    kube: KubeApi,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    pods = Pods(kube, "endpointslices")
    join(network)
    pods.set({ME: "ready", PEERS[0]: "ready", PEERS[1]: "ready"})
    async with kubernetes_supervisor(network, plugins, kube):
        await eventually(lambda: network.links(ME) == PEERS[:2] and kube.watch_count() == 1)
        kube.forbidden = {"list", "watch"}
        kube.cut_watches()
        watches = kube.count("watch")
        await eventually(lambda: kube.count("watch") >= watches + 4, timeout=10)
        assert network.links(ME) == PEERS[:2]
        forbidden = problems(caplog, "forbidden")
        assert len(forbidden) == 1
        # It names who, the verbs, the resource, the namespace, and what the API said.
        named = [
            kube.url,
            '"list" and "watch"',
            '"endpointslices.discovery.k8s.io"',
            '"lab"',
            '"system:serviceaccount:lab:pycluster" cannot watch',
        ]
        assert [part for part in named if part not in forbidden[0]] == [], forbidden[0]
        kube.forbidden = set()
        await eventually(lambda: bool(logged(caplog, event="discovery_recovered")))
        pods.set({ME: "ready", PEERS[0]: "ready", PEERS[1]: "ready", PEERS[2]: "ready"})
        await eventually(lambda: network.links(ME) == PEERS[:3])


async def test_forbidden_list_when_polling_names_list_only(
    kube: KubeApi, network: InMemoryNetwork, plugins: Plugins, caplog: pytest.LogCaptureFixture
) -> None:
    kube.forbidden = {"list"}
    async with kubernetes_supervisor(network, plugins, kube, watch=False, ip_lookup_mode="pods"):
        await eventually(lambda: kube.count("list") >= 3)
    forbidden = problems(caplog, "forbidden")
    assert len(forbidden) == 1
    for part in ('"list" on', '"pods" (core API group)', f'"{NS}"'):  # list only: no watch
        assert part in forbidden[0], forbidden[0]


@pytest.mark.parametrize("watch", [True, False], ids=["watch", "poll"])
async def test_server_errors_and_cut_watches_keep_nodes(
    watch: bool,
    kube: KubeApi,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    pods = Pods(kube, "endpointslices")
    join(network)
    pods.set({ME: "ready", PEERS[0]: "ready", PEERS[1]: "ready"})
    async with kubernetes_supervisor(network, plugins, kube, watch=watch):
        await eventually(lambda: network.links(ME) == PEERS[:2])
        kube.failing = 500
        kube.cut_watches()
        before = len(kube.requests)
        await eventually(lambda: len(kube.requests) >= before + 4, timeout=10)
        assert network.links(ME) == PEERS[:2]
        # The API's 500, said once however often it repeats (a cut watch may come first).
        assert len([p for p in problems(caplog, "api_failed") if "500 InternalError" in p]) == 1
        kube.failing = None
        pods.set({ME: "ready", PEERS[1]: "ready"})
        await eventually(lambda: network.links(ME) == PEERS[1:2])
        assert logged(caplog, event="discovery_recovered", reason="api_failed")


async def test_a_slow_api_times_out_and_keeps_nodes(
    kube: KubeApi,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kubernetes_api, "LIST_TIMEOUT", 0.3)
    pods = Pods(kube, "pods")
    join(network)
    pods.set({ME: "ready", PEERS[0]: "ready"})
    topology = {"watch": False, "ip_lookup_mode": "pods"}
    async with kubernetes_supervisor(network, plugins, kube, **topology):
        await eventually(lambda: network.links(ME) == PEERS[:1])
        kube.delay = 1.0
        await eventually(
            lambda: any("TimeoutError" in p for p in problems(caplog, "api_failed")), timeout=10
        )
        assert network.links(ME) == PEERS[:1]
        kube.delay = 0.0
        pods.set({ME: "ready", PEERS[0]: "ready", PEERS[1]: "ready"})
        await eventually(lambda: network.links(ME) == PEERS[:2], timeout=10)


async def test_watches_the_server_ends_are_resumed_without_listing(
    kube: KubeApi, network: InMemoryNetwork, plugins: Plugins
) -> None:
    kube.watch_limit = 0.2
    pods = Pods(kube, "endpointslices")
    join(network)
    pods.set({ME: "ready", PEERS[0]: "ready"})
    async with kubernetes_supervisor(network, plugins, kube):
        await eventually(lambda: kube.count("watch") >= 4, timeout=10)
        pods.set({ME: "ready", PEERS[0]: "ready", PEERS[1]: "ready"})
        await eventually(lambda: network.links(ME) == PEERS[:2])
    assert kube.count("list") == 1


@pytest.mark.parametrize("watch", [True, False], ids=["watch", "poll"])
async def test_an_empty_answer_keeps_nodes_with_a_warning(
    watch: bool,
    kube: KubeApi,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pods = Pods(kube, "endpointslices")
    join(network)
    pods.set({ME: "ready", PEERS[0]: "ready", PEERS[1]: "ready"})
    async with kubernetes_supervisor(network, plugins, kube, watch=watch) as me:
        await eventually(lambda: network.links(ME) == PEERS[:2])
        kube.delete("endpointslices", "app-x7k2p", NS)
        await eventually(lambda: bool(problems(caplog, "no_nodes")))
        assert network.links(ME) == PEERS[:2]
        # Back, without PEERS[1]: that one is dropped and kept out.
        pods.set({ME: "ready", PEERS[0]: "ready"})
        await eventually(lambda: network.links(ME) == PEERS[:1])
        assert me.refuses(PEERS[1])
    (message,) = problems(caplog, "no_nodes")
    for part in ("endpointslices", '"app=pycluster"', '"lab"'):  # what was asked, where
        assert part in message, message


async def test_null_endpoints_and_missing_target_refs(
    kube: KubeApi, network: InMemoryNetwork, plugins: Plugins, caplog: pytest.LogCaptureFixture
) -> None:
    join(network)
    kube.put(kube_api.endpoint_slice("app-empty", None, labels=LABELS))
    bare = [kube_api.slice_endpoint(ip(n)) for n in (ME, PEERS[0])]
    kube.put(kube_api.endpoint_slice("app-bare", bare, labels=LABELS))
    async with kubernetes_supervisor(network, plugins, kube) as me:
        await eventually(lambda: network.links(ME) == PEERS[:1])
        # Through the watch too: slices emptied, then nulled, change nothing.
        kube.put(kube_api.endpoint_slice("app-empty", [], labels=LABELS))
        kube.put(kube_api.endpoint_slice("app-bare", None, labels=LABELS))
        await eventually(lambda: bool(problems(caplog, "no_nodes")))
        assert network.links(ME) == PEERS[:1]
        assert me.status()["k"].state == "running"


@pytest.mark.parametrize("mode", ["dns", "hostname"])
async def test_dns_and_hostname_modes(
    mode: str, kube: KubeApi, network: InMemoryNetwork, plugins: Plugins
) -> None:
    def named(i: int) -> str:
        if mode == "dns":
            return f"app@10-0-0-{i}.{NS}.pod.k8s.example"
        return f"app@app-{i}.app.{NS}.svc.k8s.example"

    for i in range(2, 5):
        kube.put(
            kube_api.pod(
                f"app-{i}", f"10.0.0.{i}", labels=LABELS, hostname=f"app-{i}", subdomain="app"
            )
        )
        network.join(named(i))
    # Named as the others name it, so it never connects to itself.
    settings = {
        "selector": "app=pycluster",
        "node_basename": "app",
        "namespace": NS,
        "api_server": kube.url,
        "ip_lookup_mode": "pods",
        "mode": mode,
        "service": "app",
        "cluster_domain": "k8s.example",
    }
    loaded = load_config(
        {
            "node": {"name": named(2)},
            "topologies": {"k": {"strategy": "kubernetes", "config": settings}},
        },
        env={},
        plugins=plugins,
    )
    supervisor = Supervisor(loaded.topologies, membership=network.join(named(2)), plugins=plugins)
    async with supervisor:
        await eventually(lambda: network.links(named(2)) == [named(3), named(4)])


async def test_hostname_mode_reports_pods_without_hostname(
    kube: KubeApi, network: InMemoryNetwork, plugins: Plugins, caplog: pytest.LogCaptureFixture
) -> None:
    kube.put(kube_api.pod("app-1", "10.0.0.1", labels=LABELS, hostname="app-1"))
    kube.put(kube_api.pod("web-1", "10.0.0.2", labels=LABELS))
    network.join(f"app@app-1.app.{NS}.svc.cluster.local")
    config = {"ip_lookup_mode": "pods", "mode": "hostname", "service": "app"}
    async with kubernetes_supervisor(network, plugins, kube, **config):
        await eventually(lambda: network.links(ME) == [f"app@app-1.app.{NS}.svc.cluster.local"])
        await eventually(lambda: bool(problems(caplog, "no_hostname")))
    assert "10.0.0.2" in problems(caplog, "no_hostname")[0]


async def test_namespace_defaults_to_the_service_accounts(
    tmp_path: Path,
    kube: KubeApi,
    network: InMemoryNetwork,
    plugins: Plugins,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("prod")
    monkeypatch.setattr(strategy, "NAMESPACE_FILE", namespace_file)
    network.join("app@10.1.0.5")
    kube.put(kube_api.pod("a", "10.1.0.5", namespace="prod", labels=LABELS))
    topology = {
        "strategy": "kubernetes",
        "config": {
            "selector": "app=pycluster",
            "node_basename": "app",
            "api_server": kube.url,
            "ip_lookup_mode": "pods",
        },
    }
    loaded = load_config(
        {"node": {"name": ME}, "topologies": {"k": topology}}, env={}, plugins=plugins
    )
    async with Supervisor(loaded.topologies, membership=network.join(ME), plugins=plugins):
        await eventually(lambda: network.links(ME) == ["app@10.1.0.5"])
    assert {r.namespace for r in kube.requests} == {"prod"}


async def test_outside_a_pod_without_api_server_is_a_clear_crash(
    network: InMemoryNetwork, plugins: Plugins, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    topology = {
        "strategy": "kubernetes",
        "config": {"selector": "app=x", "node_basename": "app", "namespace": NS},
    }
    loaded = load_config(
        {"node": {"name": ME}, "topologies": {"k": topology}}, env={}, plugins=plugins
    )
    supervisor = Supervisor(
        loaded.topologies,
        membership=network.join(ME),
        plugins=plugins,
        policy=TopologyRestartPolicy(initial_delay=0.01, max_restarts=1),
    )
    async with supervisor:
        await eventually(lambda: supervisor.status()["k"].state == "failed")
    error = supervisor.status()["k"].last_error or ""
    assert error.startswith("SetupError: not running in a Kubernetes pod")
    assert "set api_server or kubeconfig" in error


async def test_kubeconfig_with_the_api_server_replacing_its_server(
    tmp_path: Path, kube: KubeApi, network: InMemoryNetwork, plugins: Plugins
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "lab", "cluster": {"server": "https://192.0.2.1:6443"}}],
                "users": [{"name": "lab", "user": {"token": "lab-token"}}],
                "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
                "current-context": "lab",
            }
        )
    )
    pods = Pods(kube, "pods")
    join(network)
    pods.set({ME: "ready", PEERS[0]: "ready"})
    config = {"kubeconfig": str(kubeconfig), "ip_lookup_mode": "pods", "watch": False}
    async with kubernetes_supervisor(network, plugins, kube, **config):
        await eventually(lambda: network.links(ME) == PEERS[:1])
    assert {r.authorization for r in kube.requests} == {"Bearer lab-token"}


async def test_a_long_watch_cut_resumes_quietly(
    kube: KubeApi,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Any watch counts as long here (instead of waiting SHORTEST_WATCH for real).
    monkeypatch.setattr(strategy, "SHORTEST_WATCH", 0.0)
    caplog.set_level(logging.INFO)
    pods = Pods(kube, "endpointslices")
    join(network)
    pods.set({ME: "ready", PEERS[0]: "ready"})
    async with kubernetes_supervisor(network, plugins, kube):
        await eventually(lambda: network.links(ME) == PEERS[:1] and kube.watch_count() == 1)
        kube.cut_watches()
        await eventually(lambda: kube.count("watch") == 2 and kube.watch_count() == 1)
        pods.set({ME: "ready", PEERS[0]: "ready", PEERS[1]: "ready"})
        await eventually(lambda: network.links(ME) == PEERS[:2])
    assert logged(caplog, event="watch_interrupted", resource="endpointslices")
    assert logged(caplog, event="discovery_problem") == []
    assert kube.count("list") == 1


def serving_context(ca: CertificateAuthority, directory: Path) -> ssl.SSLContext:
    """An API server certificate for 127.0.0.1 (an IP SAN), signed by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    certfile, keyfile = directory / "apiserver.pem", directory / "apiserver.key"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


@pytest.mark.parametrize("trusted", [True, False], ids=["service-account-ca", "other-ca"])
async def test_in_cluster_verifies_tls_against_the_service_account_ca(
    trusted: bool,
    tmp_path: Path,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubernetes.aio.config import incluster_config

    ca, other = make_ca(tmp_path / "ca"), make_ca(tmp_path / "other")
    token = tmp_path / "token"
    token.write_text("sa-token")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    cafile = ca.cafile if trusted else other.cafile
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cafile))
    async with KubeApi.running(ssl_context=serving_context(ca, tmp_path)) as kube:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(kube.port))
        pods = Pods(kube, "pods")
        join(network)
        pods.set({ME: "ready", PEERS[0]: "ready"})
        config = {"api_server": None, "ip_lookup_mode": "pods", "watch": False}
        async with kubernetes_supervisor(network, plugins, kube, **config):
            if trusted:
                await eventually(lambda: network.links(ME) == PEERS[:1])
            else:
                await eventually(
                    lambda: any(
                        "certificate verify failed" in p for p in problems(caplog, "api_failed")
                    )
                )
                assert network.links(ME) == []
    if trusted:
        assert {r.authorization for r in kube.requests} == {"bearer sa-token"}
    else:
        assert kube.requests == []
    assert not logged(caplog, event="api_plain_http")


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("app=pycluster", ["a", "b"]),
        ("app==pycluster,tier=db", ["a"]),
        ("app=pycluster,tier!=db", ["b"]),
        ("tier in (db, cache)", ["a", "c"]),
        ("tier notin (db)", ["b", "c", "d"]),
        ("tier", ["a", "c"]),
        ("!tier", ["b", "d"]),
        ("", ["a", "b", "c", "d"]),
    ],
)
async def test_the_fake_api_selects_by_label_and_answers_in_api_shape(
    selector: str, matches: list[str], kube: KubeApi
) -> None:
    for name, labels in [
        ("a", {"app": "pycluster", "tier": "db"}),
        ("b", {"app": "pycluster"}),
        ("c", {"app": "web", "tier": "cache"}),
        ("d", {}),
    ]:
        kube.put(kube_api.pod(name, "10.0.0.1", labels=labels))
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{kube.url}/api/v1/namespaces/{NS}/pods", params={"labelSelector": selector}
        ) as response,
    ):
        listing = await response.json()
    assert [item["metadata"]["name"] for item in listing["items"]] == matches
    kubernetes_validate.validate(listing, "1.37", strict=True)


async def test_the_fake_api_lists_every_resource_in_api_shape(kube: KubeApi) -> None:
    kube.put(kube_api.pod("a", "10.0.0.1", labels=LABELS))
    kube.put(kube_api.endpoints("app", [kube_api.endpoint_address("10.0.0.1", pod_name="a")]))
    kube.put(kube_api.endpoint_slice("app-1", [kube_api.slice_endpoint("10.0.0.1")]))
    paths = [
        f"/api/v1/namespaces/{NS}/pods",
        f"/api/v1/namespaces/{NS}/endpoints",
        f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
    ]
    async with aiohttp.ClientSession() as session:
        for path in paths:
            async with session.get(kube.url + path) as response:
                listing = await response.json()
            assert len(listing["items"]) == 1
            assert listing["metadata"]["resourceVersion"] == kube.resource_version
            kubernetes_validate.validate(listing, "1.37", strict=True)
