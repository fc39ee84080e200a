"""The Kubernetes API as the ``kubernetes`` strategy sees it: plain records, no client models.

This module is the only one that touches the official ``kubernetes`` client (its asyncio
API, ``kubernetes.aio``), and only once :func:`connect` runs: the client takes about a
second and tens of MB to import, which nodes that do not use the strategy never pay.
The client builds the requests, authenticates and verifies TLS; the answers are read as the
API's JSON and turned here into :class:`Address` records, so no client model crosses into
pycluster. Failures come out as :class:`ApiFailure` (no answer: keep the current nodes and
retry), :class:`Gone` (a watch too old: list again) or :class:`SetupError` (no client can be
built: the configuration is wrong).
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any, Literal

import attrs

Json = Mapping[str, Any]

LIST_TIMEOUT = 10.0
"""Seconds a list call may take before it counts as failed."""
WATCH_GRACE = 30.0
"""Seconds a watch may outlive the ``timeoutSeconds`` it asked the server for."""


@attrs.frozen
class Address:
    """One address discovery found: an endpoint of a Service, or a pod."""

    ip: str
    namespace: str
    """The pod's namespace (from targetRef when there is one, else the listed object's)."""
    hostname: str | None = None
    """The pod's ``spec.hostname`` as the API reports it (set for StatefulSet pods)."""
    ready: bool = True
    terminating: bool = False


def slice_addresses(obj: Json) -> tuple[Address, ...]:
    """The addresses of an EndpointSlice (its first address per endpoint; FQDN slices and a
    null ``endpoints`` give none). Unset conditions read as the API says: ready, not
    terminating."""
    if obj.get("addressType") not in ("IPv4", "IPv6"):
        return ()
    namespace = _namespace(obj)
    found = []
    for endpoint in obj.get("endpoints") or ():
        addresses = endpoint.get("addresses") or ()
        if not addresses:
            continue
        conditions = endpoint.get("conditions") or {}
        ref = endpoint.get("targetRef") or {}
        found.append(
            Address(
                ip=addresses[0],
                namespace=ref.get("namespace") or namespace,
                hostname=endpoint.get("hostname"),
                ready=conditions.get("ready") is not False,
                terminating=conditions.get("terminating") is True,
            )
        )
    return tuple(found)


def endpoints_addresses(obj: Json) -> tuple[Address, ...]:
    """The addresses of an Endpoints object, ``notReadyAddresses`` included (not ready).

    Endpoints cannot say that a pod is terminating; EndpointSlices can.
    """
    namespace = _namespace(obj)
    found = []
    for subset in obj.get("subsets") or ():
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for address in subset.get(key) or ():
                if not address.get("ip"):
                    continue
                ref = address.get("targetRef") or {}
                found.append(
                    Address(
                        ip=address["ip"],
                        namespace=ref.get("namespace") or namespace,
                        hostname=address.get("hostname"),
                        ready=ready,
                    )
                )
    return tuple(found)


def pod_addresses(obj: Json) -> tuple[Address, ...]:
    """A pod's address (none before it has a ``podIP``). Terminating: being deleted
    (``deletionTimestamp``) or finished (phase Succeeded or Failed)."""
    status = obj.get("status") or {}
    ip = status.get("podIP") or next((p.get("ip") for p in status.get("podIPs") or ()), None)
    if not ip:
        return ()
    metadata = obj.get("metadata") or {}
    conditions = status.get("conditions") or ()
    return (
        Address(
            ip=ip,
            namespace=_namespace(obj),
            hostname=(obj.get("spec") or {}).get("hostname"),
            ready=any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions),
            terminating=metadata.get("deletionTimestamp") is not None
            or status.get("phase") in ("Succeeded", "Failed"),
        ),
    )


def _namespace(obj: Json) -> str:
    namespace: str = (obj.get("metadata") or {}).get("namespace") or ""
    return namespace


@attrs.frozen
class Resource:
    """A collection the strategy can read, and how."""

    name: str
    """Plural, as in URLs and RBAC rules."""
    group: str
    """API group ("" for the core group)."""
    path: str
    """The collection's URL path, with ``{namespace}``."""
    parse: Callable[[Json], tuple[Address, ...]]

    @property
    def qualified(self) -> str:
        """The RBAC spelling: ``endpointslices.discovery.k8s.io``, or ``pods``."""
        return f"{self.name}.{self.group}" if self.group else self.name

    @property
    def described(self) -> str:
        """``"endpointslices.discovery.k8s.io"``, or ``"pods" (core API group)``."""
        return f'"{self.qualified}"' + ("" if self.group else " (core API group)")


RESOURCES = {
    "endpointslices": Resource(
        "endpointslices",
        "discovery.k8s.io",
        "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
        slice_addresses,
    ),
    "endpoints": Resource(
        "endpoints", "", "/api/v1/namespaces/{namespace}/endpoints", endpoints_addresses
    ),
    "pods": Resource("pods", "", "/api/v1/namespaces/{namespace}/pods", pod_addresses),
}
"""By ``ip_lookup_mode``."""


@attrs.frozen
class Listing:
    """A successful list: each object's addresses by object name, and where to watch from."""

    objects: dict[str, tuple[Address, ...]]
    resource_version: str


@attrs.frozen
class WatchEvent:
    """One watch event. A BOOKMARK only moves ``resource_version`` on."""

    type: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]
    name: str | None
    addresses: tuple[Address, ...]
    resource_version: str | None


class SetupError(Exception):
    """No client can be built (client not installed, not in a pod, bad kubeconfig)."""


class ApiFailure(Exception):
    """A call that gave no usable answer; the strategy keeps its nodes and retries."""


class ApiUnreachable(ApiFailure):
    """No (complete) HTTP answer: refused, timed out, cut mid-stream, malformed."""


class ApiError(ApiFailure):
    """The API answered with an error status (a ``Status`` object)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


class Gone(ApiError):
    """410: the resourceVersion watched from is too old; list again."""


def api_error(status: int, reason: str, message: str) -> ApiError:
    """The right :class:`ApiError` for a status code."""
    return (Gone if status == 410 else ApiError)(status, reason, message)


def _network_errors() -> tuple[type[BaseException], ...]:
    """What a failed exchange raises. aiohttp is imported here, not with this module:
    registering the strategy must stay cheap."""
    import aiohttp

    return (aiohttp.ClientError, OSError, TimeoutError)


def _describe(exc: BaseException) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the connection closed mid-response"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class KubeApi:
    """List and watch one collection, in one namespace, by label selector."""

    def __init__(
        self,
        client: Any,
        api_client: Any,
        resource: Resource,
        namespace: str,
        selector: str,
        identity: str,
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.selector = selector
        self.identity = identity
        """Who the API sees: ``the service account``, ``the kubeconfig user``, ..."""
        self._api_client = api_client
        self._client_errors: tuple[type[BaseException], ...] = (client.exceptions.OpenApiException,)
        self._network_errors = _network_errors()

    async def list(self) -> Listing:
        """List the selected objects; raise :class:`ApiFailure` without an answer."""
        response = await self._request([], LIST_TIMEOUT)
        try:
            body = await response.read()
        except self._network_errors as exc:
            raise ApiUnreachable(_describe(exc)) from exc
        finally:
            response.release()
        try:
            data = json.loads(body)
            objects = {
                item["metadata"]["name"]: self.resource.parse(item) for item in data["items"] or ()
            }
            version = str(data["metadata"]["resourceVersion"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ApiUnreachable(f"malformed list answer ({_describe(exc)})") from exc
        return Listing(objects, version)

    @asynccontextmanager
    async def watch(self, since: str, timeout: int) -> AsyncIterator[AsyncIterator[WatchEvent]]:
        """Watch from resourceVersion ``since`` for up to ``timeout`` seconds (bookmarks
        allowed). Entering raises :class:`ApiFailure` if the watch cannot start; iterating
        raises it if the stream is cut, and :class:`Gone` on a 410 ERROR event; the
        iteration ends when the server closes the watch."""
        query = [
            ("watch", True),
            ("resourceVersion", since),
            ("allowWatchBookmarks", True),
            ("timeoutSeconds", timeout),
        ]
        response = await self._request(query, float(timeout) + WATCH_GRACE)
        try:
            async with aclosing(self._events(response)) as events:
                yield events
        finally:
            response.close()

    async def _request(self, query: Sequence[tuple[str, Any]], timeout: float) -> Any:
        """GET the collection (its raw aiohttp response, status 200), or raise.

        The request goes through the client's ApiClient, which applies the configuration:
        server, credentials (refreshed as they expire), TLS. The generated API classes
        are skipped on purpose: ``CoreV1Api`` alone imports some 300 pydantic models
        (seconds, and tens of MB) for answers this adapter reads as JSON anyway.
        """
        try:
            request = await self._api_client.param_serialize(
                method="GET",
                resource_path=self.resource.path,
                path_params={"namespace": self.namespace},
                query_params=[("labelSelector", self.selector), *query],
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
            )
            answer = await self._api_client.call_api(
                *request, _request_timeout=timeout, _preload_content=False
            )
            response = answer.response
        except self._network_errors as exc:
            raise ApiUnreachable(_describe(exc)) from exc
        except self._client_errors as exc:
            status = getattr(exc, "status", None)
            if isinstance(status, int) and status:
                raise api_error(status, str(getattr(exc, "reason", "")), "") from exc
            raise ApiUnreachable(_describe(exc)) from exc
        if response.status == 200:
            return response
        try:
            body = await response.read()
        except self._network_errors:
            body = b""
        finally:
            response.release()
        reason, message = response.reason or "", ""
        try:
            data = json.loads(body)
            reason = str(data.get("reason") or reason)
            message = str(data.get("message") or "")
        except (ValueError, AttributeError):
            pass
        raise api_error(response.status, reason, message)

    async def _events(self, response: Any) -> AsyncGenerator[WatchEvent, None]:
        pending = bytearray()
        try:
            async for chunk in response.content.iter_any():
                pending += chunk
                *lines, rest = pending.split(b"\n")
                pending = bytearray(rest)
                for line in lines:
                    if line.strip():
                        yield self._event(line)
        except self._network_errors as exc:
            raise ApiUnreachable(f"watch cut ({_describe(exc)})") from exc
        if pending.strip():
            raise ApiUnreachable("watch cut mid-event")

    def _event(self, line: bytes | bytearray) -> WatchEvent:
        try:
            data = json.loads(line)
            kind, obj = data["type"], data["object"]
            if kind == "ERROR":
                raise api_error(
                    int(obj.get("code") or 500),
                    str(obj.get("reason") or ""),
                    str(obj.get("message") or ""),
                )
            version = (obj.get("metadata") or {}).get("resourceVersion")
            version = None if version is None else str(version)
            if kind == "BOOKMARK":
                return WatchEvent("BOOKMARK", None, (), version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                return WatchEvent(kind, obj["metadata"]["name"], self.resource.parse(obj), version)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ApiUnreachable(f"malformed watch event ({_describe(exc)})") from exc
        raise ApiUnreachable(f"unknown watch event type {kind!r}")


def _import_client() -> tuple[Any, Any]:
    """``kubernetes.aio.client`` and ``kubernetes.aio.config``, imported now (and typed Any:
    the client's models stay in this module)."""
    try:
        client = importlib.import_module("kubernetes.aio.client")
        config = importlib.import_module("kubernetes.aio.config")
    except ImportError as exc:
        raise SetupError(
            "the kubernetes strategy needs the official client with its asyncio API "
            f"(kubernetes>=37): pip install 'pycluster[kubernetes]' ({exc})"
        ) from exc
    return client, config


@asynccontextmanager
async def connect(
    *,
    resource: Resource,
    namespace: str,
    selector: str,
    api_server: str | None,
    kubeconfig: str | None,
    log: logging.LoggerAdapter[Any],
) -> AsyncIterator[KubeApi]:
    """A client for ``resource``, configured from ``kubeconfig`` (``api_server`` replacing
    its server), or for a bare ``api_server`` (no credentials), or else in-cluster (the
    service account's token and CA). TLS is verified unless a kubeconfig says otherwise,
    which is logged. The client's connections are closed when the block exits."""
    client, config = _import_client()
    configuration = client.Configuration()
    if kubeconfig is not None:
        try:
            await config.load_kube_config(
                config_file=kubeconfig,
                client_configuration=configuration,
                persist_config=False,
            )
        except Exception as exc:  # the loader raises many kinds; all mean "unusable"
            raise SetupError(f"cannot use kubeconfig {kubeconfig} ({_describe(exc)})") from exc
        if api_server is not None:
            configuration.host = api_server.rstrip("/")
        if not configuration.verify_ssl:
            log.warning(
                "kubeconfig %s turns TLS verification off (insecure-skip-tls-verify) for %s",
                kubeconfig,
                configuration.host,
                extra={"event": "api_tls_unverified", "api_server": configuration.host},
            )
        identity = "the kubeconfig's user"
    elif api_server is not None:
        configuration.host = api_server.rstrip("/")
        if api_server.startswith("http://"):
            log.warning(
                "using the Kubernetes API at %s over plain HTTP, without TLS or credentials "
                "(meant for a local proxy such as kubectl proxy, or a test server)",
                configuration.host,
                extra={"event": "api_plain_http", "api_server": configuration.host},
            )
        else:
            log.info(
                "using the Kubernetes API at %s without credentials "
                "(TLS verified against the system's CAs)",
                configuration.host,
                extra={"event": "api_no_credentials", "api_server": configuration.host},
            )
        identity = f"the user behind {configuration.host}"
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as exc:
            raise SetupError(
                f"not running in a Kubernetes pod ({exc}); to reach the API from outside "
                "a cluster, set api_server or kubeconfig"
            ) from exc
        identity = "the service account"
    api_client = client.ApiClient(configuration)
    try:
        yield KubeApi(client, api_client, resource, namespace, selector, identity)
    finally:
        await api_client.close()
