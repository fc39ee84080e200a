"""``gossip``: nodes announce themselves with UDP multicast (or broadcast) heartbeats.

The packet format and every check a received datagram meets are in
:mod:`pycluster.strategies.gossip_packet`; this module is the socket at the edge: it opens
it (shared with other nodes on the host), sends heartbeats, connects the nodes it hears,
counts and logs what it drops, and reports socket errors without crashing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import ipaddress
import logging
import re
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from pycluster import PollSchedule, Strategy, Throttle, Topology, checks, setting
from pycluster.strategies.gossip_packet import Drop, Heard, HeartbeatCodec, Rejected

BROADCAST_ADDR = "255.255.255.255"
FIRST_RETRY = 0.5
"""Seconds before retrying a socket that failed; doubles up to the heartbeat interval."""
DROP_LOG_INTERVAL = 60.0
"""Seconds between two log lines about dropped packets from one source."""
DROP_LOG_BURST = 16
"""Sources logged at most per DROP_LOG_INTERVAL (source addresses can be spoofed)."""
MAX_DIALS = 64
"""Connections attempted at once; heartbeats of further new nodes wait for their next one."""
MIN_SECRET_LENGTH = 16

# Linux delivers a multicast datagram to every socket bound to its port, whatever group
# that socket joined, unless told otherwise (the values are Linux's; Python lacks them).
_IP_MULTICAST_ALL = 49
_IPV6_MULTICAST_ALL = 29
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


def multicast_address(value: str) -> str | None:
    """An IPv4 (224.0.0.0/4) or IPv6 (ff00::/8) multicast group."""
    try:
        multicast = ipaddress.ip_address(value).is_multicast
    except ValueError:
        multicast = False
    return None if multicast else "expected a multicast address (224.0.0.0/4 or ff00::/8)"


def cluster_name(value: str) -> str | None:
    """Letters, digits, '_', '-' and '.', not starting with '-' or '.', at most 128."""
    if _CLUSTER_NAME.fullmatch(value):
        return None
    return "expected up to 128 letters, digits, '_', '-' or '.', not starting with '-' or '.'"


def long_secret(value: str) -> str | None:
    """A secret long enough that guessing it is hopeless (if it was made at random)."""
    if len(value) >= MIN_SECRET_LENGTH:
        return None
    return f"expected a secret of at least {MIN_SECRET_LENGTH} characters"


@attrs.frozen(kw_only=True)
class GossipConfig:
    """Config of the ``gossip`` strategy."""

    port: int = setting(
        default=45892, doc="UDP port heartbeats are sent to and received on.", check=checks.port
    )
    if_addr: str = setting(
        default="0.0.0.0",
        doc="Address the socket binds to. ``0.0.0.0`` (for an IPv6 group: ``0.0.0.0`` or "
        "``::``) hears heartbeats arriving on any interface; a unicast address hears no "
        "multicast or broadcast on Linux.",
        check=checks.ip_address,
    )
    multicast_addr: str = setting(
        default="233.252.1.32",
        doc="Multicast group (IPv4 or IPv6) heartbeats are sent to. Unused with "
        "``broadcast_only``.",
        check=multicast_address,
    )
    multicast_ttl: int = setting(
        default=1,
        doc="How many routers heartbeats may cross (IPv6: hop limit). 1 keeps them on the "
        "local network.",
        expect="an integer from 0 to 255",
        check=checks.between(0, 255),
    )
    multicast_if: str | None = setting(
        default=None,
        doc="Interface heartbeats are sent from and the group is joined on: for an IPv4 "
        "group its IPv4 address (e.g. ``192.168.1.20``, or ``127.0.0.1`` for loopback), for "
        "an IPv6 group its name (e.g. ``eth0``). ``null``: the interface the routing table "
        "picks for the group, usually the default route's, which never hears loopback "
        "traffic. Unused with ``broadcast_only``.",
        check=checks.non_empty,
    )
    broadcast_only: bool = setting(
        default=False,
        doc="Send heartbeats to the IPv4 broadcast address ``255.255.255.255`` instead of the "
        "multicast group, and join no group (for networks that drop multicast).",
    )
    heartbeat_interval: float = setting(
        default=5000,
        doc="Longest time between two heartbeats of this node. The first is sent at "
        "once; each next one after a random 80-100% of this, so nodes drift out of step.",
        unit="ms",
        # Shorter heartbeat intervals only load the network.
        check=checks.duration_at_least(10, "ms"),
    )
    secret: str | None = setting(
        default=None,
        doc="Shared secret (at least 16 characters, random) that encrypts and authenticates "
        "heartbeats; nodes with another secret, or none, are not heard. ``null``: plain "
        "heartbeats that anyone on the network can forge (the cookie still guards the "
        "cluster). Never shown in errors or logs.",
        check=long_secret,
        secret=True,
    )
    cluster_name: str = setting(
        default="default",
        doc="Only nodes with the same cluster name connect, so clusters sharing a network "
        "and group stay apart. Sent in clear.",
        check=cluster_name,
    )

    def config_problems(self) -> list[tuple[str, str]]:
        """Keys that do not fit together (the group's IP version decides)."""
        group = ipaddress.ip_address(self.multicast_addr)
        bind = ipaddress.ip_address(self.if_addr)
        problems = []
        if self.broadcast_only:
            if bind.version == 6:
                problems.append(("if_addr", "expected an IPv4 address: broadcast is IPv4 only"))
        elif group.version == 6:
            if bind.version == 4 and not bind.is_unspecified:
                problems.append(("if_addr", "expected an IPv6 address for an IPv6 group"))
            if self.multicast_if is not None and checks.ip_address(self.multicast_if) is None:
                problems.append(
                    ("multicast_if", "expected an interface name (e.g. eth0) for an IPv6 group")
                )
        else:
            if bind.version == 6:
                problems.append(("if_addr", "expected an IPv4 address for an IPv4 group"))
            if self.multicast_if is not None and not _is_ipv4(self.multicast_if):
                problems.append(("multicast_if", "expected an IPv4 address for an IPv4 group"))
        return problems

    @property
    def destination(self) -> tuple[str, int]:
        """Where heartbeats are sent."""
        return (BROADCAST_ADDR if self.broadcast_only else self.multicast_addr, self.port)

    @property
    def ipv6(self) -> bool:
        """Whether the socket is IPv6 (an IPv6 group, multicast)."""
        return not self.broadcast_only and ipaddress.ip_address(self.multicast_addr).version == 6


def _is_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


class GossipSocketError(OSError):
    """Opening the gossip socket failed; the message says which step, why, and a hint."""


_IN_USE = "another program holds the port without SO_REUSEADDR/SO_REUSEPORT"


def _step(what: str, call: Callable[[], object], hints: Mapping[int, str] | None = None) -> None:
    try:
        call()
    except OSError as exc:
        hint = (hints or {}).get(exc.errno or 0)
        reason = exc.strerror or str(exc)
        raise GossipSocketError(f"{what}: {reason}" + (f" ({hint})" if hint else "")) from exc


def open_socket(config: GossipConfig) -> socket.socket:
    """A non-blocking UDP socket bound to ``if_addr:port`` (shared: several nodes of one
    host may bind the same), in the group or allowed to broadcast.

    Raises GossipSocketError (an OSError) naming the step that failed.
    """
    family = socket.AF_INET6 if config.ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if config.broadcast_only:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            _bind(sock, config.if_addr, config)
        elif config.ipv6:
            _join_ipv6(sock, config)
        else:
            _join_ipv4(sock, config)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind(sock: socket.socket, host: str, config: GossipConfig) -> None:
    hints = {
        errno.EADDRINUSE: _IN_USE,
        errno.EADDRNOTAVAIL: "if_addr is not an address of this host",
    }
    _step(f"cannot bind {_where(host, config.port)}", lambda: sock.bind((host, config.port)), hints)


def _interface_hints(config: GossipConfig) -> dict[int, str]:
    if config.multicast_if is None:
        hint = "no route to the group: set multicast_if to the interface to use"
    else:
        hint = f"{config.multicast_if} is not an interface of this host"
    return {errno.ENODEV: hint, errno.EADDRNOTAVAIL: hint, errno.ENXIO: hint}


def _join_ipv4(sock: socket.socket, config: GossipConfig) -> None:
    if sys.platform == "linux":
        with contextlib.suppress(OSError):  # only narrows what arrives; checks still apply
            sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
    _bind(sock, config.if_addr, config)
    interface = socket.inet_aton(config.multicast_if or "0.0.0.0")
    group = socket.inet_aton(config.multicast_addr)
    on = config.multicast_if or "the default interface"
    _step(
        f"cannot join {config.multicast_addr} on {on}",
        lambda: sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group + interface),
        _interface_hints(config),
    )
    if config.multicast_if is not None:
        _step(
            f"cannot send from {config.multicast_if}",
            lambda: sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, interface),
            _interface_hints(config),
        )
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, config.multicast_ttl)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)


def _join_ipv6(sock: socket.socket, config: GossipConfig) -> None:
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if sys.platform == "linux":
        with contextlib.suppress(OSError):  # Linux 4.20 and later
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_ALL, 0)
    bind = "::" if ipaddress.ip_address(config.if_addr).is_unspecified else config.if_addr
    _bind(sock, bind, config)
    index = 0
    if config.multicast_if is not None:
        try:
            index = socket.if_nametoindex(config.multicast_if)
        except OSError:
            raise GossipSocketError(f"no interface named {config.multicast_if}") from None
    group = socket.inet_pton(socket.AF_INET6, config.multicast_addr)
    on = config.multicast_if or "the default interface"
    request = group + struct.pack("@I", index)
    _step(
        f"cannot join {config.multicast_addr} on {on}",
        lambda: sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, request),
        _interface_hints(config),
    )
    if index:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, config.multicast_ttl)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)


def describe_send_error(exc: OSError, config: GossipConfig) -> str:
    """A failed send for an operator: the system's words, and a hint for the usual ones."""
    text = exc.strerror or str(exc)
    hint = _interface_hints(config).get(exc.errno or 0)
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH) and config.multicast_if is None:
        hint = "no route to the group: set multicast_if to the interface to use"
    return f"{text} ({hint})" if hint else text


class GossipProtocol(asyncio.DatagramProtocol):
    """The asyncio edge: hands datagrams on, remembers socket errors and the socket's end."""

    def __init__(
        self, received: Callable[[bytes, Any], None], log: logging.LoggerAdapter[Any]
    ) -> None:
        self._received = received
        self._log = log
        self._failures = Throttle(DROP_LOG_INTERVAL, burst=1)
        self.error: OSError | None = None
        """The last socket error (a failed send), until :meth:`take_error`."""
        self.lost = asyncio.get_running_loop().create_future()
        """Done when the socket is closed (its result: the error that closed it, or None)."""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # An exception here would make asyncio close the socket: a bug must cost one
        # datagram, not the topology's ears; and one traceback a minute, not one for each
        # copy of the datagram a stranger can repeat.
        try:
            self._received(data, addr)
        except Exception:
            unlogged = self._failures.admit("")
            if unlogged is not None:
                more = f" ({unlogged} more since the last report)" if unlogged else ""
                self._log.exception(
                    "dropped a datagram from %s that could not be handled%s",
                    addr,
                    more,
                    extra={"event": "gossip_failed", "source": str(addr), "repeats": unlogged},
                )

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.error = exc

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def take_error(self) -> OSError | None:
        """The socket error reported since the last call, if any."""
        error, self.error = self.error, None
        return error


class Gossip(Strategy):
    """Announces this node with heartbeats to a UDP multicast group (or broadcast) and
    connects every node of its ``cluster_name`` it hears.

    The first heartbeat leaves as soon as the socket is open. Several nodes on one host
    share the port (SO_REUSEADDR/SO_REUSEPORT). A node that stops sending heartbeats is not
    disconnected: the transport's ticks detect dead nodes. Datagrams that are not valid
    heartbeats of this cluster are dropped, counted (the ``dropped`` attribute, and the
    topology's ``pycluster_discovery_dropped_total`` by reason) and logged at most once a
    minute per source. A socket that cannot be opened, or sends that fail, are
    reported as the topology's problem and retried, with a backoff up to
    ``heartbeat_interval``.

    Without ``secret``, anyone who can send to the group can make nodes dial any address
    they name (the cookie handshake still keeps strangers out of the cluster). With it,
    heartbeats are encrypted and authenticated and replays are refused.
    """

    name = "gossip"
    Config = GossipConfig

    def __init__(self) -> None:
        self.dropped: collections.Counter[str] = collections.Counter()
        """Datagrams dropped, by reason (the values of ``gossip_packet.Drop``)."""
        self.heard = 0
        """Valid heartbeats of other nodes received."""
        self.sent = 0
        """Heartbeats sent."""
        self.protocol: GossipProtocol | None = None
        """The datagram protocol while the socket is open."""
        self._dials: dict[str, asyncio.Task[list[str]]] = {}
        self._drop_log = Throttle(DROP_LOG_INTERVAL, burst=DROP_LOG_BURST)

    async def run(self, topology: Topology) -> None:
        config: GossipConfig = topology.config
        codec = HeartbeatCodec(config.cluster_name, config.secret)
        if config.secret is None:
            topology.log.warning(
                "gossip heartbeats are not authenticated (no secret): anyone on the network "
                "can make this node dial addresses of their choice",
                extra={"event": "gossip_unauthenticated"},
            )
        reopen = PollSchedule(config.heartbeat_interval / 1000, first=FIRST_RETRY)
        try:
            while True:
                try:
                    transport, protocol = await self._open(topology, config, codec)
                except OSError as exc:
                    reason = str(exc) if isinstance(exc, GossipSocketError) else repr(exc)
                    topology.problem(f"gossip socket: {reason}; retrying", reason="socket")
                else:
                    self.protocol = protocol
                    reopen.reset()
                    try:
                        stopping = await self._heartbeats(topology, config, codec, transport)
                    finally:
                        self.protocol = None
                        transport.close()
                    if stopping:
                        return
                if not await topology.sleep(reopen.failed()):
                    return
        finally:
            for task in self._dials.values():
                task.cancel()

    async def _open(
        self, topology: Topology, config: GossipConfig, codec: HeartbeatCodec
    ) -> tuple[asyncio.DatagramTransport, GossipProtocol]:
        sock = open_socket(config)
        try:
            return await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: GossipProtocol(
                    lambda data, addr: self._received(topology, codec, data, addr), topology.log
                ),
                sock=sock,
            )
        except BaseException:
            sock.close()
            raise

    async def _heartbeats(
        self,
        topology: Topology,
        config: GossipConfig,
        codec: HeartbeatCodec,
        transport: asyncio.DatagramTransport,
    ) -> bool:
        """Send heartbeats until shutdown (True) or the socket closes (False)."""
        protocol = self.protocol
        assert protocol is not None
        schedule = PollSchedule(config.heartbeat_interval / 1000, first=FIRST_RETRY)
        while True:
            # The full name: a peer with another node.port would read a bare one wrongly.
            transport.sendto(codec.encode(topology.full_name, time.time()), config.destination)
            error = protocol.take_error()
            if error is not None:
                topology.problem(
                    f"cannot send heartbeats to {_where(*config.destination)} "
                    f"({describe_send_error(error, config)}); retrying",
                    reason="send",
                )
                wait = schedule.failed()
            else:
                if self.sent == 0:
                    topology.log.info(
                        "sent the first heartbeat to %s as %s (cluster %s, %s)",
                        _where(*config.destination),
                        topology.full_name,
                        config.cluster_name,
                        "encrypted" if codec.sealed else "not encrypted",
                        extra={
                            "event": "first_heartbeat",
                            "destination": _where(*config.destination),
                            "cluster": config.cluster_name,
                            "encrypted": codec.sealed,
                        },
                    )
                self.sent += 1
                topology.problem(None)
                wait = schedule.succeeded()
            sleep = asyncio.ensure_future(topology.sleep(wait))
            try:
                await asyncio.wait({sleep, protocol.lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not sleep.done():
                    sleep.cancel()
            if protocol.lost.done():
                lost = protocol.lost.result()
                reason = describe_send_error(lost, config) if isinstance(lost, OSError) else lost
                topology.problem(
                    f"the gossip socket closed ({reason}); reopening", reason="socket_closed"
                )
                return False
            if not sleep.result():
                return True

    def _received(self, topology: Topology, codec: HeartbeatCodec, data: bytes, addr: Any) -> None:
        verdict = codec.decode(data, time.time())
        if isinstance(verdict, Rejected):
            self._dropped(topology, verdict, str(addr[0]))
            return
        assert isinstance(verdict, Heard)
        # Heartbeats carry full names (port written out); this node, its peers and the
        # pending dials are known by their canonical ones. The name parsed already.
        node = topology.canonical(verdict.node)
        if node == topology.self_name:
            return  # our own heartbeat, looped back
        self.heard += 1
        if node in self._dials or node in topology.list_nodes():
            return
        if len(self._dials) >= MAX_DIALS:
            topology.log.debug("%d connections pending; %s waits", len(self._dials), node)
            return
        topology.log.debug("heard %s from %s", node, addr[0])
        task = asyncio.create_task(topology.connect([node]), name=f"gossip dial {node}")
        self._dials[node] = task
        task.add_done_callback(lambda _: self._dials.pop(node, None))

    def _dropped(self, topology: Topology, rejected: Rejected, source: str) -> None:
        self.dropped[rejected.reason.value] += 1
        topology.dropped(rejected.reason.value)
        unlogged = self._drop_log.admit(source)
        if unlogged is None:
            return
        # A neighbouring cluster on the same group is normal, not a warning.
        level = logging.DEBUG if rejected.reason is Drop.OTHER_CLUSTER else logging.WARNING
        detail = f": {rejected.detail}" if rejected.detail else ""
        more = f" ({unlogged} more dropped from there since the last report)" if unlogged else ""
        topology.log.log(
            level,
            "dropped a gossip packet from %s: %s%s%s",
            source,
            rejected.reason.description,
            detail,
            more,
            extra={
                "event": "gossip_dropped",
                "source": source,
                "reason": rejected.reason.value,
                "detail": rejected.detail,
                "repeats": unlogged,
            },
        )


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
