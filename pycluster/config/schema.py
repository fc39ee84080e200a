"""The config file's schema: ``node``, ``registry`` and ``topologies``.

The key set is closed: an unknown key is an error. ``topologies.NAME.config`` and
``registry.options`` are validated by the strategy's and backend's own config classes,
found through the plugins (see :mod:`pycluster.config.load`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import attrs

from pycluster.config import checks
from pycluster.config.convert import setting
from pycluster.nodename import DEFAULT_PORT

DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
MIN_TOKEN_LENGTH = 16
"""Characters a ``node.http.token`` has at least (surrounding whitespace not counted)."""


def _ip_address(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "expected an IP address (IPv4, or IPv6 without brackets)"
    return None


@attrs.frozen(kw_only=True)
class TlsConfig:
    """Mutual TLS between nodes; the cookie check still runs on top of it."""

    certfile: str = setting(doc="PEM certificate this node presents.")
    keyfile: str = setting(doc="PEM private key of ``certfile``.")
    cafile: str = setting(doc="PEM bundle of the CAs a peer's certificate must chain to.")


@attrs.frozen(kw_only=True)
class HttpConfig:
    """The node's HTTP endpoints (health, readiness, status, metrics, the live page)."""

    port: int = setting(
        doc="Port of the HTTP endpoints, on the node's own address.", check=checks.port
    )
    token: str | None = setting(
        default=None,
        doc="When set, every endpoint but ``/healthz`` and ``/readyz`` (and the page's "
        "static files, which hold no data) requires ``Authorization: Bearer TOKEN``; "
        "at least 16 characters. Never logged.",
        expect="a token of at least 16 characters",
        check=lambda value: None if len(value.strip()) >= MIN_TOKEN_LENGTH else "too short",
        secret=True,
    )


@attrs.frozen(kw_only=True)
class ReadyConfig:
    """When the node first reports ready (``/readyz``)."""

    min_peers: int = setting(
        default=0,
        doc="Peers the node must be connected to, with its registry merged with theirs, "
        "before it first reports ready. Only the first readiness waits: losing peers later "
        "does not make the node unready, so a partition cannot empty a Service.",
        expect="a number of peers from 0 to 10000",
        check=checks.between(0, 10_000),
    )


@attrs.frozen(kw_only=True)
class NodeConfig:
    """This node: its name, where it listens, and how it proves itself to peers."""

    name: str = setting(
        doc="``name@host`` or ``name@host:port`` (IPv6: ``name@[::1]:9101``). "
        "The name peers dial; a pod usually writes ``app@${POD_IP}``.",
        check=checks.node_name,
    )
    port: int = setting(
        default=DEFAULT_PORT,
        doc="Cluster port, used by every node whose name carries no port.",
        check=checks.port,
    )
    bind: str | None = setting(
        default=None,
        doc="Address to listen on and dial from; default: the host of ``name`` when it is an "
        "IP literal, else all interfaces.",
        check=_ip_address,
    )
    cookie: str | tuple[str, ...] | None = setting(
        default=None,
        doc="Shared secret every node of the cluster knows, at least 16 characters (surrounding "
        "whitespace is ignored). Never logged, never sent. A list rotates cookies without "
        "downtime: the first is used to dial, any of them is accepted.",
        check=checks.cookie,
        secret=True,
    )
    tls: TlsConfig | None = setting(default=None, doc="Optional mutual TLS between nodes.")
    net_tick_timeout: float = setting(
        default=3.0,
        doc="Silence after which a peer is declared down.",
        unit="s",
        expect="a duration above 0 and at most 600 s",
        check=lambda v: None if 0 < v <= 600 else "out of range",
    )
    max_frame_size: int = setting(
        default=DEFAULT_MAX_FRAME_SIZE,
        doc="Largest frame accepted from a peer, in bytes; a larger one closes the connection.",
        expect="a size in bytes from 1024 to 2147483647",
        check=checks.between(1024, 2**31 - 1),
    )
    http: HttpConfig | None = setting(default=None, doc="HTTP endpoints; off when absent.")
    ready: ReadyConfig = setting(factory=ReadyConfig, doc="When the node first reports ready.")


@attrs.frozen(kw_only=True)
class RegistryConfig:
    """The cluster-wide registry and the backend that holds it."""

    backend: str = setting(default="crdt", doc="Registry backend, by its registered name.")
    options: Any = setting(
        factory=dict, doc="Backend options, checked by the backend's own config class."
    )


@attrs.frozen(kw_only=True)
class TopologyConfig:
    """One way of discovering nodes: a strategy and its config."""

    strategy: str = setting(doc="Strategy, by its registered name (e.g. ``kubernetes.dns``).")
    config: Any = setting(factory=dict, doc="Strategy config, checked by the strategy's class.")


@attrs.frozen(kw_only=True)
class Config:
    """A whole pycluster config file."""

    node: NodeConfig = setting(doc="This node.")
    registry: RegistryConfig = setting(
        factory=RegistryConfig, doc="The registry (the embedded ``crdt`` backend by default)."
    )
    app: str | None = setting(
        default=None,
        doc="Your service, as ``package.module:attribute``: ``pycluster run`` calls it with the "
        'started node (see "Your service as a node"). ``pycluster run --app`` overrides it.',
        expect="'package.module:attribute'",
        check=lambda v: (
            None
            if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", v)
            else "expected 'package.module:attribute'"
        ),
    )
    topologies: dict[str, TopologyConfig] = setting(
        factory=dict, doc="Discovery topologies by name; each runs its own strategy."
    )
