"""A node's HTTP endpoints: /healthz, /readyz, /status, /metrics (aiohttp).

They bind the node's own address, so probes reach the pod and a partition cut between two
loopback addresses cuts HTTP too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from pycluster.node import Node

CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"


class HttpEndpoints:
    """The HTTP server of one node."""

    def __init__(self, node: Node, host: str | None, port: int) -> None:
        self._node = node
        self._host = host
        self._port = port
        app = web.Application()
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/status", self._status),
                web.get("/metrics", self._metrics),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self) -> None:
        """Bind and serve."""
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port, reuse_address=True).start()

    async def stop(self) -> None:
        """Stop serving."""
        await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        # Answering at all proves the event loop runs.
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._node.ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self._node.status())

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._node.metrics.render(), headers={"Content-Type": CONTENT_TYPE_METRICS}
        )
