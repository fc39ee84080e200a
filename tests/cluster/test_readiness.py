"""Readiness of a real node: with ``node.ready.min_peers: 1`` a lone ``pycluster run``
node answers 503 on ``/readyz`` (JSON naming the peers check) until a peer has joined and
merged, then 200; killing that peer does not make it unready again."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request
from typing import Any

from tests.lab import Lab, LabNode
from tests.lab.hosts import declare_listed

WITHIN = 15.0


def readyz(node: LabNode) -> tuple[int, dict[str, Any]]:
    """``/readyz``'s status code and JSON body."""
    try:
        with urllib.request.urlopen(node.url("/readyz"), timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_min_peers_holds_the_first_readiness_until_a_peer_has_merged(lab: Lab) -> None:
    names = [f"r{i}@{lab.address()}" for i in range(2)]
    waiting = declare_listed(lab, names, 0, ready={"min_peers": 1})
    peer = declare_listed(lab, names, 1)
    await lab.start([waiting])
    code, body = await asyncio.to_thread(readyz, waiting)
    assert code == 503
    assert body["ready"] is False
    assert body["checks"]["peers"] == "0 of the 1 peers node.ready.min_peers asks for"

    await lab.start([peer])

    async def ready() -> bool:
        return (await asyncio.to_thread(readyz, waiting))[0] == 200

    await lab.until(ready, timeout=WITHIN, what="ready once the peer has merged")
    assert (await asyncio.to_thread(readyz, peer))[0] == 200  # min_peers 0
    lab.send_signal(peer, signal.SIGKILL)

    async def alone() -> bool:
        return await lab.peers(waiting) == []

    await lab.until(alone, timeout=WITHIN, what="the peer seen down")
    code, body = await asyncio.to_thread(readyz, waiting)
    assert (code, body) == (200, {"ready": True, "checks": {"node": "ok", "registry": "ok"}})
