"""Four real nodes find each other through the (fake) Kubernetes API, in every lookup mode,
and follow its changes by watch alone (issue: the ``kubernetes`` strategy).

Each node is a ``pycluster run`` process whose ``kubernetes`` topology lists, then watches,
the EndpointSlices, Endpoints or Pods of the lab's fake API server (tests/lab/kube_api.py)
with the official client, over ``api_server: http://127.0.0.1:PORT``. ``polling_interval``
is a minute, so within a test only a watch event can explain that a node sees a change.

The node that comes and goes is kept out while the API leaves it out: once its object was
removed, the others refuse its connections, even from a freshly started process at the
same address, until the API lists it again. That is what makes "the API listed it, and
within a second every node was connected to it" a measurement of the watch and not of the
new node dialling in on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pytest
import yaml

from tests.lab import Lab, LabNode
from tests.lab.kube_api import (
    KubeApi,
    endpoint_address,
    endpoint_slice,
    endpoints,
    pod,
    slice_endpoint,
)
from tests.lab.lab import HTTP_PORT

NAMESPACE = "lab"
LABELS = {"app": "pycluster"}
SERVICE = "app"
SLICE = "app-4kq9z"
POLLING_INTERVAL_MS = 60_000
"""Far longer than any wait below: nothing but the watch can bring a change in time."""
CONNECTED_WITHIN = 1.0
"""Seconds from the watch event to every node's /status listing the added node."""
FORM_WITHIN = 30.0
SETTLE_WITHIN = 15.0
"""Deadline for what is not measured: removals, restarts, recoveries, log lines."""
STAYS_OUT_FOR = 1.0
"""Seconds the removed node is watched staying out (its reconnects are refused)."""
FORBIDDEN_WATCHES_PER_NODE = 3
"""Watch attempts refused with 403 (on average per node) before RBAC is granted again."""

RecordProperty = Callable[[str, object], None]
"""pytest's ``record_property`` fixture: timings land in ``--junitxml`` reports."""


class Published:
    """What the fake API lists in one ``ip_lookup_mode``: the pods of some lab nodes."""

    def __init__(self, kube: KubeApi, mode: str) -> None:
        self.kube = kube
        self.mode = mode
        self.nodes: list[LabNode] = []

    def set(self, nodes: Sequence[LabNode]) -> str:
        """List exactly ``nodes`` (not ready yet: they count); return the resourceVersion
        of the change. EndpointSlices and Endpoints: one object for all, modified; Pods:
        one object each, added or deleted."""
        if self.mode == "pods":
            for gone in [n for n in self.nodes if n not in nodes]:
                self.kube.delete("pods", _pod_name(gone), NAMESPACE)
            for new in [n for n in nodes if n not in self.nodes]:
                self.kube.put(
                    pod(
                        _pod_name(new), new.address, namespace=NAMESPACE, labels=LABELS, ready=False
                    )
                )
        elif self.mode == "endpoints":
            not_ready = [endpoint_address(n.address, pod_name=_pod_name(n)) for n in nodes]
            self.kube.put(endpoints(SERVICE, [], not_ready, namespace=NAMESPACE, labels=LABELS))
        else:
            slices = [slice_endpoint(n.address, pod_name=_pod_name(n), ready=False) for n in nodes]
            self.kube.put(endpoint_slice(SLICE, slices, namespace=NAMESPACE, labels=LABELS))
        self.nodes = list(nodes)
        return self.kube.resource_version

    def touch(self) -> None:
        """Write the same objects again: MODIFIED events that change nothing, as the
        controllers' status updates make all the time."""
        if self.mode == "pods":
            for node in self.nodes:
                self.kube.put(self.kube.get("pods", _pod_name(node), NAMESPACE))
        else:
            name = SERVICE if self.mode == "endpoints" else SLICE
            self.kube.put(self.kube.get(self.mode, name, NAMESPACE))


def _pod_name(node: LabNode) -> str:
    return f"app-{node.address.rsplit('.', 1)[1]}"


def declare(lab: Lab, kube: KubeApi, mode: str, count: int) -> list[LabNode]:
    """``count`` nodes named ``app@ADDRESS`` whose topology is the ``kubernetes`` strategy."""
    nodes = []
    for _ in range(count):
        address = lab.address()
        name = f"app@{address}"
        config = {
            "node": {"name": name, "net_tick_timeout": 2.0, "http": {"port": HTTP_PORT}},
            "topologies": {
                "k8s": {
                    "strategy": "kubernetes",
                    "config": {
                        "selector": "app=pycluster",
                        "node_basename": "app",
                        "namespace": NAMESPACE,
                        "ip_lookup_mode": mode,
                        "api_server": kube.url,
                        "polling_interval": POLLING_INTERVAL_MS,
                        "watch": True,
                    },
                }
            },
        }
        nodes.append(lab.add(name, address, config, stem=f"app-{address.rsplit('.', 1)[1]}"))
    return nodes


def restarted(lab: Lab, node: LabNode) -> LabNode:
    """A new process for ``node`` (same name, address and config; a log of its own)."""
    config = yaml.safe_load(node.config_path.read_text())
    return lab.add(node.name, node.address, config, stem=f"{node.log_path.stem}-2")


async def all_watching(lab: Lab, kube: KubeApi, count: int) -> None:
    """Wait until ``count`` watches are open (every node listed, then started watching)."""

    async def watching() -> bool:
        return kube.watch_count() == count

    await lab.until(watching, timeout=SETTLE_WITHIN, what=f"{count} nodes watching the API")


async def assert_meshed(lab: Lab, nodes: Sequence[LabNode]) -> None:
    """Every node lists exactly the others now."""
    views = await lab.views(nodes)
    for node, view in zip(nodes, views, strict=True):
        others = sorted(n.name for n in nodes if n is not node)
        assert view is not None, f"{node.name} stopped answering"
        assert sorted(view) == others, f"{node.name} lists {view}"


async def remove(lab: Lab, published: Published, stay: Sequence[LabNode], gone: LabNode) -> float:
    """Leave ``gone`` out of the API; wait until it is disconnected from all and the others
    refuse its reconnects; return the seconds from the watch event to the disconnection."""
    offsets = [node.log_size() for node in stay]
    version = published.set(stay)
    await lab.wait_mesh(stay, timeout=SETTLE_WITHIN)

    async def alone() -> bool:
        return await lab.peers(gone) == []

    done = await lab.until(alone, timeout=SETTLE_WITHIN, what=f"{gone.name} connected to none")
    sent = published.kube.first_sent(version)
    assert sent is not None, "no watch event reported the removal"
    for node, offset in zip(stay, offsets, strict=True):
        await lab.wait_for_record(
            node, event="disconnected", peer=gone.name, topology="k8s", since=offset
        )
    # Its own discovery still lists the others. If it applied the removal before they
    # dropped it, nothing was missing then, and it would dial again only after
    # polling_interval; the next event it sees makes it dial at once, and they refuse it.
    published.touch()
    await refused_by(lab, stay, offsets, gone)
    return done - sent


async def add(lab: Lab, published: Published, nodes: Sequence[LabNode]) -> float:
    """List ``nodes`` again (one more than now); return the seconds from the watch event to
    every node's /status listing all the others."""
    version = published.set(nodes)
    meshed = await lab.wait_mesh(nodes, timeout=SETTLE_WITHIN)
    sent = published.kube.first_sent(version)
    assert sent is not None, "no watch event reported the addition"
    return meshed - sent


async def assert_stays_out(lab: Lab, stay: Sequence[LabNode], gone: LabNode) -> None:
    """For a while, nobody lets ``gone`` back in (it keeps dialling; they refuse)."""
    until = time.monotonic() + STAYS_OUT_FOR
    while time.monotonic() < until:
        views = await lab.views([*stay, gone])
        for node, view in zip(stay, views, strict=False):
            assert view is not None, f"{node.name} stopped answering"
            assert gone.name not in view, f"{node.name} let {gone.name} back in: {view}"
        assert views[-1] == [], f"{gone.name} is connected to {views[-1]}"
        assert gone.running


async def newcomer_connected_by_watch(
    lab: Lab, kube: KubeApi, published: Published, nodes: list[LabNode]
) -> tuple[list[LabNode], float, float]:
    """The shared start of every mode's scenario: four nodes form one cluster; the API
    drops the last (disconnected, kept out); it restarts as a new process, still kept
    out; the API lists it again and every node connects it within a second.

    Returns the nodes (the last one the new process) and the removal and addition latencies.
    """
    published.set(nodes)
    await lab.start(nodes)
    await lab.wait_mesh(nodes, timeout=FORM_WITHIN)
    # The mesh can form through the others' dials before a slow node's first list; a node
    # whose discovery never listed a peer leaves it alone (design.md), so changes come
    # once every node has listed everyone.
    await all_watching(lab, kube, len(nodes))
    stay, gone = nodes[:-1], nodes[-1]
    removed = await remove(lab, published, stay, gone)
    await assert_stays_out(lab, stay, gone)

    await lab.stop([gone])
    assert gone.exit_code == 0
    newcomer = restarted(lab, gone)
    offsets = [node.log_size() for node in stay]
    watches = kube.count("watch")
    await lab.start([newcomer])
    await refused_by(lab, stay, offsets, newcomer)

    # (The stopped process's watch still counts as open until the fake next writes to it,
    # so the newcomer's watch is recognised by its request.)
    async def newcomer_watching() -> bool:
        return kube.count("watch") > watches

    await lab.until(newcomer_watching, timeout=SETTLE_WITHIN, what="the newcomer watching")
    await assert_stays_out(lab, stay, newcomer)

    nodes = [*stay, newcomer]
    added = await add(lab, published, nodes)
    assert added < CONNECTED_WITHIN, f"connected {added:.3f} s after the watch event"
    return nodes, removed, added


def forbidden(node: LabNode, offset: int) -> bool:
    """Whether ``node`` said, since ``offset``, that RBAC forbids what its topology needs."""
    return bool(node.records(offset, event="discovery_problem", reason="forbidden"))


async def refused_by(
    lab: Lab, nodes: Sequence[LabNode], offsets: Sequence[int], refused: LabNode
) -> None:
    """Wait until each of ``nodes`` refused a connection from ``refused`` (since offsets)."""
    for node, offset in zip(nodes, offsets, strict=True):
        await lab.until(
            lambda node=node, offset=offset: node.refusals(refused.name, since=offset) > 0,
            timeout=SETTLE_WITHIN,
            what=f"{node.name} refuses {refused.name}",
        )


def downs(nodes: Sequence[LabNode], offsets: Sequence[int]) -> list[str]:
    """``node down`` lines the nodes logged since ``offsets``."""
    return [
        f"{node.name}: down {event.peer} ({event.reason})"
        for node, offset in zip(nodes, offsets, strict=True)
        for event in node.events(offset)
        if event.kind == "down"
    ]


@pytest.mark.parametrize("mode", ["endpoints", "pods"])
async def test_nodes_follow_the_api_by_watch(
    mode: str, lab: Lab, record_property: RecordProperty
) -> None:
    async with KubeApi.running() as kube:
        published = Published(kube, mode)
        nodes = declare(lab, kube, mode, 4)
        nodes, removed, added = await newcomer_connected_by_watch(lab, kube, published, nodes)
        record_property("removed_s", round(removed, 3))
        record_property("added_s", round(added, 3))

        stay, gone = nodes[:-1], nodes[-1]
        await remove(lab, published, stay, gone)
        await assert_stays_out(lab, stay, gone)
        assert kube.count("list") == 5  # one list per process; watches did the rest
        await lab.stop(nodes)
        assert [node.exit_code for node in nodes] == [0, 0, 0, 0]


async def test_endpointslices_watch_survives_410_and_403(
    lab: Lab, record_property: RecordProperty
) -> None:
    async with KubeApi.running() as kube:
        published = Published(kube, "endpointslices")
        nodes = declare(lab, kube, "endpointslices", 4)
        nodes, removed, added = await newcomer_connected_by_watch(lab, kube, published, nodes)
        record_property("removed_s", round(removed, 3))
        record_property("added_s", round(added, 3))
        stay, gone = nodes[:-1], nodes[-1]

        # 410 Gone: the history a cut watch would resume from is compacted away (a change
        # the nodes do not watch moved the version on). Each lists again, and stays put.
        offsets = [node.log_size() for node in nodes]
        lists = kube.count("list")
        kube.touch_unrelated(NAMESPACE)
        kube.compact()
        assert kube.cut_watches() >= 4
        for node, offset in zip(nodes, offsets, strict=True):
            await lab.wait_for_record(
                node,
                event="watch_expired",
                resource="endpointslices",
                topology="k8s",
                since=offset,
                timeout=SETTLE_WITHIN,
            )
        await all_watching(lab, kube, len(nodes))
        assert kube.count("list") == lists + 4
        await assert_meshed(lab, nodes)
        assert downs(nodes, offsets) == []
        # Later changes still arrive, by the new watches.
        removed_after_410 = await remove(lab, published, stay, gone)
        added_after_410 = await add(lab, published, nodes)
        record_property("removed_after_410_s", round(removed_after_410, 3))
        record_property("added_after_410_s", round(added_after_410, 3))
        assert added_after_410 < CONNECTED_WITHIN, f"{added_after_410:.3f} s after 410"

        # 403: RBAC taken away; the cut watches cannot resume. Nobody is disconnected, and
        # each node says what is missing once, however often it retries.
        offsets = [node.log_size() for node in nodes]
        watches = kube.count("watch")
        kube.forbidden = {"list", "watch"}
        assert kube.cut_watches() == 4
        refused = watches + 4 * FORBIDDEN_WATCHES_PER_NODE

        async def retried_and_said_why() -> bool:
            await assert_meshed(lab, nodes)  # all along: nobody is disconnected
            return kube.count("watch") >= refused and all(
                forbidden(node, offset) for node, offset in zip(nodes, offsets, strict=True)
            )

        await lab.until(
            retried_and_said_why,
            timeout=SETTLE_WITHIN,
            what="the nodes retry, and say why they fail",
        )
        # What the hint must name: who, the verbs, the resource, the namespace, and the
        # API's own words about the user.
        named = [
            kube.url,
            '"list" and "watch"',
            '"endpointslices.discovery.k8s.io"',
            f'"{NAMESPACE}"',
            f"system:serviceaccount:{NAMESPACE}:pycluster",
        ]
        kube.forbidden = set()
        for node, offset in zip(nodes, offsets, strict=True):
            await lab.wait_for_record(
                node,
                event="discovery_recovered",
                reason="forbidden",
                topology="k8s",
                since=offset,
                timeout=SETTLE_WITHIN,
            )
        for node, offset in zip(nodes, offsets, strict=True):
            said = node.records(offset, event="discovery_problem", reason="forbidden")
            assert len(said) == 1, f"{node.name} logged the RBAC hint {len(said)} times: {said}"
            assert said[0]["level"] == "WARNING"
            assert [part for part in named if part not in said[0]["problem"]] == [], said[0]
            assert node.records(offset, event="discovery_still_failing") == []
        await assert_meshed(lab, nodes)
        assert downs(nodes, offsets) == []
        await all_watching(lab, kube, len(nodes))

        # Granting RBAC again is enough: the next removal arrives, and keeps the node out.
        await remove(lab, published, stay, gone)
        await assert_stays_out(lab, stay, gone)
        assert kube.count("list") == 5 + 4  # one per process, and one each after the 410
        await lab.stop(nodes)
        assert [node.exit_code for node in nodes] == [0, 0, 0, 0]
