"""DNS discovery: ``kubernetes.dns``, ``kubernetes.dnssrv`` and ``dns_poll``.

Each strategy polls one name: A and AAAA records (``kubernetes.dns``, ``dns_poll``) give
``name@ip`` nodes, SRV records (``kubernetes.dnssrv``) give ``name@target`` nodes. The
answers are interpreted by the pure functions of :mod:`pycluster.strategies.dns_answers`;
this module holds the config classes, the resolver (dnspython's asyncio resolver) and the
polling loop.

A lookup that gives no nodes (failure, NXDOMAIN, empty answer) keeps the current ones, and
the next lookup comes sooner: after 0.2 s, then twice as long each time, up to
``polling_interval`` (:class:`~pycluster.PollSchedule`). So do lookups while listed nodes
are not connected yet, which lets pods started together find each other quickly.
"""

from __future__ import annotations

import abc
import asyncio
import os
import re
from typing import Any

import attrs
import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.resolver

from pycluster import (
    NodeNameError,
    PollSchedule,
    Strategy,
    Topology,
    checks,
    parse_node_name,
    poll,
    setting,
)
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

_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,61}[A-Za-z0-9_])?")
_KUBERNETES_NAME = re.compile(r"[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?")


# -- config checks ----------------------------------------------------------------------------


def dns_name(value: str) -> str | None:
    """A DNS name: dot-separated labels of letters, digits, ``-`` and ``_``."""
    text = value[:-1] if value.endswith(".") else value
    if text and len(text) <= 253 and all(_LABEL.fullmatch(label) for label in text.split(".")):
        return None
    return "expected a DNS name (labels of letters, digits, '-' and '_', separated by '.')"


def kubernetes_name(value: str) -> str | None:
    """A Kubernetes Service or namespace name (an RFC 1123 label)."""
    if _KUBERNETES_NAME.fullmatch(value):
        return None
    return (
        "expected a Kubernetes name (at most 63 lowercase letters, digits and '-', "
        "starting and ending with a letter or digit)"
    )


def node_basename(value: str) -> str | None:
    """What goes before ``@`` in a node name."""
    try:
        parsed = parse_node_name(f"{value}@localhost")
    except NodeNameError:
        parsed = None
    if parsed is not None and parsed.name == value:
        return None
    return "expected letters, digits, '_', '-' or '.', starting with a letter, digit or '_'"


def _polling_interval() -> Any:
    return setting(
        default=5000,
        doc="How often the name is looked up. Also the longest wait between the "
        "quicker retries that follow a lookup without usable nodes.",
        unit="ms",
        check=checks.positive_duration,
    )


def _nameservers() -> Any:
    return setting(
        default=None,
        doc="IP addresses of the nameservers to ask, instead of the system's "
        "(``/etc/resolv.conf``). Names are then looked up as written, without the "
        "system's search domains.",
        check=checks.non_empty,
        each=checks.ip_address,
    )


def _port() -> Any:
    return setting(
        default=None,
        doc="Port the nameservers listen on; default: 53.",
        check=checks.port,
    )


def _timeout() -> Any:
    return setting(
        default=5000,
        doc="How long one lookup may take before it counts as failed.",
        unit="ms",
        check=checks.positive_duration,
    )


# -- config classes ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class KubernetesDnsConfig:
    """Config of the ``kubernetes.dns`` strategy."""

    service: str = setting(
        doc="Name of the headless Service, e.g. ``myapp-headless`` (completed by the "
        "pod's search domains) or ``myapp-headless.prod.svc.cluster.local``.",
        check=dns_name,
    )
    application_name: str = setting(
        doc="The part before ``@`` of the node names: ``app`` gives ``app@10.0.0.5``.",
        check=node_basename,
    )
    polling_interval: float = _polling_interval()
    nameservers: tuple[str, ...] | None = _nameservers()
    port: int | None = _port()
    timeout: float = _timeout()


@attrs.frozen(kw_only=True)
class KubernetesDnsSrvConfig:
    """Config of the ``kubernetes.dnssrv`` strategy."""

    service: str = setting(
        doc="Name of the headless Service that governs the StatefulSet.",
        check=kubernetes_name,
    )
    application_name: str = setting(
        doc="The part before ``@`` of the node names: ``app`` gives "
        "``app@myapp-0.myapp.prod.svc.cluster.local``.",
        check=node_basename,
    )
    namespace: str = setting(
        default="default", doc="Namespace of the Service.", check=kubernetes_name
    )
    cluster_domain: str | None = setting(
        default=None,
        doc="The cluster's DNS domain; default: the ``CLUSTER_DOMAIN`` environment "
        "variable, else ``cluster.local``.",
        check=dns_name,
    )
    polling_interval: float = _polling_interval()
    nameservers: tuple[str, ...] | None = _nameservers()
    port: int | None = _port()
    timeout: float = _timeout()


@attrs.frozen(kw_only=True)
class DnsPollConfig:
    """Config of the ``dns_poll`` strategy."""

    query: str = setting(
        doc="The name to look up, e.g. ``app.internal.example.com``.", check=dns_name
    )
    node_basename: str = setting(
        doc="The part before ``@`` of the node names: ``app`` gives ``app@10.0.0.5``.",
        check=node_basename,
    )
    polling_interval: float = _polling_interval()
    nameservers: tuple[str, ...] | None = _nameservers()
    port: int | None = _port()
    timeout: float = _timeout()


# -- the resolver (the I/O edge) --------------------------------------------------------------


def make_resolver(
    nameservers: tuple[str, ...] | None, port: int | None
) -> dns.asyncresolver.Resolver:
    """dnspython's asyncio resolver: the given nameservers, else the system's config.

    Raises ``dns.exception.DNSException`` (or OSError) when the system has no usable
    resolver configuration.
    """
    resolver = dns.asyncresolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = list(nameservers)
    if port is not None:
        resolver.port = port
    resolver.cache = None  # every poll asks the nameservers: the point is to see changes
    return resolver


async def lookup(
    resolver: dns.asyncresolver.Resolver,
    name: str,
    rdtype: dns.rdatatype.RdataType,
    timeout: float,
) -> Lookup:
    """One lookup of ``name`` for ``rdtype`` records, at most ``timeout`` seconds long."""
    try:
        answer = await resolver.resolve(
            name, rdtype, raise_on_no_answer=False, lifetime=timeout, search=True
        )
    except dns.resolver.NXDOMAIN:
        return NoDomain()
    except dns.resolver.NoAnswer:
        return NoRecords()
    except (dns.exception.DNSException, OSError) as exc:
        return Failed(failure_reason(exc, timeout))
    values: list[str] = []
    for rdata in answer.rrset or ():
        if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
            values.append(rdata.address)
        elif isinstance(rdata, dns.rdtypes.IN.SRV.SRV):
            values.append(rdata.target.to_text())
    return Records(tuple(values)) if values else NoRecords()


async def lookup_addresses(
    resolver: dns.asyncresolver.Resolver, name: str, timeout: float
) -> Lookup:
    """The A and AAAA records of ``name``, asked for together."""
    a, aaaa = await asyncio.gather(
        lookup(resolver, name, dns.rdatatype.A, timeout),
        lookup(resolver, name, dns.rdatatype.AAAA, timeout),
    )
    return merge_addresses(a, aaaa)


def failure_reason(exc: BaseException, timeout: float) -> str:
    """A short, stable description of a failed lookup (no timings: it is compared to
    decide whether a problem is new)."""
    if isinstance(exc, dns.exception.Timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, dns.resolver.NoNameservers):
        errors = exc.kwargs.get("errors") or []
        described = [
            f"{server.removeprefix('Do53:')} {_error(error)}"
            for server, _tcp, _port, error, _response in errors
        ]
        return "; ".join(dict.fromkeys(described)) or "no nameserver could answer"
    if isinstance(exc, dns.resolver.NoResolverConfiguration):
        return "no nameservers configured"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"


def _error(error: object) -> str:
    if isinstance(error, str):
        return f"answered {error}"  # dnspython gives an error rcode as its text
    if isinstance(error, dns.exception.Timeout):
        return "timed out"
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return f"failed ({type(error).__name__}: {error})"


# -- the strategies ---------------------------------------------------------------------------


class _DnsPolling(Strategy):
    """The polling loop the DNS strategies share; subclasses say what to look up."""

    @abc.abstractmethod
    async def discover(self, config: Any) -> Outcome:
        """Look the name up once and interpret the answer."""

    async def run(self, topology: Topology) -> None:
        config = topology.config

        async def attempt() -> bool:
            outcome = await self.discover(config)
            for _ in range(outcome.skipped):
                topology.dropped("bad_record")
            topology.problem(outcome.problem, reason=outcome.reason)
            await topology.apply(outcome.answer)
            others = set(outcome.answer or ()) - {topology.self_name}
            return bool(others) and not others - set(topology.list_nodes())

        await poll(topology, attempt, PollSchedule(config.polling_interval / 1000))

    @staticmethod
    async def addresses(config: Any, query: str, basename: str) -> Outcome:
        """Look up the A and AAAA records of ``query``; nodes ``basename@ip``."""
        timeout = config.timeout / 1000
        try:
            resolver = make_resolver(config.nameservers, config.port)
        except (dns.exception.DNSException, OSError) as exc:
            result: Lookup = Failed(failure_reason(exc, timeout))
        else:
            result = await lookup_addresses(resolver, query, timeout)
        return interpret(
            query, "A or AAAA", result, lambda values: address_node_names(basename, values)
        )


class KubernetesDns(_DnsPolling):
    """Connects the pods of a headless Service, found through its A and AAAA records.

    Every address gives a node ``application_name@ip`` (``app@[fd00::5]`` for IPv6), which
    is dialled on the cluster's ``node.port``; each pod names itself the same way, e.g.
    ``name: app@${POD_IP}``. A failed lookup, NXDOMAIN or an empty answer keeps the
    current nodes (and is reported once); an answer that leaves out a pod disconnects it
    and refuses its reconnects until it is listed again.
    """

    name = "kubernetes.dns"
    Config = KubernetesDnsConfig

    async def discover(self, config: KubernetesDnsConfig) -> Outcome:
        return await self.addresses(config, config.service, config.application_name)


class DnsPoll(_DnsPolling):
    """Connects the nodes whose addresses a DNS name lists (A and AAAA records).

    The generic form of ``kubernetes.dns``, for any DNS (Consul, Route 53, a zone file):
    every address gives a node ``node_basename@ip`` on the cluster's ``node.port``, with
    the same rules for failed, empty and partial answers.
    """

    name = "dns_poll"
    Config = DnsPollConfig

    async def discover(self, config: DnsPollConfig) -> Outcome:
        return await self.addresses(config, config.query, config.node_basename)


class KubernetesDnsSrv(_DnsPolling):
    """Connects the pods of a StatefulSet, found through its headless Service's SRV records.

    Looks up ``SERVICE.NAMESPACE.svc.CLUSTER_DOMAIN`` and gives each SRV target (a pod's
    stable host name) the node name ``application_name@target``, e.g.
    ``app@myapp-0.myapp.prod.svc.cluster.local``, dialled on the cluster's ``node.port``
    (the SRV port is not used). Each pod names itself the same way. Failed, empty and
    partial answers follow the same rules as ``kubernetes.dns``.
    """

    name = "kubernetes.dnssrv"
    Config = KubernetesDnsSrvConfig

    async def discover(self, config: KubernetesDnsSrvConfig) -> Outcome:
        domain = cluster_domain(config.cluster_domain, os.environ)
        query = srv_query_name(config.service, config.namespace, domain)
        timeout = config.timeout / 1000
        try:
            resolver = make_resolver(config.nameservers, config.port)
        except (dns.exception.DNSException, OSError) as exc:
            result: Lookup = Failed(failure_reason(exc, timeout))
        else:
            result = await lookup(resolver, query, dns.rdatatype.SRV, timeout)
        return interpret(
            query[:-1],
            "SRV",
            result,
            lambda targets: srv_node_names(config.application_name, targets),
        )
