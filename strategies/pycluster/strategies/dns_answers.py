"""What a DNS answer means for a topology, decided without I/O.

The DNS strategies (:mod:`pycluster.strategies.dns`) turn each lookup into one of four
results - records, no records, no such name, failure - and hand it here. These functions
turn records into node names, and a result into what the topology is told: the names of
an answer it may act on, or ``None`` (keep the current nodes), plus the problem to report.

An empty answer and NXDOMAIN keep the current nodes like a failure does: during a rollout
or a DNS hiccup they are far more likely than the death of every pod at once, and a dead
pod is noticed by the transport anyway.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping

import attrs

from pycluster import NodeName, NodeNameError, parse_node_name

DEFAULT_CLUSTER_DOMAIN = "cluster.local"
CLUSTER_DOMAIN_ENV = "CLUSTER_DOMAIN"


@attrs.frozen
class Records:
    """A successful lookup with records: addresses (A/AAAA) or SRV targets, as text."""

    values: tuple[str, ...]


@attrs.frozen
class NoRecords:
    """The name exists but has no records of the types asked for (an empty answer)."""


@attrs.frozen
class NoDomain:
    """The name does not exist (NXDOMAIN)."""


@attrs.frozen
class Failed:
    """No usable answer (timeout, SERVFAIL, REFUSED, no nameserver); ``reason`` says which.

    Keep ``reason`` free of timings and counters: the topology logs a problem once, as
    long as its text does not change.
    """

    reason: str


Lookup = Records | NoRecords | NoDomain | Failed
"""The result of one DNS lookup (one record type, or A and AAAA merged)."""

Names = Callable[[Iterable[str]], tuple[list[str], list[str]]]
"""Records -> (node names, a description of each record that makes no node name)."""


@attrs.frozen
class Outcome:
    """What the topology is told after a lookup."""

    answer: list[str] | None
    """Node names to apply, or None to keep the current nodes."""
    problem: str | None
    """The problem to report (None: discovery works)."""
    skipped: int = attrs.field(default=0, eq=False)
    """Records that made no node name, for the dropped-input counter (not compared: it
    is bookkeeping, not part of what the topology is told)."""
    reason: str | None = attrs.field(default=None, kw_only=True)
    """The kind of problem, a fixed word (``failed``, ``nxdomain``, ``no_records``,
    ``no_usable_records``, ``bad_records``): the ``reason`` field of its log records."""


def merge_addresses(a: Lookup, aaaa: Lookup) -> Lookup:
    """The A and AAAA lookups of one name, as one result.

    Either failing fails both: half an answer would disconnect the nodes of the other
    family. One type with records and the other without is a normal answer (an IPv4-only
    or IPv6-only Service).
    """
    failed = [lookup.reason for lookup in (a, aaaa) if isinstance(lookup, Failed)]
    if failed:
        return Failed("; ".join(dict.fromkeys(failed)))
    values = [v for lookup in (a, aaaa) if isinstance(lookup, Records) for v in lookup.values]
    if values:
        return Records(tuple(values))
    if isinstance(a, NoDomain) and isinstance(aaaa, NoDomain):
        return NoDomain()
    return NoRecords()


def address_node_names(basename: str, addresses: Iterable[str]) -> tuple[list[str], list[str]]:
    """``basename@ip`` for each address (IPv6 in brackets, written in its short form),
    sorted without duplicates; and a description of each value that is not an address."""
    names: set[str] = set()
    problems: list[str] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            problems.append(f"{text[:80]!r} is not an IP address")
            continue
        names.add(str(NodeName(basename, str(address))))
    return sorted(names), problems


def srv_node_names(application_name: str, targets: Iterable[str]) -> tuple[list[str], list[str]]:
    """``application_name@target`` for each SRV target (without its final dot), sorted
    without duplicates; and a description of each target that makes no node name.

    A target of ``.`` means "no service here" (RFC 2782) and is skipped silently. A target
    is a host name: one that a node name would read as more (``h:9100``, ``[::1]``: a DNS
    label may hold any byte) makes none.
    """
    names: set[str] = set()
    problems: list[str] = []
    for target in targets:
        host = target[:-1] if target.endswith(".") else target
        if not host:
            continue
        try:
            name = parse_node_name(f"{application_name}@{host}")
        except NodeNameError as exc:
            problems.append(f"target {target[:80]!r} makes no node name ({exc})")
            continue
        if name.port is not None or name.host != host:
            problems.append(f"target {target[:80]!r} makes no node name (not a host name)")
            continue
        names.add(str(name))
    return sorted(names), problems


def cluster_domain(configured: str | None, environ: Mapping[str, str]) -> str:
    """The cluster's DNS domain: the configured one, else ``$CLUSTER_DOMAIN``, else
    ``cluster.local``; without a final dot."""
    domain = configured or environ.get(CLUSTER_DOMAIN_ENV, "").strip() or DEFAULT_CLUSTER_DOMAIN
    return domain[:-1] if domain.endswith(".") else domain


def srv_query_name(service: str, namespace: str, domain: str) -> str:
    """The absolute name whose SRV records list a headless Service's pods."""
    return f"{service}.{namespace}.svc.{domain}."


def interpret(query: str, wanted: str, lookup: Lookup, names: Names) -> Outcome:
    """What a lookup of ``query`` for ``wanted`` records (e.g. ``"A or AAAA"``) means.

    A failure, NXDOMAIN, an empty answer, or records none of which makes a node name keep
    the current nodes (answer None) and say why. Records that make no node name are
    reported and skipped.
    """
    keeping = "keeping current nodes"
    if isinstance(lookup, Failed):
        problem = f"DNS lookup of {query} failed ({lookup.reason}); {keeping}"
        return Outcome(None, problem, reason="failed")
    if isinstance(lookup, NoDomain):
        return Outcome(None, f"{query} does not exist (NXDOMAIN); {keeping}", reason="nxdomain")
    if isinstance(lookup, NoRecords):
        problem = f"{query} has no {wanted} records; {keeping}"
        return Outcome(None, problem, reason="no_records")
    found, problems = names(lookup.values)
    if not found:
        return Outcome(
            None,
            f"{query}: no usable {wanted} records ({'; '.join(problems)}); {keeping}",
            len(problems),
            reason="no_usable_records",
        )
    if problems:
        return Outcome(
            found,
            f"{query}: skipped {wanted} records: {'; '.join(problems)}",
            len(problems),
            reason="bad_records",
        )
    return Outcome(found, None)
