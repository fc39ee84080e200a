"""``kubernetes``: nodes found through the Kubernetes API (EndpointSlices, Endpoints or Pods).

The official client is imported only when this strategy runs, by
:mod:`pycluster.strategies.kubernetes_api`, which turns the API's answers into plain
:class:`~pycluster.strategies.kubernetes_api.Address` records. Here: the config, the pure
rules (which addresses count, how they are named, how watch events fold into the current
set of objects) and the loops (list + watch, or polling) that feed the topology.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import ClassVar, Literal

import attrs

from pycluster import (
    NodeName,
    NodeNameError,
    PollSchedule,
    Strategy,
    Topology,
    checks,
    parse_node_name,
    poll,
    setting,
)
from pycluster.strategies.kubernetes_api import (
    RESOURCES,
    Address,
    ApiError,
    ApiFailure,
    Gone,
    KubeApi,
    SetupError,
    WatchEvent,
    connect,
)

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
"""Where a pod finds its own namespace (the default ``namespace``)."""
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
WATCH_TIMEOUT = 300
"""``timeoutSeconds`` of each watch; the strategy resumes when the server ends one."""
REAPPLY = 1.0
"""Longest time, in seconds, between two checks that every listed node is connected."""
SHORTEST_WATCH = 1.0
"""A watch that ends sooner than this without news makes the next one wait (backoff)."""

Objects = Mapping[str, tuple[Address, ...]]
"""Each listed object's addresses, by object name."""


def _basename(value: str) -> str | None:
    try:
        parse_node_name(f"{value}@localhost")
    except NodeNameError:
        return "expected letters, digits, '_', '-' or '.', starting with a letter, digit or '_'"
    return None


def _api_url(value: str) -> str | None:
    scheme, sep, rest = value.partition("://")
    if scheme in ("http", "https") and sep and rest.strip("/"):
        return None
    return "expected an http:// or https:// URL"


@attrs.frozen(kw_only=True)
class KubernetesConfig:
    """Config of the ``kubernetes`` strategy."""

    selector: str = setting(
        doc="Label selector of the objects to read (``app=myapp,tier!=web``), matched "
        "against the labels of the EndpointSlices, Endpoints or Pods themselves.",
        check=checks.non_empty,
    )
    node_basename: str = setting(
        doc="The part of every discovered node's name before ``@``.", check=_basename
    )
    namespace: str | None = setting(
        default=None,
        doc="Namespace to read. Default: the pod's own, from "
        "``/var/run/secrets/kubernetes.io/serviceaccount/namespace``.",
    )
    ip_lookup_mode: Literal["endpointslices", "endpoints", "pods"] = setting(
        default="endpointslices",
        doc="What to read: EndpointSlices (``discovery.k8s.io``), Endpoints or Pods.",
    )
    mode: Literal["ip", "dns", "hostname"] = setting(
        default="ip",
        doc="How nodes are named: ``BASE@IP``; ``BASE@A-B-C-D.NAMESPACE.pod.DOMAIN``; or "
        "``BASE@HOSTNAME.SERVICE.NAMESPACE.svc.DOMAIN`` (pods with ``spec.hostname``, "
        "as a StatefulSet's).",
    )
    service: str | None = setting(
        default=None,
        doc="The headless Service's name, for ``mode: hostname`` (required there).",
    )
    cluster_domain: str | None = setting(
        default=None,
        doc="DNS domain of the cluster for the ``dns`` and ``hostname`` modes. Default: "
        "the ``CLUSTER_DOMAIN`` environment variable, else ``cluster.local``.",
    )
    polling_interval: float = setting(
        default=5000,
        doc="Time between lists when ``watch`` is false, longest wait between retries of a "
        "failed call, and between attempts to reach listed nodes.",
        unit="ms",
        check=checks.positive_duration,
    )
    watch: bool = setting(
        default=True,
        doc="List once, then follow changes with a watch (false: list every ``polling_interval``).",
    )
    api_server: str | None = setting(
        default=None,
        doc="URL of the API server, for use outside a cluster. Alone, requests carry no "
        "credentials (``http://`` is for a local ``kubectl proxy`` or a test server); "
        "with ``kubeconfig``, it replaces the kubeconfig's server. Default: in-cluster.",
        check=_api_url,
    )
    kubeconfig: str | None = setting(
        default=None,
        doc="Path of a kubeconfig file (its current context) to use instead of the "
        "in-cluster service account.",
    )

    def config_problems(self) -> Iterable[tuple[str, str]]:
        """``service`` is needed to build names in ``hostname`` mode."""
        if self.mode == "hostname" and self.service is None:
            yield (
                "service",
                "required when mode is 'hostname' (names are "
                "BASE@HOSTNAME.SERVICE.NAMESPACE.svc.DOMAIN)",
            )


# -- the pure part ---------------------------------------------------------------------------


@attrs.frozen
class Naming:
    """How addresses become node names (libcluster's formats)."""

    basename: str
    mode: Literal["ip", "dns", "hostname"] = "ip"
    service: str | None = None
    domain: str = DEFAULT_CLUSTER_DOMAIN

    @classmethod
    def from_config(cls, config: KubernetesConfig, env: Mapping[str, str]) -> Naming:
        """The naming of ``config``; the cluster domain falls back to env CLUSTER_DOMAIN."""
        domain = config.cluster_domain or env.get("CLUSTER_DOMAIN") or DEFAULT_CLUSTER_DOMAIN
        return cls(config.node_basename, config.mode, config.service, domain.strip("."))

    def name(self, address: Address) -> str | None:
        """``address``'s node name, or None if it cannot be named (no hostname in
        ``hostname`` mode, no IP address in the others, or not a valid host).

        The fields are the API's JSON as it came: anything but text of the right form
        (a number, an ``ip`` that is a host name) makes no name.
        """
        if not isinstance(address.namespace, str):
            return None
        if self.mode == "hostname":
            if not isinstance(address.hostname, str) or not address.hostname:
                return None
            host = f"{address.hostname}.{self.service}.{address.namespace}.svc.{self.domain}"
        elif not _is_ip(address.ip):
            return None
        elif self.mode == "ip":
            host = address.ip
        else:
            dashed = address.ip.replace(".", "-").replace(":", "-")
            host = f"{dashed}.{address.namespace}.pod.{self.domain}"
        try:
            return str(parse_node_name(str(NodeName(self.basename, host))))
        except NodeNameError:
            return None


def _is_ip(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def node_names(
    addresses: Iterable[Address], naming: Naming
) -> tuple[frozenset[str], list[Address]]:
    """The names of the addresses that count, and those that could not be named.

    Terminating addresses do not count; not-ready ones do (pods find each other before
    they are ready, which is why the manifests publish not-ready addresses).
    """
    names, unnamed = set(), []
    for address in addresses:
        if address.terminating:
            continue
        name = naming.name(address)
        if name is None:
            unnamed.append(address)
        else:
            names.add(name)
    return frozenset(names), unnamed


def fold(objects: Objects, event: WatchEvent) -> dict[str, tuple[Address, ...]]:
    """The objects after one watch event (a BOOKMARK changes none)."""
    updated = dict(objects)
    if event.type == "BOOKMARK" or event.name is None:
        return updated
    if event.type == "DELETED":
        updated.pop(event.name, None)
    else:
        updated[event.name] = event.addresses
    return updated


def all_addresses(objects: Objects) -> list[Address]:
    """Every address of every object."""
    return [address for addresses in objects.values() for address in addresses]


# -- the strategy ---------------------------------------------------------------------------


class Kubernetes(Strategy):
    """Connects the pods the Kubernetes API lists, following changes with a watch.

    Reads the EndpointSlices (default), Endpoints or Pods of one namespace that match
    ``selector``, and names each address as ``mode`` says. Terminating endpoints and pods
    do not count; not-ready ones do. A failed call (timeout, 5xx, 403, connection lost)
    keeps the current nodes and is retried with a backoff (:class:`~pycluster.PollSchedule`);
    an empty answer keeps them too and is logged. Only a successful answer that leaves out
    a node listed before disconnects it, and keeps it out while the API leaves it out.
    Addresses that make no node name are reported, skipped, and counted as they arrive
    (``pycluster_discovery_dropped_total``, reason ``bad_address``). Needs the
    ``pycluster[kubernetes]`` extra, and RBAC ``list`` (and ``watch``) on the resource read.
    """

    name = "kubernetes"
    Config = KubernetesConfig
    requires: ClassVar[Mapping[str, str]] = {"kubernetes": "pycluster[kubernetes]"}

    async def run(self, topology: Topology) -> None:
        config: KubernetesConfig = topology.config
        naming = Naming.from_config(config, os.environ)
        namespace = config.namespace or read_namespace()
        async with connect(
            resource=RESOURCES[config.ip_lookup_mode],
            namespace=namespace,
            selector=config.selector,
            api_server=config.api_server,
            kubeconfig=config.kubeconfig,
            log=topology.log,
        ) as api:
            await _Discovery(topology, api, naming, config).run()


def read_namespace(path: Path | None = None) -> str:
    """The pod's namespace, from its service account (``namespace`` unset)."""
    path = path or NAMESPACE_FILE
    try:
        namespace = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SetupError(
            f"namespace is not set and {path} cannot be read ({exc.strerror or exc}); "
            "set namespace when not running in a pod"
        ) from exc
    if not namespace:
        raise SetupError(f"namespace is not set and {path} is empty")
    return namespace


class _Discovery:
    """One run: a task that lists (and watches, or polls) the API into ``objects``, and a
    task that applies the derived node names to the topology, re-trying unreached nodes."""

    def __init__(
        self, topology: Topology, api: KubeApi, naming: Naming, config: KubernetesConfig
    ) -> None:
        self.topology = topology
        self.api = api
        self.naming = naming
        self.watching = config.watch
        self.interval = config.polling_interval / 1000
        self.calls = PollSchedule(self.interval)
        """When to call the API again."""
        self.objects: dict[str, tuple[Address, ...]] | None = None
        """What the API last said (None before its first answer)."""
        self.api_problem: tuple[str, str] | None = None
        """What is wrong with the API calls: (message, reason), None while they work."""
        self.changed = asyncio.Event()

    async def run(self) -> None:
        discover = self.watch() if self.watching else self.list_repeatedly()
        tasks = [asyncio.create_task(discover), asyncio.create_task(self.keep_applying())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a crash of either is the strategy's crash
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- reading the API ------------------------------------------------------------------

    async def list_repeatedly(self) -> None:
        async def attempt() -> bool:
            try:
                listing = await self.api.list()
            except ApiFailure as exc:
                self.failed(exc, "list")
                return False
            self.answered(listing.objects, all_addresses(listing.objects))
            return True

        await poll(self.topology, attempt, self.calls)

    async def watch(self) -> None:
        since: str | None = None
        while True:
            established: float | None = None
            news = False
            try:
                if since is None:
                    listing = await self.api.list()
                    since = listing.resource_version
                    self.answered(listing.objects, all_addresses(listing.objects))
                async with self.api.watch(since, WATCH_TIMEOUT) as events:
                    established = time.monotonic()
                    self.succeeded()
                    async for event in events:
                        if not news:
                            self.calls.reset()  # a watch that delivers is healthy again
                        news = True
                        since = event.resource_version or since
                        if event.type != "BOOKMARK":
                            received = () if event.type == "DELETED" else event.addresses
                            self.answered(fold(self.objects or {}, event), received)
            except Gone:
                # The history we would resume from is gone: list afresh, then watch again.
                self.topology.log.info(
                    "watch of %s expired (410 Gone); listing again",
                    self.api.resource.name,
                    extra={"event": "watch_expired", "resource": self.api.resource.name},
                )
                since = None
                delay = self.calls.failed()
            except ApiFailure as exc:
                lasted = None if established is None else time.monotonic() - established
                if lasted is not None and lasted >= SHORTEST_WATCH:
                    # A long watch cut (a proxy, a restarting server): resume at once.
                    self.topology.log.info(
                        "watch of %s interrupted (%s); resuming",
                        self.api.resource.name,
                        exc,
                        extra={
                            "event": "watch_interrupted",
                            "resource": self.api.resource.name,
                            "error": str(exc),
                        },
                    )
                    delay = 0.0
                else:
                    self.failed(exc, "list" if since is None else "watch")
                    delay = self.calls.failed()
            else:
                # The server ended the watch (its timeout): resume where it stopped, unless
                # it keeps ending them at once.
                quick = established is None or time.monotonic() - established < SHORTEST_WATCH
                if quick and not news:
                    delay = self.calls.failed()
                else:
                    self.calls.reset()
                    delay = 0.0
            if not await self.topology.sleep(delay):
                return

    def answered(self, objects: Objects, received: Iterable[Address]) -> None:
        """The API's answer is ``objects`` now; ``received`` are the addresses that just
        arrived (counted when they make no node name: each is dropped input)."""
        _, unnamed = node_names(received, self.naming)
        for _ in unnamed:
            self.topology.dropped("bad_address")
        self.objects = dict(objects)
        self.succeeded()
        self.changed.set()

    def succeeded(self) -> None:
        if self.api_problem is not None:
            self.api_problem = None
            self.changed.set()

    def failed(self, exc: ApiFailure, verb: str) -> None:
        self.api_problem = self.describe(exc, verb)
        self.changed.set()

    def describe(self, exc: ApiFailure, verb: str) -> tuple[str, str]:
        """One line for a failed call, and its reason (``forbidden``, ``unauthorized``,
        ``api_failed``); identical failures give identical lines (logged once)."""
        api, keeping = self.api, "keeping current nodes"
        where = f'namespace "{api.namespace}"'
        if isinstance(exc, ApiError) and exc.status == 403:
            verbs = '"list" and "watch"' if self.watching else '"list"'
            said = f" (the API said: {exc.message})" if exc.message else ""
            return (
                f"forbidden: {api.identity} needs {verbs} on {api.resource.described} "
                f"in {where}; {keeping}{said}"
            ), "forbidden"
        if isinstance(exc, ApiError) and exc.status == 401:
            message = f"unauthorized: the API rejected the credentials of {api.identity}"
            return f"{message}; {keeping}", "unauthorized"
        return f"cannot {verb} {api.resource.name} in {where} ({exc}); {keeping}", "api_failed"

    # -- feeding the topology -------------------------------------------------------------

    def answer(self) -> tuple[frozenset[str] | None, tuple[str, str] | None]:
        """The node names the API lists now (None: no answer yet), and what is wrong with
        that answer, if anything: (message, reason)."""
        if self.objects is None:
            return None, None
        names, unnamed = node_names(all_addresses(self.objects), self.naming)
        api = self.api
        if not names:
            return names, (
                f'no {api.resource.name} matching "{api.selector}" in namespace '
                f'"{api.namespace}" list a node (or only terminating ones); keeping current nodes',
                "no_nodes",
            )
        if unnamed:
            if self.naming.mode == "hostname" and any(not a.hostname for a in unnamed):
                why = "have no hostname (hostname mode needs pods with spec.hostname and "
                why += "spec.subdomain, as a StatefulSet sets)"
                reason = "no_hostname"
            else:
                why, reason = "do not make valid node names", "bad_addresses"
            shown = ", ".join(sorted(str(a.ip)[:64] for a in unnamed)[:5])
            return names, (f"skipped {len(unnamed)} addresses that {why}: {shown}", reason)
        return names, None

    async def keep_applying(self) -> None:
        # Re-applying is local (no API call): done often enough that a listed peer whose
        # connection dropped is redialled soon even when the API says nothing new.
        dials = PollSchedule(min(self.interval, REAPPLY), longest=self.interval)
        while True:
            self.changed.clear()
            names, answer_problem = self.answer()
            message, reason = self.api_problem or answer_problem or (None, None)
            self.topology.problem(message, reason=reason)
            plan = await self.topology.apply(names)
            missing = plan.listed - set(self.topology.list_nodes())
            woken = await self._wait(dials.failed() if missing else dials.succeeded())
            if woken is None:
                return
            if woken:
                dials.reset()  # news: unreached nodes are tried soon again

    async def _wait(self, seconds: float) -> bool | None:
        """Wait for news (True), ``seconds`` (False) or shutdown (None)."""
        if self.changed.is_set():
            return True
        news = asyncio.create_task(self.changed.wait())
        sleep = asyncio.create_task(self.topology.sleep(seconds))
        try:
            await asyncio.wait([news, sleep], return_when=asyncio.FIRST_COMPLETED)
        finally:
            news.cancel()
            sleep.cancel()
        if sleep.done() and not sleep.cancelled() and sleep.result() is False:
            return None
        return self.changed.is_set()
