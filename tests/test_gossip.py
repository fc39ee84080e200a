"""The gossip strategy: its packets (sans-I/O, with hypothesis) and its socket, for real.

Socket tests run in a network namespace of their own (tests.lab.multicast), where
multicast works on loopback; the strategies in them run on the in-memory network, so what
they connect is plain bookkeeping.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from pycluster import ConfigError, InMemoryNetwork, Plugins, TopologyConnect, hookimpl, load_config
from pycluster.metrics import NodeMetrics
from pycluster.nodename import NodeNameError, parse_node_name
from pycluster.strategies.gossip import Gossip, GossipConfig, GossipProtocol, open_socket
from pycluster.strategies.gossip_packet import (
    MAGIC,
    MAX_PACKET_SIZE,
    NONCE_SIZE,
    REPLAY_WINDOW,
    VERSION,
    Drop,
    Heard,
    HeartbeatCodec,
    Rejected,
    ReplayGuard,
    derive_key,
)
from pycluster.strategy import Topology, TopologyLog
from tests.conftest import eventually, logged
from tests.hyp import BAD_NODE_NAMES, node_name_texts, node_names
from tests.lab.multicast import IPV6_INTERFACE
from tests.lab.multicast import multicast_namespace as namespace

SECRET = "correct horse battery staple"
NOW = 1_700_000_000.0
A, B, C = "a@127.0.0.2", "b@127.0.0.3", "c@127.0.0.4"
GROUP = "233.252.1.32"
PORT = 45892
INTERVAL = 100  # ms: quick heartbeats keep these tests short

cluster_names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
secrets_ = st.text(min_size=16, max_size=40)


def sealed(cluster: str = "default", secret: str = SECRET) -> HeartbeatCodec:
    return HeartbeatCodec(cluster, secret)


def plain(cluster: str = "default") -> HeartbeatCodec:
    return HeartbeatCodec(cluster, None)


def reason(verdict: Heard | Rejected) -> Drop | None:
    return verdict.reason if isinstance(verdict, Rejected) else None


# -- packets ---------------------------------------------------------------------------------


@given(node=node_names(), cluster=cluster_names, secret=st.none() | secrets_)
def test_a_heartbeat_round_trips(node: str, cluster: str, secret: str | None) -> None:
    sender, receiver = HeartbeatCodec(cluster, secret), HeartbeatCodec(cluster, secret)
    packet = sender.encode(node, NOW)
    assert len(packet) <= MAX_PACKET_SIZE
    assert receiver.decode(packet, NOW + 1) == Heard(str(parse_node_name(node)))
    # Encrypted: the node's name is nowhere in clear.
    if secret is not None:
        assert node.encode() not in packet


def test_sealed_packets_name_the_cluster_and_nothing_else_in_clear() -> None:
    packet = sealed("shop").encode(A, NOW)
    magic, version, cluster, body = msgpack.unpackb(packet)
    assert (magic, version, cluster) == (MAGIC, VERSION, "shop")
    assert isinstance(body, bytes)
    assert len(body) == NONCE_SIZE + 16 + len(msgpack.packb({"node": A, "sent": int(NOW * 1000)}))
    assert b"127.0.0.2" not in packet


def test_dropped_packets_and_why() -> None:
    receiver = sealed()
    good = sealed().encode(A, NOW)
    body = msgpack.unpackb(good)[3]
    assert receiver.decode(good, NOW) == Heard(A)
    cases: dict[str, tuple[bytes, Drop]] = {
        "replayed": (good, Drop.REPLAYED),
        "wrong secret": (sealed(secret="another secret, just as long").encode(A, NOW), Drop.FORGED),
        "other cluster": (sealed("other").encode(A, NOW), Drop.OTHER_CLUSTER),
        "plain": (plain().encode(A, NOW), Drop.UNSEALED),
        "stale": (sealed().encode(A, NOW - REPLAY_WINDOW - 1), Drop.STALE),
        "from the future": (sealed().encode(A, NOW + REPLAY_WINDOW + 1), Drop.STALE),
        "oversized": (good + bytes(MAX_PACKET_SIZE), Drop.OVERSIZED),
        "truncated": (good[:-1], Drop.MALFORMED),
        "not msgpack": (b"\xc1hello", Drop.MALFORMED),
        "empty": (b"", Drop.MALFORMED),
        "next version": (msgpack.packb([MAGIC, 2, "default", b"x"]), Drop.VERSION),
        "short body": (msgpack.packb([MAGIC, VERSION, "default", b"x" * 20]), Drop.FORGED),
        "extension": (
            msgpack.packb([MAGIC, VERSION, "default", msgpack.ExtType(1, b"")]),
            Drop.MALFORMED,
        ),
        "timestamp": (
            msgpack.packb([MAGIC, VERSION, "default", msgpack.Timestamp(1)]),
            Drop.MALFORMED,
        ),
        "truncated tag": (msgpack.packb([*msgpack.unpackb(good)[:3], body[:-1]]), Drop.FORGED),
    }
    for case, (packet, expected) in cases.items():
        verdict = receiver.decode(packet, NOW)
        assert isinstance(verdict, Rejected), case
        assert verdict.reason == expected, case
    flipped = bytearray(sealed().encode(A, NOW))
    flipped[-1] ^= 1
    assert reason(receiver.decode(bytes(flipped), NOW)) is Drop.FORGED
    # A plain receiver tells an encrypted packet from garbage (a misconfigured peer).
    assert reason(plain().decode(sealed().encode(A, NOW), NOW)) is Drop.SEALED
    assert plain().decode(plain().encode(B, NOW), NOW) == Heard(B)


def test_authentic_packets_are_still_checked() -> None:
    """A holder of the secret with a bug (or another version) cannot crash the receiver."""
    aead = ChaCha20Poly1305(derive_key(SECRET, "default"))
    aad = f"{MAGIC}\x00{VERSION}\x00default".encode()
    receiver = sealed()
    for fields in (
        {"node": A},
        {"node": A, "sent": "now"},
        {"node": A, "sent": -1},
        {"node": A, "sent": int(NOW * 1000), "more": 1},
        [A, int(NOW * 1000)],
    ):
        nonce = os.urandom(NONCE_SIZE)
        body = nonce + aead.encrypt(nonce, msgpack.packb(fields), aad)
        packet = msgpack.packb([MAGIC, VERSION, "default", body])
        assert reason(receiver.decode(packet, NOW)) is Drop.MALFORMED, fields


@pytest.mark.parametrize("node", BAD_NODE_NAMES)
@pytest.mark.parametrize("secret", [None, SECRET], ids=["plain", "sealed"])
def test_a_heartbeat_naming_no_node_is_dropped_as_bad_name(node: str, secret: str | None) -> None:
    codec = HeartbeatCodec("default", secret)
    verdict = codec.decode(codec.encode(node, NOW), NOW)
    assert isinstance(verdict, Rejected)
    assert verdict.reason is Drop.BAD_NAME
    assert verdict.detail.startswith(repr(node))


@settings(max_examples=1000)
@given(text=node_name_texts(), secret=st.none() | st.just(SECRET))
def test_an_announced_text_is_heard_as_its_node_or_dropped_as_a_bad_name(
    text: str, secret: str | None
) -> None:
    # Text that is not UTF-8 (a lone surrogate) cannot be put in a packet by anyone.
    assume(not any("\ud800" <= c <= "\udfff" for c in text))
    codec = HeartbeatCodec("default", secret)
    verdict = codec.decode(codec.encode(text, NOW), NOW)
    try:
        expected: Heard | Drop = Heard(str(parse_node_name(text)))
    except NodeNameError:
        expected = Drop.BAD_NAME
    assert (verdict if isinstance(verdict, Heard) else verdict.reason) == expected


def test_the_key_depends_on_secret_and_cluster() -> None:
    keys = {derive_key(s, c) for s in (SECRET, SECRET + "!") for c in ("a", "b")}
    assert len(keys) == 4
    assert all(len(key) == 32 for key in keys)


def test_the_replay_guard_is_bounded_and_forgets_safely() -> None:
    guard = ReplayGuard(window=10, capacity=100)
    nonces = [i.to_bytes(NONCE_SIZE, "big") for i in range(300)]
    for i, nonce in enumerate(nonces):
        assert guard.admit(nonce, NOW + i * 0.01, NOW + 3) is None
    assert len(guard) == 100
    # Forgotten nonces are not accepted again: they are older than what the guard forgot.
    for nonce in nonces:
        verdict = guard.admit(nonce, NOW + nonces.index(nonce) * 0.01, NOW + 3)
        assert verdict is not None
        assert verdict.reason in (Drop.REPLAYED, Drop.STALE)
    # Past the window everything expires, and memory with it.
    assert guard.admit(b"x" * NONCE_SIZE, NOW + 20, NOW + 20) is None
    assert len(guard) == 1


# -- hypothesis: nothing a stranger sends escapes the verifier ---------------------------------

msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | msgpack_ints
    | st.floats()
    | st.text(max_size=30)
    | st.binary(max_size=60),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=8) | msgpack_ints, children, max_size=5)
    ),
    max_leaves=12,
)
_GOOD = sealed().encode(A, NOW)


@st.composite
def mutations(draw: st.DrawFn, packet: bytes = _GOOD) -> bytes:
    """``packet`` changed: bits flipped, cut, extended or spliced (never left intact)."""
    data = bytearray(packet)
    kind = draw(st.sampled_from(["flip", "cut", "extend", "splice"]))
    if kind == "flip":
        for position in draw(st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=4)):
            data[position // 8] ^= 1 << (position % 8)
    elif kind == "cut":
        start = draw(st.integers(0, len(data) - 1))
        end = draw(st.integers(start + 1, len(data)))
        del data[start:end]
    elif kind == "extend":
        data += draw(st.binary(min_size=1, max_size=64))
    else:
        at = draw(st.integers(0, len(data) - 1))
        data[at : at + draw(st.integers(1, 16))] = draw(st.binary(min_size=1, max_size=16))
    result = bytes(data)
    if result == packet:
        result += b"\x00"
    return result


@st.composite
def lookalikes(draw: st.DrawFn) -> bytes:
    """Packets shaped like heartbeats, with any fields."""
    body = draw(msgpack_values | st.binary(max_size=200))
    fields = [
        draw(st.just(MAGIC) | msgpack_values),
        draw(st.just(VERSION) | msgpack_values),
        draw(st.just("default") | msgpack_values),
        body,
    ]
    packed: bytes = msgpack.packb(
        fields[: draw(st.integers(0, 4))] + [body] * draw(st.integers(0, 1))
    )
    return packed


strangers = (
    st.binary(max_size=MAX_PACKET_SIZE + 10)
    | msgpack_values.map(lambda value: msgpack.packb(value))
    | lookalikes()
    | mutations()
)


@settings(max_examples=2000)
@given(packet=strangers)
@example(packet=b"\x91" * 1100)  # deep nesting
@example(packet=msgpack.packb([MAGIC, VERSION, "default", msgpack.ExtType(127, b"\x00" * 4)]))
def test_no_stranger_packet_is_heard_or_crashes_the_verifier(packet: bytes) -> None:
    for receiver in (sealed(), sealed("other")):
        verdict = receiver.decode(packet, NOW)
        assert isinstance(verdict, Rejected)
    verdict = plain().decode(packet, NOW)
    assert isinstance(verdict, Heard | Rejected)


@settings(max_examples=1000)
@given(packet=mutations())
def test_an_altered_sealed_heartbeat_is_never_heard(packet: bytes) -> None:
    assert isinstance(sealed().decode(packet, NOW), Rejected)


# -- config ----------------------------------------------------------------------------------


def gossip_config(name: str = A, **config: Any) -> GossipConfig:
    loaded = load_config(
        {"node": {"name": name}, "topologies": {"lan": {"strategy": "gossip", "config": config}}},
        env={},
        plugins=Plugins.load(entry_points=False),
    )
    result: GossipConfig = loaded.topologies["lan"].config
    return result


def config_errors(**config: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        gossip_config(**config)
    return [str(issue) for issue in info.value.issues]


def test_defaults() -> None:
    config = gossip_config()
    assert (config.port, config.if_addr, config.multicast_addr) == (PORT, "0.0.0.0", GROUP)
    assert (config.multicast_ttl, config.multicast_if, config.broadcast_only) == (1, None, False)
    assert (config.secret, config.cluster_name) == (None, "default")
    assert config.heartbeat_interval == 5000


def test_config_errors_name_their_key() -> None:
    path = "topologies.lan.config"
    assert config_errors(
        port=0,
        if_addr="eth0",
        multicast_addr="10.0.0.1",
        multicast_ttl=256,
        heartbeat_interval=5,
        cluster_name="-x",
        broadcast_only="yes",
    ) == [
        f"{path}.port: expected a port number from 1 to 65535, got 0",
        f"{path}.if_addr: expected an IP address, got 'eth0'",
        f"{path}.multicast_addr: expected a multicast address (224.0.0.0/4 or ff00::/8), "
        "got '10.0.0.1'",
        f"{path}.multicast_ttl: expected an integer from 0 to 255, got 256",
        f"{path}.broadcast_only: expected true or false, got 'yes'",
        f"{path}.heartbeat_interval: expected a duration of at least 10 ms, got 5",
        f"{path}.cluster_name: expected up to 128 letters, digits, '_', '-' or '.', not "
        "starting with '-' or '.', got '-x'",
    ]
    assert config_errors(multicast_if="eth0") == [
        f"{path}.multicast_if: expected an IPv4 address for an IPv4 group"
    ]
    assert config_errors(multicast_addr="ff15::1", if_addr="127.0.0.1", multicast_if="::1") == [
        f"{path}.if_addr: expected an IPv6 address for an IPv6 group",
        f"{path}.multicast_if: expected an interface name (e.g. eth0) for an IPv6 group",
    ]
    assert config_errors(broadcast_only=True, if_addr="::") == [
        f"{path}.if_addr: expected an IPv4 address: broadcast is IPv4 only"
    ]
    assert config_errors(multicast_tll=2) == [
        f"{path}.multicast_tll: unknown key 'multicast_tll' (did you mean 'multicast_ttl'?); "
        "known keys: port, if_addr, multicast_addr, multicast_ttl, multicast_if, broadcast_only, "
        "heartbeat_interval, secret, cluster_name"
    ]


def test_the_secret_is_never_echoed() -> None:
    short = "hunter2-secret"
    errors = config_errors(secret=short)
    assert errors == [
        "topologies.lan.config.secret: expected a secret of at least 16 characters, "
        "got a value (hidden)"
    ]
    assert SECRET not in repr(gossip_config(secret=SECRET))


# -- the strategy on real sockets --------------------------------------------------------------

needs_namespace = pytest.mark.usefixtures("require_multicast")


@pytest.fixture
def netns() -> Iterator[None]:
    with namespace(ipv6=True):
        yield


@asynccontextmanager
async def gossip(
    name: str,
    network: InMemoryNetwork,
    plugins: Plugins,
    *,
    metrics: NodeMetrics | None = None,
    **config: Any,
) -> AsyncIterator[tuple[Gossip, Topology]]:
    """A gossip strategy running for ``name``; checks it neither crashed nor hung."""
    settings = {"heartbeat_interval": INTERVAL, "multicast_if": "127.0.0.1", **config}
    stopping = asyncio.Event()
    topology = Topology(
        "lan",
        "gossip",
        gossip_config(name, **settings),
        network.join(name),
        plugins,
        stopping,
        metrics=metrics,
    )
    strategy = Gossip()
    task = asyncio.create_task(strategy.run(topology))
    try:
        yield strategy, topology
        assert not task.done(), "the strategy stopped on its own"
    finally:
        stopping.set()
        await asyncio.wait_for(task, timeout=5)


def udp_sender(multicast_if: str = "127.0.0.9") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(multicast_if))
    sock.bind((multicast_if, 0))
    return sock


@needs_namespace
async def test_nodes_sharing_a_host_and_port_find_each_other(
    netns: None, network: InMemoryNetwork, plugins: Plugins
) -> None:
    connects: list[TopologyConnect] = []

    class Spy:
        @hookimpl
        def pycluster_topology_connect(self, event: TopologyConnect) -> None:
            connects.append(event)

    plugins.manager.register(Spy())
    async with (
        gossip(A, network, plugins, secret=SECRET) as (a, _),
        gossip(B, network, plugins, secret=SECRET, multicast_if="127.0.0.3") as (b, _),
    ):
        await eventually(lambda: network.links(A) == [B])
        assert a.dropped == b.dropped == {}
        # Each hears its own heartbeats too (multicast loops back) but never dials itself.
        await eventually(lambda: a.sent >= 3 and b.sent >= 3)
    assert {(e.node, e.peer) for e in connects} <= {(A, B), (B, A)}
    assert all(e.peer != e.node for e in connects)


@needs_namespace
async def test_a_node_ignores_its_own_heartbeats(
    netns: None, network: InMemoryNetwork, plugins: Plugins
) -> None:
    async with gossip(A, network, plugins) as (a, _):
        # Multicast loops back: A receives each of its heartbeats, and must not dial itself.
        await eventually(lambda: a.sent >= 3)
        assert a.heard == 0
        assert a.dropped == {}
        assert network.links(A) == []


def connects_in_metrics(metrics: NodeMetrics) -> float:
    """``pycluster_topology_connects_total`` of topology ``lan``: connection attempts."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        if family.name == "pycluster_topology_connects"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["topology"] == "lan"
    )


@needs_namespace
async def test_heartbeats_carry_the_full_name_and_known_nodes_are_not_dialled_again(
    netns: None, network: InMemoryNetwork, plugins: Plugins
) -> None:
    """A heartbeat names its node with the port written out (a reader whose node.port
    differs would dial its own port otherwise); the node that sent it, and a peer already
    connected, are still recognised in that form: no dial, no TopologyConnect, per
    heartbeat."""
    connects: list[TopologyConnect] = []

    class Spy:
        @hookimpl
        def pycluster_topology_connect(self, event: TopologyConnect) -> None:
            connects.append(event)

    plugins.manager.register(Spy())
    heartbeats: list[bytes] = []
    log = TopologyLog(logging.getLogger("pycluster.topology"), {"topology": "listener"})
    listener, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: GossipProtocol(lambda data, addr: heartbeats.append(data), log),
        sock=open_socket(gossip_config(C, multicast_if="127.0.0.4")),
    )
    a_metrics, b_metrics = NodeMetrics(), NodeMetrics()
    try:
        async with gossip(A, network, plugins, metrics=a_metrics) as (a, _):
            # Its own heartbeats loop back to it: ignored, in their full form too.
            await eventually(lambda: a.sent >= 3 and len(heartbeats) >= 3)
            assert {plain().decode(h, time.time()) for h in heartbeats} == {Heard(f"{A}:9100")}
            assert (a.heard, a.dropped, network.links(A)) == (0, {}, [])
            assert connects_in_metrics(a_metrics) == 0
            b_running = gossip(B, network, plugins, metrics=b_metrics, multicast_if="127.0.0.3")
            async with b_running as (b, _):
                await eventually(lambda: network.links(A) == [B])
                heard = a.heard, b.heard
                # Heartbeats of a connected peer: each heard, none dialled again.
                await eventually(lambda: a.heard >= heard[0] + 5 and b.heard >= heard[1] + 5)
                assert network.links(A) == [B]
                assert connects_in_metrics(a_metrics) + connects_in_metrics(b_metrics) <= 2
                assert Heard(f"{B}:9100") in {plain().decode(h, time.time()) for h in heartbeats}
    finally:
        listener.close()
    assert len(connects) <= 2
    assert {(e.node, e.peer) for e in connects} <= {(A, B), (B, A)}


@needs_namespace
async def test_a_silent_node_is_not_disconnected(
    netns: None, network: InMemoryNetwork, plugins: Plugins
) -> None:
    async with gossip(A, network, plugins) as (a, _):
        async with gossip(B, network, plugins):
            await eventually(lambda: network.links(A) == [B])
        sent = a.sent
        await eventually(lambda: a.sent >= sent + 3)  # three heartbeats without hearing B
        assert network.links(A) == [B]


@needs_namespace
async def test_ipv6_groups_and_broadcast(
    netns: None, network: InMemoryNetwork, plugins: Plugins
) -> None:
    v6: dict[str, Any] = {
        "multicast_addr": "ff15::7a",
        "multicast_if": IPV6_INTERFACE,
        "if_addr": "::",
    }
    async with gossip(A, network, plugins, **v6), gossip(B, network, plugins, **v6):
        await eventually(lambda: network.links(A) == [B])
    network = InMemoryNetwork(plugins)
    # Broadcast leaves through the route for 255.255.255.255 (on lo in the namespace).
    async with (
        gossip(A, network, plugins, broadcast_only=True),
        gossip(C, network, plugins, broadcast_only=True),
    ):
        await eventually(lambda: network.links(A) == [C])


@needs_namespace
async def test_clusters_and_secrets_keep_apart(
    netns: None, network: InMemoryNetwork, plugins: Plugins
) -> None:
    async with (
        gossip(A, network, plugins, secret=SECRET) as (a, _),
        gossip(B, network, plugins, secret=SECRET, cluster_name="other") as (b, _),
        gossip(C, network, plugins, secret="a different secret, long enough") as (c, _),
    ):
        await eventually(
            lambda: a.dropped["other_cluster"] >= 3 and a.dropped["forged"] >= 3, timeout=10
        )
        await eventually(lambda: b.dropped["other_cluster"] >= 3 and c.dropped["forged"] >= 3)
        assert network.links(A) == network.links(B) == network.links(C) == []
        assert a.heard == b.heard == c.heard == 0


IN_USE = os.strerror(errno.EADDRINUSE)


def socket_problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The socket problems the gossip topology logged (as warnings)."""
    records = logged(caplog, event="discovery_problem", reason="socket", levelno=logging.WARNING)
    return [record.problem for record in records]


@needs_namespace
async def test_socket_errors_are_reported_and_retried(
    netns: None, network: InMemoryNetwork, plugins: Plugins, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # A program holding the port without SO_REUSEADDR/SO_REUSEPORT keeps gossip out...
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("0.0.0.0", PORT))
    try:
        async with gossip(A, network, plugins) as (a, _topology):
            await eventually(lambda: any(IN_USE in p for p in socket_problems(caplog)))
            assert a.sent == 0
            blocker.close()
            # ... until it lets go.
            await eventually(lambda: a.sent > 0, timeout=10)
            await eventually(
                lambda: bool(logged(caplog, event="discovery_recovered", reason="socket"))
            )
    finally:
        blocker.close()
    # An address that is not this host's: joining fails, and keeps failing, but the strategy
    # keeps running (the context manager checks it did not stop).
    async with gossip(A, network, plugins, multicast_if="192.0.2.77") as (a, _):
        await eventually(
            lambda: any(
                "192.0.2.77" in p and os.strerror(errno.ENODEV) in p
                for p in socket_problems(caplog)
            )
        )
        assert a.sent == 0
    problems = socket_problems(caplog)
    assert sum(IN_USE in p for p in problems) == 1, problems


@needs_namespace
async def test_without_a_route_only_multicast_if_reaches_the_group(
    network: InMemoryNetwork, plugins: Plugins, caplog: pytest.LogCaptureFixture
) -> None:
    with namespace(route=False):
        # Sending from, and joining on, a loopback address needs no route.
        async with gossip(A, network, plugins), gossip(B, network, plugins):
            await eventually(lambda: network.links(A) == [B])
        # The default interface is the default route's: here there is none.
        async with gossip(A, network, plugins, multicast_if=None) as (a, _):
            # The problem says which setting would help.
            await eventually(
                lambda: any(
                    os.strerror(errno.ENODEV) in p and "multicast_if" in p
                    for p in socket_problems(caplog)
                )
            )
            assert a.sent == 0


@pytest.fixture
async def target(
    netns: None, network: InMemoryNetwork, plugins: Plugins
) -> AsyncIterator[tuple[Gossip, InMemoryNetwork]]:
    """A running strategy with a secret, connected to two peers it never heard of."""
    for peer in (B, C):
        network.join(peer)
    async with gossip(A, network, plugins, secret=SECRET) as (strategy, topology):
        await topology.connect([B, C])
        await eventually(lambda: strategy.protocol is not None and strategy.sent > 0)
        yield strategy, network
        assert network.links(A) == [B, C]


@needs_namespace
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(packets=st.lists(strangers, min_size=1, max_size=30))
async def test_stranger_packets_reach_the_running_strategy_harmlessly(
    target: tuple[Gossip, InMemoryNetwork], packets: list[bytes]
) -> None:
    strategy, network = target
    assert strategy.protocol is not None
    before = collections.Counter(strategy.dropped)
    for packet in packets:
        strategy.protocol.datagram_received(packet, ("192.0.2.1", PORT))
    # A few through the socket itself, from another address.
    with udp_sender() as sender:
        for packet in packets[:3]:
            sender.sendto(packet, (GROUP, PORT))
    # Each is dropped and counted under the reason the verifier gives on its own.
    expected = before + collections.Counter(
        verdict.reason.value
        for verdict in (sealed().decode(p, time.time()) for p in [*packets, *packets[:3]])
        if isinstance(verdict, Rejected)
    )
    await eventually(lambda: strategy.dropped == expected)
    assert network.links(A) == [B, C]
    assert strategy.heard == 0


@needs_namespace
async def test_replays_through_the_socket_are_dropped(
    target: tuple[Gossip, InMemoryNetwork], caplog: pytest.LogCaptureFixture
) -> None:
    strategy, network = target
    network.join("d@127.0.0.5")
    packet = sealed().encode("d@127.0.0.5", time.time())
    with udp_sender() as sender:
        sender.sendto(packet, (GROUP, PORT))
        await eventually(lambda: network.links(A) == [B, C, "d@127.0.0.5"])
        sender.sendto(packet, (GROUP, PORT))
        sender.sendto(sealed().encode(B, time.time() - 3600), (GROUP, PORT))
        oversized = msgpack.packb([MAGIC, VERSION, "default", bytes(MAX_PACKET_SIZE)])
        sender.sendto(oversized, (GROUP, PORT))
        await eventually(lambda: strategy.dropped == {"replayed": 1, "stale": 1, "oversized": 1})
    assert strategy.heard == 1
    network.leave("d@127.0.0.5")  # the fixture checks the others are still connected
    # One record for the first drop from 127.0.0.9; the rest are counted, not logged.
    records = logged(caplog, event="gossip_dropped", source="127.0.0.9")
    assert len(records) == 1, records


def dropped_in_metrics(metrics: NodeMetrics) -> dict[str, float]:
    """``pycluster_discovery_dropped_total`` of topology ``lan``, by reason."""
    return {
        sample.labels["reason"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "pycluster_discovery_dropped"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["topology"] == "lan"
    }


@needs_namespace
async def test_bad_names_are_dropped_counted_in_metrics_and_logged_once(
    netns: None, network: InMemoryNetwork, plugins: Plugins, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = NodeMetrics()
    async with gossip(A, network, plugins, metrics=metrics) as (a, _):
        await eventually(lambda: a.protocol is not None and a.sent > 0)
        with udp_sender() as sender:
            for _ in range(20):
                for name in BAD_NODE_NAMES:
                    sender.sendto(plain().encode(name, time.time()), (GROUP, PORT))
            sender.sendto(plain("another").encode(B, time.time()), (GROUP, PORT))
            expected = {"bad_name": 20 * len(BAD_NODE_NAMES), "other_cluster": 1}
            await eventually(lambda: a.dropped == expected)
            assert dropped_in_metrics(metrics) == expected
            # Still listening: a valid heartbeat afterwards connects its node.
            network.join(B)
            sender.sendto(plain().encode(B, time.time()), (GROUP, PORT))
            await eventually(lambda: network.links(A) == [B])
    assert not [r for r in caplog.records if r.exc_info is not None]
    (record,) = logged(caplog, event="gossip_dropped", source="127.0.0.9")
    assert (record.levelno, record.reason, record.topology) == (logging.WARNING, "bad_name", "lan")
    assert "'x@h:\u00b2'" in record.detail  # the first bad name


async def test_a_datagram_that_cannot_be_handled_costs_one_traceback_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def bug(data: bytes, addr: Any) -> None:
        raise RuntimeError("a bug")

    log = TopologyLog(logging.getLogger("pycluster.topology"), {"topology": "lan"})
    protocol = GossipProtocol(bug, log)
    for _ in range(100):
        protocol.datagram_received(b"x", ("192.0.2.1", PORT))
    assert len([r for r in caplog.records if r.exc_info is not None]) == 1
