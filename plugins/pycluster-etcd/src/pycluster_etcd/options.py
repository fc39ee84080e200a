"""The config of the ``etcd`` registry backend and of the ``etcd`` strategy.

Both talk to the same kind of etcd cluster, so they share the connection keys
(``endpoints``, ``tls``, ``auth``, ``timeout``) and the lease key (``lease_ttl``); only the
default ``prefix`` differs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

import attrs

from pycluster import checks, setting

MIN_LEASE_TTL = 2
"""etcd grants no lease shorter than about 1.5 s with its default timings."""


def parse_endpoint(value: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets: ``[::1]:2379``) as (host, port); ValueError if not.

    A scheme is accepted and ignored (``http://`` or ``https://``, as etcdctl writes them):
    TLS is chosen by the ``tls`` key.
    """
    text = value.strip()
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    text = text.rstrip("/")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if not rest.startswith(":"):
            raise ValueError("expected [IPv6]:port")
        port_text = rest[1:]
        ipaddress.IPv6Address(host)
    else:
        host, _, port_text = text.rpartition(":")
        if not host or ":" in host:
            raise ValueError("expected host:port")
    # Not str.isdigit(): it takes '²' (which int() refuses) and '٩١٠٠' (which it reads).
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"bad port {port_text!r}")
    return host, int(port_text)


def _endpoint(value: str) -> str | None:
    try:
        parse_endpoint(value)
    except ValueError as exc:
        return f"expected host:port, e.g. 10.0.0.5:2379 ({exc})"
    return None


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _lease_ttl(value: int) -> str | None:
    return None if value >= MIN_LEASE_TTL else f"expected at least {MIN_LEASE_TTL} seconds"


@attrs.frozen(kw_only=True)
class EtcdTls:
    """TLS to etcd: the CA that signed the servers' certificates, and optionally a client
    certificate for etcd's ``--client-cert-auth``."""

    cafile: str = setting(doc="PEM bundle of the CA(s) etcd's certificates chain to.")
    certfile: str | None = setting(
        default=None, doc="PEM client certificate (with ``keyfile``), for mutual TLS."
    )
    keyfile: str | None = setting(default=None, doc="PEM private key of ``certfile``.")
    server_name: str | None = setting(
        default=None,
        doc="Name to check etcd's certificates against, when it is not the endpoint's "
        "host (required with several IP endpoints unless their certificates list the IPs).",
    )

    def config_problems(self) -> Iterable[tuple[str, str]]:
        """A client certificate needs its key, and the other way round."""
        if (self.certfile is None) != (self.keyfile is None):
            missing = "keyfile" if self.keyfile is None else "certfile"
            yield missing, "required when the other half of the client certificate is set"


@attrs.frozen(kw_only=True)
class EtcdAuth:
    """etcd's user/password authentication (``etcdctl auth enable``)."""

    username: str = setting(doc="etcd user.", check=checks.non_empty)
    password: str = setting(doc="Its password; never logged.", secret=True)


@attrs.frozen(kw_only=True)
class EtcdConnection:
    """How to reach etcd."""

    endpoints: tuple[str, ...] = setting(
        doc="etcd client URLs as ``host:port``: IP addresses (every member of the cluster), "
        "or one DNS name whose records list the members.",
        check=checks.non_empty,
        each=_endpoint,
    )
    tls: EtcdTls | None = setting(default=None, doc="TLS to etcd; plain gRPC when absent.")
    auth: EtcdAuth | None = setting(default=None, doc="User and password, when etcd has auth.")
    timeout: float = setting(
        default=5.0,
        doc="How long an etcd request may take before it counts as failed.",
        unit="s",
        check=checks.positive_duration,
    )
    lease_ttl: int = setting(
        default=10,
        doc="Time (whole seconds, as etcd counts them) after which this node's keys "
        "expire when it stops keeping its lease alive (dead, or cut off from etcd).",
        unit="s",
        expect=f"a whole number of seconds, at least {MIN_LEASE_TTL}",
        check=_lease_ttl,
    )

    def config_problems(self) -> Iterable[tuple[str, str]]:
        """gRPC takes either IP addresses or one name to resolve, not several names."""
        hosts = [parse_endpoint(endpoint)[0] for endpoint in self.endpoints]
        names = [host for host in hosts if not is_ip(host)]
        if names and len(hosts) > 1:
            yield (
                "endpoints",
                "expected IP addresses, or a single DNS name listing every member "
                f"(got {len(hosts)} endpoints, {len(names)} of them names)",
            )
        elif not names and len({":" in host for host in hosts}) > 1:
            yield "endpoints", "expected IPv4 or IPv6 addresses, not both"


@attrs.frozen(kw_only=True)
class EtcdRegistryOptions(EtcdConnection):
    """Options of the ``etcd`` registry backend (``registry.options``)."""

    prefix: str = setting(
        default="/pycluster/registry/",
        doc="Key prefix of the registry: names under PREFIX ``n/``, groups under PREFIX "
        "``g/``. Clusters sharing one etcd need different prefixes.",
        check=checks.non_empty,
    )


@attrs.frozen(kw_only=True)
class EtcdStrategyConfig(EtcdConnection):
    """Config of the ``etcd`` strategy (``topologies.NAME.config``)."""

    prefix: str = setting(
        default="/pycluster/nodes/",
        doc="Key prefix under which each node registers its name; every node listed there "
        "is connected. Clusters sharing one etcd need different prefixes.",
        check=checks.non_empty,
    )
