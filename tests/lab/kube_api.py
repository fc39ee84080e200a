"""A fake Kubernetes API server for the lab: the API's real JSON, served to the real client.

No real API server can run here, so :class:`KubeApi` serves, over HTTP (or HTTPS, given
an SSL context) on 127.0.0.1, the three collections the ``kubernetes`` strategy reads,
shaped as the API reference says:

- ``GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices``
- ``GET /api/v1/namespaces/{ns}/endpoints``
- ``GET /api/v1/namespaces/{ns}/pods``

each with ``labelSelector`` (``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x,y)``,
``a``, ``!a``, comma-separated), as a list (``kind: PodList``, ``metadata.resourceVersion``,
``items``) or, with ``watch=true``/``watch=1``, as a stream of newline-delimited watch events
(``ADDED``/``MODIFIED``/``DELETED``/``BOOKMARK``/``ERROR``) honouring ``resourceVersion``,
``allowWatchBookmarks`` and ``timeoutSeconds``. Resource versions come from one increasing
counter, as etcd's revision; only the last ``history`` changes are kept, so a watch from an
older version gets a 410 ``Expired`` ERROR event (or, with :attr:`KubeApi.gone_as_http`, an
HTTP 410), as the real server does. An object edited out of a watch's selector is reported
to that watch as DELETED, and one edited into it as ADDED.

Tests change objects with :meth:`KubeApi.put` / :meth:`KubeApi.delete` (objects built with
the helpers below, or read from ``tests/lab/fixtures/kubernetes``) and flip faults:
:attr:`~KubeApi.forbidden` (403 with the real ``Forbidden`` Status), :attr:`~KubeApi.failing`
(e.g. 500), :attr:`~KubeApi.delay`, :meth:`~KubeApi.cut_watches` (a watch cut mid-event),
:attr:`~KubeApi.watch_limit` (the server ends watches early, as ``--min-request-timeout``
makes real ones do), :meth:`~KubeApi.compact` and :meth:`~KubeApi.bookmark`. To time how
fast clients act on a change, :meth:`~KubeApi.first_sent` says when its watch event was
first written to a client.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
import ssl
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures" / "kubernetes"
SERVICE_ACCOUNT = "system:serviceaccount:{namespace}:pycluster"
CREATED = "2024-05-01T12:00:00Z"
"""Timestamp used for creationTimestamp and friends (RFC 3339, as the API writes them)."""

Obj = dict[str, Any]


@attrs.frozen
class ResourceType:
    """One collection the fake serves."""

    resource: str
    """Plural, lower case, as in URLs and RBAC rules."""
    group: str
    """API group; "" for the core group."""
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"

    @property
    def qualified(self) -> str:
        """``endpointslices.discovery.k8s.io``, or ``pods`` for the core group."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


RESOURCES = {
    "pods": ResourceType("pods", "", "Pod"),
    "endpoints": ResourceType("endpoints", "", "Endpoints"),
    "endpointslices": ResourceType("endpointslices", "discovery.k8s.io", "EndpointSlice"),
}
_BY_KIND = {rt.kind: rt for rt in RESOURCES.values()}
# What a v1.33+ server says with every Endpoints response.
_ENDPOINTS_WARNING = (
    '299 - "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"'
)


# -- label selectors ----------------------------------------------------------------------


class SelectorError(ValueError):
    """A labelSelector the API would reject."""


Requirement = Callable[[Mapping[str, str]], bool]
_KEY = r"[A-Za-z0-9]([A-Za-z0-9_./\-]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([A-Za-z0-9_.\-]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQUALITY = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def parse_selector(text: str) -> list[Requirement]:
    """The requirements of a label selector (all must hold); empty selects everything."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    requirements: list[Requirement] = []
    for part in parts:
        if not part.strip():
            if len(parts) > 1:
                raise SelectorError(f"empty requirement in {text!r}")
            continue
        requirements.append(_requirement(part))
    return requirements


def _requirement(part: str) -> Requirement:
    if match := _SET.match(part):
        key, op, values_text = match[1], match[3], match[4]
        values = {v.strip() for v in values_text.split(",")}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQUALITY.match(part):
        key, op, value = match[1], match[3], match[4]
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS.match(part):
        negated, key = match[1] == "!", match[2]
        return lambda labels: (key in labels) != negated
    raise SelectorError(f"unable to parse requirement {part.strip()!r}")


def selects(requirements: Iterable[Requirement], obj: Obj | None) -> bool:
    """Whether ``obj`` (None: no object) has labels meeting every requirement."""
    if obj is None:
        return False
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(requirement(labels) for requirement in requirements)


# -- objects in API shape -----------------------------------------------------------------


def pod(
    name: str,
    ip: str | None,
    *,
    namespace: str = "lab",
    labels: Mapping[str, str] | None = None,
    ready: bool = True,
    phase: str = "Running",
    deleting: bool = False,
    hostname: str | None = None,
    subdomain: str | None = None,
) -> Obj:
    """A Pod as ``GET`` returns it (``ip`` None: not scheduled yet, no podIP)."""
    spec: Obj = {
        "containers": [{"name": "app", "image": "pycluster:lab"}],
        "nodeName": "lab-node-1",
    }
    if hostname is not None:
        spec["hostname"] = hostname
    if subdomain is not None:
        spec["subdomain"] = subdomain
    status: Obj = {
        "phase": phase,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": CREATED},
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "lastTransitionTime": CREATED,
            },
        ],
        "hostIP": "10.1.0.1",
        "startTime": CREATED,
    }
    if ip is not None:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    metadata: Obj = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    if deleting:
        metadata["deletionTimestamp"] = CREATED
        metadata["deletionGracePeriodSeconds"] = 30
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


def target_ref(pod_name: str, namespace: str = "lab") -> Obj:
    """An ObjectReference to a pod, as Endpoints and EndpointSlices carry."""
    return {"kind": "Pod", "name": pod_name, "namespace": namespace, "uid": _uid(pod_name)}


def slice_endpoint(
    ip: str,
    *,
    pod_name: str | None = None,
    namespace: str = "lab",
    ready: bool = True,
    terminating: bool = False,
    hostname: str | None = None,
) -> Obj:
    """One entry of an EndpointSlice's ``endpoints`` (no targetRef when ``pod_name`` is None).

    Conditions as the EndpointSlice controller sets them: ``serving`` follows readiness,
    and a terminating endpoint is not ready.
    """
    endpoint: Obj = {
        "addresses": [ip],
        "conditions": {
            "ready": ready and not terminating,
            "serving": ready,
            "terminating": terminating,
        },
        "nodeName": "lab-node-1",
    }
    if hostname is not None:
        endpoint["hostname"] = hostname
    if pod_name is not None:
        endpoint["targetRef"] = target_ref(pod_name, namespace)
    return endpoint


def endpoint_slice(
    name: str,
    endpoints: list[Obj] | None,
    *,
    service: str = "app",
    namespace: str = "lab",
    labels: Mapping[str, str] | None = None,
    address_type: str = "IPv4",
) -> Obj:
    """An EndpointSlice of ``service`` (``endpoints`` None: the field is null, as a slice
    of a Service without ready pods can be)."""
    all_labels = {
        "kubernetes.io/service-name": service,
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
        **(labels or {}),
    }
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": all_labels,
            "generateName": f"{service}-",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": service,
                    "uid": _uid(service),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": "cluster", "port": 9100, "protocol": "TCP"}],
    }


def endpoint_address(
    ip: str, *, pod_name: str | None = None, namespace: str = "lab", hostname: str | None = None
) -> Obj:
    """One EndpointAddress of an Endpoints subset (no targetRef when ``pod_name`` is None)."""
    address: Obj = {"ip": ip, "nodeName": "lab-node-1"}
    if hostname is not None:
        address["hostname"] = hostname
    if pod_name is not None:
        address["targetRef"] = target_ref(pod_name, namespace)
    return address


def endpoints(
    name: str,
    addresses: list[Obj],
    not_ready: list[Obj] | None = None,
    *,
    namespace: str = "lab",
    labels: Mapping[str, str] | None = None,
) -> Obj:
    """The Endpoints object of Service ``name`` (one subset; none when both lists are empty)."""
    subset: Obj = {"ports": [{"name": "cluster", "port": 9100, "protocol": "TCP"}]}
    if addresses:
        subset["addresses"] = addresses
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    obj: Obj = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
    }
    if addresses or not_ready:
        obj["subsets"] = [subset]
    return obj


def fixture(name: str) -> Obj:
    """A JSON object from ``tests/lab/fixtures/kubernetes`` (a fresh copy)."""
    loaded: Obj = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return loaded


def status(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    """A ``Status`` object, as the API returns for failures."""
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def _uid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pycluster-lab/{name}"))


# -- the server -----------------------------------------------------------------------------


@attrs.frozen
class ApiRequest:
    """A request the fake answered (or refused), for tests to check what the client asked."""

    verb: str
    """``list`` or ``watch``."""
    resource: str
    namespace: str
    query: dict[str, str]
    authorization: str | None = None
    """The ``Authorization`` header the client sent, if any."""


@attrs.frozen
class SentEvent:
    """A watch event the fake wrote to a client."""

    at: float
    """time.monotonic() once it was written."""
    type: str
    resource_version: str | None
    """The version of the change it reports (of its object; a BOOKMARK's current one)."""


@attrs.frozen
class _Change:
    rv: int
    resource: str
    namespace: str
    old: Obj | None
    new: Obj | None


_CUT = object()
_END = object()


@attrs.define(eq=False)
class _Watcher:
    resource: str
    namespace: str
    selector: list[Requirement]
    bookmarks: bool
    queue: asyncio.Queue[Any] = attrs.field(factory=asyncio.Queue)


class KubeApi:
    """The fake API server; use :meth:`running` (or :meth:`start` / :meth:`stop`)."""

    def __init__(self, *, history: int = 1000, ssl_context: ssl.SSLContext | None = None) -> None:
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {r: {} for r in RESOURCES}
        self._rv = 1000
        self._history: deque[_Change] = deque()
        self._history_size = history
        self._compacted = self._rv
        """Changes at or below this version are forgotten: older watches get 410."""
        self._watchers: set[_Watcher] = set()
        self._runner: web.AppRunner | None = None
        self._ssl_context = ssl_context
        self._serial = itertools.count(1)
        self.port = 0
        self.requests: list[ApiRequest] = []
        """Every list/watch request, in arrival order."""
        self.sent: list[SentEvent] = []
        """Every watch event written to a client, in order."""
        self.forbidden: set[str] = set()
        """Verbs (``list``, ``watch``) answered 403 Forbidden, as without an RBAC rule."""
        self.failing: int | None = None
        """When set, every request is answered with this status (e.g. 500)."""
        self.delay = 0.0
        """Seconds to wait before answering each request."""
        self.watch_limit: float | None = None
        """When set, the server ends every watch after this many seconds."""
        self.gone_as_http = False
        """Refuse too-old watches with an HTTP 410 instead of a 410 ERROR event."""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with an SSL context), for ``api_server``."""
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def resource_version(self) -> str:
        """The current resourceVersion (the last change's)."""
        return str(self._rv)

    # -- lifecycle ----------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def running(cls, **options: Any) -> AsyncIterator[KubeApi]:
        """A started server, stopped (every watch ended) when the block exits."""
        api = cls(**options)
        await api.start()
        try:
            yield api
        finally:
            await api.stop()

    async def start(self) -> None:
        """Listen on 127.0.0.1, on a free port (see :attr:`url`)."""
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{namespace}/{resource}", self._handle)
        app.router.add_get(
            "/apis/discovery.k8s.io/v1/namespaces/{namespace}/{resource}", self._handle
        )
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """End every watch and stop listening."""
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(_END)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- test-side API ------------------------------------------------------------------

    def put(self, obj: Obj) -> Obj:
        """Create or replace ``obj`` (its ``kind`` says where); return the stored copy."""
        rt = _BY_KIND[obj["kind"]]
        stored = copy.deepcopy(obj)
        metadata = stored.setdefault("metadata", {})
        namespace = metadata.setdefault("namespace", "default")
        key = (namespace, metadata["name"])
        old = self._objects[rt.resource].get(key)
        metadata["uid"] = old["metadata"]["uid"] if old else _uid(f"{rt.resource}/{key}")
        metadata["creationTimestamp"] = CREATED
        self._rv += 1
        metadata["resourceVersion"] = str(self._rv)
        self._objects[rt.resource][key] = stored
        self._record(_Change(self._rv, rt.resource, namespace, old, stored))
        return copy.deepcopy(stored)

    def delete(self, kind: str, name: str, namespace: str = "lab") -> None:
        """Delete an object; watches see it DELETED at a new resourceVersion."""
        rt = RESOURCES[kind] if kind in RESOURCES else _BY_KIND[kind]
        old = self._objects[rt.resource].pop((namespace, name))
        self._rv += 1
        self._record(_Change(self._rv, rt.resource, namespace, old, None))

    def get(self, kind: str, name: str, namespace: str = "lab") -> Obj:
        """A copy of a stored object."""
        rt = RESOURCES[kind] if kind in RESOURCES else _BY_KIND[kind]
        return copy.deepcopy(self._objects[rt.resource][(namespace, name)])

    def touch_unrelated(self, namespace: str = "lab") -> None:
        """Change an object no selector of the tests matches: the version moves on, and
        watches see nothing (the case bookmarks are for)."""
        self.put(pod(f"unrelated-{next(self._serial)}", None, namespace=namespace))

    def compact(self) -> None:
        """Forget all history, as etcd compaction does: watches from older versions get 410."""
        self._history.clear()
        self._compacted = self._rv

    def bookmark(self) -> int:
        """Send a BOOKMARK at the current version to each watch that allowed bookmarks;
        return how many got one."""
        sent = 0
        for watcher in self._watchers:
            if watcher.bookmarks:
                watcher.queue.put_nowait(self._bookmark(watcher.resource))
                sent += 1
        return sent

    def cut_watches(self) -> int:
        """Cut every open watch mid-event (half a JSON line, then the connection drops);
        return how many were cut."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(_CUT)
        return len(self._watchers)

    def watch_count(self) -> int:
        """Watches open now."""
        return len(self._watchers)

    def first_sent(self, resource_version: str) -> float | None:
        """When (time.monotonic()) the first watch event reporting the change at
        ``resource_version`` was written to a client; None if none was (yet)."""
        for event in self.sent:
            if event.resource_version == resource_version and event.type != "BOOKMARK":
                return event.at
        return None

    def count(self, verb: str, resource: str | None = None) -> int:
        """How many ``verb`` requests (of ``resource``) arrived so far."""
        return sum(
            1
            for r in self.requests
            if r.verb == verb and (resource is None or r.resource == resource)
        )

    # -- serving ------------------------------------------------------------------------

    def _record(self, change: _Change) -> None:
        self._history.append(change)
        while len(self._history) > self._history_size:
            self._compacted = self._history.popleft().rv
        for watcher in self._watchers:
            if watcher.resource == change.resource and watcher.namespace == change.namespace:
                watcher.queue.put_nowait(change)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        resource = request.match_info["resource"]
        rt = RESOURCES.get(resource)
        expected_prefix = "/apis/discovery.k8s.io/" if rt and rt.group else "/api/v1/"
        if rt is None or not request.path.startswith(expected_prefix):
            return _json(
                404, status(404, "NotFound", "the server could not find the requested resource")
            )
        query = dict(request.query)
        watching = query.get("watch", "").lower() in ("true", "1")
        verb = "watch" if watching else "list"
        authorization = request.headers.get("Authorization")
        self.requests.append(ApiRequest(verb, resource, namespace, query, authorization))
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = {"Warning": _ENDPOINTS_WARNING} if resource == "endpoints" else {}
        if self.failing is not None:
            return _json(
                self.failing,
                status(
                    self.failing,
                    "InternalError",
                    "Internal error occurred: etcdserver: request timed out",
                ),
            )
        if verb in self.forbidden:
            return _json(403, self._forbidden(rt, verb, namespace))
        try:
            selector = parse_selector(query.get("labelSelector", ""))
        except SelectorError as exc:
            return _json(400, status(400, "BadRequest", f"unable to parse requirement: {exc}"))
        if not watching:
            return _json(200, self._list(rt, namespace, selector), headers)
        return await self._watch(request, rt, namespace, selector, query, headers)

    def _forbidden(self, rt: ResourceType, verb: str, namespace: str) -> Obj:
        user = SERVICE_ACCOUNT.format(namespace=namespace)
        message = (
            f'{rt.qualified} is forbidden: User "{user}" cannot {verb} resource '
            f'"{rt.resource}" in API group "{rt.group}" in the namespace "{namespace}"'
        )
        return status(403, "Forbidden", message, {"group": rt.group, "kind": rt.resource})

    def _list(self, rt: ResourceType, namespace: str, selector: list[Requirement]) -> Obj:
        items = [
            obj
            for (ns, _), obj in sorted(self._objects[rt.resource].items())
            if ns == namespace and selects(selector, obj)
        ]
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _bookmark(self, resource: str) -> Obj:
        rt = RESOURCES[resource]
        return {
            "type": "BOOKMARK",
            "object": {
                "kind": rt.kind,
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self._rv)},
            },
        }

    def _events_for(self, change: _Change, selector: list[Requirement]) -> list[Obj]:
        """The watch event (if any) one change makes for a watch with ``selector``."""
        was, now = selects(selector, change.old), selects(selector, change.new)
        if now:
            kind = "MODIFIED" if was else "ADDED"
            return [{"type": kind, "object": change.new}]
        if was:
            # Deleted, or edited out of the selector: the watch gets the last state it matched.
            assert change.old is not None
            gone = copy.deepcopy(change.old)
            gone["metadata"]["resourceVersion"] = str(change.rv)
            return [{"type": "DELETED", "object": gone}]
        return []

    async def _watch(
        self,
        request: web.Request,
        rt: ResourceType,
        namespace: str,
        selector: list[Requirement],
        query: dict[str, str],
        headers: dict[str, str],
    ) -> web.StreamResponse:
        since = query.get("resourceVersion", "")
        too_old = since not in ("", "0") and int(since) < self._compacted
        expired = status(
            410, "Expired", f"too old resource version: {since} ({self._compacted + 1})"
        )
        if too_old and self.gone_as_http:
            return _json(410, expired)
        # Registering and taking the backlog happen without yielding: nothing falls between.
        watcher = _Watcher(
            rt.resource,
            namespace,
            selector,
            query.get("allowWatchBookmarks", "").lower() in ("true", "1"),
        )
        backlog: list[Obj] = []
        if too_old:
            backlog.append({"type": "ERROR", "object": expired})
        elif since in ("", "0"):
            listing = self._list(rt, namespace, selector)
            backlog.extend({"type": "ADDED", "object": obj} for obj in listing["items"])
        else:
            for change in self._history:
                ours = change.resource == rt.resource and change.namespace == namespace
                if ours and change.rv > int(since):
                    backlog.extend(self._events_for(change, selector))
        if not too_old:
            self._watchers.add(watcher)
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", **headers}
        )
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            for event in backlog:
                await self._send(response, event)
            if too_old:
                await response.write_eof()
                return response
            limits = [float(query["timeoutSeconds"])] if "timeoutSeconds" in query else []
            if self.watch_limit is not None:
                limits.append(self.watch_limit)
            deadline = time.monotonic() + min(limits) if limits else None
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    break
                if item is _END:
                    break
                if item is _CUT:
                    await response.write(b'{"type":"MODIFIED","object":{"kind":"')
                    # close(), not abort(): what was sent before the cut still arrives.
                    assert request.transport is not None
                    request.transport.close()
                    return response
                events = [item] if isinstance(item, dict) else self._events_for(item, selector)
                for event in events:
                    await self._send(response, event)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            self._watchers.discard(watcher)
        return response

    async def _send(self, response: web.StreamResponse, event: Obj) -> None:
        await response.write(_line(event))
        version = event["object"].get("metadata", {}).get("resourceVersion")
        self.sent.append(SentEvent(time.monotonic(), event["type"], version))


def _line(event: Obj) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def _json(code: int, body: Obj, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=code,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=dict(headers or {}),
    )
