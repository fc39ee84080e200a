"""A node's ``/metrics`` (issue 14): state gauges read when scraped, the call latency
histogram, build info and process metrics, and failed connections by reason.

Nodes over sockets listen on 127.0.14.x only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import pycluster
from pycluster import Actor, Plugins, load_config
from pycluster.actors import NoSuchActor
from pycluster.actors.ref import ActorRef
from pycluster.membership import CONNECT_REASONS, REASON_TEXT, ConnectFailure, InMemoryNetwork
from pycluster.metrics import NodeMetrics
from pycluster.node import Node
from pycluster.strategy import Topology
from pycluster.testing import cluster
from pycluster.transport.frames import PREAUTH, FrameDecoder, FrameError, HttpAnswer
from pycluster.transport.handshake import HandshakeError
from pycluster.transport.mesh import dial_failure, handshake_failure
from tests.conftest import eventually

COOKIE = "metrics-test-cookie-0123"
A, B = "a@127.0.14.2", "b@127.0.14.3"
STATE = (
    "pycluster_registry_names",
    "pycluster_registry_groups",
    "pycluster_registry_members",
    "pycluster_actors",
    "pycluster_mailbox_depth",
    "pycluster_mailbox_depth_max",
)


def scraped(node: Node) -> dict[str, float]:
    """The node's ``/metrics`` text, parsed: {series: value}, labels written sorted."""
    values = {}
    for family in text_string_to_metric_families(node.metrics.render().decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def state(node: Node) -> dict[str, float]:
    """The state gauges of one scrape."""
    values = scraped(node)
    return {name: values[name] for name in STATE}


class Gate(Actor):
    """Handles a cast by waiting for ``gate``: later messages wait in its mailbox."""

    def __init__(self, gate: asyncio.Event) -> None:
        self.gate = gate

    async def handle_cast(self, message: Any) -> None:
        await self.gate.wait()

    async def handle_call(self, message: Any) -> Any:
        return message


async def test_registry_actors_and_mailboxes_are_read_when_scraped() -> None:
    async with cluster(2) as c:
        a, b = c.nodes
        before = state(a)
        assert before == dict.fromkeys(STATE, 0.0)
        gate = asyncio.Event()
        # Spawned without a loop turn: only a scrape-time read can see it already.
        a.actors.spawn(Gate, gate)
        assert state(a)["pycluster_actors"] == 1
        ref = await a.registry.spawn("gate", Gate, gate)
        other = a.actors.refs()[0]
        await a.registry.join("workers", ref)
        await a.registry.join("workers", other)
        await a.registry.join("all", ref)
        for _ in range(4):
            await a.actors.cast(ref, "wait")  # the first is handled (waits), 3 queue
        await eventually(lambda: state(a)["pycluster_mailbox_depth"] == 3)
        assert state(a) == {
            "pycluster_registry_names": 1,
            "pycluster_registry_groups": 2,
            "pycluster_registry_members": 3,
            "pycluster_actors": 2,
            "pycluster_mailbox_depth": 3,
            "pycluster_mailbox_depth_max": 3,
        }
        await a.actors.cast(other, "wait")
        await a.actors.cast(other, "wait")
        await eventually(lambda: state(a)["pycluster_mailbox_depth"] == 4)
        assert state(a)["pycluster_mailbox_depth_max"] == 3
        # The registry as b knows it; no actor runs on b.
        await eventually(lambda: state(b)["pycluster_registry_members"] == 3)
        assert state(b) == {
            **dict.fromkeys(STATE, 0.0),
            "pycluster_registry_names": 1,
            "pycluster_registry_groups": 2,
            "pycluster_registry_members": 3,
        }
        gate.set()
        await eventually(lambda: state(a)["pycluster_mailbox_depth"] == 0)
        assert state(a)["pycluster_mailbox_depth_max"] == 0


def calls(node: Node, where: str) -> float:
    value = node.metrics.registry.get_sample_value(
        "pycluster_call_duration_seconds_count", {"where": where}
    )
    return value or 0.0


async def test_calls_to_actors_are_timed_where_they_are_made() -> None:
    async with cluster(2) as c:
        a, b = c.nodes
        await a.registry.spawn("echo", Gate, asyncio.Event())
        await eventually(lambda: b.registry.whereis("echo") is not None)
        before = {node: (calls(node, "local"), calls(node, "remote")) for node in (a, b)}
        for _ in range(5):
            assert await a.registry.call("echo", "hi") == "hi"
        for _ in range(3):
            assert await b.registry.call("echo", "hi") == "hi"
        gone = ActorRef(a.name, "no-such-actor")
        with pytest.raises(NoSuchActor):
            await a.actors.call(gone, "hi")  # failed calls are timed too
        with pytest.raises(NoSuchActor):
            await b.actors.call(gone, "hi")
        gate = asyncio.Event()
        busy = await a.registry.spawn("busy", Gate, gate)
        await a.actors.cast(busy, "wait")
        with pytest.raises(TimeoutError):
            await a.actors.call(busy, "hi", timeout=0.05)  # timed-out calls too
        gate.set()
        assert calls(a, "local") - before[a][0] == 7
        assert calls(a, "remote") - before[a][1] == 0
        assert calls(b, "remote") - before[b][1] == 4
        assert calls(b, "local") - before[b][0] == 0
        total = a.metrics.registry.get_sample_value(
            "pycluster_call_duration_seconds_sum", {"where": "local"}
        )
        assert total is not None
        assert 0 < total < 5
        within = a.metrics.registry.get_sample_value(
            "pycluster_call_duration_seconds_bucket", {"where": "local", "le": "10.0"}
        )
        assert within == calls(a, "local")


def test_the_call_histogram_counts_each_call_in_its_bucket_as_prometheus_reads_it() -> None:
    metrics = NodeMetrics()
    local = metrics.call_duration.labels("local")
    metrics.call_duration.labels("remote")
    for seconds in (0.00005, 0.0005, 0.0007, 3.0, 60.0):  # 0.0005: on a bound, counted there
        local.observe(seconds)
    families = list(text_string_to_metric_families(metrics.render().decode()))
    (family,) = [f for f in families if f.name == "pycluster_call_duration_seconds"]
    # No "_created" timestamps beside it (prometheus_client's own histogram had them).
    assert not [f for f in families if f.name.startswith("pycluster_call_duration_seconds_")]
    assert family.type == "histogram"
    samples = {
        (sample.name, sample.labels["where"], sample.labels.get("le")): sample.value
        for sample in family.samples
    }
    bucket = "pycluster_call_duration_seconds_bucket"
    assert samples[(bucket, "local", "0.0001")] == 1
    assert samples[(bucket, "local", "0.00025")] == 1
    assert samples[(bucket, "local", "0.0005")] == 2
    assert samples[(bucket, "local", "0.001")] == 3
    assert samples[(bucket, "local", "2.5")] == 3
    assert samples[(bucket, "local", "5.0")] == 4
    assert samples[(bucket, "local", "10.0")] == 4
    assert samples[(bucket, "local", "+Inf")] == 5
    assert samples[("pycluster_call_duration_seconds_count", "local", None)] == 5
    assert samples[("pycluster_call_duration_seconds_sum", "local", None)] == pytest.approx(63.0012)
    # A series is exported from its first use, before any call.
    assert samples[(bucket, "remote", "+Inf")] == 0
    assert samples[("pycluster_call_duration_seconds_count", "remote", None)] == 0
    assert {name for name, _, _ in samples} == {
        bucket,
        "pycluster_call_duration_seconds_count",
        "pycluster_call_duration_seconds_sum",
    }


def test_build_info_and_process_metrics_are_in_every_nodes_registry() -> None:
    nodes = [Node(load_config({"node": {"name": name}}, env={}), cookie=COOKIE) for name in (A, B)]
    for node in nodes:
        values = scraped(node)
        assert values[f'pycluster_build_info{{version="{pycluster.__version__}"}}'] == 1
        assert values["process_cpu_seconds_total"] >= 0
        assert values["process_resident_memory_bytes"] > 0
        assert any(series.startswith("python_info{") for series in values)
        assert any(series.startswith("python_gc_collections_total{") for series in values)
    assert NodeMetrics().registry.get_sample_value("pycluster_build_info") is None


# -- why a connection failed ------------------------------------------------------------------


def test_every_reason_reads_as_text() -> None:
    assert set(REASON_TEXT) == set(CONNECT_REASONS)
    assert str(ConnectFailure("cookie")) == "cookie mismatch"
    assert str(ConnectFailure("unresolved", "[Errno -2] Name or service not known")) == (
        "name not resolved ([Errno -2] Name or service not known)"
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "unresolved"),
        (ConnectionRefusedError(111, "Connect call failed"), "refused"),
        (TimeoutError(), "timeout"),
        (OSError(113, "No route to host"), "unreachable"),
        (ssl.SSLError(1, "certificate verify failed"), "tls"),
    ],
    ids=lambda value: value if isinstance(value, str) else type(value).__name__,
)
def test_a_failed_dial_is_told_by_what_it_raised(error: OSError, reason: str) -> None:
    failure = dial_failure(error, 5.0)
    assert failure.reason == reason
    assert failure.detail  # the OS's words, or the time waited


@pytest.mark.parametrize(
    ("kind", "code", "reason"),
    [
        ("cookie", None, "cookie"),
        ("rejected", "cookie", "cookie"),
        ("rejected", "excluded", "refused_by_peer"),
        ("http", None, "http"),
        ("malformed", None, "malformed"),
        ("protocol", None, "malformed"),
        ("rejected", "malformed", "malformed"),
        ("version", None, "version"),
        ("rejected", "version", "version"),
        ("name", None, "name"),
        ("rejected", "name", "name"),
        ("timeout", None, "timeout"),
        ("closed", None, "closed"),
        ("rejected", None, "other"),
        ("rejected", "something new", "other"),
    ],
)
def test_a_failed_handshake_is_told_by_its_kind_or_the_peers_code(
    kind: str, code: str | None, reason: str
) -> None:
    error = HandshakeError("what happened", kind=kind, peer_code=code)
    assert handshake_failure(error) == ConnectFailure(reason, "what happened")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answer", "http"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n", True),
        (b"HTTP", True),  # the length read, the rest still on its way
        (b"HTTPS", False),
        (b"\x7f\x00\x00\x00/", False),
    ],
)
def test_an_http_answer_is_told_from_a_frame_over_the_cap(answer: bytes, http: bool) -> None:
    decoder = FrameDecoder(PREAUTH)
    decoder.feed(answer)
    with pytest.raises(FrameError) as raised:
        decoder.decode()
    assert isinstance(raised.value, HttpAnswer) == http


def make_node(name: str, cookie: str = COOKIE) -> Node:
    config = load_config({"node": {"name": name, "net_tick_timeout": 1.0}}, env={})
    return Node(config, cookie=cookie, handshake_timeout=0.5)


@contextlib.asynccontextmanager
async def server(
    host: str, answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]
) -> AsyncIterator[None]:
    """Something else than a node listening at ``host``:9100."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(OSError):
                await answer(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    listening = await asyncio.start_server(serve, host, 9100)
    async with listening:
        yield


async def junk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x00\x00\x00\x02\xc1\xc1")  # a frame holding no msgpack value
    await writer.drain()
    await reader.read()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    pass  # closed at once


async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()


async def test_a_nodes_dial_says_why_it_failed() -> None:
    a, b = make_node(A), make_node(B, cookie="another-cookie-entirely")
    async with a, b:

        async def reason(name: str) -> str | None:
            failure = await a.transport.dial(name)
            return None if failure is None else failure.reason

        assert await reason(B) == "cookie"
        assert await reason("impostor@127.0.14.3") == "name"
        assert await reason("nobody@127.0.14.9") == "refused"
        async with server("127.0.14.10", junk):
            assert await reason("junk@127.0.14.10") == "malformed"
        async with server("127.0.14.11", hang_up):
            assert await reason("gone@127.0.14.11") == "closed"
        async with server("127.0.14.12", say_nothing):
            assert await reason("mute@127.0.14.12") == "timeout"
        assert await reason(A) == "other"  # this node itself
    c, d = make_node("c@127.0.14.4"), make_node("d@127.0.14.5")
    async with c:
        async with d:
            assert await d.transport.dial(c.name) is None
            assert await d.transport.dial(c.name) is None  # already connected
        await eventually(lambda: c.nodes() == [])
        failure = await c.transport.dial(d.name)  # it left a moment ago
        assert failure == ConnectFailure("left")


def connects(metrics: NodeMetrics, result: str) -> float:
    labels = {"topology": "t", "result": result}
    return metrics.registry.get_sample_value("pycluster_topology_connects_total", labels) or 0


def failures(metrics: NodeMetrics, reason: str) -> float:
    labels = {"topology": "t", "reason": reason}
    value = metrics.registry.get_sample_value("pycluster_topology_connect_failures_total", labels)
    return value or 0


async def test_a_connection_counts_once_whichever_side_dialled(plugins: Plugins) -> None:
    network = InMemoryNetwork(plugins)
    me, peer, absent = "a@127.0.0.2", "b@127.0.0.3", "c@127.0.0.4"
    b = network.join(peer)
    metrics = NodeMetrics()
    topology = Topology("t", "epmd", None, network.join(me), plugins, asyncio.Event(), metrics)
    assert await b.connect(me)  # the peer dials in, before discovery lists it
    for _ in range(3):
        await topology.apply([peer, absent])
    assert connects(metrics, "ok") == 1
    assert (connects(metrics, "failed"), failures(metrics, "refused")) == (3, 3)
    # Also when the strategy asks for a node already connected (gossip may).
    assert await topology.connect([peer]) == [peer]
    assert connects(metrics, "ok") == 1
    # A new connection counts again; while cut off, each attempt fails, with its reason.
    network.set_reachable(peer, False)
    await topology.apply([peer])
    assert failures(metrics, "unreachable") == 1
    network.set_reachable(peer, True)
    await topology.apply([peer])
    await topology.apply([peer])
    assert connects(metrics, "ok") == 2
    # A connection lost and made again by the peer, between two answers, counts when seen.
    await b.disconnect(me)
    await topology.connect([])  # the strategy looks (gossip does so on each heartbeat)
    assert await b.connect(me)
    await topology.apply([peer])
    assert connects(metrics, "ok") == 3
